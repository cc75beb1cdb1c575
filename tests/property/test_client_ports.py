"""The clients' port walk: the compiled walk (lbsim.client_ports) takes the reference's every port
(lbsim.reference.ports, the kernel's connect() and UDP autobind read line by line), whatever the
windows it is called in, and what it gives is what a kernel may give: never a port its client
still holds, and -1 only when every port it can reach is held."""

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim.client_ports import PortWalk
from lbsim.reference.ports import ClientPorts


@st.composite
def connections(draw):
    lo = draw(st.sampled_from([1, 1000, 32768, 65530]))
    size = draw(st.sampled_from([1, 2, 3, 5, 10, 64, 28232]))
    hi = min(65535, lo + size - 1)
    n = draw(st.integers(1, 400))
    clients = draw(st.integers(1, 4))
    gaps = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n))
    holds = draw(st.lists(st.integers(0, 5 * 10**9), min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return dict(port_range=(lo, hi), tcp=draw(st.booleans()),
                key=draw(st.integers(0, 2**64 - 1)), clients=clients,
                client=np.array(draw(st.lists(st.integers(0, clients - 1), min_size=n,
                                              max_size=n)), np.int64),
                t=np.cumsum(np.array(gaps, np.int64)), hold=np.array(holds, np.int64),
                cuts=cuts)


def _reference(c):
    ref = ClientPorts(c["port_range"], c["tcp"], c["key"])
    out = [ref.open(int(k), int(t), int(t + h), s)
           for s, (k, t, h) in enumerate(zip(c["client"], c["t"], c["hold"]))]
    return np.array(out, np.int64), ref


@settings(max_examples=150)
@given(connections())
def test_the_compiled_walk_takes_the_references_every_port_in_any_windows(c):
    want, _ = _reference(c)
    walk = PortWalk(c["port_range"], c["tcp"], c["clients"], np.uint64(c["key"]))
    got, n = [], c["client"].size
    for a, b in zip([0, *c["cuts"]], [*c["cuts"], n]):    # windows, the state carried
        sid = np.arange(a, b, dtype=np.int64)
        got.append(walk.open(c["client"][a:b], c["t"][a:b], c["t"][a:b] + c["hold"][a:b], sid))
    assert np.array_equal(np.concatenate(got), want)


@settings(max_examples=150)
@given(connections())
def test_a_port_is_never_one_its_client_holds_and_none_only_when_all_are_held(c):
    lo, hi = c["port_range"]
    ports, _ = _reference(c)
    reach = hi - lo + 1
    if c["tcp"] and reach > 1 and reach % 2:
        reach -= 1                       # connect() walks whole pairs of parities
    for i, (k, t) in enumerate(zip(c["client"], c["t"])):
        earlier = np.flatnonzero((c["client"][:i] == k) & (c["t"][:i] + c["hold"][:i] > t)
                                 & (ports[:i] >= 0))
        held = set(ports[earlier].tolist())
        if ports[i] >= 0:
            assert lo <= ports[i] <= hi and ports[i] not in held
        else:
            assert len(held) >= reach


def test_a_range_of_one_port_serves_one_connection_at_a_time():
    walk = PortWalk((5000, 5000), True, 1, np.uint64(7))
    t = np.array([0, 1, 10, 11], np.int64)
    got = walk.open(np.zeros(4, np.int64), t, t + 5, np.arange(4))
    assert got.tolist() == [5000, -1, 5000, -1]


def test_the_held_table_grows_and_forgets_what_freed():
    # 20,000 connections of one client each held for 1,000 of them: the table stays near
    # 4 x 1,000 slots however many connections pass through it
    n = 20_000
    walk = PortWalk((32768, 60999), True, 1, np.uint64(3))
    t = np.arange(n, dtype=np.int64) * 1000
    ports = walk.open(np.zeros(n, np.int64), t, t + 1000 * 1000, np.arange(n))
    assert (ports >= 0).all()
    assert walk.table.shape[0] <= 8192


@settings(max_examples=1000)
@given(st.integers(2, 5), st.lists(st.tuples(st.integers(0, 2**40 - 1), st.integers(0, 100)),
                                   max_size=40, unique_by=lambda r: r[0]),
       st.integers(0, 100))
def test_a_purge_deletes_the_free_rows_and_finds_every_held_one(bits, rows, t):
    # a table up to two thirds full, purged in place at t: the held rows are found where the
    # probe sequence looks, the free ones are gone, and what is left is counted
    from lbsim.client_ports import _EMPTY, _empty_table, _purge, _slot
    table = _empty_table(1 << bits)
    rows = rows[: (2 << bits) // 3]
    for k, until in rows:
        h = _slot(table, k)
        table[h] = k, until
    left = _purge(table, t)
    held = {k: u for k, u in rows if u > t}
    assert left == len(held) == int((table[:, 0] != _EMPTY).sum())
    for k, until in rows:
        h = _slot(table, k)
        assert (table[h, 0] == k and table[h, 1] == until) if k in held else table[h, 0] == _EMPTY
