"""A closed loop's free slots: a min-heap of the instants (ns) at which a client may start its
next flow (``workload.arrival = "closed_loop"``).

It holds ``concurrency`` instants at first (the ramp: slot i opens at i / rate_per_s) and never
more: each new flow takes the earliest, each resolved flow gives its end (plus the think time)
back. The reference keeps the same heap in a Python list (``heapq``), so both engines start the
same flow at the same instant.
"""

from __future__ import annotations

from .layout import S_NSLOT, hot

__all__ = ["slot_push", "slot_pop"]


@hot
def slot_push(slots, S, t):
    """A slot frees at ``t``."""
    i = S[S_NSLOT]
    S[S_NSLOT] += 1
    slots[i] = t
    while i > 0:
        p = (i - 1) >> 1
        if slots[i] < slots[p]:
            slots[i], slots[p] = slots[p], slots[i]
            i = p
        else:
            break


@hot
def slot_pop(slots, S):
    """The earliest free slot's instant, taken."""
    top = slots[0]
    n = S[S_NSLOT] - 1
    S[S_NSLOT] = n
    slots[0] = slots[n]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        s = left
        if left + 1 < n and slots[left + 1] < slots[left]:
            s = left + 1
        if slots[s] < slots[i]:
            slots[i], slots[s] = slots[s], slots[i]
            i = s
        else:
            break
    return top
