"""lbsim.shared_lists: after any sequence of per-node changes, every node's group holds exactly
the list it was last given, equal lists share one group, and a list no node has is gone."""

import numpy as np
from hypothesis import given, strategies as st

from lbsim.shared_lists import SharedLists

_lists = st.lists(st.integers(0, 5), max_size=4, unique=True).map(
    lambda xs: np.array(sorted(xs), np.int64))


@given(st.lists(_lists, min_size=1, max_size=6),
       st.lists(st.tuples(st.integers(0, 5), _lists), max_size=30))
def test_groups_follow_every_change(first, changes):
    shared = SharedLists(first)
    now = list(first)
    for v, eps in changes:
        v %= len(now)
        known = {a.tobytes() for a in now}
        new = shared.set(v, eps)
        assert new == (eps.tobytes() not in known)
        now[v] = eps
        for u, a in enumerate(now):
            assert np.array_equal(shared.lists[shared.group[u]], a)
        used = set(shared.group.tolist())
        assert len(used) == len({a.tobytes() for a in now})      # equal lists, one group
        for g, a in enumerate(shared.lists):
            if g not in used:
                assert a.size == 0                               # nobody's list is dropped
