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
    with pytest.raises(ValueError, match=r"events\[0\]\.kind = 'remove-node' is invalid: must "
                                         r"be one of \['rollout', 'scale', 'crash', 'drain', "
                                         r"'add-node'\]"):
        scenario([{"at_s": 1.0, "kind": "remove-node"}])
    with pytest.raises(ValueError, match=r"events\[0\]\.node = None is invalid"):
        scenario([{"at_s": 1.0, "kind": "drain"}])
    # node 2 exists only from the add-node event on: a drain before it names no node
    with pytest.raises(ValueError, match=r"events\[0\]\.node = 2 is invalid: must be in \[0, 1\] "
                                         r"\(the nodes at 1 s"):
        scenario([{"at_s": 1.0, "kind": "drain", "node": 2}, {"at_s": 2.0, "kind": "add-node"}])
    scenario([{"at_s": 1.0, "kind": "add-node"}, {"at_s": 1.0, "kind": "drain", "node": 2}])
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


def test_a_drain_cordons_the_node_and_evicts_its_pods_at_once():
    """kubectl drain: node 0 cordoned at 10 s, each of its pods deleted then (the Eviction API
    without a PodDisruptionBudget), the ReplicaSet's replacements created at once and bound
    to the other node, ready their probe delay later; the node stays (no LB change on it)."""
    sc = scenario([{"at_s": 10.0, "kind": "drain", "node": 0}], **{"cluster.pods": 4})
    tl = lbsim.timeline(sc)
    pods = tl.pods.set_index("pod")
    on0 = [0, 2]                                           # spread: pod i on node i % 2
    assert (pods.loc[on0, "deleted_s"] == 10.0).all()
    assert pods.loc[[1, 3], "deleted_s"].isna().all()
    new = pods.loc[4:]
    assert len(new) == 2 and (new["created_s"] == 10.0).all() and (new["node"] == 1).all()
    assert new["ready_s"].to_numpy() == pytest.approx(10.0 + probe_ready_after(sc.lifecycle))
    ev = tl.events
    assert set(ev[ev["event"] == "evicted"]["pod"]) == set(on0)
    assert tl.nodes[["t_s", "node", "event"]].values.tolist() == [[10.0, 0, "cordoned"]]
    # a second drain of the emptied node changes nothing and is reported
    tl2 = lbsim.timeline(scenario([{"at_s": 10.0, "kind": "drain", "node": 0},
                                   {"at_s": 50.0, "kind": "drain", "node": 0}],
                                  **{"cluster.pods": 4}))
    assert tl2.ignored == (1,) and len(tl2.pods) == 6


def test_replacements_go_to_the_node_with_fewest_pods_and_wait_for_a_schedulable_one():
    """Both nodes drained: the replacements stay pending (no container, nothing starts) until a
    node joins; then they are bound to it at once and start from that instant."""
    sc = scenario([{"at_s": 10.0, "kind": "drain", "node": 0},
                   {"at_s": 20.0, "kind": "drain", "node": 1},
                   {"at_s": 30.0, "kind": "add-node"}], **{"cluster.pods": 4})
    tl = lbsim.timeline(sc)
    ev = tl.events
    pending = ev[ev["event"] == "pending"]
    scheduled = ev[ev["event"] == "scheduled"]
    live = tl.pods[tl.pods["deleted_s"].isna()]
    assert len(live) == 4 and (live["node"] == 2).all()
    # the pods made at 10 s went to node 1, were evicted at 20 s with the rest, and the four
    # replacements made then waited for node 2
    assert set(pending["pod"]) == set(live["pod"]) and (pending["t_s"] == 20.0).all()
    assert set(scheduled["pod"]) == set(live["pod"])
    assert scheduled["t_s"].to_numpy() == pytest.approx(30.0)
    step = probe_ready_after(sc.lifecycle)
    assert live["ready_s"].to_numpy() == pytest.approx(30.0 + step)
    # every old target is gone, so none is healthy: the LB fails open to each new one as soon
    # as it is registered, before its checks pass
    assert live["first_receiving_s"].to_numpy() == pytest.approx(30.0 + step + 4.0)


def test_a_node_that_joins_becomes_an_lb_target_after_registration_and_checks():
    """NodePort, Cluster: node 2 joins at 5 s; its kube-proxy lists the Service after one
    propagation delay and syncs (0.5 + 0.2 s), the LB registers it R = 4 s after it joined
    and finds it healthy at its first check + (healthy_threshold - 1) intervals; a drained
    node stays a target and its kube-proxy keeps its rules."""
    sc = scenario([{"at_s": 5.0, "kind": "add-node"}, {"at_s": 8.0, "kind": "drain", "node": 0}],
                  **{"path": "nodeport", "endpoints.propagation_s": 0.5,
                     "endpoints.sync_s": 0.2})
    tl = lbsim.timeline(sc)
    n2 = tl.nodes[tl.nodes["node"] == 2].set_index("event")
    assert n2.loc["joined", "t_s"] == 5.0
    assert n2.loc["rules", "t_s"].min() == pytest.approx(5.7)
    assert n2.loc["registered", "t_s"] == pytest.approx(9.0)
    u = Streams(sc.seed).uniform("control", np.array([(1 << 36) + 2]), 0, 0)[0]
    first = 9.0 + int(u * round(3.0 * NS)) / NS
    assert n2.loc["healthy", "t_s"] == pytest.approx(first + 3.0, abs=1e-9)
    assert "unhealthy" not in set(tl.nodes["event"])
    assert set(tl.nodes[tl.nodes["node"] == 0]["event"]) == {"cordoned", "rules"}
