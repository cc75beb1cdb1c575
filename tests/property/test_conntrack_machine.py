"""The compiled conntrack table (index, calendar, release, early_drop, GC) and the reference table,
driven through the same operations; entries are compared by their keys (the two number their
rows differently)."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from lbsim.compiled import calendar, index, layout as L, table
from lbsim.kernel import F_TCP
from lbsim.reference.conntrack import ConntrackTable

NODES, CAP, BUCKETS, SALT = 3, 4096, 16, 7
KEYS = st.integers(0, 300)


class TablesAgree(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.ref = ConntrackTable(NODES, capacity=4, buckets=BUCKETS, salt=SALT)
        self.E = L.entry_rows(CAP)
        self.HD = calendar.calendar_heads(NODES)
        self.S = np.zeros(L.STATE_SLOTS, np.int64)
        self.IX = np.full(2 * 4 * CAP, -1, np.int64)
        self.free, self.SK, self.SE = np.zeros(CAP, L.ROW), np.zeros(CAP, np.int64), np.zeros(CAP, L.ROW)
        self.count = np.zeros(NODES, np.int64)
        self.W = np.zeros((2, NODES), np.int64)
        self.t = 0

    def _args(self):
        return self.E, self.HD, self.S, self.free, self.IX, self.count

    def _held(self):
        """{reply key: (orig key, node)} of the entries each table holds."""
        n = self.ref.size
        alive = np.flatnonzero(self.ref.alive[:n])
        ref = {int(self.ref.reply[e]): (int(self.ref.orig[e]), int(self.ref.node[e]))
               for e in alive}
        rows = np.flatnonzero(self.E[L.T_EXPIRE][: self.S[L.S_SIZE]] >= 0)
        comp = {int(self.E[L.REPLY][e]): (int(self.E[L.ORIG][e]), int(self.E[L.NODE][e]))
                for e in rows}
        return ref, comp

    @rule(reply=st.lists(KEYS, min_size=1, max_size=20, unique=True),
          node=st.integers(0, NODES - 1), life=st.integers(1, 50), with_orig=st.booleans(),
          tcp=st.booleans())
    def add(self, reply, node, life, with_orig, tcp):
        for k in reply:
            orig = k + 1000 if with_orig else -1
            if self.ref.get(k) >= 0 or (orig >= 0 and self.ref.get(orig) >= 0):
                continue
            t = self.t
            fields = (node, 0, t + life // 2, t + life // 3, t + life, F_TCP if tcp else 0, 0)
            self.ref.add1(orig, k, node, 0, 0, t, *fields[2:])
            table.insert(*self._args(), np.uint64(SALT), BUCKETS, orig, k, node, 0, *fields[2:])

    @rule(key=KEYS)
    def release(self, key):
        e = self.ref.get(key)
        if e >= 0:
            self.ref.release1(e)
        ce = index.idx_get(self.IX, self.E, key)
        if ce >= 0:
            table.release(*self._args(), ce)

    @rule(key=st.integers(0, 1400), dt=st.integers(0, 5))
    def lookup(self, key, dt):
        """A lookup frees an expired entry it meets, and finds the same live one."""
        self.t += dt
        e = self.ref.get(key)
        if e >= 0 and self.ref.t_expire[e] <= self.t:
            self.ref.release1(e)
            e = -1
        ce = table.live_eid(*self._args(), key, self.t)
        assert (e >= 0) == (ce >= 0)
        if e >= 0:
            assert self.ref.reply[e] == self.E[L.REPLY][ce]

    @rule(node=st.integers(0, NODES - 1), key=st.integers(0, 2000), dt=st.integers(0, 20))
    def early_drop(self, node, key, dt):
        self.t += dt
        killed = table.early_drop(*self._args(), np.uint64(SALT), BUCKETS, self.SK, node, key, self.t)
        assert killed == self.ref.early_drop(node, key, self.t)

    @rule(limit=st.integers(0, 40), dt=st.integers(0, 20),
          due=st.lists(st.booleans(), min_size=NODES, max_size=NODES),
          early=st.lists(st.booleans(), min_size=NODES, max_size=NODES))
    def gc_pass(self, limit, dt, due, early):
        self.t += dt
        rk, rn = self.ref.gc_pass(self.t, limit, np.array(due), np.array(early))
        nodes = np.flatnonzero(due).astype(np.int64)
        table.gc_pass(*self._args(), limit, self.t, nodes, nodes.size, np.array(early), self.W,
                      self.SK, self.SE)
        assert np.array_equal(self.W[0, nodes], rk[nodes])
        assert np.array_equal(self.W[1, nodes], rn[nodes])

    @invariant()
    def same_entries(self):
        ref, comp = self._held()
        assert ref == comp
        assert np.array_equal(self.count, self.ref.count)
        for k in ref:             # every held entry is found under its reply key
            assert self.E[L.REPLY][index.idx_get(self.IX, self.E, k)] == k


TestTablesAgree = TablesAgree.TestCase
