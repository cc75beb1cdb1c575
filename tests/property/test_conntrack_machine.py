"""The vectorized ConntrackTable and its dict reference, driven through the same operations."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lbsim.conntrack import ConntrackTable, DictConntrackTable

NODES = 3
KEYS = st.integers(0, 300)


class TablesAgree(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.fast = ConntrackTable(NODES, capacity=4, buckets=16, salt=7)
        self.ref = DictConntrackTable(NODES, capacity=4, buckets=16, salt=7)
        self.t = 0

    def _indexed(self, key):
        return self.ref.lookup(np.array([key]))[0] >= 0

    @rule(reply=st.lists(KEYS, min_size=1, max_size=20, unique=True), node=st.integers(0, NODES - 1),
          life=st.integers(0, 50), with_orig=st.booleans())
    def add(self, reply, node, life, with_orig):
        reply = [k for k in reply if not self._indexed(k) and not self._indexed(k + 1000)]
        if not reply:
            return
        n = len(reply)
        orig = np.array(reply) + 1000 if with_orig else np.full(n, -1)
        fields = dict(orig=orig, reply=np.array(reply), node=np.full(n, node), pod=np.zeros(n),
                      flow=np.arange(n), t_confirm=np.full(n, self.t),
                      t_assured=np.full(n, self.t + life // 2), t_close=np.full(n, self.t + life // 3),
                      t_expire=np.full(n, self.t + life), flags=np.full(n, node % 2, np.uint8),
                      seq=np.zeros(n))
        assert np.array_equal(self.fast.add(**fields), self.ref.add(**fields))

    @precondition(lambda self: self.ref.size > 0)
    @rule(data=st.data())
    def release(self, data):
        eids = data.draw(st.lists(st.integers(0, self.ref.size - 1), max_size=10))
        self.fast.release(np.array(eids, np.int64))
        self.ref.release(np.array(eids, np.int64))

    @rule(dt=st.integers(0, 30))
    def collect(self, dt):
        self.t += dt
        assert self.fast.collect(self.t) == self.ref.collect(self.t)

    @rule(node=st.integers(0, NODES - 1), key=st.integers(0, 2000), dt=st.integers(0, 20))
    def early_drop(self, node, key, dt):
        self.t += dt
        assert self.fast.early_drop(node, key, self.t) == self.ref.early_drop(node, key, self.t)

    @rule(limit=st.integers(0, 40), dt=st.integers(0, 20),
          due=st.lists(st.booleans(), min_size=NODES, max_size=NODES),
          early=st.lists(st.booleans(), min_size=NODES, max_size=NODES))
    def gc_pass(self, limit, dt, due, early):
        self.t += dt
        fk, fn = self.fast.gc_pass(self.t, limit, np.array(due), np.array(early))
        rk, rn = self.ref.gc_pass(self.t, limit, np.array(due), np.array(early))
        assert np.array_equal(fk, rk) and np.array_equal(fn, rn)

    @rule(keys=st.lists(st.integers(0, 1400), max_size=30))
    def lookup(self, keys):
        k = np.array(keys, np.int64)
        assert np.array_equal(self.fast.lookup(k), self.ref.lookup(k))

    @invariant()
    def count_never_negative(self):
        assert (self.ref.count >= 0).all()

    @invariant()
    def same_state(self):
        assert np.array_equal(self.fast.count, self.ref.count)
        n = self.ref.size
        assert self.fast.size == n
        alive = np.flatnonzero(self.ref.alive[:n])
        assert np.array_equal(alive, np.flatnonzero(self.fast.alive[:n]))
        assert self.ref.count.sum() == alive.size
        # every held entry is found under its reply key (so no reply tuple is held twice)
        assert np.array_equal(self.fast.lookup(self.ref.reply[alive]), alive)
        assert np.array_equal(self.ref.lookup(self.ref.reply[alive]), alive)


TestTablesAgree = TablesAgree.TestCase
