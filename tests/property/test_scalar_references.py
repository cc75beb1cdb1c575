"""Every vectorized or compiled hot path agrees with its readable reference, decision for decision."""

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim import Scenario
from lbsim.balancing import iptables_endpoint, iptables_endpoint_scalar, round_robin, round_robin_scalar
from lbsim.compiled import layout as L
from lbsim.compiled.layout import engine_params
from lbsim.compiled.nat import select_port as select_port_nb
from lbsim.kernel import F_NAT_CLASH, F_SNAT, F_TCP, ROUNDS
from lbsim.reference.conntrack import ConntrackTable
from lbsim.reference.nat import NatRule, select_port
from lbsim.rng import STREAMS, Streams, mix64, mix64_scalar
from lbsim.tuples import reply_key
from lbsim.workload import Params
from tests.helpers import add_entry, compiled_table


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
       random_all=st.booleans(), evict=st.booleans(), tcp=st.booleans(),
       kernel=st.sampled_from(["modern", "4.x"]), legacy_random=st.booleans())
def test_compiled_select_port_matches_reference(data, rows, width, random_all, evict, tcp, kernel,
                                                legacy_random):
    """Random tables near exhaustion: the compiled search takes the reference's every probe
    (port, exhausted, found, what it freed or evicted), with the offsets of the same stream."""
    rng_ports = (10000, 10000 + width - 1) if width else None
    lo, hi = rng_ports if rng_ports else (1024, 1024 + 300)
    legacy = kernel == "4.x"
    table = ConntrackTable(rows, buckets=64, salt=3)
    for r in range(rows):
        taken = data.draw(st.lists(st.integers(lo, hi), max_size=80, unique=True))
        for p in taken:
            add_entry(table, node=r, pod=r, port=p,
                      t_close=data.draw(st.sampled_from([0, 100, 10**6])),
                      t_expire=data.draw(st.sampled_from([50, 10**6])),
                      flags=data.draw(st.sampled_from([F_TCP | F_SNAT, F_TCP,
                                                       F_TCP | F_SNAT | F_NAT_CLASH])),
                      seq=data.draw(st.integers(0, 2**32 - 1)))
    E, HD, S, free, IX, count = compiled_table(table)
    streams = Streams(data.draw(st.integers(0, 2**32)))
    K = np.zeros(len(STREAMS) + 1, np.uint64)
    K[: len(STREAMS)] = [streams.keys[n] for n in STREAMS]
    P = engine_params(Params.of(Scenario().replace(**{
        "nat.kernel": kernel, "nat.random_fully": random_all and not legacy_random,
        "nat.random": random_all and legacy_random,
        "workload.protocol": "tcp" if tcp else "udp",
        **({"nat.port_range": list(rng_ports)} if rng_ports else {})})))
    rule = NatRule(random_all=bool(P.random_all), port_range=rng_ports,
                   evict_closing=bool(P.evict_closing), tcp=tcp, rover_search=legacy,
                   legacy_random=bool(P.legacy_random))
    rover_ref = [[data.draw(st.integers(0, 65535))] for _ in range(rows)]
    rover = np.array([r[0] for r in rover_ref], np.int64)
    for r in range(rows):
        t = data.draw(st.sampled_from([0, 60, 200]))
        sport = data.draw(st.sampled_from([lo, lo + 1, 40000, 300, 800]))
        isn = data.draw(st.integers(0, 2**32 - 1))
        offs = [int(streams.u16("nat", np.array([r]), 0, j)[0]) for j in range(ROUNDS)]
        secure = 0
        if legacy and P.legacy_random:
            k = np.array([reply_key(r, r, 0)], np.int64).view(np.uint64)
            secure = int(mix64(k ^ streams.keys["nat"])[0] >> np.uint64(32))
        want = select_port(table, t, r, r, sport, offs, isn, rule, rover_ref[r], secure)
        got = select_port_nb(E, HD, S, free, IX, count, K, P, rover, t, r, r, sport, r, 0, isn)
        assert (want.port, want.exhausted, want.found) == got
        assert rover[r] == rover_ref[r][0]
    assert np.array_equal(count, table.count)
    held = np.flatnonzero(E[L.T_EXPIRE][: S[L.S_SIZE]] >= 0)
    assert sorted(E[L.REPLY][held]) == sorted(table.reply[: table.size][table.alive[: table.size]])
