"""Concrete cases of nf_nat_core.c's port selection (kernel-facts 1.2-1.6)."""

import numpy as np
import pytest

from lbsim.reference.conntrack import ConntrackTable
from lbsim.reference.nat import NatRule, default_range, select_port
from tests.helpers import add_entry

OFFS = np.array([5, 1000, 2000, 3000, 4000])


@pytest.fixture
def table():
    return ConntrackTable(1)


def both(table, t, sport, rule, offs=OFFS, isn=12345):
    """The reference choice (tests/property checks the compiled search against it)."""
    return select_port(table, t, 0, 0, sport, offs, isn, rule)


def test_default_range_rule():
    assert default_range(40000) == (1024, 64512)
    assert default_range(100) == (1, 511)
    assert default_range(700) == (600, 424)


def test_plain_masquerade_keeps_free_source_port(table):
    c = both(table, 0, 40000, NatRule())
    assert (c.port, c.exhausted, c.found) == (40000, False, 0)


def test_taken_source_port_searches_from_random_offset(table):
    add_entry(table, port=40000)
    c = both(table, 0, 40000, NatRule())
    assert c.port == 1024 + 5 and c.found == 1 and not c.exhausted


def test_random_fully_never_keeps_the_port(table):
    c = both(table, 0, 40000, NatRule(random_all=True))
    assert c.port == 1024 + 5


def test_offset_is_u16_and_wraps(table):
    # off = 65535 -> 1024 + 65535 % 64512 = 2047; a taken 2047 moves to off 0 (u16 wrap) -> 1024
    add_entry(table, port=2047)
    c = both(table, 0, 40000, NatRule(random_all=True), offs=np.array([65535, 1, 2, 3, 4]))
    assert c.port == 1024


def test_explicit_range_all_taken_is_exhausted(table):
    for p in range(10000, 10004):
        add_entry(table, port=p)
    c = both(table, 0, 40000, NatRule(port_range=(10000, 10003)))
    # one exhaustive round of 4 probes from 10000 + 5 % 4; the last candidate is returned, taken.
    # A TCP SYN's last 32 probes of a round take nf_nat_used_tuple_harder's lookup, which counts
    # no found: all 4 here
    assert c.exhausted and c.found == 0 and c.port == 10000 + (5 + 3) % 4


def test_expired_entry_is_freed_and_port_kept(table):
    add_entry(table, port=40000, t_expire=100)
    c = both(table, 100, 40000, NatRule())
    assert c.port == 40000 and c.found == 0
    assert table.count[0] == 0


@pytest.mark.parametrize("kernel_evicts", [True, False])
def test_time_wait_eviction_in_last_32_probes(table, kernel_evicts):
    # 64 ports, all in TIME_WAIT since t=0; the new SYN's sequence number is past theirs.
    for p in range(10000, 10064):
        add_entry(table, port=p, t_close=0, seq=100)
    c = both(table, 50, 40000, NatRule(port_range=(10000, 10063), evict_closing=kernel_evicts), isn=1000)
    if kernel_evicts:
        # attempts = 64; probe i may evict once attempts - i <= 32, i.e. from i = 32 on
        assert c.port == 10000 + (5 + 32) % 64 and c.evicted >= 0 and not c.exhausted
        assert c.found == 32 and table.count[0] == 63    # the harder probes count no found
    else:
        assert c.exhausted and c.found == 64 and table.count[0] == 64


def test_no_eviction_when_sequence_has_not_advanced(table):
    for p in range(10000, 10064):
        add_entry(table, port=p, t_close=0, seq=5000)
    c = both(table, 50, 40000, NatRule(port_range=(10000, 10063)), isn=1000)
    assert c.exhausted


def test_no_eviction_of_established_entries(table):
    for p in range(10000, 10064):
        add_entry(table, port=p, t_close=10**9, seq=100)
    c = both(table, 50, 40000, NatRule(port_range=(10000, 10063)), isn=1000)
    assert c.exhausted


def test_full_range_search_is_at_most_248_probes(table):
    # fill every port that the five runs could probe; the search must stop after 128+64+32+16+8
    offs = np.array([0, 10000, 20000, 30000, 40000])
    ports = set()
    for off, n in zip(offs, (128, 64, 32, 16, 8)):
        ports |= {1024 + (off + i) % 64512 for i in range(n)}
    for p in ports:
        add_entry(table, port=p, t_close=10**12)
    c = both(table, 0, 40000, NatRule(random_all=True), offs=offs)
    # 248 probes, of which each round's last 32 count no found: 96 + 32 + 0 + 0 + 0
    assert c.exhausted and c.found == 128


LEGACY = dict(rover_search=True, evict_closing=False)


def test_4x_plain_starts_at_the_rover_and_moves_it(table):
    rover = [7]
    add_entry(table, port=40000)                 # the client port is taken: search
    c = select_port(table, 0, 0, 0, 40000, OFFS, 1, NatRule(**LEGACY), rover)
    assert c.port == 1024 + 7 and rover == [7]   # the rover's own port was free
    add_entry(table, port=1024 + 7)
    c = select_port(table, 0, 0, 0, 40000, OFFS, 1, NatRule(**LEGACY), rover)
    assert c.port == 1024 + 8 and rover == [8] and c.found == 2


