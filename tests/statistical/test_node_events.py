"""Node events through the data plane: ``kubectl drain`` (cordon, evict the node's pods at once)
and a node joining, on both paths (exact record checks against the timeline, and a count of
4 standard errors)."""

import math

import numpy as np
import pytest

import lbsim
from lbsim.rng import Streams

RATE = 400.0
PROP, SYNC = 0.3, 0.2
BASE = {"workload.rate_per_s": RATE, "workload.flows": 16_000, "workload.hold_s": 0.0,
        "workload.syn_retries": 0, "cluster.nodes": 3, "cluster.pods": 6, "pod.workers": 32,
        "pod.service_s": 0.01, "lifecycle.startup_s": 7.0, "lifecycle.readiness_period_s": 1.0,
        "endpoints.propagation_s": PROP, "endpoints.sync_s": SYNC,
        "cloud.profile": "custom", "cloud.registration_s": 4.0, "cloud.hc_interval_s": 3.0,
        "cloud.hc_healthy_threshold": 2, "cloud.hc_unhealthy_threshold": 10,
        "conntrack.time_wait_s": 1.0}


def run(**kw):
    return lbsim.run(lbsim.Scenario().replace(**{**BASE, **kw}))


def times(res):
    """Each flow's first attempt at the LB and at its node (or pod, direct), s."""
    net = res.scenario.network
    t = res.flows["arrival_s"].to_numpy()
    return t + net.client_to_lb_s, t + net.client_to_lb_s + net.lb_to_backend_s


def node_rows(res, event):
    n = res.timeline.nodes
    return n[n["event"] == event]


def test_evicted_pods_lose_exactly_the_flows_the_lb_still_sends_them():
    """Direct: node 0 drained at 20 s evicts pods 0 and 3 (spread: pod i on node i % 3); with no
    preStop they refuse from 20 s and are gone once their last request ends, while the LB
    deregisters them 1 s later and sends them new flows 5 s more (still healthy: 10 failed
    checks take 30 s). The flows lost are exactly those reaching them from 20 s on; the LB's
    round robin over its 6 targets gives them a third of the flows in the 6 s window:
    Poisson(rate x 6 s) / 3, within 4 standard errors and one turn of the robin. (The flows
    table names no pod for a failed direct flow, so the check is by window: every flow that
    failed came in it, every other flow in it was served by a pod that stayed.)"""
    res = run(**{"path": "direct", "cloud.deregistration_lag_s": 1.0,
                 "cloud.draining_new_flows_s": 5.0, "cloud.deregistration_delay_s": 10.0},
              events=[{"at_s": 20.0, "kind": "drain", "node": 0}])
    pods = res.timeline.pods.set_index("pod")
    evicted = pods.index[pods["deleted_s"] == 20.0].tolist()
    assert evicted == [0, 3]
    assert (pods.loc[6:, "node"] != 0).all() and len(pods) == 8
    stop = pods.loc[evicted, "last_receiving_s"]
    assert np.allclose(stop, 26.0)
    t_lb, t_pod = times(res)
    f = res.flows
    failed = (f["outcome"] == "failed").to_numpy()
    window = (t_pod >= 20.0) & (t_lb < 26.0)
    assert failed.any() and not (failed & ~window).any()
    served = f[window & ~failed]
    assert (served["outcome"] == "established").all() and not served["pod"].isin(evicted).any()
    assert f.loc[~window & (t_pod >= 20.0), "pod"].isin(evicted).sum() == 0
    assert set(f.loc[failed, "cause"].astype(str)) <= {"refused", "pod_gone"}
    mean = RATE * 6.0
    k = int(failed.sum())
    assert abs(k - mean / 3) < 4 * math.sqrt(mean) / 3 + 1, k


