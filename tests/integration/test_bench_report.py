"""``python -m lbsim.bench --out DIR`` in a subprocess: the report's files and structure, --jobs."""

import json
import re
import subprocess
import sys

import pytest

import lbsim
from lbsim.figures import KINDS
from lbsim.report import CLAIMS
from lbsim.scenarios import SCENARIOS
from tests.shared import check_png

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
    assert r.stdout.rstrip().endswith("not measured: scenario node-drain not run (run it with "
                                      "--scenario node-drain, or --out without --scenario)")


def test_claims_table_has_every_claim_with_numbers_where_measured(few_report):
    out, _ = few_report
    md = (out / "report.md").read_text()
    rows = claim_rows(md)
    assert len(rows) == len(CLAIMS) == 11
    for (num, text, scen, np_cell, d_cell, verdict), claim in zip(rows, CLAIMS):
        assert claim.text.split(":")[0] in text
        ran = claim.scenarios and all(s in FEW for s in claim.scenarios)
        if ran:
            assert re.search(r"\d", np_cell) and re.search(r"\d", d_cell), (num, np_cell, d_cell)
            assert verdict.split(":")[0] in ("holds", "does not hold", "depends"), verdict
        else:
            assert verdict.startswith("not measured: "), verdict
    assert rows[0][5].startswith("holds")  # default: a second hop makes NodePort slower
    assert rows[6][5].startswith("not measured: scenario rollout not run")
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


@pytest.mark.slow
def test_full_quick_report(tmp_path):
    """Every named scenario, quick, default --jobs: every claim whose scenarios exist is measured."""
    r = bench("--quick", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report.md").read_text()
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in doc["scenarios"]] == list(SCENARIOS)
    rows = claim_rows(md)
    assert len(rows) == 11
    for row, claim in zip(rows, CLAIMS):
        if claim.scenarios and any(s in SCENARIOS for s in claim.scenarios):
            assert not row[5].startswith("not measured"), row
            assert re.search(r"\d", row[3]) and re.search(r"\d", row[4])
    # the kernel-dependent claims name the setting they depend on
    if {"snat-exhaustion", "snat-exhaustion-modern"} <= set(SCENARIOS):
        assert rows[1][5].startswith("depends: holds with nat.kernel = 5.x")
    assert "figure failed" not in md
    # the one warning a named scenario gives by design: the gate has no LB target on NodePort
    warned = [line for line in r.stderr.splitlines() if "warning:" in line]
    assert all("readiness_gate = true is ignored on the NodePort path" in w for w in warned)
    assert rows[6][5].startswith("holds: direct fails")       # the gate, from the numbers
    assert all(rows[i][5].startswith("holds") for i in (7, 8, 9))
    pngs = list((tmp_path / "figures").glob("*.png"))
    assert len(pngs) >= 3 * len(SCENARIOS)
    for p in pngs[:5]:
        check_png(p)
    assert md.count("\n### ") == len(SCENARIOS)
