"""The control plane on its own (lbsim.timeline): with fixed delays, every instant is the closed
form of the mechanism it models (probe periods, registration, health checks, the Deployment's
rolling update, draining)."""

import math

import numpy as np
import pytest

import lbsim
from lbsim.control.cluster import _D_HC_PHASE
from lbsim.kernel import NS
from lbsim.rng import Streams


def scenario(events, **kw):
    base = {"path": "direct", "cluster.nodes": 2, "cluster.pods": 3, "cloud.profile": "custom",
            "lifecycle.startup_s": 7.0, "lifecycle.readiness_initial_delay_s": 2.0,
            "lifecycle.readiness_period_s": 5.0, "lifecycle.readiness_success_threshold": 2,
            "deployment.max_surge": 1, "deployment.max_unavailable": 0,
            "cloud.registration_s": 4.0, "cloud.hc_interval_s": 3.0,
            "cloud.hc_healthy_threshold": 2, "cloud.hc_unhealthy_threshold": 2}
    base.update(kw)
    return lbsim.Scenario().replace(**base, events=events)


def phase_s(sc, pod):
    """The health checks' phase of ``pod``'s target (the model's draw), s."""
    u = Streams(sc.seed).uniform("control", np.array([pod]), 0, 2 * _D_HC_PHASE)[0]
    return int(u * round(sc.cloud.hc_interval_s * NS)) / NS


def probe_ready_after(lc):
    """Creation to containers ready: the first probe that finds the server up, then
    successThreshold - 1 more periods."""
    k = max(0, math.ceil((lc.startup_s.value - lc.readiness_initial_delay_s)
                         / lc.readiness_period_s))
    return lc.readiness_initial_delay_s + (k + lc.readiness_success_threshold - 1) \
        * lc.readiness_period_s


def test_the_steady_state_has_every_pod_receiving_from_the_start():
    tl = lbsim.timeline(scenario([]))
    assert len(tl.pods) == 3 and (tl.pods["first_receiving_s"] == 0).all()
    assert math.isnan(tl.summary["rollout_duration_s"])
    assert tl.summary["min_receiving_pods"] == 3 and tl.summary["refusing_receiving_s"] == 0


def test_a_rollout_without_gate_replaces_one_pod_per_probe_delay():
    """maxSurge 1, maxUnavailable 0: each new pod is created when the one before is available,
    and is ready (in Kubernetes) its probe delay later: the rollout takes pods x that delay."""
    sc = scenario([{"at_s": 10.0, "kind": "rollout"}])
    tl = lbsim.timeline(sc)
    step = probe_ready_after(sc.lifecycle)                 # 2 + (1 + 2 - 1) x 5 = 12 s
    assert step == 12.0
    new = tl.pods[tl.pods["revision"] == 1].reset_index(drop=True)
    assert len(new) == 3
    for i, row in new.iterrows():
        assert row["created_s"] == pytest.approx(10.0 + i * step, abs=1e-9)
        assert row["ready_s"] == pytest.approx(row["created_s"] + step, abs=1e-9)
        assert row["registered_s"] == pytest.approx(row["containers_ready_s"] + 4.0, abs=1e-9)
    assert tl.summary["rollout_duration_s"] == pytest.approx(3 * step, abs=1e-9)
    old = tl.pods[tl.pods["revision"] == 0]
    assert sorted(old["deleted_s"]) == pytest.approx([10 + step, 10 + 2 * step, 10 + 3 * step])


def test_a_new_target_takes_flows_once_its_health_checks_pass():
    """Registered R after its containers are ready, checked from a drawn phase every interval:
    healthy at registered + phase + (healthy_threshold - 1) x interval."""
    sc = scenario([{"at_s": 10.0, "kind": "rollout"}])
    tl = lbsim.timeline(sc)
    for _, row in tl.pods[tl.pods["revision"] == 1].iterrows():
        healthy = row["registered_s"] + phase_s(sc, int(row["pod"])) + 1 * 3.0
        assert row["first_receiving_s"] == pytest.approx(healthy, abs=1e-9)


