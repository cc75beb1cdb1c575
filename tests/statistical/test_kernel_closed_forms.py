"""lbsim against closed forms, with fixed seeds and tolerances from the math (4 standard errors)."""

import math

import numpy as np
import pytest

import lbsim
from lbsim.analytic import erlang_b, insert_race_rate, same_port_probability_random

pytestmark = pytest.mark.slow

QUIET = {"network.client_to_lb_s": 0.0002, "network.lb_to_backend_s": 0.0001,
         "network.node_to_pod_s": 0.0}


def _holding_s(sc: lbsim.Scenario) -> float:
    """SYN confirmed -> end of TIME_WAIT, for fixed delays and no queueing at the pod:
    SYN-ACK, request, response and FIN each cross client<->node once (4 one-way trips)."""
    d_in = sc.network.client_to_lb_s + sc.network.lb_to_backend_s
    return 4 * d_in + sc.pod.service_s.value + sc.workload.hold_s.value + sc.conntrack.time_wait_s


@pytest.mark.parametrize("offered", [8.0, 16.0, 32.0], ids=["light", "capacity", "overloaded"])
def test_port_exhaustion_is_erlang_b(offered):
    """16 SNAT ports (an exhaustive single round, below the 128-probe cap), no SYN retries, the 5.x
    kernel (no TIME_WAIT eviction): each (node, pod) pair is an M/G/c/c loss system with c = 16."""
    pods, warmup_s, span_s = 32, 3.0, 12.0
    base = lbsim.Scenario().replace(**QUIET, **{
        "workload.syn_retries": 0, "cluster.nodes": 1, "cluster.pods": pods,
        "pod.workers": 10_000, "pod.service_s": 0.05, "conntrack.time_wait_s": 0.5,
        "nat.kernel": "5.x", "nat.port_range": [10000, 10015]})
    h = _holding_s(base)
    rate = offered / h * pods
    samples = []
    for seed in range(4):
        sc = base.replace(**{"seed": seed, "workload.rate_per_s": rate,
                             "workload.flows": int(rate * (warmup_s + span_s))})
        f = lbsim.run(sc).flows
        late = f[f["arrival_s"] > warmup_s]
        # every pod is an independent loss system (Poisson thinning): one sample per pod
        blocked = late.groupby(_pod_of_flow(sc, late))["outcome"].apply(lambda o: (o == "failed").mean())
        samples.extend(blocked.to_list())
    samples = np.array(samples)
    mean, se = samples.mean(), samples.std(ddof=1) / math.sqrt(samples.size)
    want = erlang_b(16, offered)
    assert abs(mean - want) < 4 * se + 1e-4, (mean, want, se)


def _pod_of_flow(sc, flows):
    """The pod kube-proxy chose for each flow's (only) attempt, from the same random stream."""
    from lbsim.reference import ReferenceEngine
    from lbsim.workload import draw_workload
    eng = ReferenceEngine(draw_workload(sc))
    return np.array([eng.endpoint(0, eng.attempt_inputs(f, 0)["u_ep"], f)
                     for f in flows["flow"].to_numpy()])


def _race_scenario(**extra):
    return lbsim.Scenario().replace(**{
        "network.client_to_lb_s": 0.000025, "network.lb_to_backend_s": 0.0, "network.node_to_pod_s": 0.0,
        "workload.syn_retries": 0, "workload.rate_per_s": 20_000.0, "workload.flows": 60_000,
        "workload.client_port_range": [40000, 40003], "workload.clients": 1_000_000,
        "cluster.nodes": 1, "cluster.pods": 20,
        "cluster.cpus_per_node": 2, "cluster.packet_time_s": 50e-6, "pod.workers": 10_000,
        "pod.service_s": 0.0, "conntrack.time_wait_s": 0.0, **extra})


def test_insert_race_rate_matches_formula():
    """Plain MASQUERADE keeps the client port: two flows race when they are processed at
    overlapping times on different CPUs, chose the same pod (1/K) and the same client port (1/P),
    and that port was free (probability exp(-rate_per_pod_port x entry lifetime)). P is the
    range's even ports: connect() tries the low end's parity first, and each of these
    clients connects about once (lbsim.client_ports), so of 40000..40003 only 40000 and 40002."""
    sc = _race_scenario()
    r = lbsim.run(sc)
    K, P = sc.cluster.pods, 2
    lifetime = 4 * sc.network.client_to_lb_s          # TIME_WAIT 0, no service: SYN-ACK .. FIN
    lam = sc.workload.rate_per_s
    same = (1 / K) * (1 / P) * math.exp(-lam / K / P * lifetime)
    duration = r.flows["arrival_s"].iloc[-1]
    expected = insert_race_rate(lam, 2, 50e-6, same) * duration
    got = r.summary["conntrack_insert_failed"]
    assert r.summary["fail_cause_insert_race"] == got
    assert abs(got - expected) < 4 * math.sqrt(expected), (got, expected)


