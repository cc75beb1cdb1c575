"""``python -m lbsim.bench --out DIR``: the report's structure, --jobs, and the claims' verdict rules."""

import json
import re
import subprocess
import sys

import pytest

import lbsim
from lbsim import report
from lbsim.figures import KINDS
from lbsim.report import CLAIMS, RunRecord, evaluate_claims
from lbsim.scenarios import SCENARIOS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WALL_KEYS = {"wall_s", "flows_per_wall_s"}
# cheap quick scenarios (a second or two each) that cover claims 1, 5 and 6 and a figure of drops;
# the ones not defined (yet) are left out rather than failing the run
FEW = [n for n in ("default", "source-ip", "session-persistence", "dns-race") if n in SCENARIOS]


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lbsim.bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def scenario_args(names):
    return [a for n in names for a in ("--scenario", n)]


def no_wall(doc):
    """results.json without wall-time keys and the command line."""
    return {**{k: v for k, v in doc.items() if k != "command"},
            "scenarios": [{**s, "paths": {p: {k: v for k, v in m.items() if k not in WALL_KEYS}
                                          for p, m in s["paths"].items()}} for s in doc["scenarios"]]}


def claim_rows(md):
    """The claims table's rows as lists of cells."""
    section = md.split("## Claims", 1)[1].split("\n\n", 2)[1]
    lines = [ln for ln in section.splitlines() if re.match(r"\| \d+ \|", ln)]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]


def check_png(path):
    from matplotlib.image import imread
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), img.shape
    assert img.shape[0] > 200 and img.shape[1] > 400, img.shape
    assert img.std() > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def few_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = bench("--quick", "--jobs", "2", "--out", str(out), *scenario_args(FEW))
    assert r.returncode == 0, r.stderr
    return out, r


def test_report_files_and_header(few_report):
    out, r = few_report
    md = (out / "report.md").read_text()
    assert md.startswith("# lbsim bench report")
    header = md.split("## Claims", 1)[0]
    assert "lbsim version: " in header
    assert f"`python -m lbsim.bench --quick --jobs 2 --out {out} " in header
    assert "seed: 1" in header and "quick" in header
    for name in FEW:
        assert f"{name} {lbsim.scenarios.get(name, True).workload.flows:,}" in header  # sizes
    # the terminal: progress on stderr, the claims at the end of stdout
    assert re.search(rf"\[{len(FEW)}/{len(FEW)}\] ", r.stderr)
    assert "== claims of the direct-to-Pod design" in r.stdout.split("== default ==")[-1]
    assert r.stdout.rstrip().endswith("not measured: pod readiness is not modelled")


def test_claims_table_has_every_claim_with_numbers_where_measured(few_report):
    out, _ = few_report
    md = (out / "report.md").read_text()
    rows = claim_rows(md)
    assert len(rows) == len(CLAIMS) == 7
    for (num, text, scen, np_cell, d_cell, verdict), claim in zip(rows, CLAIMS):
        assert claim.text.split(":")[0] in text
        ran = claim.scenarios and all(s in FEW for s in claim.scenarios)
        if ran:
            assert re.search(r"\d", np_cell) and re.search(r"\d", d_cell), (num, np_cell, d_cell)
            assert verdict.split(":")[0] in ("holds", "does not hold", "depends"), verdict
        else:
            assert verdict.startswith("not measured: "), verdict
    assert rows[0][5].startswith("holds")  # default: a second hop makes NodePort slower
    assert rows[6][5] == "not measured: pod readiness is not modelled"
    if "source-ip" in FEW:
        assert rows[4][3].endswith(" 0") and rows[4][4].endswith(" 1")
    # rules are stated
    assert "holds if NodePort failed_fraction > 0.01" in md


