"""The compiled engine's per-node expiry calendar against brute force over the held entries.

A GC sweep must free exactly the expired entries of its node and return the kernel's autotune
sums over every entry it keeps (sum of min(max(remaining, GC_INTERVAL_MIN), GC_INTERVAL_CLAMP),
and their number), though it visits only a few of them; a gauge sample must count as expired
exactly the held entries whose expiry second has passed. Random operations include long
lifetimes (the far list), nodes left unswept for longer than the 256 s ring, early releases and
extended timeouts.
"""

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim.compiled import calendar as calmod, layout as L, table
from lbsim.compiled.index import idx_put
from lbsim.kernel import GC_INTERVAL_CLAMP, GC_INTERVAL_MIN

NS = 1_000_000_000
NODES = 2
CAP = 256

lifetimes = st.one_of(st.integers(1, 3 * NS), st.integers(1, 400 * NS))
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, NODES - 1), lifetimes),
    st.tuples(st.just("wait"), st.integers(0, 2 * NS)),
    st.tuples(st.just("wait"), st.integers(0, 300 * NS)),
    st.tuples(st.just("sample")),
    st.tuples(st.just("sweep"), st.integers(0, NODES - 1)),
    st.tuples(st.just("release"), st.integers(0, CAP)),
    st.tuples(st.just("extend"), st.integers(0, CAP), lifetimes),
), max_size=60)


class Calendar:
    """The compiled state arrays, driven through the engine's own functions."""

    def __init__(self):
        self.E = L.entry_rows(CAP)
        self.HD = calmod.calendar_heads(NODES)
        self.S = np.zeros(L.STATE_SLOTS, np.int64)
        self.free = np.zeros(CAP, L.ROW)
        self.IX = np.full(8 * CAP, -1, np.int64)
        self.count = np.zeros(NODES, np.int64)
        self.SK = np.zeros(CAP, np.int64)
        self.next_key = 1

    def held(self, v=None):
        e = np.flatnonzero(self.E[L.T_EXPIRE][: self.S[L.S_SIZE]] >= 0)
        return e if v is None else e[self.E[L.NODE][e] == v]

    def add(self, v, x):
        S = self.S
        if S[L.S_NFREE] > 0:
            S[L.S_NFREE] -= 1
            e = self.free[S[L.S_NFREE]]
        elif S[L.S_SIZE] < CAP:
            e = S[L.S_SIZE]
            S[L.S_SIZE] += 1
        else:
            return
        self.E[L.REPLY][e], self.E[L.ORIG][e], self.E[L.NODE][e] = self.next_key, -1, v
        self.E[L.T_EXPIRE][e] = x
        self.next_key += 1
        calmod.cal_link(self.E, self.HD, S, e, v, x)
        self.count[v] += 1
        S[L.S_USED] += idx_put(self.IX, self.E[L.REPLY][e], e, 0)

    def release(self, e):
        table.release(self.E, self.HD, self.S, self.free, self.IX, self.count, e)

    def extend(self, e, x):
        v, old = self.E[L.NODE][e], self.E[L.T_EXPIRE][e]
        calmod.cal_unlink(self.E, self.HD, self.S, e, v, old)
        self.E[L.T_EXPIRE][e] = x
        calmod.cal_link(self.E, self.HD, self.S, e, v, x)

    def sweep(self, v, t):
        return table._gc_sweep(self.E, self.HD, self.S, self.free, self.IX, self.count, v, t,
                           self.SK)

    def expired_counted(self, v):
        return self.HD[calmod.nd(v) + 1, L.N_EXPD]


def step(cal, t, op):
    """Apply one operation at time ``t`` and check the calendar against brute force; returns
    the new time."""
    E = cal.E
    if op[0] == "add":
        cal.add(op[1], t + op[2])
    elif op[0] == "wait":
        t += op[1]
    elif op[0] == "sample":                  # every second up to the next whole one, in turn
        t = -(-t // NS) * NS
        for sec in range(cal.S[L.S_LAST_SAMPLE] + 1, t // NS + 1):
            calmod.count_expired(E, cal.HD, cal.S, NODES, sec)
    elif op[0] == "release":
        held = cal.held()
        if held.size:
            cal.release(held[op[1] % held.size])
    elif op[0] == "extend":
        held = cal.held()
        live = held[E[L.T_EXPIRE][held] > t]
        if live.size:
            e = live[op[1] % live.size]
            if t + op[2] > E[L.T_EXPIRE][e]:
                cal.extend(e, t + op[2])
    else:
        v = op[1]
        before = cal.held(v)
        keep = before[E[L.T_EXPIRE][before] > t]
        d = E[L.T_EXPIRE][keep] - t
        want = (int(np.clip(d, GC_INTERVAL_MIN, GC_INTERVAL_CLAMP).sum()), keep.size)
        assert cal.sweep(v, t) == want
        assert set(cal.held(v)) == set(keep)
    ls = cal.S[L.S_LAST_SAMPLE]
    for v in range(NODES):
        held = cal.held(v)
        assert cal.count[v] == held.size
        seconds = -(-E[L.T_EXPIRE][held] // NS)
        assert cal.expired_counted(v) == int((seconds <= ls).sum())
        assert calmod.collect(E, cal.HD, v, cal.SK) == held.size
    return t


@settings(max_examples=500, deadline=None)
@given(ops)
def test_calendar_matches_brute_force(script):
    cal = Calendar()
    t = 1
    for op in script:
        t = step(cal, t, op)


def test_calendar_long_random_runs():
    """Long seeded runs as the engine drives the calendar: a sample every second, a sweep of
    each node every 0-70 s (node 1 sometimes left alone for 300 s), short, TIME_WAIT-like and
    far lifetimes, early releases and extensions."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        cal = Calendar()
        t = 1
        next_sweep = [NS, NS]
        for _ in range(4000):
            t = step(cal, t, ("wait", int(rng.integers(0, NS // 2))))
            if t // NS > cal.S[L.S_LAST_SAMPLE] + 1 or rng.random() < 0.2:
                t = step(cal, t, ("sample",))
            for v in range(NODES):
                if next_sweep[v] <= t:
                    t = step(cal, t, ("sweep", v))
                    lag = 300 if v == 1 and rng.random() < 0.1 else 70
                    next_sweep[v] = t + int(rng.integers(0, lag * NS))
            r = rng.random()
            life = int(rng.choice([rng.integers(1, 3 * NS), rng.integers(100 * NS, 200 * NS),
                                   rng.integers(250 * NS, 500 * NS)]))
            if r < 0.6:
                t = step(cal, t, ("add", int(rng.integers(0, NODES)), life))
            elif r < 0.7:
                t = step(cal, t, ("release", int(rng.integers(0, CAP))))
            elif r < 0.8:
                t = step(cal, t, ("extend", int(rng.integers(0, CAP)), life))
