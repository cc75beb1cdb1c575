"""The compiled engine: the reference event loop of :mod:`lbsim.model`, compiled with numba.

simpy drives time window by window (at most ``batch_flows`` new flows per window, as in
:mod:`lbsim.batch`); inside a window one compiled function processes the events one at a time in
the reference order ``(time, kind, flow, attempt)``, with GC passes and gauge samples in between,
exactly as :func:`lbsim.model.run_reference` does. It is a line-by-line port of the scalar steps
of :mod:`lbsim.model`, :mod:`lbsim.nat` (``select_port``) and :mod:`lbsim.conntrack` (the entry
store, ``early_drop``, ``gc_pass``) onto flat arrays: the conntrack index is an open-addressing
hash of int64 keys, entries are rows of an int64 matrix with a free list, the event queue is a
binary heap of ``(time, kind, flow, attempt, pending slot)`` rows merged with the sorted stream
of first arrivals. tests/property requires its per-flow records, counters, gauges and drop log
to equal the reference engine's for random small scenarios and any window size.

Why compiled: the loop is sequential (every decision reads the tables the previous one wrote), so
numpy can only vectorize it where flows cannot interact, and then pays ~1-5 us of call overhead per
small array; benchmarks/RESULTS.md has the measurements.

Arrays outgrow their capacity only between events: the window function returns ``_ROOM`` before
an event that might not fit, Python grows the arrays, and the loop resumes where it stopped.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import simpy
from llvmlite import ir as llvm_ir
from numba.core import cgutils, types as nb_types
from numba.extending import intrinsic

from .conntrack import (EVICTION_RANGE, GC_INITIAL_COUNT, GC_INTERVAL_CLAMP, GC_INTERVAL_INIT,
                        GC_INTERVAL_MAX, GC_INTERVAL_MIN)
from .durations import Exponential, Fixed, LogNormal
from .balancing import iptables_cascade_cdf
from .config import ProxyMode
from .rng import STREAMS, bits_nb as _bits, mix64_nb as mix64, uniform_nb as _uniform

__all__ = ["run_compiled", "duration_ns"]

_NS = 1_000_000_000
_NEVER = np.iinfo(np.int64).max
_U = np.uint64

# entry fields (rows of E: 14 int64, 112 bytes; what a GC walk and a release read comes first)
NXT, T_EXPIRE, NODE, PRV, REPLY, ORIG, POD, T_ASSURED, T_CLOSE, FLAGS, SEQ, OBUCKET, RBUCKET, \
    BORN = range(14)
_NE = 14
# Each node files its held entries in an expiry calendar: a ring of _R one-second buckets
# (lists through NXT/PRV) for the seconds lo .. lo+_R-1, where bucket b holds the entries with
# ceil(t_expire / 1 s) = b, plus a "far" list for later seconds. A GC pass then visits only the
# expired buckets and the one or two seconds near its time; the rest of its autotune mean comes
# from running sums over the ring (HS = sum of t_expire - lo s, HC = their number): every ring
# entry's remaining time lies within [GC_INTERVAL_MIN, GC_INTERVAL_CLAMP] except those in the
# first buckets, which the pass walks. A gauge sample adds a bucket's count of entries not yet
# counted to the node's EXPD (held entries already expired: live = count - EXPD), so it visits
# no entry. Node v's block of HD is rows v*(_R+3) + (b mod _R: the ring's heads, _R: the far
# list's head, _R+1 and _R+2: the node's (lo, HS) and (HC, EXPD)); a head row is (first entry or
# -1, entries not yet counted as expired); an entry's PRV < 0 names its head row -1-PRV.
_R = 256
assert _R & (_R - 1) == 0 and _R * _NS <= GC_INTERVAL_CLAMP   # ring entries never clamp high
H_NEXT, H_CNT = 0, 1
N_LO, N_HS, N_HC, N_EXPD = 0, 1, 0, 1   # (lo, HS) in a node's first row, (HC, EXPD) in its second
# pending attempts (rows of PD): between the CPU (ARRIVE) and the confirm
PA_ARRIVE, PA_TNAT, PA_TCONF, PA_NODE, PA_POD, PA_PORT, PA_EXH, PA_ORIG, PA_REPLY, PA_ISN, \
    PA_FOLLOW = range(11)
_NP = 11
# scalar state (S)
(S_NEXT_NEW, S_RESOLVED, S_MAX_WAIT, S_SAMPLE_NEXT, S_SIZE, S_NFREE, S_USED, S_HN, S_PFREE,
 S_PSIZE, S_NDROP, S_NGAUGE, S_NSNAT, S_BORN, S_NEXT_TICK, S_LAST_SAMPLE) = range(16)
_NS_STATE = 16
# parameters (Q)
(Q_NODES, Q_CPUS, Q_PODS, Q_DIN, Q_DHOP, Q_TW, Q_UDP, Q_UDP_STREAM, Q_CTMAX, Q_LIMIT95, Q_GCFIXED,
 Q_TCP, Q_SNAT, Q_LOCAL, Q_PER_ATTEMPT, Q_NFT, Q_LEGACY, Q_RANDOM_ALL, Q_HAS_RANGE, Q_LO, Q_HI,
 Q_EVICT, Q_LEGACY_RANDOM, Q_RETRIES, Q_GAPMIN, Q_FULL, Q_POD_CLIENTS, Q_BUCKETS, Q_PT_KIND,
 Q_NODEPORT, Q_F) = range(31)
_NQ = 31
# keys (K): the streams' 64-bit keys, then the conntrack hash salt
K_CT_SALT = len(STREAMS)
_KEY = {name: i for i, name in enumerate(STREAMS)}
K_NAT, K_CPU_TIME, K_ISN, K_RSS, K_ENDPOINT = (_KEY["nat"], _KEY["cpu_time"], _KEY["isn"],
                                               _KEY["rss"], _KEY["endpoint"])
# counters (rows of C), in lbsim.model's order
C_FOUND, C_INSERT, C_INSERT_FAILED, C_DROP, C_EARLY_DROP, C_CLASH, C_INSERTED, C_GC_EARLY = range(8)
COUNTERS = ("found", "insert", "insert_failed", "drop", "early_drop", "clash_resolve",
            "entries_inserted", "gc_early_drop")
# event kinds (lbsim.model) and outcomes
CONFIRM, NAT, ARRIVE = 1, 2, 3
OK, FAILED = 1, 2
PORT_EXHAUSTION, INSERT_RACE, TABLE_FULL, NO_LOCAL_ENDPOINT, TUPLE_IN_USE = 1, 2, 3, 4, 5
_DONE, _PAUSE, _ROOM = 0, 1, 2
_AHEAD = 16   # how far ahead index slots are prefetched (flows; releases in a GC sweep)
# flags
F_TCP, F_SNAT, F_NAT_CLASH = 1, 2, 4
NODE_BASE = 167772160 + 1   # tuples.NODE_BASE + 1
CLIENT_BASE = 184549376     # tuples.CLIENT_BASE
# duration kinds
PT_FIXED, PT_EXP, PT_LOGNORMAL = 0, 1, 2

_jit = nb.njit(cache=True, nogil=True)
# the per-event functions allocate nothing: without NRT, passing arrays costs no atomic refcounts
_hot = nb.njit(cache=True, nogil=True, _nrt=False)


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint the CPU to fetch ``arr[index]`` (an int, or a tuple for a 2-D array) into cache
    (LLVM's ``llvm.prefetch``; no effect on results). The loop is bound by cache misses on the
    conntrack index and entry rows, each of which stalls it ~165 ns when met cold (measured
    here); fetched a few flows ahead they overlap instead."""
    sig = nb_types.void(arr, index)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        if isinstance(signature.args[1], nb_types.BaseTuple):     # arr[i, j]
            idx = cgutils.unpack_tuple(builder, args[1], len(signature.args[1]))
        else:
            idx = [args[1]]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        i8p, i32 = llvm_ir.IntType(8).as_pointer(), llvm_ir.IntType(32)
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@_jit
def duration_ns(kind, a, b, u1, u2):
    """A duration in ns from two uniforms: fixed ``a``, exponential (mean ``a``), log-normal
    (mean ``a``, sigma ``b``), as :mod:`lbsim.durations` defines them; at least 1 ns."""
    if kind == PT_FIXED:
        x = a
    elif kind == PT_EXP:
        x = -a * math.log1p(-u1)
    else:
        mu = math.log(a) - b * b / 2.0
        z = math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)
        x = math.exp(mu + b * z)
    return max(np.int64(np.rint(x * 1e9)), np.int64(1))


