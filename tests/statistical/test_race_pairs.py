"""Racing pairs (``workload.pairs``, ``pin_pairs``, ``cluster.packet_jitter_s``): how they are
drawn, what the validator refuses, and the clash probability against its closed form.

Two flows reach one node, the second ``o`` after the first, each reaching its CPU an exponential
delay (mean ``b``) later and processed there for ``w`` (packet_time_s) from NAT to confirm. On
two CPUs they clash iff ``|o + J2 - J1| < w``: ``J2 - J1`` is Laplace(0, b), so

    P(clash) = F((w - o) / b) - F((-w - o) / b),   F the standard Laplace CDF.

On one CPU the later waits for the earlier's confirm and sees it: no clash.
"""

import math

import numpy as np
import pytest

import lbsim
from lbsim import Scenario
from lbsim.kernel import FAILED
from lbsim.rng import Streams
from lbsim.sampling import PT_EXP, durations_ns
from lbsim.simulation import simulate
from lbsim.workload import draw_workload

PAIRS = 3000
#: one node and pod, UDP without resends, MASQUERADE keeping the client's port, and entries that
#: time out before the next pair (10 ms later), so that pairs do not meet
BASE = {"cluster.nodes": 1, "cluster.pods": 1, "workload.protocol": "udp",
        "workload.udp_retries": 0, "workload.arrival": "periodic", "workload.rate_per_s": 200.0,
        "workload.flows": 2 * PAIRS, "pod.service_s": 0.0, "nat.random_fully": False,
        "conntrack.udp_s": 0.001, "cluster.packet_time_s": 2e-6,
        "cluster.packet_jitter_s": {"dist": "exponential", "mean": 10e-6}}


def laplace_window(w: float, o: float, b: float) -> float:
    def cdf(z: float) -> float:
        return 0.5 * math.exp(z) if z < 0 else 1 - 0.5 * math.exp(-z)
    return cdf((w - o) / b) - cdf((-w - o) / b)


def within_4_se(k: int, n: int, p: float) -> None:
    se = math.sqrt(n * p * (1 - p))
    assert abs(k - n * p) <= 4 * se, (k, n * p, se)


def test_pairs_are_drawn_as_the_race_needs_them():
    sc = Scenario().replace(**{**BASE, "workload.flows": 2000, "workload.pairs": "same_port",
                               "workload.pin_pairs": True,
                               "workload.pair_offset_s": {"dist": "exponential", "mean": 5e-6},
                               "cluster.nodes": 4, "workload.clients": 3})
    w = draw_workload(sc)
    assert np.all(np.diff(w.t0) >= 0)
    order = np.lexsort((w.lane, w.socket))         # each pair's first, then its second
    first, second = order[0::2], order[1::2]
    assert np.array_equal(w.socket[first], w.socket[second])
    assert np.all(w.lane[first] == 0) and np.all(w.lane[second] == 1)
    assert np.array_equal(w.sport[first], w.sport[second])
    assert np.all(w.client[first] != w.client[second])          # two clients, one port
    assert np.array_equal(w.backend[first], w.backend[second])  # on one node
    offset = (w.t0[second] - w.t0[first]) / 1e9
    # the offsets are exponential, mean 5 us: their mean within 4 standard errors
    assert abs(offset.mean() - 5e-6) <= 4 * 5e-6 / math.sqrt(offset.size)
    same = draw_workload(sc.replace(**{"workload.pairs": "same_tuple"}))
    o = np.lexsort((same.lane, same.socket))
    assert np.array_equal(same.client[o[0::2]], same.client[o[1::2]])
    assert np.array_equal(same.sport[o[0::2]], same.sport[o[1::2]])


@pytest.mark.parametrize("field, value, allowed", [
    ("workload.pin_pairs", True, "false unless workload.pairs"),
    ("workload.pairs", "twins", "one of"),
    ("workload.pair_offset_s", 2.0, "at most 1 s"),
    ("cluster.packet_jitter_s", {"dist": "exponential", "mean": 5.0}, "at most 1 s"),
    ("cluster.snat_offset_s", 1.5, r"in \[0, 1\]"),
    ("cluster.snat_offset_s", -1e-6, ">= 0"),
])
def test_bad_pair_settings_are_refused_by_name(field, value, allowed):
    with pytest.raises(ValueError, match=f"{field}.*{allowed}"):
        Scenario().replace(**{field: value})


@pytest.mark.parametrize("changes, field", [
    ({"workload.pairs": "same_port", "workload.clients": 1}, "workload.clients"),
    ({"workload.pairs": "same_tuple", "workload.queries_per_socket": 2},
     "workload.queries_per_socket"),
    ({"workload.pairs": "same_tuple", "workload.arrival": "closed_loop",
      "workload.concurrency": 4}, "workload.pairs"),
    ({"workload.pairs": "same_port", "workload.pin_pairs": True, "cluster.cpus_per_node": 1},
     "cluster.cpus_per_node"),
])
def test_pairs_refuse_what_cannot_make_a_pair(changes, field):
    with pytest.raises(ValueError, match=field):
        Scenario().replace(**changes)


