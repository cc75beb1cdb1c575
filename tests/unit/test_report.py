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


def _rollout(failed, no_target, duration, **extra):
    return {"failed_fraction": failed, "fail_cause_no_target": no_target,
            "rollout_duration_s": duration, "min_serving_pods": 1, "failed": 0,
            "connections_reset": 0, **extra}


def test_the_readiness_gate_claim_is_judged_from_both_scenarios():
    np_ = _rollout(0.0, 0, 12.0)
    v = _verdicts([_run("rollout", nodeport=np_, direct=_rollout(0.05, 300, 12.0)),
                   _run("rollout-readiness-gate", nodeport=np_, direct=_rollout(0.0, 0, 900.0))])
    assert v[6].startswith("holds: direct fails 5 % of flows without the gate")
    assert "the gate makes the rollout take 900 s instead of 12 s" in v[6]
    v = _verdicts([_run("rollout", nodeport=np_, direct=_rollout(0.001, 3, 12.0)),
                   _run("rollout-readiness-gate", nodeport=np_, direct=_rollout(0.0, 0, 900.0))])
    assert v[6].startswith("does not hold")
    v = _verdicts([_run("rollout", nodeport=np_, direct=_rollout(0.05, 300, 12.0)),
                   _run("rollout-readiness-gate", nodeport=np_, direct=_rollout(0.02, 0, 900.0))])
    assert v[6].startswith("depends")
    # one of the pair missing: not measured, naming it
    v = _verdicts([_run("rollout", nodeport=np_, direct=_rollout(0.05, 300, 12.0))],
                  available={"rollout", "rollout-readiness-gate"})
    assert v[6].startswith("not measured: scenario rollout-readiness-gate not run")


def test_the_draining_and_local_claims_are_judged_from_both_scenarios():
    lost = {"failed": 5, "connections_reset": 2, "fail_cause_refused": 5,
            "time_to_drain_p99_s": 1.0, "fail_cause_no_local_endpoint": 40, "min_serving_pods": 3}
    none = {**lost, "failed": 0, "connections_reset": 0, "fail_cause_no_local_endpoint": 0}
    v = _verdicts([_run("scale-in-draining", nodeport=lost, direct=lost),
                   _run("scale-in-draining-prestop", nodeport=none, direct=none),
                   _run("local-terminating", nodeport=lost, direct=none),
                   _run("local-terminating-fallback", nodeport=none, direct=none)])
    assert v[7].startswith("holds: without: NodePort 5 failed + 2 reset")
    assert v[8].startswith("holds: NodePort fails 5 flows (40 packets")
    v = _verdicts([_run("scale-in-draining", nodeport=none, direct=none),
                   _run("scale-in-draining-prestop", nodeport=none, direct=none),
                   _run("local-terminating", nodeport=none, direct=none),
                   _run("local-terminating-fallback", nodeport=none, direct=none)])
    assert v[7].startswith("does not hold") and v[8].startswith("does not hold")
    v = _verdicts([_run("scale-in-draining", nodeport=lost, direct=none),
                   _run("scale-in-draining-prestop", nodeport=none, direct=none),
                   _run("local-terminating", nodeport=lost, direct=none),
                   _run("local-terminating-fallback", nodeport=lost, direct=none)])
    assert v[7].startswith("depends") and v[8].startswith("depends")


def test_the_udp_claim_is_judged_from_both_scenarios():
    def pair(without, with_):
        return [_run("udp-stale-conntrack", nodeport={"failed_fraction": without},
                     direct={"failed_fraction": 0.0}),
                _run("udp-stale-conntrack-cleanup", nodeport={"failed_fraction": with_},
                     direct={"failed_fraction": 0.0})]
    assert _verdicts(pair(0.3, 0.0004))[9].startswith("holds: NodePort fails 30 % of datagrams")
    assert _verdicts(pair(0.005, 0.0))[9].startswith("does not hold")
    assert _verdicts(pair(0.3, 0.2))[9].startswith("depends")


def test_the_node_drain_claim_compares_the_paths():
    def run(direct, nodeport):
        m = {"fail_cause_pod_gone": 900, "fail_cause_refused": 2, "time_to_serve_p50_s": 1.0}
        return [_run("node-drain", nodeport={**m, "failed_fraction": nodeport},
                     direct={**m, "failed_fraction": direct})]
    assert _verdicts(run(0.04, 0.0006))[10].startswith("holds: direct fails 4 % of flows (900 "
                                                       "attempts lost to evicted pods")
    assert _verdicts(run(0.005, 0.0))[10].startswith("does not hold")
    assert _verdicts(run(0.04, 0.03))[10].startswith("depends")
    assert _verdicts([], available=set())[10] == "not measured: scenario node-drain not available"


def test_missing_scenario_or_metric_is_not_measured():
    v = _verdicts([], available=set())
    assert v[1] == "not measured: scenario snat-exhaustion not available"
    assert v[3] == ("not measured: scenario lb-state-scattered not available; "
                    "scenario imbalance-cluster not available")
    assert v[6] == ("not measured: scenario rollout not available; "
                    "scenario rollout-readiness-gate not available")
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
