"""The compiled engine's conntrack index (open addressing with tombstones, slots emptied back when
a probe run allows) against a dict, operation by operation."""

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim.compiled.index import idx_del as _idx_del, idx_get as _idx_get, idx_put as _idx_put

from lbsim.compiled.index import IS_ORIG
from lbsim.compiled.layout import ORIG, REPLY, entry_rows

ops = st.lists(st.tuples(st.sampled_from(["put", "del", "get"]), st.integers(0, 40),
                         st.booleans()),
               min_size=1, max_size=300)


@settings(max_examples=300)
@given(ops, st.sampled_from([24, 31, 32]))
def test_index_matches_dict(operations, slots):
    """Each put indexes a key as a fresh entry's REPLY or ORIG (the slot names the column; a
    probe compares the entry's key there, so a fingerprint alone never answers)."""
    IX = np.full(slots, -1, np.int64)
    E = entry_rows(len(operations))
    ref: dict[int, int] = {}
    used = 0
    for n, (op, k, as_orig) in enumerate(operations):
        key = (k * 0x9E3779B1) & 0x3FFFFFFFFFFF       # spread keys, stay non-negative
        if op == "put" and key not in ref and used + 1 < slots // 2:   # load < 1/2
            E[ORIG if as_orig else REPLY][n] = key
            used += _idx_put(IX, key, n, IS_ORIG if as_orig else 0)
            ref[key] = n
        elif op == "del" and key in ref:
            used -= _idx_del(IX, E, key, ref.pop(key))
        assert _idx_get(IX, E, key) == ref.get(key, -1)
        # 'used' counts exactly the slots that are not empty (keys and tombstones)
        assert used == int(np.count_nonzero(IX != -1))
    for key, eid in ref.items():
        assert _idx_get(IX, E, key) == eid


def test_a_fingerprint_match_is_not_a_hit():
    """Two keys with the same home slot and fingerprint (searched for): a probe for the one not
    indexed meets the other's slot, reads its key and goes on: not found."""
    from lbsim.compiled.index import _fingerprint, _home
    IX = np.full(4, -1, np.int64)
    E = entry_rows(1)
    seen: dict[tuple[int, int], int] = {}
    k = 0
    while (int(_fingerprint(k)), int(_home(k, 4))) not in seen:
        seen[int(_fingerprint(k)), int(_home(k, 4))] = k
        k += 1
    a, b = seen[int(_fingerprint(k)), int(_home(k, 4))], k
    E[REPLY][0] = a
    _idx_put(IX, a, 0, 0)
    assert _idx_get(IX, E, a) == 0 and _idx_get(IX, E, b) == -1
    assert _idx_del(IX, E, b, 0) == 0 and _idx_get(IX, E, a) == 0


@settings(max_examples=200)
@given(st.integers(1, 20000), st.lists(st.floats(0.0, 1.0, exclude_max=True), max_size=50),
       st.lists(st.integers(0, 20000), max_size=10))
def test_compiled_endpoint_is_the_cascade_bisection(n, us, at):
    """The compiled iptables endpoint choice (a walk from u * n) picks what the cascade's
    bisection picks, also for uniforms exactly on a CDF step."""
    from lbsim import Scenario
    from lbsim.balancing import iptables_cascade_cdf, iptables_endpoint
    from lbsim.compiled.handlers import endpoint
    from lbsim.compiled.layout import engine_params
    from lbsim.workload import Params
    cdf = np.asarray(iptables_cascade_cdf(n), np.float64)
    us = np.array(us + [float(cdf[i % n]) for i in at] + [0.0], np.float64)
    us = us[us < 1.0]
    P = engine_params(Params.of(Scenario()))
    assert P.per_attempt and not P.nftables
    ep_ptr = np.array([0, n], np.int64)
    ep_list = np.arange(n, dtype=np.int64) + 7
    group = np.zeros(1, np.int64)
    got = [endpoint(P, group, ep_ptr, ep_list, cdf, ep_list[:1], 0, u, 0) for u in us]
    assert got == list(iptables_endpoint(us, n) + 7)
