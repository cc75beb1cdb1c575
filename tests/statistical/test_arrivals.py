"""``workload.arrival``: Poisson (the default) or periodic sockets, the same on every path of a
run (whole, streamed, counted by duration)."""

import warnings

import numpy as np
import pytest

import lbsim
from lbsim import Scenario
from lbsim.metrics import summarize
from lbsim.simulation import simulate
from lbsim.workload import draw_workload, with_duration
from tests.property.test_streaming import assert_same_summary


def test_periodic_socket_i_starts_at_i_over_the_rate():
    sc = Scenario().replace(**{"workload.arrival": "periodic", "workload.rate_per_s": 300.0,
                               "workload.flows": 5000})
    i = np.arange(5000)
    assert np.array_equal(draw_workload(sc).t0, np.rint(i / 300.0 * 1e9).astype(np.int64))
    # with queries per socket, the sockets are periodic and their queries follow each
    q = draw_workload(sc.replace(**{"workload.queries_per_socket": 2,
                                    "workload.protocol": "udp"}))
    first = np.sort(q.t0)[::2]
    assert np.array_equal(first, np.rint(np.arange(2500) / 150.0 * 1e9).astype(np.int64))


def test_a_periodic_duration_holds_exactly_rate_times_duration_flows():
    sc = Scenario().replace(**{"workload.arrival": "periodic", "workload.rate_per_s": 100.0,
                               "workload.duration_s": 10.0})
    assert with_duration(sc).workload.flows == 1000       # 0, 10 ms, ..., 9.99 s


def test_streamed_periodic_run_equals_the_whole_one():
    sc = Scenario().replace(**{"workload.arrival": "periodic", "workload.flows": 4000,
                               "records": "summary"})
    assert_same_summary(summarize(simulate(sc), 1.0),
                        summarize(simulate(sc, stream_window=333), 1.0))


def test_the_arrival_round_trips_and_is_validated():
    sc = Scenario().replace(**{"workload.arrival": "periodic"})
    assert Scenario.from_toml_string(sc.to_toml()) == sc
    assert 'arrival = "periodic"' in sc.to_toml()
    with pytest.raises(ValueError, match="workload.arrival"):
        Scenario().replace(**{"workload.arrival": "bursty"})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_periodic_sender_under_the_time_wait_bound_loses_no_syn_where_poisson_does(seed):
    """64 SNAT ports, each held 2 s in TIME_WAIT after a 10 ms exchange (5.x: no TIME_WAIT
    eviction), 28 connections/s: a periodic sender never holds more than ceil(28 x 2.012) = 57
    ports, so no SYN is dropped; a Poisson sender's ports held are Poisson(56.3) at any instant
    (M/D/infinity), at least 64 of them ~16 % of the time, and its SYNs meet a full range."""
    base = Scenario().replace(**{
        "workload.flows": 3000, "workload.rate_per_s": 28.0, "cluster.nodes": 1,
        "cluster.pods": 1, "lb.instances": 1, "nat.port_range": [40000, 40063],
        "nat.kernel": "5.x", "conntrack.time_wait_s": 2.0, "workload.hold_s": 0.0,
        "pod.service_s": 0.01, "records": "summary", "seed": seed})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        periodic = lbsim.run(base.replace(**{"workload.arrival": "periodic"}), progress=False)
        poisson = lbsim.run(base, progress=False)
    assert periodic.summary["fail_cause_port_exhaustion"] == 0
    assert periodic.summary["syn_retransmits"] == 0
    assert poisson.summary["fail_cause_port_exhaustion"] > 0


def test_the_clock_check_takes_a_periodic_runs_exact_span():
    from lbsim.budget import horizon_s
    sc = Scenario().replace(**{"workload.arrival": "periodic", "workload.rate_per_s": 100.0,
                               "workload.flows": 1000})
    assert horizon_s(sc) == pytest.approx(9.99)
    assert horizon_s(sc.replace(**{"workload.arrival": "poisson"})) > 10.0