@_jit
def durations_ns(kind, a, b, u1, u2):
    out = np.empty(u1.size, np.int64)
    for i in range(u1.size):
        out[i] = duration_ns(kind, a, b, u1[i], u2[i])
    return out


def duration_params(d) -> tuple[int, float, float]:
    """(kind, a, b) of a :mod:`lbsim.durations` distribution for :func:`duration_ns`."""
    if isinstance(d, Fixed):
        return PT_FIXED, float(d.value), 0.0
    if isinstance(d, Exponential):
        return PT_EXP, float(d.mean), 0.0
    if isinstance(d, LogNormal):
        return PT_LOGNORMAL, float(d.mean), float(d.sigma)
    raise TypeError(f"unknown duration {d!r}")


# -- the conntrack index: linear probing over int64 keys (-1 empty, -2 tombstone) ---------------
@nb.njit(cache=True, inline="always")
def _home(key, slots):
    """Home slot in [0, slots): the top 32 hash bits scaled (any table size, not a power of 2)."""
    return np.int64(((mix64(_U(key)) >> _U(32)) * _U(slots)) >> _U(32))


@_hot
def _idx_get(IX, key):
    slots = IX.size >> 1
    s = _home(key, slots)
    while True:
        k = IX[2 * s]
        if k == key:
            return IX[2 * s + 1]
        if k == -1:
            return -1
        s = s + 1 if s + 1 < slots else 0


@_hot
def _idx_put(IX, key, eid):
    """Returns 1 if a never-used slot was taken (the load grows), else 0."""
    slots = IX.size >> 1
    s = _home(key, slots)
    while IX[2 * s] >= 0:
        s = s + 1 if s + 1 < slots else 0
    fresh = 1 if IX[2 * s] == -1 else 0
    IX[2 * s] = key
    IX[2 * s + 1] = eid
    return fresh


@_hot
def _idx_del(IX, key, eid):
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


@_jit
def rebuild_index(E, size, slots):
    """A fresh index with ``slots`` slots holding every held entry's keys:
    (key, entry) pairs side by side, so that a probe touches one cache line."""
    IX = np.full(2 * slots, -1, np.int64)
    used = 0
    for e in range(size):
        if E[e, T_EXPIRE] >= 0:
            used += _idx_put(IX, E[e, REPLY], e)
            if E[e, ORIG] >= 0:
                used += _idx_put(IX, E[e, ORIG], e)
    return IX, used


@nb.njit(cache=True, inline="always")
def _orig_key(node, client, sport):
    """:func:`lbsim.tuples.orig_key` of one flow."""
    return (1 << 62) | (node << 40) | (client << 16) | sport


@nb.njit(cache=True, inline="always")
def _reply_key(node, pod, port):
    """:func:`lbsim.tuples.reply_key` of one flow."""
    return (node << 36) | (pod << 16) | port


@nb.njit(cache=True, inline="always")
def _prefetch_slot(IX, key, neighbours):
    """Prefetch ``key``'s home slot, and with ``neighbours`` the slots either side of it (a
    delete reads both: a slot may start a new cache line)."""
    slots = IX.size >> 1
    s = _home(key, slots)
    prefetch(IX, 2 * s)
    if neighbours:
        prefetch(IX, 2 * (s + 1 if s + 1 < slots else 0))
        prefetch(IX, 2 * (s - 1 if s > 0 else slots - 1))


@nb.njit(cache=True, inline="always")
def _bucket(key, salt, buckets):
    h = mix64(_U(key) ^ salt) >> _U(32)
    return np.int64((h * _U(buckets)) >> _U(32))


# -- the entry store -------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _take(free, S, n_free, n_size):
    """A row from a free list (a stack of ``S[n_free]`` rows) or, if it is empty, the next
    never-used one (``S[n_size]``)."""
    if S[n_free] > 0:
        S[n_free] -= 1
        return free[S[n_free]]
    S[n_size] += 1
    return S[n_size] - 1


@nb.njit(cache=True, inline="always")
def _head(v, b):
    return v * (_R + 3) + (b & (_R - 1))


@nb.njit(cache=True, inline="always")
def _far(v):
    return v * (_R + 3) + _R


@nb.njit(cache=True, inline="always")
def _nd(v):
    """First of node ``v``'s two HD rows of calendar state: (N_LO, N_HS), then (N_HC, N_EXPD)."""
    return v * (_R + 3) + _R + 1


@nb.njit(cache=True, inline="always")
def _second(x):
    return (x + _NS - 1) // _NS


@_hot
def _list_push(E, HD, h, e):
    """Link entry ``e`` at the front of list ``h``."""
    nx = HD[h, H_NEXT]
    E[e, NXT], E[e, PRV] = nx, -1 - h
    if nx >= 0:
        E[nx, PRV] = e
    HD[h, H_NEXT] = e


@_hot
def _list_drop(E, HD, e):
    """Unlink entry ``e`` from its list."""
    p, nx = E[e, PRV], E[e, NXT]
    if p >= 0:
        E[p, NXT] = nx
    else:
        HD[-1 - p, H_NEXT] = nx
    if nx >= 0:
        E[nx, PRV] = p


@_hot
def _ring_push(E, HD, S, e, v, x, b, lo):
    """File entry ``e`` (expiring at ``x``, in second ``b``) in node ``v``'s ring, anchored at
    second ``lo``: its bucket, the running sums, the bucket's count if ``b`` is not sampled yet."""
    h = _head(v, b)
    _list_push(E, HD, h, e)
    n = _nd(v)
    HD[n, N_HS] += x - lo * _NS
    HD[n + 1, N_HC] += 1
    if b > S[S_LAST_SAMPLE]:
        HD[h, H_CNT] += 1


@_hot
def _cal_link(E, HD, S, e, v, x):
    """File held entry ``e`` of node ``v``, expiring at ``x``, in the node's calendar."""
    b = _second(x)
    n = _nd(v)
    lo = HD[n, N_LO]
    if b >= lo + _R:
        _list_push(E, HD, _far(v), e)
    else:
        _ring_push(E, HD, S, e, v, x, b, lo)
    if b <= S[S_LAST_SAMPLE]:        # its second was sampled already: expired at once
        HD[n + 1, N_EXPD] += 1


@_hot
def _cal_unlink(E, HD, S, e, v, x):
    """Take entry ``e`` (filed at expiry ``x``) out of node ``v``'s calendar."""
    b = _second(x)
    n = _nd(v)
    lo = HD[n, N_LO]
    _list_drop(E, HD, e)
    if b < lo + _R:
        HD[n, N_HS] -= x - lo * _NS
        HD[n + 1, N_HC] -= 1
        if b > S[S_LAST_SAMPLE]:
            HD[_head(v, b), H_CNT] -= 1
    if b <= S[S_LAST_SAMPLE]:
        HD[n + 1, N_EXPD] -= 1