def test_scenario_sections_config_metrics_and_figures(few_report):
    out, _ = few_report
    md = (out / "report.md").read_text()
    doc = json.loads((out / "results.json").read_text())
    sections = md.split("\n### ")[1:]
    assert [s.split("\n", 1)[0] for s in sections] == FEW
    for sec, sc in zip(sections, doc["scenarios"]):
        toml = re.search(r"```toml\n(.*?)```", sec, re.S).group(1)
        assert lbsim.Scenario.from_toml_string(toml) == lbsim.Scenario.from_dict(sc["config"])
        assert "| `failed_fraction` |" in sec and "| `pod_load_cv` |" in sec
        for link in re.findall(r"\]\((figures/[^)]+\.png)\)", sec):
            assert (out / link).is_file(), link
    assert "figure failed" not in md
    # the direct path has no conntrack: said, not drawn
    assert "direct path not drawn: no conntrack" in md
    assert "dropped packets over time: not drawn, no dropped packet on either path" in md
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 4
    for p in pngs:
        check_png(p)
    kinds = {k for p in pngs for k, _ in KINDS if p.name.endswith(f"-{k}.png")}
    assert {"pod-load", "conntrack", "snat", "connect-cdf", "response-cdf"} <= kinds


def test_results_json_schema(few_report):
    out, _ = few_report
    doc = json.loads((out / "results.json").read_text())
    assert set(doc) == {"lbsim_version", "command", "scenarios"}
    assert doc["command"].startswith("python -m lbsim.bench --quick --jobs 2 --out ")
    assert [s["name"] for s in doc["scenarios"]] == FEW
    for s in doc["scenarios"]:
        assert set(s) == {"name", "config", "paths"}
        assert lbsim.Scenario.from_dict(s["config"]) == lbsim.scenarios.get(s["name"], True)
        assert set(s["paths"]) == {"nodeport", "direct"}
        for m in s["paths"].values():
            assert {"flows", "failed_fraction", "connect_latency_p50_s", "wall_s"} <= set(m)


def test_jobs_do_not_change_results(few_report, tmp_path):
    out, _ = few_report
    one = tmp_path / "one.json"
    r = bench("--quick", "--jobs", "1", "--json", str(one), *scenario_args(FEW))
    assert r.returncode == 0, r.stderr
    assert no_wall(json.loads(one.read_text())) == no_wall(json.loads((out / "results.json").read_text()))


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


@pytest.mark.slow
def test_full_quick_report(tmp_path):
    """Every named scenario, quick, default --jobs: every claim whose scenarios exist is measured."""
    r = bench("--quick", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report.md").read_text()
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in doc["scenarios"]] == list(SCENARIOS)
    rows = claim_rows(md)
    assert len(rows) == 7
    for row, claim in zip(rows, CLAIMS):
        if claim.scenarios and any(s in SCENARIOS for s in claim.scenarios):
            assert not row[5].startswith("not measured"), row
            assert re.search(r"\d", row[3]) and re.search(r"\d", row[4])
    # the kernel-dependent claims name the setting they depend on
    if {"snat-exhaustion", "snat-exhaustion-modern"} <= set(SCENARIOS):
        assert rows[1][5].startswith("depends: holds with nat.kernel = 5.x")
    assert "figure failed" not in md and "warning:" not in r.stderr
    pngs = list((tmp_path / "figures").glob("*.png"))
    assert len(pngs) >= 3 * len(SCENARIOS)
    for p in pngs[:5]:
        check_png(p)
    assert md.count("\n### ") == len(SCENARIOS)


# -- the verdict rules on made-up numbers (no simulation) -----------------------------------------

def _run(name, config=None, **paths):
    return RunRecord(name, config or {"nat": {"kernel": "5.x"}}, paths)


def _verdicts(runs, available=None):
    runs = {r.name: r for r in runs}
    return [row.verdict for row in evaluate_claims(runs, available if available is not None else runs)]


def test_verdicts_are_computed_from_the_numbers():
    ok = {"failed_fraction": 0.2, "fail_cause_port_exhaustion": 50}
    direct = {"failed_fraction": 0.0, "fail_cause_port_exhaustion": 0}
    v = _verdicts([_run("snat-exhaustion", nodeport=ok, direct=direct)])[1]
    assert v.startswith("holds: NodePort fails 20 %")
    low = {**ok, "failed_fraction": 0.005}
    v = _verdicts([_run("snat-exhaustion", nodeport=low, direct=direct)])[1]
    assert v.startswith("does not hold")
    assert _verdicts([_run("snat-exhaustion", nodeport=ok, direct={**direct, "failed_fraction": 0.1})]
                     )[1].startswith("depends")