def test_pair_settings_round_trip_through_toml():
    sc = Scenario().replace(**{"workload.pairs": "same_tuple", "workload.pin_pairs": True,
                               "workload.pair_offset_s": {"dist": "exponential", "mean": 3e-6},
                               "cluster.packet_jitter_s": 1e-5})
    assert Scenario.from_toml_string(sc.to_toml()) == sc


def test_an_offset_without_pairs_warns_that_it_is_ignored():
    with pytest.warns(RuntimeWarning, match="pair_offset_s"):
        lbsim.run(Scenario().replace(**{"workload.flows": 200, "workload.pair_offset_s": 1e-6}))


def _run(**changes):
    return lbsim.run(Scenario().replace(**{**BASE, **changes})).summary


@pytest.mark.parametrize("offset", [0.0, 5e-6, 20e-6])
def test_pinned_same_port_pairs_clash_as_the_laplace_window_says(offset):
    s = _run(**{"workload.pairs": "same_port", "workload.pin_pairs": True,
                "workload.pair_offset_s": offset})
    # a clash drops the later datagram at its confirm: insert_failed, drop, a failed flow
    assert s["conntrack_insert_failed"] == s["conntrack_drop"] == s["failed"]
    within_4_se(s["failed"], PAIRS, laplace_window(2e-6, offset, 10e-6))


def test_exactly_the_pairs_whose_cpu_arrivals_overlap_clash():
    # from the drawn inputs: each flow reaches its CPU at t0 + d_in + its jitter, which the
    # engines draw per packet from the "jitter" stream; pinned pairs clash iff |delta| < w
    sc = Scenario().replace(**{**BASE, "workload.pairs": "same_port", "workload.pin_pairs": True,
                               "workload.pair_offset_s": {"dist": "exponential", "mean": 4e-6}})
    r = simulate(sc)
    w, f = r.workload, np.arange(2 * PAIRS)
    st = Streams(sc.seed)
    jitter = durations_ns(PT_EXP, 10e-6, 0.0, st.uniform("jitter", f, 0, 0),
                          st.uniform("jitter", f, 0, 1))
    o = np.lexsort((w.lane, w.socket))
    first, second = o[0::2], o[1::2]
    delta = (w.t0[second] + jitter[second]) - (w.t0[first] + jitter[first])
    lost = (r.outcome[first] == FAILED) | (r.outcome[second] == FAILED)
    assert np.array_equal(lost, np.abs(delta) < 2000)
    # the later of the two to reach its CPU is the one lost
    later = np.where(delta > 0, second, first)
    assert np.all(r.outcome[later[lost]] == FAILED)


def test_unpinned_pairs_race_only_when_rss_puts_them_on_two_cpus():
    # two tuples hash to the same one of 2 CPUs half the time, and then they never clash
    s = _run(**{"workload.pairs": "same_port"})
    within_4_se(s["failed"], PAIRS, laplace_window(2e-6, 0.0, 10e-6) / 2)


def test_identical_tuples_clash_in_the_same_window_and_6x_merges_them():
    # the same NAT on both sides: the loser is merged into the winner (clash_resolve), not lost
    s = _run(**{"workload.pairs": "same_tuple", "workload.pin_pairs": True})
    assert s["failed"] == 0 and s["conntrack_insert_failed"] == 0
    within_4_se(s["conntrack_clash_resolve"], PAIRS, laplace_window(2e-6, 0.0, 10e-6))
    # the same tuple on one CPU (RSS hashes it there) is processed in turn: no race at all
    assert _run(**{"workload.pairs": "same_tuple"})["conntrack_clash_resolve"] == 0


@pytest.mark.parametrize("pairs, window", [("same_port", 1.8e-6), ("same_tuple", 9.6e-6)])
def test_a_later_snat_gives_each_race_its_own_window(pairs, window):
    # the kernel's path measured here: lookup at PREROUTING, SNAT 7.8 us later at POSTROUTING,
    # confirm 1.8 us after that. A same-port pair races only from SNAT to confirm, identical
    # tuples from lookup to confirm (6.x resolves both kinds of their clashes: clash_resolve)
    s = _run(**{"workload.pairs": pairs, "workload.pin_pairs": True,
                "cluster.packet_time_s": 9.6e-6, "cluster.snat_offset_s": 7.8e-6})
    clashes = s["failed"] if pairs == "same_port" else s["conntrack_clash_resolve"]
    within_4_se(clashes, PAIRS, laplace_window(window, 0.0, 10e-6))


def test_a_snat_offset_without_masquerade_warns_that_it_is_ignored():
    with pytest.warns(RuntimeWarning, match="snat_offset_s"):
        lbsim.run(Scenario().replace(**{"workload.flows": 200, "cluster.snat_offset_s": 1e-6,
                                        "kube_proxy.external_traffic_policy": "Local"}))