def test_4x_random_starts_at_the_keyed_hash_every_time(table):
    rule = NatRule(random_all=True, legacy_random=True, **LEGACY)
    add_entry(table, port=1024 + 100)
    c = select_port(table, 0, 0, 0, 40000, OFFS, 1, rule, [0], secure_off=(1 << 20) + 100)
    assert c.port == 1024 + 101                  # u16 of the hash, first free after it


def test_4x_walks_the_whole_range_and_returns_the_last_unchecked(table):
    for p in range(10000, 10008):
        add_entry(table, port=p)
    rover = [3]
    c = select_port(table, 0, 0, 0, 40000, OFFS, 1, NatRule(port_range=(10000, 10007), **LEGACY), rover)
    # 7 probes find taken ports; the 8th candidate is returned without a lookup: taken
    assert c.exhausted and c.found == 7 and c.port == 10000 + (3 + 7) % 8 and rover == [10]


def test_closed_forms_known_values():
    from lbsim.analytic import erlang_b, time_wait_rate_bound
    assert time_wait_rate_bound() == pytest.approx(537.6)         # kernel-facts 7
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)                 # (1/2) / (1 + 1 + 1/2)


def test_capped_search_overload_fixed_point():
    """The overload fixed point satisfies its own equation, rises with the load, stays above
    Erlang-B's limit 1 - 1/load and tends to it when the range is far overloaded."""
    import math

    from lbsim.analytic import CAPPED_SEARCH_PROBES, capped_search_overload_failed_fraction as fp
    assert CAPPED_SEARCH_PROBES == 248
    prev = 0.0
    for load in (1.0, 1.05, 1.1, 1.3, 2.0, 5.0):
        p = fp(load)
        assert abs(p - math.exp(-248 * (1 - load * (1 - p)))) < 1e-9
        assert p > prev and p > 1 - 1 / load
        prev = p
    assert fp(5.0) - 0.8 < 1e-3
    with pytest.raises(ValueError):
        fp(0.0)


def _gc_next_run_reference(remaining_ns):
    """gc_worker's loop (5.18+) as written in nf_conntrack_core.c, in ns: avg starts at
    GC_SCAN_INTERVAL_INIT with count GC_SCAN_INITIAL_COUNT; each unexpired entry moves it by
    (clamp(expires) - next_run) / ++count; the result is clamped to [MIN, MAX]."""
    next_run, count = 60 * 10**9, 100
    for r in remaining_ns:
        e = min(max(r, 10**9), 300 * 10**9)
        count += 1
        next_run += (e - next_run) / count
    return min(max(next_run, 10**9), 60 * 10**9)


def test_gc_autotuned_next_run_and_early_drop_flag():
    """The GC pass frees expired entries of the due nodes only, schedules the next pass after
    the (seeded, clamped) mean remaining timeout, and early-drops only when flagged."""
    t = 100 * 10**9
    rng = np.random.default_rng(7)
    tb = ConntrackTable(2, buckets=64)
    rem = rng.integers(1, 400 * 10**9, 300)             # node 0: unexpired entries
    for i, r in enumerate(rem):
        add_entry(tb, node=0, port=1000 + i, t_assured=0, t_close=0, t_expire=t + int(r))
    for i in range(50):                                  # node 0 and node 1: expired entries
        add_entry(tb, node=0, port=5000 + i, t_expire=t - 1)
        add_entry(tb, node=1, port=5000 + i, t_expire=t - 1)
    killed, nxt = tb.gc_pass(t, limit95=10**6, due=np.array([True, False]),
                             early=np.array([True, True]))
    assert list(killed) == [0, 0]
    assert tb.count.tolist() == [300, 50]               # node 1 was not due: still held
    assert abs(nxt[0] - _gc_next_run_reference(rem)) <= 1
    assert nxt[1] == 60 * 10**9                          # nothing seen: the initial bias
    # over 95 % but not flagged: nothing killed; flagged: closing TCP entries killed to 95 %
    killed, _ = tb.gc_pass(t, limit95=200, due=np.array([True, True]), early=np.array([False, False]))
    assert killed.tolist() == [0, 0] and tb.count.tolist() == [300, 0]
    killed, _ = tb.gc_pass(t, limit95=200, due=np.array([True, True]), early=np.array([True, False]))
    assert killed.tolist() == [101, 0] and tb.count.tolist() == [199, 0]


def test_gc_next_run_clamps():
    assert _gc_next_run_reference([]) == 60 * 10**9
    assert _gc_next_run_reference([1] * 100_000) == pytest.approx((100 * 60e9 + 1e14) / 100_100)
    t = 10**12
    tb = ConntrackTable(1, buckets=64)
    for i in range(5000):
        add_entry(tb, port=1 + i, t_expire=t + 10**6)    # 1 ms left: counts as 1 s
    _, nxt = tb.gc_pass(t, limit95=10**6)
    assert nxt[0] == int((100 * 60e9 + 5000 * 1e9) / 5100)
