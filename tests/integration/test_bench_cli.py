"""``python -m lbsim.bench`` in a subprocess: bad input is one ``error:`` line and exit status 2."""

import json
import subprocess
import sys

import pytest

import lbsim

WALL = {"wall_s", "flows_per_wall_s"}


def _no_wall(s):
    return {k: v for k, v in s.items() if k not in WALL}


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lbsim.bench", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_bad_jobs_is_one_error_line_and_exit_2(value, tmp_path):
    r = bench("--jobs", value, "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--jobs" in lines[0], r.stderr
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_is_an_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = bench("--quick", "--out", str(f))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot create")


@pytest.mark.parametrize("args,needle", [
    (["--config", "BAD"], "cluster.nodes"),
    (["--scenario", "no-such"], "scenario"),
    (["--batch-flows", "0"], "batch-flows"),
    (["--seed", "x"], "seed"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nnodes = 0\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "lbsim.bench", *args], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in r.stderr


def test_bench_quick_json_schema(tmp_path):
    out = tmp_path / "out.json"
    r = subprocess.run([sys.executable, "-m", "lbsim.bench", "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "source_ip_preserved_fraction" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["lbsim_version"]
    (sc,) = doc["scenarios"]
    assert sc["name"] == "default"
    assert lbsim.Scenario.from_dict(sc["config"]).workload.flows == 30000
    required = ["flows", "established", "failed", "failed_fraction", "syn_retransmits",
                "conntrack_insert", "conntrack_insert_failed", "conntrack_drop", "conntrack_early_drop",
                "conntrack_clash_resolve", "fail_cause_port_exhaustion", "fail_cause_insert_race",
                "fail_cause_table_full", "connect_latency_p50_s", "connect_latency_p99_s",
                "response_time_p50_s", "response_time_p99_s", "pod_load_max_over_mean", "pod_load_cv",
                "source_ip_preserved_fraction", "wall_s", "flows_per_wall_s"]
    for path in ("nodeport", "direct"):
        assert set(required) <= set(sc["paths"][path])
    assert sc["paths"]["direct"]["source_ip_preserved_fraction"] == 1.0
    assert sc["paths"]["nodeport"]["source_ip_preserved_fraction"] == 0.0


def test_bench_seed_changes_numbers(tmp_path):
    outs = []
    for seed in ("1", "1", "2"):
        out = tmp_path / f"o{len(outs)}.json"
        subprocess.run([sys.executable, "-m", "lbsim.bench", "--quick", "--seed", seed, "--json", str(out)],
                       check=True, capture_output=True, timeout=300)
        p = json.loads(out.read_text())["scenarios"][0]["paths"]
        outs.append({k: _no_wall(v) for k, v in p.items()})
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_bench_lists_every_named_scenario():
    from lbsim.scenarios import SCENARIOS
    r = subprocess.run([sys.executable, "-m", "lbsim.bench", "--list"], capture_output=True, text=True)
    assert r.returncode == 0
    for name in SCENARIOS:
        assert name in r.stdout


def test_bench_refuses_the_batched_engine():
    r = subprocess.run([sys.executable, "-m", "lbsim.bench", "--engine", "batched"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: argument --engine: invalid choice: 'batched' (choose from compiled, reference)"] \
        or "invalid choice: 'batched'" in r.stderr.strip().splitlines()[-1]


def test_version_on_both_clis():
    for mod in ("lbsim.bench", "lbsim.sweep"):
        r = subprocess.run([sys.executable, "-m", mod, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == f"lbsim {lbsim.__version__}"


def test_show_prints_a_named_scenario_as_toml_that_round_trips():
    r = bench("--show", "snat-exhaustion", "--quick", "--seed", "9", "--set", "cluster.nodes=2",
              "--set", "nat.port_range=[10000,10063]")
    assert r.returncode == 0, r.stderr
    sc = lbsim.Scenario.from_toml_string(r.stdout)
    from lbsim.scenarios import get
    want = get("snat-exhaustion", quick=True).replace(
        seed=9, **{"cluster.nodes": 2, "nat.port_range": [10000, 10063]})
    assert sc == want


@pytest.mark.parametrize("args, field", [
    (["--set", "cluster.nodez=3"], "cluster.nodez"),
    (["--set", "cluster.nodes=-1"], "cluster.nodes"),
    (["--set", "cluster.nodes"], "--set"),
    (["--show", "nope"], "nope"),
])
def test_bad_set_or_show_is_one_error_line(args, field):
    r = bench(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], r.stderr


def test_set_changes_the_run_and_config_runs_print_no_claims(tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text(lbsim.Scenario().replace(**{"workload.flows": 500}).to_toml())
    out = tmp_path / "o.json"
    r = bench("--config", str(cfg), "--set", "cluster.nodes=2", "--set", "cluster.pods=4",
              "--json", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["scenarios"][0]["config"]["cluster"]["nodes"] == 2
    assert "claims" not in r.stdout.lower() and "verdict" not in r.stdout
    r = bench("--scenario", "default", "--quick", "--set", "workload.flows=300")
    assert r.returncode == 0 and "verdict" in r.stdout


@pytest.mark.parametrize("setting", ["workload.rate_per_s=1e-300",
                                     "workload.flows=1099511627776"])
def test_runs_that_cannot_run_are_one_error_line_before_anything_runs(setting):
    r = bench("--set", setting)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: default: "), r.stderr
