"""The compiled conntrack table: entries, release and lookup, early_drop, the GC pass.

Entries are rows of ``E`` (lbsim.compiled.layout) with a free list; each is indexed under its
REPLY and (unless NAT_CLASH) its ORIGINAL key (lbsim.compiled.index) and filed in its node's
expiry calendar (lbsim.compiled.calendar). Each function is the compiled twin of
:class:`lbsim.reference.conntrack.ConntrackTable`'s method of the same name, which cites the
kernel; tests/property requires them to agree.
"""

from __future__ import annotations

import numpy as np

from ..kernel import (EVICTION_RANGE, F_TCP, GC_INITIAL_COUNT, GC_INTERVAL_CLAMP,
                      GC_INTERVAL_INIT, GC_INTERVAL_MAX, GC_INTERVAL_MIN, NS)
from ..rng import mix64_nb as mix64
from .calendar import cal_link, cal_unlink, collect, far, head, list_drop, nd, ring_push, second
from .index import IS_ORIG, idx_del, idx_get, idx_put, prefetch_slot
from .layout import (AHEAD, BORN, FLAGS, H_NEXT, N_HC, N_HS, N_LO, NODE, NXT, OBUCKET, ORIG,
                     POD, RBUCKET, REPLY, RING, S_BORN, S_NFREE, S_SIZE, S_USED, SEQ, T_ASSURED,
                     T_CLOSE, T_EXPIRE, hot, inline, jit)

__all__ = ["take", "release", "live_eid", "bucket", "early_drop", "gc_pass", "insert",
           "extend", "sort_pairs", "clear_udp"]

_U = np.uint64


@inline
def take(free, S, n_free, n_size):
    """A row from a free list (a stack of ``S[n_free]`` rows) or, if it is empty, the next
    never-used one (``S[n_size]``)."""
    if S[n_free] > 0:
        S[n_free] -= 1
        return free[S[n_free]]
    S[n_size] += 1
    return S[n_size] - 1


@inline
def bucket(key, salt, buckets):
    """Hash bucket of a tuple: ``reciprocal_scale`` of a keyed 32-bit hash."""
    h = mix64(_U(key) ^ salt) >> _U(32)
    return np.int64((h * _U(buckets)) >> _U(32))


@hot
def release(E, HD, S, free, IX, count, e):
    """Free entry ``e`` (no-op if already freed)."""
    x = E[e][T_EXPIRE]
    if x < 0:
        return
    E[e][T_EXPIRE] = -1
    v = E[e][NODE]
    count[v] -= 1
    cal_unlink(E, HD, S, e, v, x)
    S[S_USED] -= idx_del(IX, E, E[e][REPLY], e)
    if E[e][ORIG] >= 0:
        S[S_USED] -= idx_del(IX, E, E[e][ORIG], e)
    free[S[S_NFREE]] = e
    S[S_NFREE] += 1


@hot
def live_eid(E, HD, S, free, IX, count, key, t):
    """Entry held under ``key`` and live at ``t``, or -1; an expired one met is freed."""
    e = idx_get(IX, E, key)
    if e < 0:
        return -1
    if E[e][T_EXPIRE] <= t:
        release(E, HD, S, free, IX, count, e)
        return -1
    return e


@inline
def insert(E, HD, S, free, IX, count, salt, buckets, orig, reply, node, pod, t_assured, t_close,
           t_expire, flags, seq):
    """Confirm a new entry (``ConntrackTable.add1``); returns its row. ``orig`` -1: reply-only."""
    e = take(free, S, S_NFREE, S_SIZE)
    E[e][ORIG], E[e][REPLY], E[e][NODE], E[e][POD] = orig, reply, node, pod
    E[e][T_ASSURED], E[e][T_CLOSE], E[e][T_EXPIRE] = t_assured, t_close, t_expire
    E[e][FLAGS], E[e][SEQ] = flags, seq
    cal_link(E, HD, S, e, node, t_expire)
    E[e][OBUCKET] = bucket(orig, salt, buckets) if orig >= 0 else -1
    E[e][RBUCKET] = bucket(reply, salt, buckets)
    E[e][BORN] = S[S_BORN]
    S[S_BORN] += 1
    count[node] += 1
    S[S_USED] += idx_put(IX, reply, e, 0)
    if orig >= 0:
        S[S_USED] += idx_put(IX, orig, e, IS_ORIG)
    return e


