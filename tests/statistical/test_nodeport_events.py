"""The NodePort path through scale-ins and rollouts: kube-proxy's propagation and syncs, flows
DNATed to a terminating or gone pod, the REJECT of an empty Service, and externalTrafficPolicy
Local's blackhole without KEP-1669's fallback (closed forms, exact record checks and
binomial bounds of 4 standard errors)."""

import math

import numpy as np

import lbsim
from lbsim.kernel import NS

RATE = 400.0
PROP, SYNC, MIN_SYNC = 0.3, 0.2, 1.0
BASE = {"path": "nodeport", "workload.rate_per_s": RATE, "workload.flows": 16_000,
        "workload.hold_s": 0.0, "cluster.nodes": 1, "cluster.pods": 4, "pod.workers": 32,
        "pod.service_s": 0.01, "lifecycle.startup_s": 1.0, "lifecycle.readiness_period_s": 1.0,
        "endpoints.propagation_s": PROP, "endpoints.sync_s": SYNC,
        "endpoints.min_sync_period_s": MIN_SYNC, "conntrack.time_wait_s": 1.0}


def run(**kw):
    return lbsim.run(lbsim.Scenario().replace(**{**BASE, **kw}))


def node_rows(res, event="rules"):
    n = res.timeline.nodes
    return n[n["event"] == event]


def at_node_s(res):
    """Each flow's first attempt reaching its node, s."""
    net = res.scenario.network
    return res.flows["arrival_s"].to_numpy() + net.client_to_lb_s + net.lb_to_backend_s


def test_a_new_pod_is_in_the_rules_after_propagation_and_sync_and_min_sync_batches():
    """Scale-outs at 10 s and 10.4 s: the first new pod is Ready at 11 s (started at 11 s,
    probed every second from its creation), its change reaches kube-proxy 0.3 s later and is
    in force 0.2 s after the sync starts: 11.5 s. The second is Ready at 11.4 s and heard at
    11.7 s, but the sync waits for min_sync_period after the last one's start (11.3 s): 12.5 s.
    No flow reaches a pod before its rules do; each gets flows at once after."""
    res = run(events=[{"at_s": 10.0, "kind": "scale", "replicas": 5},
                      {"at_s": 10.4, "kind": "scale", "replicas": 6}])
    pods = res.timeline.pods.set_index("pod")
    assert pods.loc[4, "ready_s"] == 11.0 and math.isclose(pods.loc[5, "ready_s"], 11.4)
    rules = node_rows(res)
    assert np.allclose(rules["t_s"], [11.0 + PROP + SYNC, 11.3 + MIN_SYNC + SYNC])
    assert rules["endpoints"].tolist() == [5, 6]
    assert math.isclose(pods.loc[4, "first_receiving_s"], 11.5)
    assert math.isclose(pods.loc[5, "first_receiving_s"], 12.5)
    t, pod = at_node_s(res), res.flows["pod"].to_numpy()
    for p, start in ((4, 11.5), (5, 12.5)):
        mine = t[pod == p]
        assert mine.min() >= start - 1e-9
        # at least 1 in 6 of the flows (400/s) picks it: none in 0.2 s has probability
        # exp(-400 x 0.2 / 6) < 2e-6
        assert mine.min() < start + 0.2


def test_flows_dnated_to_a_terminated_pod_before_the_rules_drop_it_fail_binomially():
    """A scale in (4 -> 3) with no preStop: the pod gets SIGTERM at the deletion and exits as
    soon as its connections close, while kube-proxy lists it until deletion + 0.3 + 0.2 s. Each
    flow reaching the node meanwhile picks it with probability 1/4 (the iptables cascade) and is
    refused or lost; with no retransmission it fails. Failures ~ Binomial(n, 1/4), n the flows
    in the window; none outside it."""
    res = run(**{"workload.syn_retries": 0},
              events=[{"at_s": 20.0, "kind": "scale", "replicas": 3}])
    deleted = res.timeline.pods.dropna(subset=["deleted_s"])
    assert deleted["pod"].tolist() == [3] and deleted["deleted_s"].iloc[0] == 20.0
    end = node_rows(res)["t_s"].iloc[0]
    assert math.isclose(end, 20.0 + PROP + SYNC)
    t = at_node_s(res)
    failed = res.flows["outcome"].to_numpy() == "failed"
    assert failed.any()
    assert t[failed].min() >= 20.0 and t[failed].max() < end
    n = int(np.count_nonzero((t >= 20.0) & (t < end)))
    k = int(failed.sum())
    assert abs(k - n / 4) < 4 * math.sqrt(n * 0.25 * 0.75), (k, n)
    causes = set(res.flows.loc[failed, "cause"].astype(str))
    assert causes <= {"refused", "pod_gone"}