def test_random_fully_removes_the_keep_port_race_as_the_formula_says():
    sc = _race_scenario(**{"nat.random_fully": True})
    r = lbsim.run(sc)
    lam, K = sc.workload.rate_per_s, sc.cluster.pods
    duration = r.flows["arrival_s"].iloc[-1]
    expected = insert_race_rate(lam, 2, 50e-6, same_port_probability_random() / K) * duration
    assert expected < 0.05
    # Poisson(expected): P(N >= 3) < 1e-5
    assert r.summary["conntrack_insert_failed"] <= 2


def test_same_port_probability_counts_the_modulo_bias():
    # 65536 offsets over 64512 ports: ports 1024..2047 are twice as likely
    assert same_port_probability_random() == pytest.approx((1024 * 4 + 63488) / 65536**2)
    assert same_port_probability_random(65536) == pytest.approx(1 / 65536)


def test_held_ports_obey_littles_law_under_the_probe_cap():
    """Little's law, L = accepted rate x holding time, for the SNAT ports of one node->pod pair in
    the capped-search regime (256 ports, so a round probes 128 and four more rounds follow), at
    offered load 1.3 x 256: the held-port gauge and the accepted flows must agree, batch by batch
    (10 batches of 10 s; tolerance 4 standard errors of the batch means)."""
    sc = lbsim.Scenario().replace(**QUIET, **{
        "workload.syn_retries": 0, "cluster.nodes": 1, "cluster.pods": 1, "pod.workers": 10_000,
        "pod.service_s": 0.001, "conntrack.time_wait_s": 1.0, "nat.kernel": "5.x",
        "nat.port_range": [10000, 10255]})
    h = _holding_s(sc)
    rate = 1.3 * 256 / h
    sc = sc.replace(**{"workload.rate_per_s": rate, "workload.flows": int(rate * 112)})
    r = lbsim.run(sc)
    ok = r.flows[r.flows["outcome"] == "established"]["arrival_s"].to_numpy()
    g = r.gauges.set_index("t_s")["live_entries"]
    diffs = []
    for b in range(10):
        lo = 10.0 + 10 * b
        held = g.loc[lo + 1: lo + 10].mean()            # samples at whole seconds in the batch
        accepted = np.count_nonzero((ok >= lo) & (ok < lo + 10)) / 10.0
        diffs.append(held - accepted * h)
    diffs = np.array(diffs)
    se = diffs.std(ddof=1) / math.sqrt(diffs.size)
    assert abs(diffs.mean()) < 4 * se, (diffs.mean(), se)


def _oracle_failed_fraction(n_ports, load, hold_s, warmup_s, span_s, seed):
    """A separate, minimal simulation of the SNAT search alone: a ring of ``n_ports``, Poisson
    arrivals, each flow holding its port ``hold_s``; a search takes the first free port of runs of
    128/64/32/16/8 from random u16 starts. Returns the failed fraction after the warm-up."""
    import heapq
    import random
    rnd = random.Random(seed)
    lam = load * n_ports / hold_s
    busy, ends, t, fails, seen = bytearray(n_ports), [], 0.0, 0, 0
    while t < warmup_s + span_s:
        t += rnd.expovariate(lam)
        while ends and ends[0][0] <= t:
            busy[heapq.heappop(ends)[1]] = 0
        chosen = -1
        for run in (128, 64, 32, 16, 8):
            off = rnd.getrandbits(16)
            for k in range(run):
                p = ((off + k) & 0xFFFF) % n_ports
                if not busy[p]:
                    chosen = p
                    break
            if chosen >= 0:
                break
        if t > warmup_s:
            seen += 1
            fails += chosen < 0
        if chosen >= 0:
            busy[chosen] = 1
            heapq.heappush(ends, (t + hold_s, chosen))
    return fails / seen


def test_capped_search_clustering_matches_an_independent_simulation():
    """Below the ports/holding bound (load 0.95) the capped search already fails flows, because
    held ports cluster; lbsim and a separate minimal simulation of the search must agree on how
    often (4 seeds of lbsim, 8 of the other; 4 standard errors of the difference of means)."""
    n, load, h, warmup, span = 2048, 0.95, 1.0, 3.0, 10.0
    base = lbsim.Scenario().replace(**{
        "workload.syn_retries": 0, "cluster.nodes": 1, "cluster.pods": 1, "pod.service_s": 0.0,
        "network.client_to_lb_s": 0.0, "network.lb_to_backend_s": 0.0, "network.node_to_pod_s": 0.0,
        "conntrack.time_wait_s": h, "nat.kernel": "5.x", "nat.port_range": [10000, 10000 + n - 1],
        "workload.rate_per_s": load * n / h, "workload.flows": int(load * n / h * (warmup + span))})
    ours, theirs = [], []
    for seed in range(4):
        f = lbsim.run(base.replace(seed=seed)).flows
        late = f[f["arrival_s"] > warmup]
        ours.append((late["cause"] == "port_exhaustion").mean())
    theirs = [_oracle_failed_fraction(n, load, h, warmup, span, seed) for seed in range(8)]
    ours, theirs = np.array(ours), np.array(theirs)
    se = math.sqrt(ours.var(ddof=1) / ours.size + theirs.var(ddof=1) / theirs.size)
    assert ours.mean() > 1e-3                     # failures well below the bound: clustering
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean(), se)
