"""Every vectorized hot path agrees with its scalar reference, decision for decision."""

import copy

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim.balancing import iptables_endpoint, iptables_endpoint_scalar, round_robin, round_robin_scalar
from lbsim.conntrack import NAT_CLASH, SNAT, TCP, ConntrackTable
from lbsim.nat import NatRule, select_port, select_ports
from lbsim.rng import Streams, mix64, mix64_scalar
from tests.helpers import add_entry


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=50))
def test_mix64_matches_scalar(xs):
    out = mix64(np.array(xs, dtype=np.uint64))
    assert [int(v) for v in out] == [mix64_scalar(x) for x in xs]


@given(st.integers(0, 2**63), st.lists(st.integers(0, 2**40 - 1), min_size=1, max_size=20),
       st.integers(0, 255))
def test_draws_depend_only_on_their_counter(seed, flows, attempt):
    s = Streams(seed)
    f = np.array(flows, np.int64)
    whole = s.uniform("nat", f, attempt)
    one_by_one = [s.uniform("nat", f[i:i + 1], attempt)[0] for i in range(f.size)]
    assert np.array_equal(whole, one_by_one)
    assert np.all((whole >= 0) & (whole < 1))


@given(st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=40), st.integers(1, 300))
def test_iptables_endpoint_matches_scalar(us, n):
    v = iptables_endpoint(np.array(us), n)
    assert list(v) == [iptables_endpoint_scalar(u, n) for u in us]


@given(st.integers(1, 5).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), max_size=60))),
       st.integers(1, 9))
def test_round_robin_matches_scalar(inst, backends):
    k, seq = inst
    assert list(round_robin(np.array(seq, np.int64), backends, k)) == round_robin_scalar(seq, backends, k)


@settings(max_examples=150)
@given(data=st.data(), rows=st.integers(1, 6), width=st.sampled_from([1, 4, 64, 200, None]),
       random_all=st.booleans(), evict=st.booleans(), tcp=st.booleans())
def test_select_ports_matches_select_port(data, rows, width, random_all, evict, tcp):
    """Random tables near exhaustion: each row (a distinct node, pod) chooses like the scalar."""
    rng_ports = (10000, 10000 + width - 1) if width else None
    lo, hi = rng_ports if rng_ports else (1024, 1024 + 300)
    table = ConntrackTable(rows)
    for r in range(rows):
        taken = data.draw(st.lists(st.integers(lo, hi), max_size=80, unique=True))
        for p in taken:
            add_entry(table, node=r, pod=r, port=p,
                      t_close=data.draw(st.sampled_from([0, 100, 10**6])),
                      t_expire=data.draw(st.sampled_from([50, 10**6])),
                      flags=data.draw(st.sampled_from([int(TCP | SNAT), int(TCP), int(TCP | SNAT | NAT_CLASH)])),
                      seq=data.draw(st.integers(0, 2**32 - 1)))
    t = np.array(data.draw(st.lists(st.sampled_from([0, 60, 200]), min_size=rows, max_size=rows)))
    sport = np.array(data.draw(st.lists(st.sampled_from([lo, lo + 1, 40000, 300, 800]), min_size=rows, max_size=rows)))
    offs = np.array(data.draw(st.lists(st.lists(st.integers(0, 65535), min_size=5, max_size=5),
                                       min_size=rows, max_size=rows)))
    isn = np.array(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=rows, max_size=rows)))
    rule = NatRule(random_all=random_all, port_range=rng_ports, evict_closing=evict, tcp=tcp)
    ref = copy.deepcopy(table)
    want = [select_port(ref, int(t[r]), r, r, int(sport[r]), offs[r], int(isn[r]), rule) for r in range(rows)]
    port, ex, found, ev = select_ports(table, t, np.arange(rows), np.arange(rows), sport, offs, isn, rule)
    assert list(port) == [w.port for w in want]
    assert list(ex) == [w.exhausted for w in want]
    assert list(found) == [w.found for w in want]
    assert list(ev) == [w.evicted for w in want]
    assert np.array_equal(table.count, ref.count)
    assert np.array_equal(table.alive[:table.size], ref.alive[:ref.size])


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(1, 10**5)),
                min_size=1, max_size=60),
       st.lists(st.integers(0, 2 * 10**6), min_size=4, max_size=4))
def test_cpu_queue_closed_form_matches_the_recursion(jobs, free):
    """Each CPU is a FIFO single server: end_i = max(a_i, end_{i-1}) + s_i (the reference), computed
    in batch by a segmented closed form in integers."""
    from lbsim.batch import _lindley
    jobs = sorted(jobs)                          # by CPU, then arrival
    cpu = np.array([j[0] for j in jobs]); a = np.array([j[1] for j in jobs]); s = np.array([j[2] for j in jobs])
    free = np.array(free, np.int64)
    want, last = [], {}
    for c, ai, si in jobs:
        end = max(ai, last.get(c, int(free[c]))) + si
        last[c] = end
        want.append(end)
    assert list(_lindley(cpu, a, s, free)) == want
