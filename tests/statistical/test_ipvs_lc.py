"""IPVS least connections as the kernel counts (ip_vs_lc: active x 256 + inactive, a connection
active until it closes, its queueing at the pod included, then inactive for IPVS's 120 s
closing timeouts), against the supermarket model and against iptables' random choice."""

import numpy as np
import pytest

import lbsim
from lbsim import scenarios

pytestmark = pytest.mark.slow

RHO, PODS = 0.9, 20
ONE_NODE = {  # one node sees every connection, so lc is join-the-shortest-queue on the pods
    "cluster.nodes": 1, "cluster.pods": PODS, "pod.workers": 1,
    "pod.service_s": {"dist": "exponential", "mean": 0.1}, "workload.rate_per_s": RHO * PODS / 0.1,
    "workload.flows": 60_000, "network.client_to_lb_s": 0.0, "network.lb_to_backend_s": 0.0,
    "network.node_to_pod_s": 0.0, "cluster.packet_time_s": 0.0, "workload.clients": 1 << 20,
}


def _at_least(flows, pods, i, batches=10):
    """Time-averaged fraction of pods with at least ``i`` requests (in service or waiting), per
    batch of the run's span: each established flow occupies its pod from its arrival to its
    response (no latencies here)."""
    f = flows[flows["outcome"] == "established"]
    start, end = f["arrival_s"].to_numpy(), (f["arrival_s"] + f["response_time_s"]).to_numpy()
    pod = f["pod"].to_numpy()
    t = np.concatenate([start, end])
    d = np.concatenate([np.ones(start.size), -np.ones(end.size)])
    p = np.concatenate([pod, pod])
    o = np.argsort(t, kind="stable")
    t, d, p = t[o], d[o], p[o]
    n = np.zeros(pods)
    span = start.max()
    edges = np.linspace(span * 0.1, span, batches + 1)    # 10 % warm-up
    acc = np.zeros(batches)
    prev = 0.0
    for k in range(t.size):
        frac = (n >= i).mean()
        lo, hi = prev, min(t[k], span)
        if hi > lo:
            for b in range(batches):
                ov = min(hi, edges[b + 1]) - max(lo, edges[b])
                if ov > 0:
                    acc[b] += frac * ov
        prev = t[k]
        n[p[k]] += d[k]
    return acc / np.diff(edges)


@pytest.mark.parametrize("i", [2, 3])
def test_ipvs_lc_stays_within_the_supermarket_bound_where_random_does_not(i):
    """Mitzenmacher's supermarket model: with two random choices per arrival the fraction of
    queues with at least i jobs tends to rho^(2^i - 1); joining the shortest of all queues does
    at least as well. Random choice (M/M/1 per pod) has rho^i, above that bound."""
    bound = RHO ** (2 ** i - 1)
    lc = lbsim.run(lbsim.Scenario().replace(**{**ONE_NODE, "kube_proxy.mode": "ipvs",
                                               "kube_proxy.ipvs_scheduler": "lc"}))
    x = _at_least(lc.flows, PODS, i)
    assert x.mean() + 4 * x.std(ddof=1) / np.sqrt(x.size) < bound, (x.mean(), bound)
    rnd = lbsim.run(lbsim.Scenario().replace(**ONE_NODE))
    y = _at_least(rnd.flows, PODS, i)
    assert y.mean() - 4 * y.std(ddof=1) / np.sqrt(y.size) > bound, (y.mean(), bound)
    assert abs(y.mean() - RHO ** i) < 4 * y.std(ddof=1) / np.sqrt(y.size) + 0.02


def test_ipvs_lc_on_the_default_scenario_no_longer_piles_onto_the_first_pods():
    """Counting only 2 x latency + service + hold, every node's ties went to its first pods (p50
    18.7 s). As the kernel counts, lc spreads as evenly as round robin: with many short
    connections the least-loaded pod is the one whose inactive connections expired first,
    which is round robin's order (the same choices, here). Its tail is worse than iptables'
    random choice behind a round-robin LB: every node's scheduler starts at the same pod and
    gets every 10th flow, so the nodes move in lockstep and send their k-th flows to one pod
    within milliseconds (docs/design.md)."""
    base = scenarios.get("default", quick=True)
    rnd = lbsim.run(base).summary
    lc = lbsim.run(base.replace(**{"kube_proxy.mode": "ipvs",
                                   "kube_proxy.ipvs_scheduler": "lc"})).summary
    rr = lbsim.run(base.replace(**{"kube_proxy.mode": "ipvs",
                                   "kube_proxy.ipvs_scheduler": "rr"})).summary
    assert lc["failed"] == 0 and lc["pod_load_max_over_mean"] <= rnd["pod_load_max_over_mean"]
    assert lc["response_time_p50_s"] < 2 * base.pod.service_s.mean + 0.01
    assert lc["response_time_p99_s"] == pytest.approx(rr["response_time_p99_s"])
    # behind a hashing LB the nodes' pointers drift apart and lc comes close to random
    hashed = {"lb.algorithm": "maglev"}
    lc_h = lbsim.run(base.replace(**hashed, **{"kube_proxy.mode": "ipvs",
                                               "kube_proxy.ipvs_scheduler": "lc"})).summary
    rnd_h = lbsim.run(base.replace(**hashed)).summary
    assert lc_h["response_time_p99_s"] < 1.1 * rnd_h["response_time_p99_s"]