def test_a_drained_local_node_blackholes_until_the_lb_finds_it_down():
    """NodePort, Local, no KEP-1669 fallback: draining node 2 (its one pod) empties its rules at
    20 + 0.3 + 0.2 s while the node stays the LB's target (cordoning changes no target); it
    drops what the LB sends until its health-check node port has failed 10 checks. Exactly
    those flows are lost. The replacement goes to a node with the fewest pods (0 or 1)."""
    res = run(**{"path": "nodeport", "cluster.pods": 5, "cluster.placement": [2, 2, 1],
                 "kube_proxy.external_traffic_policy": "Local",
                 "endpoints.terminating_fallback": False, "lifecycle.prestop_s": 5.0,
                 "cloud.hc_unhealthy_threshold": 3},
              events=[{"at_s": 20.0, "kind": "drain", "node": 2}])
    pods = res.timeline.pods.set_index("pod")
    assert pods.loc[4, "deleted_s"] == 20.0 and pods.loc[5, "node"] in (0, 1)
    rules = node_rows(res, "rules")
    empty = rules[(rules["node"] == 2) & (rules["endpoints"] == 0)]["t_s"].iloc[0]
    assert math.isclose(empty, 20.0 + PROP + SYNC)
    down = node_rows(res, "unhealthy")
    assert down["node"].tolist() == [2]
    t_down = down["t_s"].iloc[0]
    assert 2 * 3.0 < t_down - empty <= 3 * 3.0
    t_lb, t_node = times(res)
    f = res.flows
    expect = (f["node"].to_numpy() == 2) & (t_node >= empty) & (t_lb < t_down)
    lost = (f["cause"] == "no_local_endpoint").to_numpy()
    assert lost.any() and np.array_equal(lost, expect)
    assert res.summary["failed"] == lost.sum()
    assert node_rows(res, "cordoned")[["t_s", "node"]].values.tolist() == [[20.0, 2]]


def test_a_cordoned_cluster_node_keeps_forwarding():
    """Under Cluster a drained node stays a target and its kube-proxy forwards to the pods
    elsewhere: with a preStop covering the propagation nothing fails, and the node keeps
    taking a third of the flows to the end."""
    res = run(**{"path": "nodeport", "lifecycle.prestop_s": 2.0},
              events=[{"at_s": 20.0, "kind": "drain", "node": 0}])
    assert res.summary["failed"] == 0
    t_lb, _ = times(res)
    f = res.flows
    late = f[t_lb > 21.0]
    share = (late["node"] == 0).mean()
    n = len(late)
    assert abs(share - 1 / 3) < 4 * math.sqrt(1 / 3 * 2 / 3 / n) + 1 / n
    assert not late["pod"].isin([0, 3]).any()          # the evicted pods took none


def test_a_joined_node_takes_flows_once_registered_and_healthy_and_hosts_new_pods():
    """NodePort, Cluster: node 3 joins at 10 s. Its kube-proxy's rules are in force 0.5 s later;
    the LB registers it at 14 s, checks it from a drawn phase every 3 s and takes it after 2
    passes. No flow reaches it before; the LB's round robin over 4 nodes sends it one of the
    next few flows after. A scale-out at 12 s binds both new pods to the empty node, and the
    flows table's second hops follow the pods' nodes."""
    res = run(**{"path": "nodeport"},
              events=[{"at_s": 10.0, "kind": "add-node"},
                      {"at_s": 12.0, "kind": "scale", "replicas": 8}])
    n3 = res.timeline.nodes[res.timeline.nodes["node"] == 3].groupby("event",
                                                                     observed=True)["t_s"].min()
    assert n3["joined"] == 10.0 and math.isclose(n3["rules"], 10.0 + PROP + SYNC)
    assert math.isclose(n3["registered"], 14.0)
    u = Streams(res.scenario.seed).uniform("control", np.array([(1 << 36) + 3]), 0, 0)[0]
    healthy = 14.0 + int(u * 3e9) / 1e9 + 3.0
    assert math.isclose(n3["healthy"], healthy, abs_tol=1e-9)
    t_lb, _ = times(res)
    f = res.flows
    to3 = t_lb[f["node"].to_numpy() == 3]
    assert to3.min() >= healthy
    # 4 nodes in the robin: no 4 arrivals in 0.05 s (mean 20) has probability < 1e-5
    assert to3.min() < healthy + 0.05
    pods = res.timeline.pods.set_index("pod")
    assert pods.loc[[6, 7], "node"].tolist() == [3, 3]
    est = f[f["outcome"] == "established"]
    assert np.array_equal(est["second_hop"].to_numpy(),
                          est["node"].to_numpy() != pods.loc[est["pod"], "node"].to_numpy())
    assert (est["pod"].isin([6, 7]) & (est["node"] != 3)).any()