def test_retransmitted_syns_follow_their_unanswered_entry_to_the_gone_pod():
    """A SYN DNATed to a pod that is gone leaves its entry SYN_SENT; each retransmission of the
    tuple matches it and goes to the same pod, so the flow fails after all its attempts even
    though the rules dropped the pod long before the last ones."""
    retries = 3
    res = run(**{"workload.syn_retries": retries, "workload.syn_rto_s": 1.0},
              events=[{"at_s": 20.0, "kind": "scale", "replicas": 3}])
    f = res.flows
    gone = f[f["cause"] == "pod_gone"]
    assert len(gone) > 0
    attempts = res.scenario.workload.retries + 1       # 8 SYNs in tcp_syn_retries = 3's 15 s
    assert attempts == 8
    assert (gone["outcome"] == "failed").all() and (gone["attempts"] == attempts).all()
    d = res.drops
    lost = d[d["flow"].isin(gone["flow"])]
    assert (lost["cause"] == "pod_gone").all()
    assert lost.groupby("flow").size().eq(attempts).all()
    end = node_rows(res)["t_s"].iloc[0]
    assert lost["t_s"].max() > end + 1.0            # retransmissions long after the rules


def test_a_prestop_sleep_covering_the_propagation_loses_nothing_in_a_rollout():
    res = run(**{"lifecycle.prestop_s": 2.0, "cluster.nodes": 3, "cluster.pods": 6},
              events=[{"at_s": 10.0, "kind": "rollout"}])
    s = res.summary
    assert s["failed"] == 0 and s["connections_reset"] == 0
    assert s["rollout_duration_s"] > 0 and s["min_serving_pods"] >= 4


def test_a_service_with_no_endpoint_rejects_every_new_flow_at_once():
    """Scale to 0 on a kube-proxy without the fallback: once the rules are empty (deletion +
    0.3 + 0.2 s) each new flow meets the REJECT rule and fails at its first attempt
    (no_endpoints), exactly those flows. With the fallback the terminating pods stay in the
    rules until they stop serving (after their SIGTERM at 21 s)."""
    kw = {"lifecycle.prestop_s": 1.0, "events": [{"at_s": 20.0, "kind": "scale", "replicas": 0}]}
    res = run(**kw, **{"endpoints.terminating_fallback": False})
    end = node_rows(res)["t_s"].iloc[-1]
    assert math.isclose(end, 20.0 + PROP + SYNC)
    t = at_node_s(res)
    f = res.flows
    rejected = (f["cause"] == "no_endpoints").to_numpy()
    assert np.array_equal(rejected, t >= end)
    assert (f.loc[rejected, "attempts"] == 1).all()
    assert f.loc[~rejected, "outcome"].eq("established").all()     # the preStop covered the rest
    kept = run(**kw)
    assert node_rows(kept)["t_s"].iloc[-1] >= 21.0 + PROP + SYNC
    assert kept.summary["fail_cause_no_endpoints"] < res.summary["fail_cause_no_endpoints"]


LOCAL = {"cluster.nodes": 3, "cluster.pods": 5, "cluster.placement": [2, 2, 1],
         "kube_proxy.external_traffic_policy": "Local", "cloud.profile": "tencent-clb-nodeport",
         "lifecycle.prestop_s": 25.0, "lifecycle.termination_grace_s": 60.0,
         "workload.syn_retries": 0, "workload.flows": 24_000,
         "events": [{"at_s": 30.0, "kind": "scale", "replicas": 4}]}


def test_local_blackholes_its_node_between_empty_rules_and_the_lbs_detection():
    """Without the fallback node 2's rules are empty from deletion + 0.5 s, and it drops the
    LB's flows until the LB's checks of its health-check node port (every 5 s, 3 failures)
    take it out: the flows lost are exactly those the LB sent to node 2 that reached it after
    its rules emptied, and the detection takes between 2 and 3 intervals after the change."""
    res = run(**LOCAL, **{"endpoints.terminating_fallback": False})
    rules = node_rows(res)
    empty = rules[(rules["node"] == 2) & (rules["endpoints"] == 0)]["t_s"].iloc[0]
    assert math.isclose(empty, 30.0 + PROP + SYNC)
    down = node_rows(res, "unhealthy")
    assert down["node"].tolist() == [2]
    t_down = down["t_s"].iloc[0]
    interval, threshold = 5.0, 3
    assert (threshold - 1) * interval < t_down - empty <= threshold * interval
    f, net = res.flows, res.scenario.network
    t_lb = f["arrival_s"].to_numpy() + net.client_to_lb_s
    expect = (f["node"].to_numpy() == 2) & (at_node_s(res) >= empty) & (t_lb < t_down)
    lost = (f["cause"] == "no_local_endpoint").to_numpy()
    assert lost.any() and np.array_equal(lost, expect)
    assert res.summary["failed"] == lost.sum()


