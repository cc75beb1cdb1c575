"""The clients' ports as their kernels pick them (lbsim.client_ports): connect()'s walk steps as
__inet_hash_connect's perturbation does, UDP's first port is uniform, a client runs out of ports
exactly as its holding time says (closed form), and the engines fail those flows at their start.
"""

import math

import numpy as np
import pytest

import lbsim
from lbsim.client_ports import PortWalk, time_wait_ns
from lbsim.kernel import CONNECT_JITTER, NO_CLIENT_PORT, OK
from lbsim.simulation import simulate
from lbsim.workload import Params, draw_workload

pytestmark = pytest.mark.slow

# chi-square critical values at alpha = 0.001 (upper tail), by degrees of freedom
CHI2_999 = {7: 24.322, 19: 43.820}


def _chi2(counts, expected):
    return float(((counts - expected) ** 2 / expected).sum())


def test_connect_steps_are_2_to_16_ports_uniformly_while_nothing_is_held():
    # connections far apart: the walk never skips, so each step is max(0, 2 r) + 2 with r
    # uniform on 0..7 (get_random_u32_below(8)); all ports keep the range's low parity
    sc = lbsim.Scenario().replace(**{"workload.clients": 1, "workload.rate_per_s": 0.01,
                                     "workload.flows": 8001, "seed": 5})
    w = draw_workload(sc)
    lo, hi = sc.workload.client_port_range
    remaining = (hi + 1 - lo) & ~1
    step = np.diff(w.sport) % remaining
    assert ((w.sport - lo) % 2 == 0).all()
    counts = np.bincount(step // 2 - 1, minlength=CONNECT_JITTER)
    assert counts.size == CONNECT_JITTER and counts.sum() == 8000
    assert _chi2(counts, 8000 / CONNECT_JITTER) < CHI2_999[7]


def test_udp_ports_are_uniform_over_the_range():
    sc = lbsim.Scenario().replace(**{"workload.protocol": "udp", "workload.clients": 1,
                                     "workload.rate_per_s": 0.01, "workload.flows": 20_000})
    w = draw_workload(sc)
    lo, hi = sc.workload.client_port_range
    counts = np.bincount((w.sport - lo) * 20 // (hi - lo + 1), minlength=20)
    assert _chi2(counts, 1000.0) < CHI2_999[19]


def _one_client(path, protocol="tcp", tw_reuse=2, flows=30_000):
    # UDP holds its port only for the answer (1.5 ms): 100,000 a second outrun 100 ports
    rate = 1000.0 if protocol == "tcp" else 100_000.0
    return lbsim.Scenario().replace(**{
        "path": path, "workload.protocol": protocol, "workload.arrival": "periodic",
        "workload.clients": 1, "workload.rate_per_s": rate, "workload.flows": flows,
        "workload.client_port_range": [40000, 40099], "workload.tcp_tw_reuse": tw_reuse,
        "pod.service_s": 0.0001})


def _expected_established(sc):
    """Periodic arrivals 1/rate apart and R ports, each held H ns from its connection: arrival
    j < R takes a port, which frees at t_j + H and goes to the first arrival at or after that,
    c = ceil(H x rate) arrivals later; so port j serves arrivals j, j + c, j + 2c, ..."""
    p, w = Params.of(sc), sc.workload
    rtt = 2 * (p.d_in + (p.d_hop if p.nodeport else 0))
    service = int(round(sc.pod.service_s.mean * 1e9))
    hold = 3 * rtt + service + time_wait_ns(w.tcp_tw_reuse) if p.tcp else rtt + service
    gap = int(round(1e9 / w.rate_per_s))
    c = -(-hold // gap)
    R = w.client_port_range[1] - w.client_port_range[0] + 1
    assert c > R                         # more demand than ports (else every flow gets one)
    return sum(math.ceil((w.flows - j) / c) for j in range(min(R, w.flows)))


@pytest.mark.parametrize("path", ["nodeport", "direct"])
@pytest.mark.parametrize("protocol,tw_reuse", [("tcp", 2), ("tcp", 1), ("udp", 2)])
def test_a_client_runs_out_of_ports_as_its_holding_time_says(path, protocol, tw_reuse):
    sc = _one_client(path, protocol, tw_reuse)
    r = simulate(sc)
    want = _expected_established(sc)
    ok = r.outcome == OK
    assert ok.sum() == want
    # every other flow failed at its client, nothing sent (and nothing was dropped elsewhere)
    assert (r.cause[~ok] == NO_CLIENT_PORT).all() and (r.attempts[~ok] == 0).all()
    assert r.cause_count[NO_CLIENT_PORT] == sc.workload.flows - want
    assert r.cause_count.sum() == r.cause_count[NO_CLIENT_PORT]
    if protocol == "tcp" and tw_reuse == 2:
        assert want == 100               # 30 s of flows, ports held 60 s: each port once


def test_the_reference_engine_fails_the_same_flows():
    sc = _one_client("nodeport", flows=3000).replace(**{"workload.tcp_tw_reuse": 1})
    a, b = simulate(sc), simulate(sc, engine="reference")
    for f in ("outcome", "cause", "attempts", "pod", "nat_port", "connect_ns", "response_ns",
              "cause_count"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert 0 < a.cause_count[NO_CLIENT_PORT] < 3000


def test_one_client_sustains_its_range_per_time_wait():
    # the default 28,232 ports, each held 60 s of TIME_WAIT after its connection (~0.3 s): in
    # 180 s of 1,000 a second, each port serves exactly 3 connections (at ~0, ~60.3, ~120.6 s;
    # a 4th would start after 180 s): 470 a second, the single-client ceiling
    sc = lbsim.Scenario().replace(**{"workload.arrival": "periodic", "workload.clients": 1,
                                     "workload.rate_per_s": 1000.0, "workload.flows": 180_000,
                                     "records": "summary"})
    with pytest.warns(RuntimeWarning, match="no free ephemeral port"):
        s = lbsim.run(sc).summary
    assert s["established"] == 3 * 28232
    assert s["fail_cause_no_client_port"] == s["failed"] == 180_000 - 3 * 28232


@pytest.mark.filterwarnings("ignore:the run's arrivals span")
def test_a_busy_client_has_no_tuple_in_use_drops_any_more():
    # 50 clients at 2,000 flows/s, connections held 5 s: ports drawn uniformly would meet one
    # of their own client's ~200 live entries on the node 0.7% of the time
    sc = lbsim.Scenario().replace(**{"workload.clients": 50, "workload.rate_per_s": 2000.0,
                                     "workload.flows": 40_000, "workload.hold_s": 5.0,
                                     "records": "summary"})
    s = lbsim.run(sc).summary
    assert s["fail_cause_tuple_in_use"] == 0 and s["fail_cause_no_client_port"] == 0


def test_streamed_windows_walk_the_same_ports():
    from lbsim.workload import FlowSource
    sc = lbsim.Scenario().replace(**{"workload.clients": 2, "workload.rate_per_s": 3000.0,
                                     "workload.flows": 40_000})
    whole = draw_workload(sc).sport
    src = FlowSource(sc)
    parts = [src.draw(a, min(a + 7_777, 40_000))["sport"] for a in range(0, 40_000, 7_777)]
    assert np.array_equal(np.concatenate(parts), whole)
    assert PortWalk.__doc__


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("path", ["direct", "nodeport"])
def test_a_flow_with_no_port_takes_no_turn_at_the_lb(path):
    # 4 clients with 100 ports each: 400 flows get a port, the other 2,600 fail at their
    # client. Round robin's turns go to the 400 alone, as the engines' own choice does when
    # [[events]] make the LB choose per flow: the same pods either way, each pod's share equal
    sc = lbsim.Scenario().replace(**{"workload.clients": 4, "workload.flows": 3000,
                                     "workload.client_port_range": [40000, 40099],
                                     "lb.algorithm": "rr", "path": path})
    steady = lbsim.run(sc).flows
    moved = lbsim.run(sc.replace(events=[{"at_s": 1000.0, "kind": "scale",
                                          "replicas": sc.cluster.pods}])).flows
    sent = steady["client_port"] >= 0
    assert sent.sum() == 400 and (steady.loc[~sent, "node"] == -1).all()
    assert np.array_equal(steady["pod"].to_numpy(), moved["pod"].to_numpy())
    if path == "direct":
        assert (np.bincount(steady.loc[sent, "pod"], minlength=sc.cluster.pods) == 4).all()


def test_a_closed_loop_out_of_ports_says_its_pace_is_not_a_clients():
    sc = lbsim.Scenario().replace(**{"workload.clients": 1, "workload.arrival": "closed_loop",
                                     "workload.concurrency": 50, "workload.flows": 2000,
                                     "workload.client_port_range": [40000, 40099]})
    with pytest.warns(RuntimeWarning, match="closed loop the clients' ports follow"):
        lbsim.run(sc)