@pytest.mark.parametrize("path", ["direct", "nodeport"])
def test_a_drain_that_changes_nothing_and_pods_left_pending_are_warned_of(path):
    """Draining the only node leaves the replacements pending (node -1, no flow reaches them);
    draining it again changes nothing. Both say so."""
    res = run(**{"path": path, "cluster.nodes": 1, "cluster.pods": 2,
                 "workload.flows": 4000, "lb.health_check": False,
                 "endpoints.terminating_fallback": False},
              events=[{"at_s": 5.0, "kind": "drain", "node": 0},
                      {"at_s": 6.0, "kind": "drain", "node": 0}])
    pods = res.timeline.pods
    assert pods.loc[pods["deleted_s"].isna(), "node"].tolist() == [-1, -1]
    load = res.load.groupby("pod")["node"].first()
    assert load.to_dict() == pods.set_index("pod")["node"].to_dict()      # the records agree
    assert res.timeline.ignored == (1,)
    said = " | ".join(res.warnings)
    assert "events[1] (drain of node 0 at 6 s) changed nothing" in said
    assert "2 pods were still pending when the run ended" in said
    t_lb, _ = times(res)
    f = res.flows
    # direct: the LB has no target; NodePort: the rules REJECT once they are empty
    late = 5.0 + 1e-3 if path == "direct" else 5.0 + PROP + SYNC + 1e-3
    assert (f.loc[t_lb >= late, "cause"] == ("no_target" if path == "direct"
                                             else "no_endpoints")).all()


def test_a_joined_node_answers_nothing_before_its_kube_proxys_first_sync():
    """With no health checks and a registration faster than the node's first sync, the LB
    sends flows to a node that has no rules yet: nothing listens on its NodePort (the host's
    RST), so exactly the flows reaching it before its first rules fail at once; later ones
    are served. Under the node's rules, a pod deleted at the join is not among them."""
    res = run(**{"path": "nodeport", "lb.health_check": False, "cloud.registration_s": 0.1,
                 "endpoints.propagation_s": 2.0, "workload.flows": 8000},
              events=[{"at_s": 10.0, "kind": "add-node"},
                      {"at_s": 10.0, "kind": "scale", "replicas": 3}])
    n3 = res.timeline.nodes[res.timeline.nodes["node"] == 3]
    first = n3[n3["event"] == "rules"]["t_s"].min()
    assert math.isclose(first, 10.0 + 2.0 + SYNC)
    _, t_node = times(res)
    f = res.flows
    to3 = f["node"].to_numpy() == 3
    early = to3 & (t_node < first)
    assert early.sum() > 0
    assert (f.loc[early, "cause"] == "no_endpoints").all() and (f.loc[early, "attempts"] == 1).all()
    assert (f.loc[to3 & (t_node >= first), "outcome"] == "established").all()


def test_packed_pods_stay_on_their_nodes_and_per_node_metrics_count_nodes_that_joined():
    """placement = "packed" is a nodeSelector: draining packed node 0 moves its pods to packed
    node 1 and never to node 2 nor to a node added; an add-node after the last arrival does
    not change the per-node load (its node never existed while flows ran)."""
    kw = {"path": "direct", "cluster.placement": "packed", "cluster.packed_nodes": 2,
          "workload.flows": 4000, "cluster.pods": 4}
    res = run(**kw, events=[{"at_s": 5.0, "kind": "add-node"},
                            {"at_s": 10.0, "kind": "drain", "node": 0}])
    pods = res.timeline.pods
    assert (pods.loc[pods["deleted_s"].isna(), "node"] == 1).all()
    late = run(**kw, events=[{"at_s": 10.0, "kind": "drain", "node": 0},
                             {"at_s": 2999.0, "kind": "add-node"}])
    plain = run(**kw, events=[{"at_s": 10.0, "kind": "drain", "node": 0}])
    assert late.flows.equals(plain.flows)
    assert late.summary["node_load_max_over_mean"] == plain.summary["node_load_max_over_mean"]
