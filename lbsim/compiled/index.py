"""The conntrack index: linear probing over int64 keys (-1 empty, -2 tombstone).

(key, entry) pairs lie side by side, so that a probe touches one cache line; any table size (the
home slot scales the hash's top 32 bits); the driver rebuilds it above 50 % load (keys and
tombstones) to four times the keys. The reference's index is a Python dict
(:mod:`lbsim.reference.conntrack`).
"""

from __future__ import annotations

import numpy as np

from .. import tuples
from ..rng import mix64_nb as mix64
from .intrinsics import prefetch
from .layout import ORIG, REPLY, T_EXPIRE, hot, inline, jit

__all__ = ["idx_get", "idx_put", "idx_del", "rebuild_index", "prefetch_slot", "orig_key",
           "reply_key", "reply_key_nosnat"]

_U = np.uint64
# one packing for every engine: tuples' own functions, compiled
orig_key = inline(tuples.orig_key)
reply_key = inline(tuples.reply_key)
reply_key_nosnat = inline(tuples.reply_key_nosnat)


@inline
def _home(key, slots):
    """Home slot in [0, slots): the top 32 hash bits scaled (any table size, not a power of 2)."""
    return np.int64(((mix64(_U(key)) >> _U(32)) * _U(slots)) >> _U(32))


@hot
def idx_get(IX, key):
    slots = IX.size >> 1
    s = _home(key, slots)
    while True:
        k = IX[2 * s]
        if k == key:
            return IX[2 * s + 1]
        if k == -1:
            return -1
        s = s + 1 if s + 1 < slots else 0


@hot
def idx_put(IX, key, eid):
    """Returns 1 if a never-used slot was taken (the load grows), else 0."""
    slots = IX.size >> 1
    s = _home(key, slots)
    while IX[2 * s] >= 0:
        s = s + 1 if s + 1 < slots else 0
    fresh = 1 if IX[2 * s] == -1 else 0
    IX[2 * s] = key
    IX[2 * s + 1] = eid
    return fresh


@hot
def idx_del(IX, key, eid):
    """Remove ``key`` -> ``eid``; returns how many slots became never-used again. A slot
    followed by an empty one ends every probe run through it, so it (and the tombstones just
    before it) can be emptied instead of left as tombstones: fewer rebuilds, shorter probes."""
    slots = IX.size >> 1
    s = _home(key, slots)
    while True:
        k = IX[2 * s]
        if k == key:
            if IX[2 * s + 1] != eid:
                return 0
            IX[2 * s + 1] = -1
            nxt = s + 1 if s + 1 < slots else 0
            if IX[2 * nxt] != -1:
                IX[2 * s] = -2
                return 0
            IX[2 * s] = -1
            freed = 1
            p = s - 1 if s > 0 else slots - 1
            while IX[2 * p] == -2 and freed < slots:
                IX[2 * p] = -1
                freed += 1
                p = p - 1 if p > 0 else slots - 1
            return freed
        if k == -1:
            return 0
        s = s + 1 if s + 1 < slots else 0


@jit
def rebuild_index(E, size, slots):
    """A fresh index with ``slots`` slots holding every held entry's keys."""
    IX = np.full(2 * slots, -1, np.int64)
    used = 0
    for e in range(size):
        if E[e, T_EXPIRE] >= 0:
            used += idx_put(IX, E[e, REPLY], e)
            if E[e, ORIG] >= 0:
                used += idx_put(IX, E[e, ORIG], e)
    return IX, used


@inline
def prefetch_slot(IX, key, neighbours):
    """Prefetch ``key``'s home slot, and with ``neighbours`` the slots either side of it (a
    delete reads both: a slot may start a new cache line)."""
    slots = IX.size >> 1
    s = _home(key, slots)
    prefetch(IX, 2 * s)
    if neighbours:
        prefetch(IX, 2 * (s + 1 if s + 1 < slots else 0))
        prefetch(IX, 2 * (s - 1 if s > 0 else slots - 1))
