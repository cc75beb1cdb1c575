"""The event heap: rows (t, order, payload) of ``H``, ``order = kind << 48 | flow << 8 | attempt``.

One comparison of (t, order) ranks the events of one instant as the reference does (kind, then
flow, then attempt). First arrivals never enter the heap: the loop merges them from the sorted
arrival times.
"""

from __future__ import annotations

from .layout import S_HN, hot, inline

__all__ = ["order", "unpack", "push", "pop"]


@inline
def _less(H, i, j):
    return H[i, 0] < H[j, 0] or (H[i, 0] == H[j, 0] and H[i, 1] < H[j, 1])


@inline
def order(kind, flow, attempt):
    return (kind << 48) | (flow << 8) | attempt


@inline
def unpack(o):
    """(kind, flow, attempt) of an ``order``."""
    return o >> 48, (o >> 8) & 0xFFFFFFFFFF, o & 0xFF


@inline
def _swap(H, i, j):
    for c in range(3):
        H[i, c], H[j, c] = H[j, c], H[i, c]


@hot
def push(H, S, t, kind, flow, attempt, payload):
    i = S[S_HN]
    S[S_HN] += 1
    H[i, 0], H[i, 1], H[i, 2] = t, order(kind, flow, attempt), payload
    while i > 0:
        p = (i - 1) >> 1
        if _less(H, i, p):
            _swap(H, i, p)
            i = p
        else:
            break


@hot
def pop(H, S):
    n = S[S_HN] - 1
    S[S_HN] = n
    H[0, 0], H[0, 1], H[0, 2] = H[n, 0], H[n, 1], H[n, 2]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        s = left
        if left + 1 < n and _less(H, left + 1, left):
            s = left + 1
        if _less(H, s, i):
            _swap(H, i, s)
            i = s
        else:
            break