@_hot
def _collect(E, HD, v, out, b0=0, buckets=0):
    """Every entry node ``v`` holds into ``out[:m]``, or with ``buckets`` > 0 only those with a
    tuple hashed into the EVICTION_RANGE buckets from ``b0`` (early_drop's); returns ``m``.
    (One list after the other: a second's entries were inserted together, often into nearby
    rows, which the hardware prefetcher then fetches ahead.)"""
    lo = HD[_nd(v), N_LO]
    m = 0
    for b in range(lo, lo + _R + 1):
        e = HD[_head(v, b) if b < lo + _R else _far(v), H_NEXT]
        while e >= 0:
            if buckets == 0:
                out[m] = e
                m += 1
            else:
                ob, rb = E[e, OBUCKET], E[e, RBUCKET]
                if ((ob >= 0 and (ob - b0) % buckets < EVICTION_RANGE)
                        or (rb - b0) % buckets < EVICTION_RANGE):
                    out[m] = e
                    m += 1
            e = E[e, NXT]
    return m


@_hot
def _release(E, HD, S, free, IX, count, e):
    x = E[e, T_EXPIRE]
    if x < 0:
        return
    E[e, T_EXPIRE] = -1
    v = E[e, NODE]
    count[v] -= 1
    _cal_unlink(E, HD, S, e, v, x)
    S[S_USED] -= _idx_del(IX, E[e, REPLY], e)
    if E[e, ORIG] >= 0:
        S[S_USED] -= _idx_del(IX, E[e, ORIG], e)
    free[S[S_NFREE]] = e
    S[S_NFREE] += 1


@_hot
def _live_eid(E, HD, S, free, IX, count, key, t):
    """Entry held under ``key`` and live at ``t``, or -1; an expired one met is freed."""
    e = _idx_get(IX, key)
    if e < 0:
        return -1
    if E[e, T_EXPIRE] <= t:
        _release(E, HD, S, free, IX, count, e)
        return -1
    return e


