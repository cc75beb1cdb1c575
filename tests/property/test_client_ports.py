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
    # mostly short gaps and holds, now and then one far longer than the first window's: the
    # calendar's far list and its jump over the whole ring
    gaps = draw(st.lists(st.one_of(st.integers(0, 10**9), st.integers(0, 10**13)),
                         min_size=n, max_size=n))
    holds = draw(st.lists(st.one_of(st.integers(0, 5 * 10**9), st.integers(0, 10**14)),
                          min_size=n, max_size=n))
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


def test_the_held_ports_take_room_for_what_is_held_not_for_what_passed():
    # 20,000 connections of one client, each held for 1,000 of them: the entries and the word
    # table stay at their first sizes however many connections pass through them
    n = 20_000
    walk = PortWalk((32768, 60999), True, 1, np.uint64(3))
    t = np.arange(n, dtype=np.int64) * 1000
    ports = walk.open(np.zeros(n, np.int64), t, t + 1000 * 1000, np.arange(n))
    assert (ports >= 0).all()
    assert walk.pool.shape[0] <= 2048 and walk.words.shape[0] <= 1024


def test_ports_held_past_the_ring_and_a_pause_past_all_of_it_free_when_the_reference_says():
    # the first window sizes the ring for holds of ~1 s: holds of 100 s wait on the far list,
    # and a pause of an hour jumps the whole ring; every port is the reference's
    rng = np.random.default_rng(5)
    n = 6000
    gaps = rng.integers(0, 2_000_000, n)
    gaps[4000] = 3600 * 10**9
    t = np.cumsum(gaps)
    hold = np.where(rng.random(n) < 0.3, 100 * 10**9, 10**9)
    hold[:500] = 10**9
    client = rng.integers(0, 3, n)
    ref = ClientPorts((40000, 40199), True, 11)
    want = [ref.open(int(c), int(a), int(a + h), s) for s, (c, a, h) in
            enumerate(zip(client, t, hold))]
    walk = PortWalk((40000, 40199), True, 3, np.uint64(11))
    got = np.concatenate([walk.open(client[a:b], t[a:b], (t + hold)[a:b], np.arange(a, b))
                          for a, b in ((0, 500), (500, 4500), (4500, n))])
    assert got.tolist() == want
    assert -1 in want                      # the range of 200 ports ran out


@settings(max_examples=1000)
@given(st.integers(2, 5), st.lists(st.integers(0, 2**40 - 1), max_size=16, unique=True),
       st.data())
def test_a_deleted_word_leaves_every_other_where_a_lookup_finds_it(bits, keys, data):
    # a word table up to half full, some rows deleted in place (Algorithm R): every kept key is
    # found where the probe sequence looks, every deleted one is gone
    from lbsim.client_ports import _EMPTY, _delete, _slot
    words = np.full((1 << bits, 2), _EMPTY, np.int64)
    keys = keys[: (1 << bits) // 2]
    for k in keys:
        words[_slot(words, k)] = k, k + 1
    gone = data.draw(st.sets(st.sampled_from(keys))) if keys else set()
    for k in gone:
        _delete(words, _slot(words, k))
    assert int((words[:, 0] != _EMPTY).sum()) == len(keys) - len(gone)
    for k in keys:
        h = _slot(words, k)
        assert (words[h, 0] == _EMPTY) if k in gone else (words[h, 0] == k and words[h, 1] == k + 1)
