"""Each node's expiry calendar: where its held entries are filed by the second they expire.

A ring of RING one-second buckets (doubly linked lists through the entry rows' NXT/PRV) for the
seconds lo .. lo+RING-1, where bucket b holds the entries with ceil(t_expire / 1 s) = b, plus a
"far" list for later seconds, moved into the ring as GC passes advance lo. A GC pass then visits
only the expired buckets and the one or two seconds near its time; the rest of the kernel's
autotune mean comes from running sums over the ring (HS = sum of t_expire - lo s, HC = their
number): every ring entry's remaining time lies within [GC_INTERVAL_MIN, GC_INTERVAL_CLAMP] except
those in the first buckets, which the pass walks. A gauge sample adds a bucket's count of entries
not yet counted to the node's EXPD (held entries already expired: live = count - EXPD), so it
visits no entry. With full records the same bookkeeping runs per (node, pod) pair for SNAT
entries (HD's rows after the nodes' blocks: held, and counted expired), and the sample walks the
second's bucket to count its SNAT entries expired: each entry is visited once, at its expiry
second, so SNAT ports in use per pair cost O(entries) over a run, not entries x seconds.

Node v's block of HD is rows v*(RING+3) + (b mod RING: the ring's heads, RING: the far list's
head, RING+1 and RING+2: the node's (lo, HS) and (HC, EXPD)); an entry's PRV < 0 names its head
row -1-PRV. The reference has no calendar: its GC walks every entry (lbsim.reference.conntrack).
"""

from __future__ import annotations

import numpy as np

from ..kernel import EVICTION_RANGE, NS
from ..kernel import F_SNAT
from .layout import (FLAGS, H_CNT, H_NEXT, N_EXPD, N_HC, N_HS, N_LO, NODE, NXT, OBUCKET, P_EXPD,
                     P_HELD, POD, PRV, RBUCKET, RING, S_LAST_SAMPLE, S_PAIR_BASE, S_PAIR_PODS,
                     T_EXPIRE, hot, inline)

__all__ = ["calendar_heads", "head", "far", "nd", "second", "list_drop", "ring_push",
           "cal_link", "cal_unlink", "collect", "count_expired"]


def calendar_heads(nodes: int, pairs: int = 0) -> np.ndarray:
    """HD for ``nodes`` nodes: every list empty (first entry -1), every count and sum 0; then
    ``pairs`` (node, pod) pair rows, all 0 (S[S_PAIR_BASE] = nodes * (RING + 3) turns them on)."""
    HD = np.zeros((nodes * (RING + 3) + pairs, 2), np.int64)
    HD[: nodes * (RING + 3), H_NEXT] = -1  # lists end at -1 (heads need no back link: a list
    first = np.arange(nodes) * (RING + 3) + RING + 1     # is only ever pushed at its front)
    HD[first] = HD[first + 1] = 0        # the node rows: lo = 0, sums 0
    return HD


@inline
def snat_pair(E, S, e):
    """HD's pair row of entry ``e`` if pairs are kept and ``e`` is SNATed, else -1."""
    if S[S_PAIR_BASE] == 0 or (E[e][FLAGS] & F_SNAT) == 0:
        return -1
    return S[S_PAIR_BASE] + E[e][NODE] * S[S_PAIR_PODS] + E[e][POD]


@inline
def head(v, b):
    return v * (RING + 3) + (b & (RING - 1))


@inline
def far(v):
    return v * (RING + 3) + RING


@inline
def nd(v):
    """First of node ``v``'s two HD rows of calendar state: (N_LO, N_HS), then (N_HC, N_EXPD)."""
    return v * (RING + 3) + RING + 1


@inline
def second(x):
    return (x + NS - 1) // NS


@hot
def _list_push(E, HD, h, e):
    """Link entry ``e`` at the front of list ``h``."""
    nx = HD[h, H_NEXT]
    E[e][NXT], E[e][PRV] = nx, -1 - h
    if nx >= 0:
        E[nx][PRV] = e
    HD[h, H_NEXT] = e


@hot
def list_drop(E, HD, e):
    """Unlink entry ``e`` from its list."""
    p, nx = E[e][PRV], E[e][NXT]
    if p >= 0:
        E[p][NXT] = nx
    else:
        HD[-1 - p, H_NEXT] = nx
    if nx >= 0:
        E[nx][PRV] = p