@_hot
def _sort_pairs(key, val, n):
    """Heapsort ``key[:n]`` ascending in place, carrying ``val`` along (no allocation)."""
    for start in range((n - 2) // 2, -1, -1):
        _sift(key, val, start, n)
    for end in range(n - 1, 0, -1):
        key[0], key[end] = key[end], key[0]
        val[0], val[end] = val[end], val[0]
        _sift(key, val, 0, end)


@_hot
def _sift(key, val, root, end):
    while 2 * root + 1 < end:
        child = 2 * root + 1
        if child + 1 < end and key[child] < key[child + 1]:
            child += 1
        if key[root] < key[child]:
            key[root], key[child] = key[child], key[root]
            val[root], val[child] = val[child], val[root]
            root = child
        else:
            return


@_hot
def _early_drop(E, HD, S, free, IX, count, K, Q, SK, node, new_orig, t):
    """``conntrack._EntryStore.early_drop``: 8 buckets from the new tuple's, non-ASSURED only."""
    buckets = Q[Q_BUCKETS]
    b0 = _bucket(new_orig, K[K_CT_SALT], buckets)
    cnt = _collect(E, HD, node, SK, b0, buckets)
    for i in range(EVICTION_RANGE):
        b = (b0 + i) % buckets
        for j in range(cnt):            # expired entries in this bucket's chains are freed
            e = SK[j]
            if E[e, T_EXPIRE] >= 0 and (E[e, OBUCKET] == b or E[e, RBUCKET] == b) and E[e, T_EXPIRE] <= t:
                _release(E, HD, S, free, IX, count, e)
        killed = 0
        for j in range(cnt):
            e = SK[j]
            if (E[e, T_EXPIRE] >= 0 and (E[e, OBUCKET] == b or E[e, RBUCKET] == b)
                    and E[e, T_EXPIRE] > t and E[e, T_ASSURED] > t):
                _release(E, HD, S, free, IX, count, e)
                killed += 1
        if killed:
            return killed
    return 0


@nb.njit(cache=True, inline="always")
def _clamped(d):
    return min(max(d, GC_INTERVAL_MIN), GC_INTERVAL_CLAMP)


@_hot
def _gc_sweep(E, HD, S, free, IX, count, v, t, SK):
    """Free node ``v``'s expired entries and advance its calendar to ``t``'s second; returns
    (total, seen) of ``gc_pass``'s mean: the sum of the clamped remaining times of the entries
    left, and their number. Visits the expired buckets, the far list and the buckets within
    GC_INTERVAL_MIN of ``t`` only (see the calendar note at the top)."""
    n = _nd(v)
    lo = HD[n, N_LO]
    bt = _second(t)
    # The seconds lo .. bt-1 are wholly expired, bt partly: their entries into SK[:m], then the
    # releases, with the index slots they will probe prefetched ahead. (Chasing the lists side
    # by side, one step of each in turn, measured no faster.)
    m = 0
    for b in range(lo, min(bt, lo + _R - 1) + 1):
        e = HD[_head(v, b), H_NEXT]
        while e >= 0:
            SK[m] = e
            m += 1
            e = E[e, NXT]
    for i in range(m + _AHEAD):
        if i < m:
            e = SK[i]
            _prefetch_slot(IX, E[e, REPLY], True)
            if E[e, ORIG] >= 0:
                _prefetch_slot(IX, E[e, ORIG], True)
        if i >= _AHEAD:
            e = SK[i - _AHEAD]
            if E[e, T_EXPIRE] <= t:
                _release(E, HD, S, free, IX, count, e)
    total, seen = 0, 0
    h = _far(v)
    e = HD[h, H_NEXT]
    while e >= 0:
        nx = E[e, NXT]
        x = E[e, T_EXPIRE]
        b = _second(x)
        if x <= t:
            _release(E, HD, S, free, IX, count, e)
        elif b < bt + _R:                        # within the ring from now on: move it there
            _list_drop(E, HD, e)                 # (its slot's old second, b - _R < bt, is empty)
            _ring_push(E, HD, S, e, v, x, b, lo)
        else:
            total += _clamped(x - t)
            seen += 1
        e = nx
    # the ring now holds seconds >= bt only: re-anchor it there
    HD[n, N_HS] -= HD[n + 1, N_HC] * ((bt - lo) * _NS)
    HD[n, N_LO] = bt
    # ring entries: remaining x - t < _R s <= CLAMP, so clamped = x - t except below MIN
    total += HD[n, N_HS] + HD[n + 1, N_HC] * (bt * _NS - t)
    seen += HD[n + 1, N_HC]
    for b in range(bt, min(_second(t + GC_INTERVAL_MIN), bt + _R - 1) + 1):
        h = _head(v, b)
        e = HD[h, H_NEXT]
        while e >= 0:
            d = E[e, T_EXPIRE] - t
            total += _clamped(d) - d
            e = E[e, NXT]
    return total, seen


@_hot
def _gc_pass(E, HD, S, free, IX, count, Q, t, due, ndue, flag, W, SK, SE):
    """``conntrack._EntryStore.gc_pass`` over the nodes ``due[:ndue]`` (ascending): frees
    expired entries, kills early on flagged nodes at >= 95 % (bucket order, newest first). Leaves
    the kills in ``W[0]`` and the autotuned delay to the next pass in ``W[1]``."""
    limit95 = Q[Q_LIMIT95]
    killed, next_run = W[0], W[1]
    nv = 0                               # victims go to SE[-nv:] (from the end)
    cap = SE.size
    for i in range(ndue):
        v = due[i]
        killed[v] = 0
        early = flag[v] and count[v] >= limit95
        if not early:
            total, seen = _gc_sweep(E, HD, S, free, IX, count, v, t, SK)
        else:                            # rare: walk every entry, free nothing yet
            total, seen = 0, 0
            m = _collect(E, HD, v, SK)
            for j in range(m):
                x = E[SK[j], T_EXPIRE]
                if x > t:
                    total += _clamped(x - t)
                    seen += 1
        mean = (GC_INITIAL_COUNT * GC_INTERVAL_INIT + total) // (GC_INITIAL_COUNT + seen)
        next_run[v] = min(max(mean, GC_INTERVAL_MIN), GC_INTERVAL_MAX)
        if not early:
            continue
        m = _collect(E, HD, v, SE)
        for j in range(m):
            e = SE[j]
            ob, rb = E[e, OBUCKET], E[e, RBUCKET]
            first = min(ob, rb) if ob >= 0 else rb
            SK[j] = (first << 32) | (0xFFFFFFFF - E[e, BORN])
        _sort_pairs(SK, SE, m)
        freed_before = 0
        k = 0
        for j in range(m):
            e = SE[j]
            if E[e, T_EXPIRE] <= t:
                freed_before += 1
                continue
            can = E[e, T_ASSURED] > t or ((E[e, FLAGS] & F_TCP) != 0 and E[e, T_CLOSE] <= t)
            if not can:
                continue
            if count[v] - freed_before - k < limit95:
                break
            SK[k] = e                    # SK[:k] is no longer needed beyond j >= k
            k += 1
        for j in range(k):
            SE[cap - 1 - nv - j] = SK[j]
        nv += k
        killed[v] = k
    for i in range(ndue):
        v = due[i]
        if flag[v] and count[v] >= limit95:   # the early-drop nodes: still >= 95 %
            for j in range(_collect(E, HD, v, SK)):
                e = SK[j]
                if E[e, T_EXPIRE] <= t:
                    _release(E, HD, S, free, IX, count, e)
    for j in range(nv):
        _release(E, HD, S, free, IX, count, SE[cap - 1 - j])


# -- the event heap: rows (t, order, payload); order = kind << 48 | flow << 8 | attempt ranks
# events of one instant as the reference does (kind, then flow, then attempt) in one comparison
@nb.njit(cache=True, inline="always")
def _less(H, i, j):
    return H[i, 0] < H[j, 0] or (H[i, 0] == H[j, 0] and H[i, 1] < H[j, 1])


@nb.njit(cache=True, inline="always")
def _order(kind, flow, attempt):
    return (kind << 48) | (flow << 8) | attempt


@nb.njit(cache=True, inline="always")
def _swap(H, i, j):
    for c in range(3):
        H[i, c], H[j, c] = H[j, c], H[i, c]


@_hot
def _push(H, S, t, kind, flow, attempt, payload):
    i = S[S_HN]
    S[S_HN] += 1
    H[i, 0], H[i, 1], H[i, 2] = t, _order(kind, flow, attempt), payload
    while i > 0:
        p = (i - 1) >> 1
        if _less(H, i, p):
            _swap(H, i, p)
            i = p
        else:
            break


@_hot
def _pop(H, S):
    n = S[S_HN] - 1
    S[S_HN] = n
    H[0, 0], H[0, 1], H[0, 2] = H[n, 0], H[n, 1], H[n, 2]
    i = 0
    while True:
        l = 2 * i + 1
        if l >= n:
            break
        s = l
        if l + 1 < n and _less(H, l + 1, l):
            s = l + 1
        if _less(H, s, i):
            _swap(H, i, s)
            i = s
        else:
            break


# -- NAT: nat.select_port -----------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _port_range(Q, sport):
    """(first port, size) of the range the rule maps ``sport`` into."""
    if Q[Q_HAS_RANGE]:
        return Q[Q_LO], Q[Q_HI] - Q[Q_LO] + 1
    if sport < 512:
        return 1, 511
    if sport < 1024:
        return 600, 424
    return 1024, 64512


@_hot
def _select_port(E, HD, S, free, IX, count, K, Q, rover, t, node, pod, sport, flow, attempt, isn):
    """Returns (port, exhausted, found); frees expired entries met, evicts as the kernel does."""
    found = 0
    base = _reply_key(node, pod, 0)
    mn, size = _port_range(Q, sport)
    if not Q[Q_RANDOM_ALL]:
        if Q[Q_HAS_RANGE]:
            if Q[Q_LO] <= sport <= Q[Q_HI]:
                if size == 1:
                    return sport, False, found
                e = _live_eid(E, HD, S, free, IX, count, base | sport, t)
                if e < 0:
                    return sport, False, found
                found += 1
        else:
            e = _live_eid(E, HD, S, free, IX, count, base | sport, t)
            if e < 0:
                return sport, False, found
            found += 1
    if Q[Q_LEGACY]:
        if not Q[Q_RANDOM_ALL]:
            off = rover[node]
        elif Q[Q_LEGACY_RANDOM]:
            off = np.int64(mix64(_U(base) ^ K[K_NAT]) >> _U(32)) & 0xFFFF
        else:
            off = np.int64(_bits(K[K_NAT], flow, attempt, 0) >> _U(48))
        i = 0
        while True:
            port = mn + off % size
            i += 1
            if i != size:
                e = _live_eid(E, HD, S, free, IX, count, base | port, t)
                if e >= 0:
                    found += 1
                    off = (off + 1) & 0xFFFF
                    continue
            if not Q[Q_RANDOM_ALL]:
                rover[node] = off
            exhausted = False
            if i == size:
                e = _idx_get(IX, base | port)
                exhausted = e >= 0 and E[e, T_EXPIRE] > t
            return port, exhausted, found
    evict = Q[Q_EVICT] and Q[Q_TCP]
    attempts = min(size, 128)
    port = mn
    for r in range(5):
        off = np.int64(_bits(K[K_NAT], flow, attempt, r) >> _U(48))
        for i in range(attempts):
            port = mn + off % size
            e = _live_eid(E, HD, S, free, IX, count, base | port, t)
            if e < 0:
                return port, False, found
            found += 1
            if evict and attempts - i <= 32:
                fl = E[e, FLAGS]
                d = (isn + 1 - E[e, SEQ]) & 0xFFFFFFFF
                if ((fl & F_TCP) != 0 and t >= E[e, T_CLOSE] and (fl & F_SNAT) != 0
                        and (fl & F_NAT_CLASH) == 0 and 0 < d < (1 << 31)):
                    _release(E, HD, S, free, IX, count, e)
                    return port, False, found
            off = (off + 1) & 0xFFFF
        if attempts >= size or attempts < 16:
            break
        attempts //= 2
    return port, True, found


# -- the window ------------------------------------------------------------------------------------
@_hot
def _fail(S, Q, gaps, D, cause_count, out, cause_rec, attempts_rec, flow, attempt, arrive, t_fail,
          cause, node):
    """Record a dropped attempt; returns the next attempt's arrival, or -1."""
    cause_count[cause] += 1
    if Q[Q_FULL]:
        i = S[S_NDROP]
        D[i, 0], D[i, 1], D[i, 2], D[i, 3], D[i, 4] = t_fail, flow, attempt, node, cause
        S[S_NDROP] += 1
    cause_rec[flow] = cause
    if attempt < Q[Q_RETRIES]:
        return max(arrive + gaps[attempt], t_fail + Q[Q_GAPMIN])
    out[flow] = FAILED
    attempts_rec[flow] = attempt + 1
    S[S_RESOLVED] += 1
    return -1


@_hot
def _serve(worker_free, pod, q, service):
    w = 0
    for j in range(1, worker_free.shape[1]):
        if worker_free[pod, j] < worker_free[pod, w]:
            w = j
    finish = max(q, worker_free[pod, w]) + service
    worker_free[pod, w] = finish
    return finish


@_hot
def _endpoint(Q, ep_ptr, ep_list, cdf, flow_pod, node, u, flow):
    if not Q[Q_PER_ATTEMPT]:
        return flow_pod[flow]
    g = node if Q[Q_LOCAL] else 0
    a, b = ep_ptr[g], ep_ptr[g + 1]
    n = b - a
    if n == 0:
        return -1
    if Q[Q_NFT]:
        return ep_list[a + ((np.int64(u * 4294967296.0) * n) >> 32)]
    # bisect_right(cdf, u), at most n - 1: the first i with u < cdf[i]. The cascade's CDF is
    # uniform up to the rules' fixed-point rounding, so the search starts at u * n and walks
    # (a step or two; a bisection costs ~log2(n) mispredicted branches, per flow)
    i = min(np.int64(u * n), n - 1)
    while i > 0 and u < cdf[a + i - 1]:
        i -= 1
    while i < n and cdf[a + i] <= u:
        i += 1
    return ep_list[a + min(i, n - 1)]


@_hot
def _count_expired(E, HD, S, nodes, sec):
    """At the gauge sample of second ``sec``: count the held entries whose expiry second it is
    as expired (each node's N_EXPD), from the calendar's counts."""
    for v in range(nodes):
        nd = _nd(v)
        lo = HD[nd, N_LO]
        if lo <= sec < lo + _R:
            h = _head(v, sec)
            HD[nd + 1, N_EXPD] += HD[h, H_CNT]
            HD[h, H_CNT] = 0
        elif sec >= lo + _R:             # a node whose calendar lags (no GC sweep for long)
            e = HD[_far(v), H_NEXT]
            while e >= 0:
                if _second(E[e, T_EXPIRE]) == sec:
                    HD[nd + 1, N_EXPD] += 1
                e = E[e, NXT]
    S[S_LAST_SAMPLE] = sec


@_hot
def _tick(E, HD, S, free, IX, count, Q, C, gc_next, gc_flag, G_t, G_count, G_live, SG, due,
          W, SK, SE, t):
    """``Model.tick``: the GC passes due at ``t``, then the gauges if due."""
    nodes = Q[Q_NODES]
    ndue = 0
    nt = _NEVER                          # the next GC time of the nodes not due now
    for v in range(nodes):
        if gc_next[v] <= t:
            due[ndue] = v
            ndue += 1
        else:
            nt = min(nt, gc_next[v])
    if ndue:
        _gc_pass(E, HD, S, free, IX, count, Q, t, due, ndue, gc_flag, W, SK, SE)
        for i in range(ndue):
            v = due[i]
            C[C_GC_EARLY, v] += W[0, v]
            gc_flag[v] = False
            gc_next[v] = t + (W[1, v] if Q[Q_GCFIXED] == 0 else Q[Q_GCFIXED])
            nt = min(nt, gc_next[v])
    if S[S_SAMPLE_NEXT] <= t:
        S[S_SAMPLE_NEXT] += _NS
        g = S[S_NGAUGE]
        G_t[g] = t
        n = S[S_SIZE]
        _count_expired(E, HD, S, nodes, t // _NS)    # samples fall on whole seconds
        for v in range(nodes):
            G_count[g, v] = count[v]
            G_live[g, v] = count[v] - HD[_nd(v) + 1, N_EXPD]
        S[S_NGAUGE] += 1
        if Q[Q_FULL]:
            m = 0
            for e in range(n):
                if E[e, T_EXPIRE] > t and (E[e, FLAGS] & F_SNAT) != 0:
                    SK[m] = E[e, NODE] * Q[Q_PODS] + E[e, POD]
                    SE[m] = 0
                    m += 1
            _sort_pairs(SK, SE, m)
            j = S[S_NSNAT]
            i = 0
            while i < m:
                k = i
                while k < m and SK[k] == SK[i]:
                    k += 1
                SG[j, 0], SG[j, 1], SG[j, 2] = t, SK[i], k - i
                j += 1
                i = k
            S[S_NSNAT] = j
    S[S_NEXT_TICK] = min(nt, S[S_SAMPLE_NEXT])


@_hot
def _advance(T1, S, Q, K, pt, gaps, backend, sport_of, client,
             service, hold, t0, flow_pod, pod_node, ep_ptr, ep_list, cdf, out, cause_rec,
             attempts_rec, rec_pod, rec_port, connect, response, src_ip, count, unconfirmed, rover,
             cpu_free, gc_next, gc_flag, C, worker_free, E, HD, free, IX, H, PD, pfree, D,
             cause_count, G_t, G_count, G_live, SG, due, W, SK, SE):
    """Process events (and ticks) before ``T1``; returns _DONE, _PAUSE (reached ``T1``) or _ROOM
    (an array must grow before the next step)."""
    F = Q[Q_F]
    nodeport = Q[Q_NODEPORT]
    tcp = Q[Q_TCP]
    cpus = Q[Q_CPUS]
    ekeys = K
    while True:
        nn = S[S_NEXT_NEW]
        hn = S[S_HN]
        if nn >= F and hn == 0:
            return _DONE
        from_heap = hn > 0
        if nn < F:
            ta = t0[nn] + Q[Q_DIN]
            if from_heap:
                from_heap = H[0, 0] < ta or (H[0, 0] == ta and H[0, 1] < _order(ARRIVE, nn, 0))
        if from_heap:
            t, o, ps = H[0, 0], H[0, 1], H[0, 2]
            kind, f, k = o >> 48, (o >> 8) & 0xFFFFFFFFFF, o & 0xFF
        else:
            t, kind, f, k, ps = t0[nn] + Q[Q_DIN], ARRIVE, nn, 0, -1
        nt = S[S_NEXT_TICK]
        if nt <= t:
            if nt >= T1:
                return _PAUSE
            if S[S_NGAUGE] >= G_t.size or (Q[Q_FULL] and S[S_NSNAT] + S[S_SIZE] > SG.shape[0]):
                return _ROOM
            _tick(E, HD, S, free, IX, count, Q, C, gc_next, gc_flag, G_t, G_count, G_live, SG,
                  due, W, SK, SE, nt)
            continue
        if t >= T1:
            return _PAUSE
        if (S[S_SIZE] + 1 > E.shape[0] or 4 * (S[S_USED] + 2) > IX.size or S[S_HN] + 1 >= H.shape[0]
                or S[S_PSIZE] + 1 > PD.shape[0] or (Q[Q_FULL] and S[S_NDROP] + 1 > D.shape[0])):
            return _ROOM
        if from_heap:
            _pop(H, S)
        else:
            S[S_NEXT_NEW] = nn + 1
            if nodeport and nn + _AHEAD < F:
                # prefetch the index slots flow g's first attempt will probe: its ORIGINAL
                # tuple and, under random-fully SNAT, the first port select_port tries. (Written
                # out here: a call passing arrays costs a few hundred cycles of arguments.)
                g = nn + _AHEAD
                gnode = backend[g]
                gsp = sport_of[g]
                _prefetch_slot(IX, _orig_key(gnode, client[g], gsp), False)
                if Q[Q_SNAT] and Q[Q_RANDOM_ALL] and not Q[Q_LEGACY]:
                    gpod = _endpoint(Q, ep_ptr, ep_list, cdf, flow_pod, gnode,
                                     _uniform(K[K_ENDPOINT], g, 0, 0), g)
                    if gpod >= 0:
                        prefetch(worker_free, (gpod, 0))   # its pod's workers, served soon
                        mn, size = _port_range(Q, gsp)
                        port = mn + np.int64(_bits(K[K_NAT], g, 0, 0) >> _U(48)) % size
                        _prefetch_slot(IX, _reply_key(gnode, gpod, port), False)
        if kind == ARRIVE:
            if not nodeport:
                pod = backend[f]
                d_in = Q[Q_DIN]
                q = t + 2 * d_in if tcp else t
                finish = _serve(worker_free, pod, q, service[f])
                resp = finish + d_in
                out[f] = OK
                attempts_rec[f] = 1
                rec_pod[f] = pod
                rec_port[f] = -1
                connect[f] = t + d_in - t0[f] if tcp else -1
                response[f] = resp - t0[f]
                src_ip[f] = CLIENT_BASE + client[f]
                S[S_RESOLVED] += 1
                continue
            if Q[Q_PT_KIND] == PT_FIXED:
                pkt = duration_ns(PT_FIXED, pt[0], 0.0, 0.0, 0.0)
            else:
                pkt = duration_ns(Q[Q_PT_KIND], pt[0], pt[1], _uniform(ekeys[K_CPU_TIME], f, k, 0),
                                  _uniform(ekeys[K_CPU_TIME], f, k, 1))
            if Q[Q_POD_CLIENTS]:
                c = backend[f] * cpus + np.int64(math.floor(_uniform(ekeys[K_RSS], f, k, 0) * cpus))
            else:
                orig = _orig_key(backend[f], client[f], sport_of[f])
                c = backend[f] * cpus + np.int64(mix64(_U(orig) ^ ekeys[K_RSS]) % _U(cpus))
            t_nat = max(t, cpu_free[c])
            S[S_MAX_WAIT] = max(S[S_MAX_WAIT], t_nat - t)
            t_conf = t_nat + pkt
            cpu_free[c] = t_conf
            slot = _take(pfree, S, S_PFREE, S_PSIZE)
            PD[slot, PA_ARRIVE], PD[slot, PA_TNAT], PD[slot, PA_TCONF] = t, t_nat, t_conf
            _push(H, S, t_nat, NAT, f, k, slot)
            continue
        arrive = PD[ps, PA_ARRIVE]
        nxt = -1
        pending = False
        if kind == NAT:
            node = backend[f]
            orig = _orig_key(backend[f], client[f], sport_of[f])
            isn = np.int64(_bits(ekeys[K_ISN], f, k, 0) >> _U(32))
            follow = -1
            dropped = False
            e = _live_eid(E, HD, S, free, IX, count, orig, t)
            if e >= 0:
                if not tcp:
                    follow = e
                elif t >= E[e, T_CLOSE]:
                    _release(E, HD, S, free, IX, count, e)
                else:
                    nxt = _fail(S, Q, gaps, D, cause_count, out, cause_rec, attempts_rec, f, k,
                                arrive, t, TUPLE_IN_USE, node)
                    dropped = True
            if not dropped and follow >= 0:
                PD[ps, PA_NODE], PD[ps, PA_POD] = node, E[follow, POD]
                PD[ps, PA_PORT], PD[ps, PA_EXH] = E[follow, REPLY] & 0xFFFF, 0
                PD[ps, PA_ORIG], PD[ps, PA_REPLY] = orig, E[follow, REPLY]
                PD[ps, PA_ISN], PD[ps, PA_FOLLOW] = isn, 1
                pending = True
            elif not dropped:
                if count[node] + unconfirmed[node] + 1 > Q[Q_CTMAX]:
                    killed = _early_drop(E, HD, S, free, IX, count, K, Q, SK, node, orig, t)
                    if killed == 0:
                        C[C_DROP, node] += 1
                        gc_flag[node] = True
                        nxt = _fail(S, Q, gaps, D, cause_count, out, cause_rec, attempts_rec, f,
                                    k, arrive, t, TABLE_FULL, node)
                        dropped = True
                    else:
                        C[C_EARLY_DROP, node] += killed
                if not dropped:
                    pod = _endpoint(Q, ep_ptr, ep_list, cdf, flow_pod, node,
                                    _uniform(ekeys[K_ENDPOINT], f, k, 0), f)
                    if pod < 0:
                        nxt = _fail(S, Q, gaps, D, cause_count, out, cause_rec, attempts_rec, f,
                                    k, arrive, t, NO_LOCAL_ENDPOINT, node)
                        dropped = True
                    else:
                        sp = sport_of[f]
                        if not Q[Q_SNAT]:
                            port, exhausted = sp, False
                        else:
                            port, exhausted, found = _select_port(
                                E, HD, S, free, IX, count, K, Q, rover, t, node, pod, sp, f, k,
                                isn)
                            C[C_FOUND, node] += found
                        unconfirmed[node] += 1
                        if Q[Q_SNAT]:
                            reply = _reply_key(node, pod, port)
                        else:
                            reply = (1 << 61) | (pod << 40) | (client[f] << 16) | sp
                        PD[ps, PA_NODE], PD[ps, PA_POD], PD[ps, PA_PORT] = node, pod, port
                        PD[ps, PA_EXH], PD[ps, PA_ORIG], PD[ps, PA_REPLY] = np.int64(exhausted), orig, reply
                        PD[ps, PA_ISN], PD[ps, PA_FOLLOW] = isn, 0
                        pending = True
            if pending:
                _push(H, S, PD[ps, PA_TCONF], CONFIRM, f, k, ps)
                continue
        else:  # CONFIRM
            t = PD[ps, PA_TCONF]
            node, pod, port = PD[ps, PA_NODE], PD[ps, PA_POD], PD[ps, PA_PORT]
            orig, reply, isn = PD[ps, PA_ORIG], PD[ps, PA_REPLY], PD[ps, PA_ISN]
            adopt, clash = -2, False     # -2: dropped, -1: a new entry, >= 0: the entry followed
            if PD[ps, PA_FOLLOW]:
                adopt = _live_eid(E, HD, S, free, IX, count, orig, t)
                if adopt < 0:
                    adopt = -2
                    unconfirmed[node] += 1
            if adopt == -2:
                unconfirmed[node] -= 1
                e_orig = _live_eid(E, HD, S, free, IX, count, orig, t)
                e_reply = _live_eid(E, HD, S, free, IX, count, reply, t)
                if e_orig < 0 and e_reply < 0:
                    adopt = -1
                elif not tcp and e_orig >= 0:
                    if E[e_orig, REPLY] == reply:
                        C[C_INSERT_FAILED if Q[Q_LEGACY] else C_CLASH, node] += 1
                        adopt = e_orig
                    elif e_reply < 0 and not Q[Q_LEGACY]:
                        C[C_CLASH, node] += 1
                        adopt, clash = -1, True
            if adopt == -2:
                C[C_INSERT_FAILED, node] += 1
                C[C_DROP, node] += 1
                nxt = _fail(S, Q, gaps, D, cause_count, out, cause_rec, attempts_rec, f, k,
                            arrive, t, PORT_EXHAUSTION if PD[ps, PA_EXH] else INSERT_RACE, node)
            else:
                # Model.serve_nodeport, then the entry's insert (or the followed one's timeout
                # raised). Written out here: this runs once per flow, and a call passing arrays
                # costs a few hundred cycles of arguments.
                hop = 0 if pod_node[pod] == node else Q[Q_DHOP]
                d_in = Q[Q_DIN]
                q = t + 3 * hop + 2 * d_in if tcp else t + hop
                finish = _serve(worker_free, pod, q, service[f])
                resp = finish + hop + d_in
                if tcp:
                    synack = t + 2 * hop + d_in
                    t_assured = synack + d_in
                    t_close = resp + hold[f] + d_in
                    t_expire = t_close + Q[Q_TW]
                    conn = synack - t0[f]
                else:
                    t_rep = finish + hop
                    t_close = t_rep + hold[f]
                    stream = hold[f] > 0 and t_close - t > 2 * _NS
                    t_assured = max(t_rep, t + 2 * _NS) if stream else _NEVER
                    t_expire = t_close + (Q[Q_UDP_STREAM] if stream else Q[Q_UDP])
                    conn = -1
                out[f] = OK
                attempts_rec[f] = k + 1
                rec_pod[f] = pod
                rec_port[f] = port if Q[Q_SNAT] else -1
                connect[f] = conn
                response[f] = resp - t0[f]
                src_ip[f] = NODE_BASE + node if Q[Q_SNAT] else CLIENT_BASE + client[f]
                S[S_RESOLVED] += 1
                if adopt >= 0:
                    if t_expire > E[adopt, T_EXPIRE]:
                        _cal_unlink(E, HD, S, adopt, node, E[adopt, T_EXPIRE])
                        E[adopt, T_EXPIRE] = t_expire
                        _cal_link(E, HD, S, adopt, node, t_expire)
                else:
                    flags = (F_TCP if tcp else 0) | (F_SNAT if Q[Q_SNAT] else 0)
                    if clash:
                        flags |= F_NAT_CLASH
                        t_expire, t_assured = t + _NS, _NEVER
                        orig = -1
                    if Q[Q_LEGACY]:
                        C[C_INSERT, node] += 1
                    C[C_INSERTED, node] += 1
                    e = _take(free, S, S_NFREE, S_SIZE)
                    salt, buckets = K[K_CT_SALT], Q[Q_BUCKETS]
                    E[e, ORIG], E[e, REPLY], E[e, NODE], E[e, POD] = orig, reply, node, pod
                    E[e, T_ASSURED], E[e, T_CLOSE], E[e, T_EXPIRE] = t_assured, t_close, t_expire
                    E[e, FLAGS], E[e, SEQ] = flags, (isn + 2) & 0xFFFFFFFF
                    _cal_link(E, HD, S, e, node, t_expire)
                    E[e, OBUCKET] = _bucket(orig, salt, buckets) if orig >= 0 else -1
                    E[e, RBUCKET] = _bucket(reply, salt, buckets)
                    E[e, BORN] = S[S_BORN]
                    S[S_BORN] += 1
                    count[node] += 1
                    S[S_USED] += _idx_put(IX, reply, e)
                    if orig >= 0:
                        S[S_USED] += _idx_put(IX, orig, e)
        pfree[S[S_PFREE]] = ps            # the attempt is over: free its pending slot
        S[S_PFREE] += 1
        if nxt >= 0:
            _push(H, S, nxt, ARRIVE, f, k + 1, -1)


# -- the driver ------------------------------------------------------------------------------------
def _calendar_heads(nodes: int) -> np.ndarray:
    """HD for ``nodes`` nodes: every list empty (first entry -1), every count and sum 0."""
    HD = np.zeros((nodes * (_R + 3), 2), np.int64)
    HD[:, H_NEXT] = -1                   # lists end at -1 (heads need no back link: a list is
    first = np.arange(nodes) * (_R + 3) + _R + 1     # only ever pushed at its front)
    HD[first] = HD[first + 1] = 0        # the node rows: lo = 0, sums 0
    return HD


class _State:
    """All arrays of one run, in the order :func:`_advance` takes them."""

    def __init__(self, m) -> None:
        sc = m.scenario
        F = m.F
        one = np.zeros(1, np.int64)
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
        self.m = m
        nodes, pods = m.n_nodes, m.n_pods
        rule = m.rule
        kp = m.kube_proxy
        kind, a, b = duration_params(sc.cluster.packet_time_s)
        Q = np.zeros(_NQ, np.int64)
        lo, hi = rule.port_range if rule.port_range is not None else (0, 0)
        for idx, v in ((Q_NODES, nodes), (Q_CPUS, m.cpus), (Q_PODS, pods), (Q_DIN, m.d_in),
                       (Q_DHOP, m.d_hop), (Q_TW, m.time_wait), (Q_UDP, m.udp_t),
                       (Q_UDP_STREAM, m.udp_stream_t), (Q_CTMAX, m.ct_max),
                       (Q_LIMIT95, m.limit95), (Q_GCFIXED, m.gc_fixed or 0), (Q_TCP, m.tcp),
                       (Q_SNAT, m.snat), (Q_LOCAL, m.local), (Q_PER_ATTEMPT, kp.per_attempt),
                       (Q_NFT, kp.mode is ProxyMode.NFTABLES), (Q_LEGACY, rule.legacy),
                       (Q_RANDOM_ALL, rule.random_all),
                       (Q_HAS_RANGE, rule.port_range is not None), (Q_LO, lo), (Q_HI, hi),
                       (Q_EVICT, rule.evict_closing), (Q_LEGACY_RANDOM, rule.legacy_random),
                       (Q_RETRIES, m.retries), (Q_GAPMIN, m.gap_min), (Q_FULL, m.full_records),
                       (Q_POD_CLIENTS, m.pod_clients), (Q_BUCKETS, sc.conntrack.buckets),
                       (Q_PT_KIND, kind), (Q_NODEPORT, m.nodeport), (Q_F, F)):
            Q[idx] = int(v)
        K = np.zeros(len(STREAMS) + 1, np.uint64)
        for i, name in enumerate(STREAMS):
            K[i] = m.streams.keys[name]
        K[K_CT_SALT] = m.streams.keys["ct_hash"]
        groups = kp.endpoints if m.local else kp.endpoints[:1]
        sizes = np.array([g.size for g in groups], np.int64)
        ep_ptr = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        ep_list = i64(np.concatenate([g for g in groups] + [one[:0]]))
        cdf = np.concatenate([iptables_cascade_cdf(int(n)) if n else np.zeros(0) for n in sizes]
                             + [np.zeros(0)]).astype(np.float64)
        self.S = np.zeros(_NS_STATE, np.int64)
        self.S[S_SAMPLE_NEXT] = _NS
        gc_next = np.full(nodes, m.gc_fixed or _NS, np.int64)
        self.S[S_NEXT_TICK] = min(int(gc_next.min()), _NS)
        self.fixed = dict(
            Q=Q, K=K, pt=np.array([a, b], np.float64), gaps=i64(m.gaps),
            backend=i64(m.backend),
            sport_of=i64(m.sport), client=i64(m.client), service=i64(m.service),
            hold=i64(m.hold), t0=i64(m.t0), flow_pod=i64(m.flow_pod), pod_node=i64(m.pod_node),
            ep_ptr=ep_ptr, ep_list=ep_list, cdf=cdf, out=m.out, cause_rec=m.cause,
            attempts_rec=m.attempts, rec_pod=m.rec_pod, rec_port=m.rec_port,
            connect=m.connect, response=m.response, src_ip=m.src_ip,
            count=np.zeros(nodes, np.int64), unconfirmed=np.zeros(nodes, np.int64),
            rover=np.zeros(nodes, np.int64), cpu_free=np.zeros(nodes * m.cpus, np.int64),
            gc_next=gc_next, gc_flag=np.zeros(nodes, np.bool_),
            C=np.zeros((len(COUNTERS), nodes), np.int64), worker_free=m.worker_free,
            cause_count=m.cause_count, due=np.zeros(nodes, np.int64),
            W=np.zeros((2, nodes), np.int64), HD=_calendar_heads(nodes))
        cap = 1024
        self.grow = dict(
            E=np.zeros((cap, _NE), np.int64), SK=np.zeros(cap, np.int64), SE=np.zeros(cap, np.int64),
            free=np.zeros(cap, np.int64),
            H=np.zeros((cap, 3), np.int64), PD=np.zeros((cap, _NP), np.int64),
            pfree=np.zeros(cap, np.int64), D=np.zeros((cap if m.full_records else 1, 5), np.int64),
            G_t=np.zeros(64, np.int64), G_count=np.zeros((64, nodes), np.int64),
            G_live=np.zeros((64, nodes), np.int64),
            SG=np.zeros((cap if m.full_records else 1, 3), np.int64))
        self.IX = np.full(2 * 3 * cap, -1, np.int64)
        self.grow["E"][:, T_EXPIRE] = -1     # T_EXPIRE -1: the row holds no entry

    def advance(self, T1: int) -> int:
        f, g = self.fixed, self.grow
        return _advance(
            T1, self.S, f["Q"], f["K"], f["pt"], f["gaps"], f["backend"], f["sport_of"], f["client"], f["service"], f["hold"],
            f["t0"], f["flow_pod"], f["pod_node"], f["ep_ptr"], f["ep_list"], f["cdf"], f["out"],
            f["cause_rec"], f["attempts_rec"], f["rec_pod"], f["rec_port"], f["connect"],
            f["response"], f["src_ip"], f["count"], f["unconfirmed"], f["rover"], f["cpu_free"],
            f["gc_next"], f["gc_flag"], f["C"], f["worker_free"], g["E"], f["HD"],
            g["free"], self.IX, g["H"], g["PD"], g["pfree"], g["D"], f["cause_count"], g["G_t"],
            g["G_count"], g["G_live"], g["SG"], f["due"], f["W"], g["SK"], g["SE"])

    def make_room(self) -> None:
        """Grow whatever the next step might overflow (see :func:`_advance`)."""
        S, g = self.S, self.grow
        full = self.m.full_records

        def bigger(name, rows, fill=0):
            old = g[name]
            if rows <= old.shape[0]:
                return
            new = np.full((max(rows, old.shape[0] * 3 // 2),) + old.shape[1:], fill, old.dtype)
            new[: old.shape[0]] = old
            g[name] = new

        bigger("E", int(S[S_SIZE]) + 1)
        bigger("free", g["E"].shape[0])
        bigger("SK", g["E"].shape[0])
        bigger("SE", g["E"].shape[0])
        bigger("H", int(S[S_HN]) + 2)
        bigger("PD", int(S[S_PSIZE]) + 1)
        bigger("pfree", g["PD"].shape[0])
        if full:
            bigger("D", int(S[S_NDROP]) + 1)
            bigger("SG", int(S[S_NSNAT] + S[S_SIZE]) + 1)
        for name in ("G_t", "G_count", "G_live"):
            bigger(name, int(S[S_NGAUGE]) + 1)
        if 4 * (int(S[S_USED]) + 2) > self.IX.size:   # keys + tombstones > 50 % of slots
            keys = 2 * int(self.fixed["count"].sum()) + 2
            self.IX = None                                   # free the old index first
            self.IX, used = rebuild_index(g["E"], S[S_SIZE], 4 * keys + 64)
            S[S_USED] = used

    def run(self, env: simpy.Environment, batch_flows: int):
        """The simpy process: one window per ``batch_flows`` new flows."""
        m, S = self.m, self.S
        t0, d_in = self.fixed["t0"], m.d_in
        t = 0
        while True:
            nn = int(S[S_NEXT_NEW])
            T1 = int(t0[nn + batch_flows]) + d_in if nn + batch_flows < m.F else _NEVER
            code = self.advance(T1)
            while code == _ROOM:
                self.make_room()
                code = self.advance(T1)
            if code == _DONE:
                return
            yield env.timeout(T1 - t)
            t = T1

    def finish(self) -> None:
        """Copy the run's state back into the model (the shapes lbsim.metrics reads)."""
        m, S, f, g = self.m, self.S, self.fixed, self.grow
        m.resolved = int(S[S_RESOLVED])
        m.table.count = f["count"]
        m.max_cpu_wait = int(S[S_MAX_WAIT])
        for i, name in enumerate(COUNTERS):
            m.counters[name] = f["C"][i]
        n = int(S[S_NGAUGE])
        m.gauges = [(int(g["G_t"][i]), g["G_count"][i], g["G_live"][i]) for i in range(n)]
        if m.full_records:
            D = g["D"][: int(S[S_NDROP])]
            if D.shape[0]:
                m.drop_log = [(D[:, 0], D[:, 1], D[:, 2], D[:, 3], D[:, 4])]
            SG = g["SG"][: int(S[S_NSNAT])]
            m.snat_gauges = []
            bounds = np.searchsorted(SG[:, 0], g["G_t"][:n])
            bounds = np.append(bounds, SG.shape[0])
            for i in range(n):
                rows = SG[bounds[i]:bounds[i + 1]]
                m.snat_gauges.append((int(g["G_t"][i]), rows[:, 1], rows[:, 2]))


_warm = False


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the engine once per process, so that a run's
    ``wall_s`` measures the simulation, not the one-off compilation (benchmarks/ times both)."""
    global _warm
    if _warm:
        return
    _warm = True
    import sys
    import time
    from .config import Scenario
    from .scenarios import get
    from .simulation import run
    start = time.perf_counter()
    # both paths, both record modes, the draws of the default and the perf scenarios: every
    # compiled function a run calls (the summary's included) is loaded here, not inside a run
    for sc in (Scenario(), get("perf-nodeport")):
        for path in ("nodeport", "direct"):
            for records in ("summary", "full"):
                run(sc.replace(**{"workload.flows": 300, "path": path, "records": records}))
    E = np.zeros((2, _NE), np.int64)
    E[:, T_EXPIRE] = -1
    rebuild_index(E, 2, 16)
    took = time.perf_counter() - start
    if took > 5:
        print(f"lbsim: compiled the simulation engine in {took:.0f} s (first run with this "
              f"version on this machine; numba caches it on disk)", file=sys.stderr, flush=True)


@_jit
def _direct(a, b, tcp, d_in, t0, backend, service, client, worker_free, out, attempts_rec,
            rec_pod, rec_port, connect, response, src_ip):
    """The direct path for flows ``a`` to ``b - 1``, in arrival order (``Model.serve_direct``):
    no node, no table, so nothing but the pods' FIFO queues connects one flow to another."""
    for f in range(a, b):
        t = t0[f] + d_in
        pod = backend[f]
        finish = _serve(worker_free, pod, t + 2 * d_in if tcp else t, service[f])
        out[f] = OK
        attempts_rec[f] = 1
        rec_pod[f] = pod
        rec_port[f] = -1
        connect[f] = t + d_in - t0[f] if tcp else -1
        response[f] = finish + d_in - t0[f]
        src_ip[f] = CLIENT_BASE + client[f]


def _run_direct(m, batch_flows: int) -> None:
    """The direct path, window by window under simpy. Its only state is the pods' workers; the
    reference's ticks leave nothing but one all-zero gauge row per whole second up to the last
    arrival (GC passes over empty tables)."""
    env = simpy.Environment()
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    t0, backend, service, client = i64(m.t0), i64(m.backend), i64(m.service), i64(m.client)

    def windows():
        t = 0
        for a in range(0, m.F, batch_flows):
            b = min(a + batch_flows, m.F)
            start = int(t0[a]) + m.d_in
            yield env.timeout(start - t)
            t = start
            _direct(a, b, bool(m.tcp), m.d_in, t0, backend, service, client, m.worker_free, m.out,
                    m.attempts, m.rec_pod, m.rec_port, m.connect, m.response, m.src_ip)

    env.process(windows())
    env.run()
    m.resolved = m.F
    n = (int(t0[-1]) + m.d_in) // _NS if m.F else 0
    zeros = np.zeros(m.n_nodes, np.int64)
    m.gauges = [((k + 1) * _NS, zeros.copy(), zeros.copy()) for k in range(n)]
    if m.full_records:
        m.snat_gauges = [((k + 1) * _NS, zeros[:0], zeros[:0]) for k in range(n)]


def run_compiled(model, batch_flows: int = 4096):
    """Run ``model`` with the compiled engine; ``batch_flows`` >= 1 new flows per simpy window."""
    if batch_flows < 1:
        raise ValueError(f"batch_flows = {batch_flows} is invalid: must be >= 1")
    if not model.nodeport:
        _run_direct(model, batch_flows)
        return model
    state = _State(model)
    env = simpy.Environment()
    env.process(state.run(env, batch_flows))
    env.run()
    state.finish()
    return model