@inline
def extend(E, HD, S, e, t_expire):
    """A packet of entry ``e``'s flow keeps it alive until ``t_expire`` (if that is later)."""
    if t_expire > E[e][T_EXPIRE]:
        v = E[e][NODE]
        cal_unlink(E, HD, S, e, v, E[e][T_EXPIRE])
        E[e][T_EXPIRE] = t_expire
        cal_link(E, HD, S, e, v, t_expire)


@hot
def sort_pairs(key, val, n):
    """Heapsort ``key[:n]`` ascending in place, carrying ``val`` along (no allocation)."""
    for start in range((n - 2) // 2, -1, -1):
        _sift(key, val, start, n)
    for end in range(n - 1, 0, -1):
        key[0], key[end] = key[end], key[0]
        val[0], val[end] = val[end], val[0]
        _sift(key, val, 0, end)


@hot
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


@hot
def early_drop(E, HD, S, free, IX, count, salt, buckets, SK, node, new_orig, t):
    """``ConntrackTable.early_drop``: 8 buckets from the new tuple's, non-ASSURED only."""
    b0 = bucket(new_orig, salt, buckets)
    cnt = collect(E, HD, node, SK, b0, buckets)
    for i in range(EVICTION_RANGE):
        b = (b0 + i) % buckets
        for j in range(cnt):            # expired entries in this bucket's chains are freed
            e = SK[j]
            if (E[e][T_EXPIRE] >= 0 and (E[e][OBUCKET] == b or E[e][RBUCKET] == b)
                    and E[e][T_EXPIRE] <= t):
                release(E, HD, S, free, IX, count, e)
        killed = 0
        for j in range(cnt):
            e = SK[j]
            if (E[e][T_EXPIRE] >= 0 and (E[e][OBUCKET] == b or E[e][RBUCKET] == b)
                    and E[e][T_EXPIRE] > t and E[e][T_ASSURED] > t):
                release(E, HD, S, free, IX, count, e)
                killed += 1
        if killed:
            return killed
    return 0


@inline
def _clamped(d):
    return min(max(d, GC_INTERVAL_MIN), GC_INTERVAL_CLAMP)


@hot
def _gc_sweep(E, HD, S, free, IX, count, v, t, SK):
    """Free node ``v``'s expired entries and advance its calendar to ``t``'s second; returns
    (total, seen) of ``gc_pass``'s mean: the sum of the clamped remaining times of the entries
    left, and their number. Visits the expired buckets, the far list and the buckets within
    GC_INTERVAL_MIN of ``t`` only (lbsim.compiled.calendar)."""
    n = nd(v)
    lo = HD[n, N_LO]
    bt = second(t)
    # The seconds lo .. bt-1 are wholly expired, bt partly: their entries into SK[:m], then the
    # releases, with the index slots they will probe prefetched ahead. (Chasing the lists side
    # by side, one step of each in turn, measured no faster.)
    m = 0
    for b in range(lo, min(bt, lo + RING - 1) + 1):
        e = HD[head(v, b), H_NEXT]
        while e >= 0:
            SK[m] = e
            m += 1
            e = E[e][NXT]
    for i in range(m + AHEAD):
        if i < m:
            e = SK[i]
            prefetch_slot(IX, E[e][REPLY], True)
            if E[e][ORIG] >= 0:
                prefetch_slot(IX, E[e][ORIG], True)
        if i >= AHEAD:
            e = SK[i - AHEAD]
            if E[e][T_EXPIRE] <= t:
                release(E, HD, S, free, IX, count, e)
    total, seen = 0, 0
    e = HD[far(v), H_NEXT]
    while e >= 0:
        nx = E[e][NXT]
        x = E[e][T_EXPIRE]
        b = second(x)
        if x <= t:
            release(E, HD, S, free, IX, count, e)
        elif b < bt + RING:                     # within the ring from now on: move it there
            list_drop(E, HD, e)                 # (its slot's old second, b - RING < bt, is empty)
            ring_push(E, HD, S, e, v, x, b, lo)
        else:
            total += _clamped(x - t)
            seen += 1
        e = nx
    # the ring now holds seconds >= bt only: re-anchor it there
    HD[n, N_HS] -= HD[n + 1, N_HC] * ((bt - lo) * NS)
    HD[n, N_LO] = bt
    # ring entries: remaining x - t < RING s <= CLAMP, so clamped = x - t except below MIN
    total += HD[n, N_HS] + HD[n + 1, N_HC] * (bt * NS - t)
    seen += HD[n + 1, N_HC]
    for b in range(bt, min(second(t + GC_INTERVAL_MIN), bt + RING - 1) + 1):
        e = HD[head(v, b), H_NEXT]
        while e >= 0:
            d = E[e][T_EXPIRE] - t
            total += _clamped(d) - d
            e = E[e][NXT]
    return total, seen


@hot
def _next_run(total, seen):
    """The autotuned delay to a node's next pass from its (total, seen)."""
    mean = (GC_INITIAL_COUNT * GC_INTERVAL_INIT + total) // (GC_INITIAL_COUNT + seen)
    return min(max(mean, GC_INTERVAL_MIN), GC_INTERVAL_MAX)


@hot
def _early_victims(E, HD, v, t, count_v, limit95, SK, SE):
    """The entries a GC pass kills early on node ``v``, in bucket order and each chain newest
    first, into ``SK[:k]``; returns ``k``."""
    m = collect(E, HD, v, SE)
    # newest first within a bucket: the entries' rank by age (BORN counts every insert of the
    # run, past 2^32 in a long one; a rank fits the key's low 32 bits)
    for j in range(m):
        SK[j] = E[SE[j]][BORN]
    sort_pairs(SK, SE, m)
    for j in range(m):
        e = SE[j]
        ob, rb = E[e][OBUCKET], E[e][RBUCKET]
        first = min(ob, rb) if ob >= 0 else rb
        SK[j] = (first << 32) | (0xFFFFFFFF - j)
    sort_pairs(SK, SE, m)
    freed_before = 0
    k = 0
    for j in range(m):
        e = SE[j]
        if E[e][T_EXPIRE] <= t:
            freed_before += 1
            continue
        can = E[e][T_ASSURED] > t or ((E[e][FLAGS] & F_TCP) != 0 and E[e][T_CLOSE] <= t)
        if not can:
            continue
        if count_v - freed_before - k < limit95:
            break
        SK[k] = e                    # SK[:k] is no longer needed beyond j >= k
        k += 1
    return k


@hot
def gc_pass(E, HD, S, free, IX, count, limit95, t, due, ndue, flag, W, SK, SE):
    """``ConntrackTable.gc_pass`` over the nodes ``due[:ndue]`` (ascending): frees expired
    entries, kills early on flagged nodes at >= 95 % (bucket order, newest first). Leaves the
    kills in ``W[0]`` and the autotuned delay to the next pass in ``W[1]``."""
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
            for j in range(collect(E, HD, v, SK)):
                x = E[SK[j]][T_EXPIRE]
                if x > t:
                    total += _clamped(x - t)
                    seen += 1
        next_run[v] = _next_run(total, seen)
        if not early:
            continue
        k = _early_victims(E, HD, v, t, count[v], limit95, SK, SE)
        for j in range(k):
            SE[cap - 1 - nv - j] = SK[j]
        nv += k
        killed[v] = k
    for i in range(ndue):
        v = due[i]
        if flag[v] and count[v] >= limit95:   # the early-drop nodes: still >= 95 %
            for j in range(collect(E, HD, v, SK)):
                e = SK[j]
                if E[e][T_EXPIRE] <= t:
                    release(E, HD, S, free, IX, count, e)
    for j in range(nv):
        release(E, HD, S, free, IX, count, SE[cap - 1 - j])


@jit
def clear_udp(E, HD, S, free, IX, count, SK, node, gone):
    """kube-proxy's conntrack -D (``ReferenceEngine.clear_udp``): free ``node``'s UDP entries
    DNATed to a pod marked in ``gone`` (one flag per pod), found in the node's calendar."""
    for j in range(collect(E, HD, node, SK)):
        e = SK[j]
        if (E[e][FLAGS] & F_TCP) == 0 and gone[E[e][POD]]:
            release(E, HD, S, free, IX, count, e)