def test_with_the_fallback_the_terminating_pod_serves_until_the_lb_moves_away():
    """With KEP-1669's fallback node 2 keeps its terminating pod in its rules until the pod
    stops serving (after its SIGTERM at 55 s), and the LB has moved away long before."""
    res = run(**LOCAL)
    assert res.summary["failed"] == 0
    rules = node_rows(res)
    assert rules[rules["node"] == 2]["t_s"].min() >= 30.0 + 25.0
    assert node_rows(res, "unhealthy")["t_s"].iloc[0] < 55.0
    late = res.flows[(res.flows["pod"] == 4) & (res.flows["arrival_s"] > 31.0)]
    assert len(late) > 0                            # it served after its deletion


def test_a_kill_resets_exactly_the_connections_open_at_the_pod():
    """40 s connections and a 6 s grace period: SIGKILL at deletion + 6 s cuts every
    connection whose client FIN had not reached the pod (hop included) by then."""
    res = run(**{"workload.hold_s": 40.0, "lifecycle.prestop_s": 1.0,
                 "lifecycle.termination_grace_s": 6.0, "cluster.nodes": 2,
                 "workload.flows": 20_000},
              events=[{"at_s": 20.0, "kind": "scale", "replicas": 3}])
    victim = res.timeline.pods.dropna(subset=["deleted_s"]).iloc[0]
    kill = victim["deleted_s"] + 6.0
    assert math.isclose(victim["gone_s"], kill)
    net = res.scenario.network
    f = res.flows
    on = f[(f["pod"] == victim["pod"]) & (f["outcome"] == "established")]
    hop = np.where(on["node"] != victim["node"], net.node_to_pod_s, 0.0)
    fin_at_pod = on["closed_s"] + net.client_to_lb_s + net.lb_to_backend_s + hop
    open_at_kill = int((fin_at_pod > kill + 1e-12).sum())
    assert res.summary["connections_reset"] == open_at_kill > 0
    assert res.summary["connections_reset"] == int(f["reset"].sum())
    assert NS == 10**9


UDP = {"workload.protocol": "udp", "workload.queries_per_socket": 20,
       "workload.query_gap_s": 0.5, "workload.udp_retries": 0, "workload.flows": 8000,
       "events": [{"at_s": 10.0, "kind": "scale", "replicas": 3}]}


def _udp(cleanup: bool):
    from lbsim.kernel import FAILED
    from lbsim.simulation import simulate
    sc = lbsim.Scenario().replace(**{**BASE, **UDP,
                                     "endpoints.udp_conntrack_cleanup": cleanup})
    r = simulate(sc)
    w = r.workload
    at_node = (w.t0 + w.params.d_in) / NS
    return r, r.outcome == FAILED, at_node, w.socket


def test_udp_sockets_follow_a_removed_pods_entry_until_kube_proxy_deletes_it():
    """A socket's datagrams share a tuple, so each follows the node's conntrack entry. Pod 3 is
    deleted at 10 s (SIGTERM at once) and leaves the rules at 10.5 s. Without the cleanup a
    socket pinned to it keeps following its entry (each datagram renews the 30 s timeout):
    once one of its datagrams fails, every later one does. With the cleanup the sync deletes
    those entries: nothing fails after it, and far fewer fail in all."""
    end = 10.0 + PROP + SYNC
    stale, failed, at_node, sock = _udp(False)
    assert failed.any() and at_node[failed].min() >= 10.0
    first_fail = {}
    for i in np.flatnonzero(failed):
        first_fail.setdefault(int(sock[i]), at_node[i])
    for s, t in first_fail.items():
        later = (sock == s) & (at_node >= t)
        assert failed[later].all(), s                  # the socket never recovers
    assert at_node[failed].max() > end + 5.0
    clean, cfailed, cat, _ = _udp(True)
    assert cfailed.any() and cat[cfailed].min() >= 10.0 and cat[cfailed].max() < end
    assert cfailed.sum() * 5 < failed.sum()
