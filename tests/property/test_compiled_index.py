"""The compiled engine's conntrack index (open addressing with tombstones, slots emptied back when
a probe run allows) against a dict, operation by operation."""

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim.compiled import _idx_del, _idx_get, _idx_put

ops = st.lists(st.tuples(st.sampled_from(["put", "del", "get"]), st.integers(0, 40)),
               min_size=1, max_size=300)


@settings(max_examples=300)
@given(ops, st.sampled_from([48, 61, 64]))
def test_index_matches_dict(operations, slots):
    IX = np.full(2 * slots, -1, np.int64)
    ref: dict[int, int] = {}
    used = 0
    for n, (op, k) in enumerate(operations):
        key = (k * 0x9E3779B1) & 0x3FFFFFFFFFFF       # spread keys, stay non-negative
        if op == "put" and key not in ref and used + 1 < slots:   # the engine keeps load < 1/2
            used += _idx_put(IX, key, n)
            ref[key] = n
        elif op == "del" and key in ref:
            used -= _idx_del(IX, key, ref.pop(key))
        assert _idx_get(IX, key) == ref.get(key, -1)
        # 'used' counts exactly the slots that are not empty (keys and tombstones)
        assert used == int(np.count_nonzero(IX[0::2] != -1))
    for key, eid in ref.items():
        assert _idx_get(IX, key) == eid