def test_with_a_readiness_gate_the_rollout_waits_for_the_lb():
    """With the gate a pod is Ready at its target's healthy instant, so each step also waits for
    registration and the health checks: the rollout is the sum of the steps."""
    sc = scenario([{"at_s": 10.0, "kind": "rollout"}], **{"deployment.readiness_gate": True})
    tl = lbsim.timeline(sc)
    new = tl.pods[tl.pods["revision"] == 1].reset_index(drop=True)
    t = 10.0
    for _, row in new.iterrows():
        assert row["created_s"] == pytest.approx(t, abs=1e-9)
        healthy = t + probe_ready_after(sc.lifecycle) + 4.0 + phase_s(sc, int(row["pod"])) + 3.0
        assert row["ready_s"] == pytest.approx(healthy, abs=1e-9)
        assert row["first_receiving_s"] == pytest.approx(healthy, abs=1e-9)
        t = healthy
    assert tl.summary["rollout_duration_s"] == pytest.approx(t - 10.0, abs=1e-9)
    assert tl.summary["time_to_receive_p99_s"] == pytest.approx(0.0, abs=1e-9)
    plain = lbsim.timeline(scenario([{"at_s": 10.0, "kind": "rollout"}]))
    assert tl.summary["rollout_duration_s"] > plain.summary["rollout_duration_s"]


def test_without_a_gate_a_slow_registration_leaves_the_lb_with_no_target():
    """Registration (60 s) slower than readiness: every old pod is deleted before any new target
    is registered, so the LB has nothing to send to; with the gate it always has."""
    kw = {"cloud.registration_s": 60.0, "cluster.pods": 2}
    plain = lbsim.timeline(scenario([{"at_s": 10.0, "kind": "rollout"}], **kw))
    gated = lbsim.timeline(scenario([{"at_s": 10.0, "kind": "rollout"}], **kw,
                                    **{"deployment.readiness_gate": True}))
    assert plain.summary["min_receiving_pods"] == 0
    assert gated.summary["min_receiving_pods"] >= 1
    assert plain.summary["time_to_receive_p50_s"] > 60.0


def test_a_draining_target_stops_taking_flows_at_the_first_of_its_two_limits():
    """Deregistered at deletion + lag; new flows go on for draining_new_flows_s unless the
    health checks fail first (SIGTERM after the preStop sleep closes the listener)."""
    for new_flows, prestop in ((5.0, 100.0), (100.0, 0.0)):
        sc = scenario([{"at_s": 10.0, "kind": "scale", "replicas": 2}],
                      **{"cloud.deregistration_lag_s": 1.5, "cloud.draining_new_flows_s": new_flows,
                         "lifecycle.prestop_s": prestop, "lifecycle.termination_grace_s": 200.0})
        tl = lbsim.timeline(sc)
        gone = tl.pods[tl.pods["deleted_s"].notna()]
        assert len(gone) == 1
        row = gone.iloc[0]
        assert row["deleted_s"] == 10.0 and row["deregistered_s"] == 11.5
        sigterm = 10.0 + prestop
        # checks from the phase every 3 s: the 2nd failing one after SIGTERM marks it
        # unhealthy, once it times out (min(timeout 5 s, interval 3 s)): with no data plane
        # nothing is open, so the server exits at SIGTERM and nobody answers
        ph = phase_s(sc, int(row["pod"]))
        first_fail = ph + 3.0 * math.ceil((sigterm - ph) / 3.0)
        unhealthy = first_fail + 3.0 + 3.0
        assert row["last_receiving_s"] == pytest.approx(min(11.5 + new_flows, unhealthy),
                                                        abs=1e-9)


def test_scaling_in_deletes_the_most_recently_ready_and_out_adds_pods():
    sc = scenario([{"at_s": 5.0, "kind": "scale", "replicas": 5},
                   {"at_s": 100.0, "kind": "scale", "replicas": 3}])
    tl = lbsim.timeline(sc)
    assert len(tl.pods) == 5
    deleted = tl.pods[tl.pods["deleted_s"].notna()]
    assert sorted(deleted["pod"]) == [3, 4] and (deleted["deleted_s"] == 100.0).all()


