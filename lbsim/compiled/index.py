"""The conntrack index: linear probing over one int64 a slot (-1 empty, -2 tombstone).

A slot holds ``fingerprint << 33 | column << 32 | entry``: 30 bits of the key's hash (not the
bits that chose its home slot), which of the entry's two keys it is (0 REPLY, 1 ORIG) and the
entry's row. A probe compares fingerprints and reads the entry's key from ``E`` only where they
match, so a hit is exact (the key itself is compared) and a miss almost never touches ``E``;
8 bytes a slot, where (key, entry) pairs took 16 (perf-scale-xl: 196 MiB instead of 392 MiB).
The probe sequence is the one the (key, entry) pairs had: the same slots in the same order.
Any table size (the home slot scales the hash's top 32 bits); the driver rebuilds it above
50 % load (keys and tombstones) to four times the keys. The reference's index is a Python dict
(:mod:`lbsim.reference.conntrack`).
"""

from __future__ import annotations

import numpy as np

from .. import tuples
from ..rng import mix64_nb as mix64
from .intrinsics import prefetch
from .layout import ORIG, REPLY, T_EXPIRE, hot, inline, jit

__all__ = ["idx_get", "idx_put", "idx_del", "rebuild_index", "prefetch_slot", "orig_key",
           "reply_key", "reply_key_nosnat", "IS_ORIG"]

_U = np.uint64
# one packing for every engine: tuples' own functions, compiled
orig_key = inline(tuples.orig_key)
reply_key = inline(tuples.reply_key)
reply_key_nosnat = inline(tuples.reply_key_nosnat)

#: a slot's column bit: the key is the entry's ORIG (else its REPLY)
IS_ORIG = 1
_FP_MASK = (1 << 30) - 1
_ROW_MASK = (1 << 32) - 1


@inline
def _home(key, slots):
    """Home slot in [0, slots): the top 32 hash bits scaled (any table size, not a power of 2)."""
    return np.int64(((mix64(_U(key)) >> _U(32)) * _U(slots)) >> _U(32))


@inline
def _fingerprint(key):
    """30 of the hash's low bits (the home slot uses the top 32), shifted into place."""
    return np.int64(mix64(_U(key)) & _U(_FP_MASK)) << 33


@inline
def _holds(IX, E, s, fp, key):
    """True if slot ``s`` holds ``key`` (fingerprint ``fp``): the fingerprints agree and so does
    the entry's key in the column the slot names."""
    x = IX[s]
    if x < 0 or (x & ~np.int64((1 << 33) - 1)) != fp:
        return False
    e = x & _ROW_MASK
    return (E[e][ORIG] if (x >> 32) & 1 else E[e][REPLY]) == key


@hot
def idx_get(IX, E, key):
    slots = IX.size
    s = _home(key, slots)
    fp = _fingerprint(key)
    while True:
        if _holds(IX, E, s, fp, key):
            return IX[s] & _ROW_MASK
        if IX[s] == -1:
            return -1
        s = s + 1 if s + 1 < slots else 0


@hot
def idx_put(IX, key, eid, column):
    """Index ``key`` as entry ``eid``'s ``column`` (IS_ORIG or 0: its REPLY); returns 1 if a
    never-used slot was taken (the load grows), else 0."""
    slots = IX.size
    s = _home(key, slots)
    while IX[s] >= 0:
        s = s + 1 if s + 1 < slots else 0
    fresh = 1 if IX[s] == -1 else 0
    IX[s] = _fingerprint(key) | (np.int64(column) << 32) | np.int64(eid)
    return fresh


@hot
def idx_del(IX, E, key, eid):
    """Remove ``key`` -> ``eid``; returns how many slots became never-used again. A slot
    followed by an empty one ends every probe run through it, so it (and the tombstones just
    before it) can be emptied instead of left as tombstones: fewer rebuilds, shorter probes."""
    slots = IX.size
    s = _home(key, slots)
    fp = _fingerprint(key)
    while True:
        if _holds(IX, E, s, fp, key):
            if IX[s] & _ROW_MASK != eid:
                return 0
            nxt = s + 1 if s + 1 < slots else 0
            if IX[nxt] != -1:
                IX[s] = -2
                return 0
            IX[s] = -1
            freed = 1
            p = s - 1 if s > 0 else slots - 1
            while IX[p] == -2 and freed < slots:
                IX[p] = -1
                freed += 1
                p = p - 1 if p > 0 else slots - 1
            return freed
        if IX[s] == -1:
            return 0
        s = s + 1 if s + 1 < slots else 0


@jit
def rebuild_index(E, size, slots):
    """A fresh index with ``slots`` slots holding every held entry's keys."""
    IX = np.full(slots, -1, np.int64)
    used = 0
    for e in range(size):
        if E[e][T_EXPIRE] >= 0:
            used += idx_put(IX, E[e][REPLY], e, 0)
            if E[e][ORIG] >= 0:
                used += idx_put(IX, E[e][ORIG], e, IS_ORIG)
    return IX, used


@inline
def prefetch_slot(IX, key, neighbours):
    """Prefetch ``key``'s home slot, and with ``neighbours`` the slots either side of it (a
    delete reads both: a slot may start a new cache line)."""
    slots = IX.size
    s = _home(key, slots)
    prefetch(IX, s)
    if neighbours:
        prefetch(IX, s + 1 if s + 1 < slots else 0)
        prefetch(IX, s - 1 if s > 0 else slots - 1)
