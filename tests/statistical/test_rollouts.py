"""The direct path through rollouts and scale-ins: flows lost while the LB has no target, the
readiness gate, preStop and the grace period (closed forms and 4-standard-error bounds)."""

import math

import numpy as np
import pytest

import lbsim
from lbsim.kernel import NS

RATE = 400.0
BASE = {"path": "direct", "workload.rate_per_s": RATE, "workload.flows": 40_000,
        "cluster.nodes": 3, "cluster.pods": 4, "pod.workers": 32, "pod.service_s": 0.01,
        "cloud.profile": "custom", "cloud.registration_s": 30.0, "cloud.hc_interval_s": 2.0,
        "cloud.hc_healthy_threshold": 2, "cloud.draining_new_flows_s": 0.0,
        "cloud.deregistration_lag_s": 0.0, "lifecycle.startup_s": 3.0,
        "lifecycle.readiness_period_s": 1.0, "deployment.max_surge": 1,
        "deployment.max_unavailable": 0}
ROLLOUT = [{"at_s": 20.0, "kind": "rollout"}]


def run(**kw):
    return lbsim.run(lbsim.Scenario().replace(**{**BASE, **kw}))


def no_target_s(res) -> float:
    """Time within the arrivals during which the LB had no target at all, from the run's own
    timeline."""
    rec = res.timeline.receiving
    t = np.r_[rec["t_s"].to_numpy(), res.flows["arrival_s"].max()]
    empty = (rec["pods"] == 0).to_numpy()
    return float(np.sum(np.diff(t)[empty]))


def test_flows_arriving_while_the_lb_has_no_target_are_lost_at_the_poisson_rate():
    """Without a gate, a registration slower than readiness deletes every old pod before any new
    target exists. With no retransmission, each flow reaching the LB then fails (no_target):
    their count is Poisson with mean rate x window, within 4 standard errors."""
    res = run(events=ROLLOUT, **{"workload.syn_retries": 0})
    window = no_target_s(res)
    assert window > 5.0
    lost = res.summary["fail_cause_no_target"]
    # the only other loss: a flow the LB sent to an old pod in the lb_to_backend_s (100 us)
    # before its SIGTERM (preStop 0), refused
    assert res.summary["failed"] == lost + res.summary["fail_cause_refused"]
    assert res.summary["fail_cause_refused"] <= 4
    mean = RATE * window
    assert abs(lost - mean) < 4 * math.sqrt(mean), (lost, mean)


def test_with_the_gate_and_a_surge_no_flow_fails_and_the_rollout_takes_longer():
    """The gate holds each old pod until its successor's target is healthy, and a preStop
    longer than the LB's reaction keeps the deleted pod serving what the LB already sent."""
    # 250 s: the gated rollout ends within the run; clients that give up after 7 s
    # (tcp_syn_retries = 2), so that the ungated rollout's seconds without a target fail flows
    long = {"workload.flows": 100_000, "workload.syn_retries": 2}
    plain = run(events=ROLLOUT, **long)
    gated = run(events=ROLLOUT, **long, **{"deployment.readiness_gate": True,
                                           "lifecycle.prestop_s": 2.0})
    assert plain.summary["failed_fraction"] > 0.01
    assert gated.summary["failed"] == 0 and gated.summary["connections_reset"] == 0
    assert gated.summary["min_serving_pods"] >= 1
    assert gated.summary["rollout_duration_s"] > plain.summary["rollout_duration_s"]
    # with the gate a pod is Ready when the LB already takes it: it serves within a few flows
    assert gated.summary["time_to_serve_p99_s"] < 20 / (RATE / 5)
    assert plain.summary["time_to_serve_p50_s"] > 25.0     # registration (30 s) less readiness


def test_a_deleted_pod_whose_prestop_and_grace_cover_its_lag_and_connections_resets_none():
    """A scale in with long-held connections: preStop covering the deregistration lag and a
    grace covering the connections reset none and refuse none; a shorter grace resets exactly
    the connections the records show open at the kill, a shorter preStop refuses flows."""
    kw = {"workload.hold_s": 8.0, "cloud.deregistration_lag_s": 1.0,
          "events": [{"at_s": 30.0, "kind": "scale", "replicas": 3}]}
    safe = run(**kw, **{"lifecycle.prestop_s": 3.0, "lifecycle.termination_grace_s": 30.0})
    assert safe.summary["connections_reset"] == 0 and safe.summary["failed"] == 0
    short = run(**kw, **{"lifecycle.prestop_s": 3.0, "lifecycle.termination_grace_s": 6.0})
    victim = short.timeline.pods.dropna(subset=["deleted_s"]).iloc[0]
    kill = victim["deleted_s"] + 6.0
    net = short.scenario.network
    d_in = net.client_to_lb_s + net.lb_to_backend_s        # the FIN's way to the pod
    f = short.flows
    on = f[(f["pod"] == victim["pod"]) & (f["outcome"] == "established")]
    open_at_kill = int(((on["closed_s"] + d_in) > kill + 1e-12).sum())
    assert short.summary["connections_reset"] == open_at_kill > 0
    assert short.summary["failed"] == 0
    early = run(**kw, **{"lifecycle.prestop_s": 0.0, "lifecycle.termination_grace_s": 30.0})
    assert early.summary["fail_cause_refused"] > 0      # the LB still sent it flows for 1 s


