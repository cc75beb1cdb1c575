"""``workload.arrival = "closed_loop"``: ``concurrency`` flows in flight, each new one starting
``think_s`` after one ends for its client. Exact where the mechanism fixes the answer (which
instant each flow starts at), and against mean value analysis where a closed queueing network has
a closed form."""

import warnings

import numpy as np
import pytest

import lbsim
from lbsim import Scenario
from lbsim.kernel import NS, OK
from lbsim.simulation import simulate
from lbsim.workload import draw_workload, slot_opens

BASE = Scenario().replace(**{
    "workload.arrival": "closed_loop", "workload.concurrency": 12, "workload.flows": 3000,
    "workload.rate_per_s": 50.0, "workload.hold_s": {"dist": "exponential", "mean": 0.05},
    "pod.service_s": {"dist": "exponential", "mean": 0.02}, "pod.workers": 1,
    "cluster.nodes": 2, "cluster.pods": 4, "records": "full"})


def _client_ends(r) -> np.ndarray:
    """When each (successful) flow ends for its client: its answer, then its hold, ns."""
    w = r.workload
    assert (r.outcome == OK).all()
    return w.t0 + r.response_ns + w.hold


@pytest.mark.parametrize("path", ["nodeport", "direct"])
@pytest.mark.parametrize("changes", [{}, {"workload.think_s": 0.1},
                                     {"workload.rate_per_s": 1.0, "workload.concurrency": 30}])
def test_each_flow_starts_at_the_earliest_free_slot(path, changes):
    """The starts are the flows' own ends (plus the think time) and the ramp's slot openings,
    merged: the first F of them in time order, exactly. A slow ramp (1 slot a second) lets
    a freed slot start a flow before a later slot has opened."""
    sc = BASE.replace(path=path, **changes)
    r = simulate(sc)
    w, F = r.workload, sc.workload.flows
    think = int(round(sc.workload.think_s * NS))
    free = np.sort(np.concatenate([slot_opens(sc), _client_ends(r) + think]))
    assert np.array_equal(w.t0, free[:F])
    # at most concurrency flows are in flight at any instant, that many once the ramp is fast
    # enough to open every slot before the first flows end
    ev = np.concatenate([np.stack([w.t0, np.ones(F, np.int64)], 1),
                         np.stack([_client_ends(r) + think, -np.ones(F, np.int64)], 1)])
    ev = ev[np.lexsort((ev[:, 1], ev[:, 0]))]      # an end before a start at the same instant
    most = np.cumsum(ev[:, 1]).max()
    assert most <= sc.workload.concurrency
    assert most == sc.workload.concurrency or sc.workload.rate_per_s < 2


def test_the_workload_leaves_the_starts_to_the_engine():
    w = draw_workload(BASE)
    assert (w.t0 == np.iinfo(np.int64).max).all()
    assert np.array_equal(slot_opens(BASE), np.rint(np.arange(12) / 50.0 * 1e9).astype(np.int64))


def _mva(K: int, pods: int, service: float, delay: float) -> float:
    """Throughput of a closed network (Reiser and Lavenberg's mean value analysis): ``K``
    customers, ``pods`` FCFS single-server exponential stations each visited with probability
    1 / pods, and an infinite-server delay ``delay`` (product form: insensitive to its
    distribution)."""
    q = np.zeros(pods)
    x = 0.0
    for k in range(1, K + 1):
        r = service * (1 + q)
        x = k / (delay + r.sum() / pods)
        q = x * r / pods
    return x


def test_nodeport_throughput_follows_mean_value_analysis():
    """Closed loop through NodePort (iptables, Cluster: each SYN to a uniform pod), 4 pods of
    one worker with exponential service, a fixed hold and think time: the flows per second
    agree with MVA's throughput within 4 standard errors over 10 seeds. The delay is the
    path's: the handshake and the request (3 x client to backend), the second hop's four
    crossings on half the flows (2 nodes), the SYN's CPU time, the hold and the think time."""
    K, pods, service = 6, 4, 0.05
    sc = BASE.replace(**{"workload.concurrency": K, "workload.flows": 4000,
                         "workload.hold_s": 0.02, "workload.think_s": 0.03,
                         "pod.service_s": {"dist": "exponential", "mean": service},
                         "cluster.pods": pods, "records": "summary"})
    net = sc.network
    delay = (3 * (net.client_to_lb_s + net.lb_to_backend_s) + 0.5 * 4 * net.node_to_pod_s
             + 5e-6 + 0.02 + 0.03)
    rates = []
    for seed in range(10):
        t0 = simulate(sc.replace(seed=seed)).workload.t0 / NS
        a, b = t0[500], t0[-1]                       # after the ramp and the first cycles
        rates.append((t0.size - 1 - 500) / (b - a))
    rates = np.array(rates)
    se = rates.std(ddof=1) / np.sqrt(rates.size)
    x = _mva(K, pods, service, delay)
    assert abs(rates.mean() - x) < 4 * se, (rates.mean(), x, se)
    # the test can tell: without the hold and think time in the cycle MVA says ~23 % more
    assert abs(_mva(K, pods, service, delay - 0.05) - x) > 20 * se