def test_contrast_with_another_outcome_makes_it_depend_on_the_setting():
    direct = {"failed_fraction": 0.0, "fail_cause_port_exhaustion": 0}
    v = _verdicts([
        _run("snat-exhaustion", {"nat": {"kernel": "5.x"}, "seed": 1},
             nodeport={"failed_fraction": 0.2, "fail_cause_port_exhaustion": 50}, direct=direct),
        _run("snat-exhaustion-modern", {"nat": {"kernel": "modern"}, "seed": 2},
             nodeport={"failed_fraction": 0.0, "fail_cause_port_exhaustion": 0}, direct=direct),
    ])[1]
    assert v.startswith("depends: holds with nat.kernel = 5.x (snat-exhaustion: ")
    assert "does not hold with nat.kernel = modern (snat-exhaustion-modern: " in v
    assert "seed" not in v


def test_missing_scenario_or_metric_is_not_measured():
    v = _verdicts([], available=set())
    assert v[1] == "not measured: scenario snat-exhaustion not available"
    assert v[3] == ("not measured: scenario lb-state-scattered not available; "
                    "scenario imbalance-cluster not available")
    assert v[6] == "not measured: pod readiness is not modelled"
    v = _verdicts([], available={"source-ip"})[4]
    assert v.startswith("not measured: scenario source-ip not run")
    # a metric the rule needs is missing (pod_load_jain) or NaN
    load = {"pod_load_max_over_mean": 1.5, "pod_load_cv": 0.2}
    v = _verdicts([_run("imbalance-cluster", nodeport=load, direct=load)])[3]
    assert v.startswith("not measured: ")
    assert "metric pod_load_jain not available (scenario imbalance-cluster)" in v
    nan = {"source_ip_preserved_fraction": float("nan")}
    assert "is nan" in _verdicts([_run("source-ip", nodeport=nan, direct=nan)])[4]


def test_one_of_two_scenarios_is_enough_and_the_other_is_noted():
    np_ = {"pod_load_max_over_mean": 1.5, "pod_load_cv": 0.3, "pod_load_jain": 0.9}
    d = {"pod_load_max_over_mean": 1.0, "pod_load_cv": 0.0, "pod_load_jain": 1.0}
    rows = evaluate_claims({"imbalance-cluster": _run("imbalance-cluster", nodeport=np_, direct=d)},
                           {"imbalance-cluster"})
    row = rows[3]
    assert row.verdict.startswith("holds: Jain's index NodePort 0.900 vs direct 1.000")
    assert "[not measured: scenario lb-state-scattered not available]" in row.verdict
    assert row.nodeport[0].startswith("imbalance-cluster: pod_load_max_over_mean 1.5")
    assert "pod_conn_max_over_mean n/a" in row.nodeport[0]


def test_rules_are_stated_with_their_thresholds():
    rules = report.claims_markdown(evaluate_claims({}, set()))
    assert f"failed_fraction > {report.FAIL_THRESHOLD:g}" in rules
    assert f">= {report.PERSISTENCE_THRESHOLD:g}" in rules
    assert f"by >= {report.HOTSPOT_MARGIN:g} of the mean" in rules


def test_fmt_value():
    assert report.fmt_value("flows", 10000.0) == "10,000"
    assert report.fmt_value("failed_fraction", 0.0) == "0"
    assert report.fmt_value("connect_latency_p50_s", 0.0014051) == "0.001405"
    assert report.fmt_value("x", float("nan")) == "nan" and report.fmt_value("x", None) == "nan"
    assert report.fmt_value("flows_per_wall_s", 34043.7) == "34,044"


def test_figures_of_a_summary_only_run_say_why_they_are_missing(tmp_path):
    import dataclasses
    from lbsim.figures import scenario_figures
    if "records" not in {f.name for f in dataclasses.fields(lbsim.Scenario)}:
        pytest.skip("no records setting")
    sc = lbsim.Scenario().replace(**{"workload.flows": 2000, "cluster.nodes": 3, "cluster.pods": 6,
                                     "records": "summary"})
    infos = {f.kind: f for f in scenario_figures("tiny", lbsim.compare(sc), tmp_path)}
    assert infos["conntrack"].file is not None
    check_png(tmp_path / infos["conntrack"].file)
    for kind in ("pod-load", "snat", "drops", "connect-cdf", "response-cdf"):
        assert infos[kind].file is None and 'records = "summary"' in infos[kind].note