def test_a_run_without_events_is_the_steady_state():
    r = run(**{"workload.flows": 3000})
    s = r.summary
    assert s["connections_reset"] == 0 and s["min_serving_pods"] == 4
    assert math.isnan(s["rollout_duration_s"]) and r.timeline is None
    assert not r.flows["reset"].any()


def test_the_lost_window_is_the_timelines_own():
    """The same scenario's control plane alone and inside the run agree on every pod instant
    before the data plane could matter (creation, readiness, registration)."""
    res = run(events=ROLLOUT, **{"workload.syn_retries": 0})
    alone = lbsim.timeline(res.scenario)
    cols = ["created_s", "containers_ready_s", "registered_s", "ready_s"]
    n = len(res.timeline.pods)
    assert res.timeline.pods[cols].equals(alone.pods[cols].iloc[:n])
    assert NS == 10**9


def test_a_crash_cuts_the_open_connections_and_the_lb_refuses_until_its_checks_notice():
    """Pod 1's server dies at 30 s: the connections it had accepted and not closed are cut
    (counted from the flows table: SYN at the pod before 30 s, the client's FIN after), new
    ones are refused (RST) until the LB's checks find the target unhealthy (2 failures, every
    2 s: between 2 and 4 s later), and the pod serves again once restarted and healthy."""
    res = run(**{"workload.hold_s": 2.0, "cloud.hc_unhealthy_threshold": 2,
                 "workload.flows": 24_000},
              events=[{"at_s": 30.0, "kind": "crash", "pod": 1}])
    net = res.scenario.network
    d_in = net.client_to_lb_s + net.lb_to_backend_s
    f = res.flows
    on = f[(f["pod"] == 1) & (f["outcome"] == "established")]
    open_at = ((on["arrival_s"] + d_in < 30.0) & (on["closed_s"] + d_in > 30.0)).sum()
    assert res.summary["connections_reset"] == open_at > 0
    ev = res.timeline.events
    mine = ev[ev["pod"] == 1].set_index("event")["t_s"]
    assert 2.0 < mine["unhealthy"] - 30.0 <= 4.0
    refused = f[f["cause"] == "refused"]
    assert len(refused) > 0 and refused["arrival_s"].min() >= 30.0 - d_in
    assert refused["arrival_s"].max() < mine["unhealthy"]
    assert (on["arrival_s"] > mine["healthy"]).any()              # back after its restart
    assert res.summary["failed"] == len(refused)


def test_draining_ends_when_the_last_connection_closes():
    """deregistration_delay 300 s: the LB removes a deregistered target once its open
    connections are closed (at once when none is: the control plane alone), not 300 s later."""
    kw = {"workload.hold_s": 5.0, "cloud.deregistration_delay_s": 300.0,
          "events": [{"at_s": 30.0, "kind": "scale", "replicas": 3}]}
    res = run(**kw)
    ev = res.timeline.events
    victim = int(res.timeline.pods.dropna(subset=["deleted_s"])["pod"].iloc[0])
    mine = ev[ev["pod"] == victim].set_index("event")["t_s"]
    net = res.scenario.network
    f = res.flows
    on = f[(f["pod"] == victim) & (f["outcome"] == "established")]
    last = (on["closed_s"] + net.client_to_lb_s + net.lb_to_backend_s).max()
    assert mine["deregistered"] == pytest.approx(30.0)
    assert mine["target_removed"] == pytest.approx(last, abs=1e-9)
    assert 30.0 < mine["target_removed"] < 30.0 + 5.0 + 1.0
    alone = lbsim.timeline(res.scenario).events
    mine = alone[alone["pod"] == victim].set_index("event")["t_s"]
    assert mine["target_removed"] == mine["deregistered"] == pytest.approx(30.0)
