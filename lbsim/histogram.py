"""A mergeable histogram of non-negative integers (durations in ns) with a stated relative error.

A streamed run (:mod:`lbsim.flowstats`) keeps no per-flow array, so its percentiles come from
counts: values below 512 in buckets of one (exact), above in 256 buckets per power of two (the
log-linear layout of HdrHistogram). A bucket's values differ from its midpoint by less than
:data:`RELATIVE_ERROR` of themselves, so a quantile read with numpy's default (linear)
interpolation between the two order statistics around it is within that relative error of
``np.quantile`` on the values themselves. Adding counts is exact and associative: windows of any
size give the same histogram.
"""

from __future__ import annotations

import numpy as np

from .jit import jit

__all__ = ["SUB_BITS", "RELATIVE_ERROR", "BUCKETS", "bucket_of", "add_values", "LogHistogram"]

#: 2^SUB_BITS buckets per power of two above 2^(SUB_BITS + 1)
SUB_BITS = 8
_SUB = 1 << SUB_BITS
#: a bucket [m 2^s, (m + 1) 2^s) with m >= 2^SUB_BITS: its midpoint is within 2^s / 2 of every
#: value in it, and 2^s / 2 <= value x 2^-(SUB_BITS + 1)
RELATIVE_ERROR = 2.0 ** -(SUB_BITS + 1)
#: buckets for every int64 >= 0 (the top bit position 62 less SUB_BITS, plus the exact ones)
BUCKETS = (62 - SUB_BITS + 2) * _SUB


@jit(inline="always")
def bucket_of(v):
    """The bucket of ``v`` (int64; negative values count as 0)."""
    if v < 2 * _SUB:
        return max(v, 0)
    top = 0                       # floor(log2(v)) by halving, exact for every int64
    x = v
    for step in (32, 16, 8, 4, 2, 1):
        if x >> step:
            x >>= step
            top += step
    shift = top - SUB_BITS
    return shift * _SUB + (v >> shift)


@jit
def add_values(counts, values):
    """Count every one of ``values``."""
    for i in range(values.size):
        counts[bucket_of(values[i])] += 1


def _midpoints() -> np.ndarray:
    b = np.arange(BUCKETS, dtype=np.int64)
    shift = np.maximum(b // _SUB - 1, 0)
    low = np.where(b < 2 * _SUB, b, (b - shift * _SUB) << shift)
    return low + ((np.int64(1) << shift) - 1) / 2.0


_MID = _midpoints()


class LogHistogram:
    """Counts of int64 values >= 0 in :data:`BUCKETS` log-linear buckets."""

    def __init__(self) -> None:
        self.counts = np.zeros(BUCKETS, np.int64)

    def add(self, values: np.ndarray) -> None:
        """Count ``values``."""
        add_values(self.counts, np.ascontiguousarray(values, np.int64))

    def merge(self, other: LogHistogram) -> None:
        self.counts += other.counts

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def quantiles(self, qs) -> list[float]:
        """``np.quantile(values, qs)`` (linear interpolation) from the counts, each within
        :data:`RELATIVE_ERROR` of it; NaN when nothing was counted."""
        cum = np.cumsum(self.counts)
        n = int(cum[-1]) if cum.size else 0
        if n == 0:
            return [float("nan")] * len(qs)
        out = []
        for q in qs:
            pos = q * (n - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, n - 1)
            # the k-th smallest value (0-based) is in the first bucket whose cumulative count
            # exceeds k
            a, b = _MID[np.searchsorted(cum, [lo, hi], side="right")]
            out.append(float(a + (pos - lo) * (b - a)))
        return out