def test_a_timeline_is_a_pure_function_of_the_scenario():
    sc = scenario([{"at_s": 10.0, "kind": "rollout"}], **{"cloud.registration_s":
                                                          {"dist": "exponential", "mean": 5.0}})
    a, b = lbsim.timeline(sc), lbsim.timeline(sc)
    assert a.pods.equals(b.pods) and a.events.equals(b.events)
    c = lbsim.timeline(sc.replace(seed=2))
    assert not a.pods.equals(c.pods)


def test_max_surge_may_pass_100_percent_and_max_unavailable_may_not():
    """Kubernetes bounds maxUnavailable by 100 %, not maxSurge: "200%" of 3 replicas creates
    every new pod at once (rounded up), and the rollout takes one probe delay."""
    sc = scenario([{"at_s": 10.0, "kind": "rollout"}], **{"deployment.max_surge": "200%"})
    tl = lbsim.timeline(sc)
    new = tl.pods[tl.pods["revision"] == 1]
    assert len(new) == 3 and (new["created_s"] == 10.0).all()
    assert tl.summary["rollout_duration_s"] == pytest.approx(probe_ready_after(sc.lifecycle))
    with pytest.raises(ValueError, match=r"deployment.max_unavailable = '150%' is invalid"):
        scenario([], **{"deployment.max_unavailable": "150%"})


def test_an_event_kind_not_modelled_is_refused_not_ignored():
    with pytest.raises(ValueError, match=r"events\[0\]\.kind = 'drain' is invalid: must be one "
                                         r"of \['rollout', 'scale', 'crash'\]"):
        scenario([{"at_s": 1.0, "kind": "drain"}])
    with pytest.raises(ValueError, match=r"events\[0\]\.replicas = 2 is invalid"):
        scenario([{"at_s": 1.0, "kind": "rollout", "replicas": 2}])
    with pytest.raises(ValueError, match=r"events\[0\]\.pod = None is invalid"):
        scenario([{"at_s": 1.0, "kind": "crash"}])
    with pytest.raises(ValueError, match=r"events\[0\]\.pod = 1 is invalid: must be unset"):
        scenario([{"at_s": 1.0, "kind": "scale", "replicas": 2, "pod": 1}])


def test_a_crash_restarts_the_container_in_place():
    """The crashed pod is not Ready at once, listens again restart_backoff_s + startup_s later
    and is Ready at its next passing probe; the Deployment creates no pod for it. A crash of a
    pod that does not exist changes nothing and is reported."""
    sc = scenario([{"at_s": 5.0, "kind": "crash", "pod": 0},
                   {"at_s": 6.0, "kind": "crash", "pod": 40}])
    tl = lbsim.timeline(sc)
    assert len(tl.pods) == sc.cluster.pods
    ev = tl.events[tl.events["pod"] == 0].set_index("event")["t_s"]
    lc = sc.lifecycle
    up = 5.0 + lc.restart_backoff_s + lc.startup_s.value
    assert ev["crashed"] == 5.0 and ev["restarted"] == pytest.approx(up)
    assert ev["ready_again"] >= ev["restarted"]
    assert ev["ready_again"] - ev["restarted"] <= lc.readiness_success_threshold * lc.readiness_period_s
    assert tl.ignored == (1,)


def test_a_crashed_pod_is_not_counted_as_accepting_until_it_restarts():
    sc = scenario([{"at_s": 5.0, "kind": "crash", "pod": 0}])
    tl = lbsim.timeline(sc)
    ev = tl.events[tl.events["pod"] == 0].set_index("event")["t_s"]
    rec = tl.receiving
    # the LB still sends to it until its checks find it unhealthy: it refuses meanwhile
    during = rec[(rec["t_s"] >= 5.0) & (rec["t_s"] < ev["unhealthy"])]
    assert len(during) and (during["accepting"] < during["pods"]).all()
    assert tl.summary["refusing_receiving_s"] == pytest.approx(ev["unhealthy"] - 5.0)
    assert tl.summary["refusing_receiving_s"] > 0
    assert tl.summary["min_accepting_receiving_pods"] == sc.cluster.pods - 1
