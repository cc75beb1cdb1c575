"""The bench report: the claims' verdict rules on made-up numbers, number formatting, figures.

The report written by ``python -m lbsim.bench --out DIR`` is checked in tests/integration.
"""

import pytest

import lbsim
from lbsim import report
from lbsim.report import RunRecord, evaluate_claims
from tests.shared import check_png


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