def test_a_failed_flow_frees_its_slot_when_its_client_gives_up():
    """Two SNAT ports held open 10 s and one SYN retransmission after 1 s: with 4 clients in
    flight, two hold the ports and two fail; a failed flow's slot frees when its client gives
    up (its SYN sent, then its whole schedule: 1 s + 2 s), so its next flow starts then."""
    sc = Scenario().replace(**{
        "workload.arrival": "closed_loop", "workload.concurrency": 4, "workload.flows": 8,
        "workload.rate_per_s": 1e6, "workload.hold_s": 10.0, "workload.syn_retries": 1,
        "workload.syn_linear_timeouts": 0, "cluster.nodes": 1, "cluster.pods": 1,
        "nat.port_range": [20000, 20001], "nat.random_fully": True, "pod.service_s": 0.0,
        "conntrack.time_wait_s": 0.0})
    for engine in ("compiled", "reference"):
        r = simulate(sc, engine=engine)
        t0 = r.workload.t0
        failed = np.flatnonzero(r.outcome != OK)
        assert failed.size >= 2
        # their slots start the next flows (within the SYN's 5 us of CPU time: a retransmission
        # leaves no sooner than its drop plus the first gap)
        for g in t0[failed[:2]] + sum(sc.workload.retry_gaps_ns):
            assert np.abs(t0[4:] - g).min() < 1e5


def test_the_closed_loop_round_trips_and_is_validated():
    assert Scenario.from_toml_string(BASE.to_toml()) == BASE
    cases = [({"workload.concurrency": 0}, r"workload.concurrency = 0 is invalid: must be an "
              r"integer in \[1, workload.flows = 3000\]"),
             ({"workload.concurrency": 3001}, "workload.concurrency = 3001"),
             ({"workload.think_s": -1.0}, "workload.think_s = -1.0"),
             ({"workload.duration_s": 10.0}, "workload.duration_s = 10.0"),
             ({"workload.queries_per_socket": 2}, "workload.queries_per_socket = 2"),
             ({"lb.algorithm": "lc"}, 'with lb.algorithm = "lc"'),
             ({"lb.persistence_s": 10.0}, "with lb.persistence_s = 10"),
             ({"kube_proxy.session_affinity": "ClientIP"}, "session_affinity"),
             ({"kube_proxy.mode": "ipvs", "kube_proxy.ipvs_scheduler": "wlc"}, "ipvs_scheduler")]
    for changes, says in cases:
        with pytest.raises(ValueError, match=says):
            BASE.replace(**changes)
    # ClientIP affinity decides nothing on the direct path: accepted there
    BASE.replace(path="direct", **{"kube_proxy.session_affinity": "ClientIP"})


def test_the_clock_check_bounds_a_closed_loop_by_its_cycles():
    from lbsim.budget import check_clock
    with pytest.raises(ValueError, match="workload.flows / workload.concurrency"):
        check_clock(BASE.replace(**{"workload.flows": 10**9, "workload.concurrency": 1}))
    with pytest.raises(ValueError, match="workload.think_s reaches"):
        check_clock(BASE.replace(**{"workload.think_s": 1e12}))


def test_concurrency_without_a_closed_loop_warns_it_is_ignored():
    sc = Scenario().replace(**{"workload.concurrency": 5, "workload.flows": 2000,
                               "workload.rate_per_s": 100.0, "records": "summary"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = lbsim.run(sc, progress=False)
    assert any("workload.concurrency = 5" in s and "ignored" in s for s in r.warnings)