@hot
def ring_push(E, HD, S, e, v, x, b, lo):
    """File entry ``e`` (expiring at ``x``, in second ``b``) in node ``v``'s ring, anchored at
    second ``lo``: its bucket, the running sums, the bucket's count if ``b`` is not sampled yet."""
    h = head(v, b)
    _list_push(E, HD, h, e)
    n = nd(v)
    HD[n, N_HS] += x - lo * NS
    HD[n + 1, N_HC] += 1
    if b > S[S_LAST_SAMPLE]:
        HD[h, H_CNT] += 1


@hot
def cal_link(E, HD, S, e, v, x):
    """File held entry ``e`` of node ``v``, expiring at ``x``, in the node's calendar."""
    b = second(x)
    n = nd(v)
    lo = HD[n, N_LO]
    if b >= lo + RING:
        _list_push(E, HD, far(v), e)
    else:
        ring_push(E, HD, S, e, v, x, b, lo)
    r = snat_pair(E, S, e)
    if r >= 0:
        HD[r, P_HELD] += 1
    if b <= S[S_LAST_SAMPLE]:        # its second was sampled already: expired at once
        HD[n + 1, N_EXPD] += 1
        if r >= 0:
            HD[r, P_EXPD] += 1


@hot
def cal_unlink(E, HD, S, e, v, x):
    """Take entry ``e`` (filed at expiry ``x``) out of node ``v``'s calendar."""
    b = second(x)
    n = nd(v)
    lo = HD[n, N_LO]
    list_drop(E, HD, e)
    if b < lo + RING:
        HD[n, N_HS] -= x - lo * NS
        HD[n + 1, N_HC] -= 1
        if b > S[S_LAST_SAMPLE]:
            HD[head(v, b), H_CNT] -= 1
    r = snat_pair(E, S, e)
    if r >= 0:
        HD[r, P_HELD] -= 1
    if b <= S[S_LAST_SAMPLE]:
        HD[n + 1, N_EXPD] -= 1
        if r >= 0:
            HD[r, P_EXPD] -= 1


@hot
def collect(E, HD, v, out, b0=0, buckets=0):
    """Every entry node ``v`` holds into ``out[:m]``, or with ``buckets`` > 0 only those with a
    tuple hashed into the EVICTION_RANGE buckets from ``b0`` (early_drop's); returns ``m``.
    (One list after the other: a second's entries were inserted together, often into nearby
    rows, which the hardware prefetcher then fetches ahead.)"""
    lo = HD[nd(v), N_LO]
    m = 0
    for b in range(lo, lo + RING + 1):
        e = HD[head(v, b) if b < lo + RING else far(v), H_NEXT]
        while e >= 0:
            if buckets == 0:
                out[m] = e
                m += 1
            else:
                ob, rb = E[e][OBUCKET], E[e][RBUCKET]
                if ((ob >= 0 and (ob - b0) % buckets < EVICTION_RANGE)
                        or (rb - b0) % buckets < EVICTION_RANGE):
                    out[m] = e
                    m += 1
            e = E[e][NXT]
    return m


@hot
def count_expired(E, HD, S, nodes, sec):
    """At the gauge sample of second ``sec``: count the held entries whose expiry second it is
    as expired (each node's N_EXPD), from the calendar's counts; with SNAT pairs kept, each of
    them in its pair's count too (a walk of that second's bucket only)."""
    pairs = S[S_PAIR_BASE] > 0
    for v in range(nodes):
        n = nd(v)
        lo = HD[n, N_LO]
        if lo <= sec < lo + RING:
            h = head(v, sec)
            HD[n + 1, N_EXPD] += HD[h, H_CNT]
            HD[h, H_CNT] = 0
            if pairs:                      # the bucket holds exactly that second's entries
                e = HD[h, H_NEXT]
                while e >= 0:
                    r = snat_pair(E, S, e)
                    if r >= 0:
                        HD[r, P_EXPD] += 1
                    e = E[e][NXT]
        elif sec >= lo + RING:             # a node whose calendar lags (no GC sweep for long)
            e = HD[far(v), H_NEXT]
            while e >= 0:
                if second(E[e][T_EXPIRE]) == sec:
                    HD[n + 1, N_EXPD] += 1
                    r = snat_pair(E, S, e)
                    if r >= 0:
                        HD[r, P_EXPD] += 1
                e = E[e][NXT]
    S[S_LAST_SAMPLE] = sec
