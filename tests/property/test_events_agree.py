"""With [[events]], the compiled engines take the reference's every decision at any window size,
on both paths: random timelines of rollouts, scalings, crashes, drains and nodes joining, random
lifecycles, cloud settings, kube-proxy propagation and syncs, traffic policies, and (NodePort)
small tables and port ranges so that the SNAT and conntrack rules meet the pods' changes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lbsim import Scenario
from lbsim.simulation import simulate
from tests.property.test_engines_agree import assert_same


@st.composite
def timelines(draw):
    pods = draw(st.integers(1, 5))
    nodes = first_nodes = draw(st.integers(1, 3))
    times = sorted(draw(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=3)))
    events = []
    for t in times:
        kind = draw(st.sampled_from(["rollout", "scale", "crash", "drain", "add-node"]))
        if kind == "add-node":
            nodes += 1
            events.append({"at_s": t, "kind": "add-node"})
        elif kind == "drain":
            events.append({"at_s": t, "kind": "drain", "node": draw(st.integers(0, nodes - 1))})
        elif kind == "rollout":
            events.append({"at_s": t, "kind": "rollout"})
        elif kind == "scale":
            events.append({"at_s": t, "kind": "scale", "replicas": draw(st.integers(0, 6))})
        else:
            events.append({"at_s": t, "kind": "crash", "pod": draw(st.integers(0, 7))})
    nodeport = draw(st.booleans())
    d = {
        "path": "nodeport" if nodeport else "direct", "seed": draw(st.integers(0, 2**32)),
        "workload.protocol": draw(st.sampled_from(["tcp", "udp"])),
        "workload.flows": draw(st.integers(1, 400)),
        "workload.rate_per_s": draw(st.sampled_from([50.0, 400.0])),
        "workload.syn_retries": draw(st.integers(0, 3)),
        "workload.syn_rto_s": draw(st.sampled_from([0.05, 1.0])),
        "workload.udp_timeout_s": draw(st.sampled_from([0.05, 5.0])),
        "workload.hold_s": draw(st.sampled_from([0.0, 0.3, {"dist": "exponential", "mean": 1.0}])),
        "workload.clients": draw(st.sampled_from([1, 7, 500])),
        "workload.queries_per_socket": draw(st.sampled_from([1, 1, 4])),
        "workload.query_gap_s": draw(st.sampled_from([0.0, 0.05, 0.4])),
        "cluster.nodes": first_nodes, "cluster.pods": pods,
        "pod.workers": draw(st.integers(1, 3)),
        "pod.service_s": draw(st.sampled_from([0.0, 0.01, {"dist": "exponential", "mean": 0.05}])),
        "lb.instances": draw(st.integers(1, 3)),
        "lb.algorithm": draw(st.sampled_from(["rr", "source_hash"])),
        "lifecycle.startup_s": draw(st.sampled_from([0.0, 0.2, {"dist": "exponential",
                                                                 "mean": 0.5}])),
        "lifecycle.readiness_period_s": draw(st.sampled_from([0.1, 0.5])),
        "lifecycle.prestop_s": draw(st.sampled_from([0.0, 0.2])),
        "lifecycle.restart_backoff_s": draw(st.sampled_from([0.0, 0.3])),
        "lifecycle.termination_grace_s": draw(st.sampled_from([0.1, 30.0])),
        "deployment.max_surge": draw(st.sampled_from([0, 1, "50%"])),
        "deployment.max_unavailable": draw(st.sampled_from([0, 1, "25%"])),
        "deployment.readiness_gate": draw(st.booleans()),
        "cloud.profile": draw(st.sampled_from(["custom", "tencent-clb-direct"])),
        "cloud.registration_s": draw(st.sampled_from([0.0, 0.3, {"dist": "exponential",
                                                                  "mean": 0.5}])),
        "cloud.hc_interval_s": draw(st.sampled_from([0.1, 0.4])),
        "cloud.hc_timeout_s": draw(st.sampled_from([0.05, 1.0])),
        "cloud.hc_healthy_threshold": draw(st.integers(1, 3)),
        "cloud.deregistration_lag_s": draw(st.sampled_from([0.0, 0.2])),
        "cloud.deregistration_delay_s": draw(st.sampled_from([0.0, 1.0])),
        "cloud.draining_new_flows_s": draw(st.sampled_from([0.0, 0.5])),
        "records": draw(st.sampled_from(["full", "summary"])),
        "events": events,
    }
    if nodeport:
        d.update({
            "kube_proxy.mode": draw(st.sampled_from(["iptables", "nftables"])),
            "kube_proxy.external_traffic_policy": draw(st.sampled_from(["Cluster", "Local"])),
            "lb.health_check": draw(st.booleans()),
            "lifecycle.readiness_failure_threshold": draw(st.integers(1, 3)),
            "endpoints.propagation_s": draw(st.sampled_from(
                [0.0, 0.05, {"dist": "exponential", "mean": 0.2}])),
            "endpoints.min_sync_period_s": draw(st.sampled_from([0.0, 0.3])),
            "endpoints.sync_s": draw(st.sampled_from([0.0, 0.1, {"dist": "exponential",
                                                                   "mean": 0.1}])),
            "endpoints.terminating_fallback": draw(st.booleans()),
            "endpoints.udp_conntrack_cleanup": draw(st.booleans()),
            "cluster.cpus_per_node": draw(st.integers(1, 2)),
            "conntrack.max": draw(st.sampled_from([3, 40, 262144])),
            "conntrack.time_wait_s": draw(st.sampled_from([0.5, 120.0])),
            "nat.port_range": draw(st.sampled_from([None, [40000, 40003]])),
        })
        if d["nat.port_range"] is None:
            del d["nat.port_range"]
        d["cluster.packet_jitter_s"] = draw(st.sampled_from([0.0, {"dist": "exponential",
                                                                  "mean": 1e-5}]))
        d["cluster.snat_offset_s"] = draw(st.sampled_from([0.0, 4e-6]))
    pairs = draw(st.sampled_from(["none", "none", "same_port", "same_tuple"]))
    if pairs != "none":                      # racing pairs, kept together by the LB
        d.update({"workload.pairs": pairs, "workload.queries_per_socket": 1,
                  "workload.clients": max(2, d["workload.clients"]),
                  "workload.pair_offset_s": draw(st.sampled_from([0.0, 1e-5]))})
        if nodeport and draw(st.booleans()):
            d.update({"workload.pin_pairs": True, "cluster.cpus_per_node": 2})
    if draw(st.integers(0, 3)) == 0:         # a closed loop: each flow starts as one ends
        d.update({"workload.arrival": "closed_loop", "workload.queries_per_socket": 1,
                  "workload.pairs": "none", "workload.pin_pairs": False,
                  "workload.concurrency": draw(st.integers(1, d["workload.flows"])),
                  "workload.think_s": draw(st.sampled_from([0.0, 0.05]))})
    return Scenario().replace(**d)


@settings(max_examples=80)
@given(timelines(), st.sampled_from([1, 3, 64, 4096]))
def test_compiled_equals_reference_through_events(sc, batch):
    ref = simulate(sc, engine="reference")
    got = simulate(sc, batch_flows=batch)
    assert ref.resolved == sc.workload.flows
    assert_same(ref, got)
    assert np.array_equal(ref.workload.t0, got.workload.t0)     # a closed loop's starts too
    assert np.array_equal(ref.workload.backend, got.workload.backend)     # the LB's nodes
    assert np.array_equal(ref.pod_gone_ns, got.pod_gone_ns)
    assert ref.timeline.events.equals(got.timeline.events)
