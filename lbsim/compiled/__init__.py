"""The compiled engine: the reference engine's every decision, compiled with numba.

Why compiled: the data path is sequential (every NAT decision reads the table the previous one
wrote), so numpy could vectorize it only where flows cannot interact, paying ~1-5 us of call
overhead per small array; benchmarks/RESULTS.md has the measurements. The package, by concept:
``layout`` (parameters and array rows), ``intrinsics`` (prefetch), ``index`` (the conntrack
index), ``calendar`` (each node's expiry calendar), ``table`` (release, lookup, early_drop, GC),
``nat`` (the SNAT port search), ``events`` (the heap), ``handlers`` (one per event kind),
``loop`` (a window of events), ``direct`` (the direct path), ``driver`` (arrays, growth, records).
"""

from __future__ import annotations

from ..workload import Workload
from .direct import DirectEngine
from .driver import CompiledEngine

__all__ = ["CompiledEngine", "DirectEngine", "compiled_engine"]


def compiled_engine(w: Workload) -> CompiledEngine | DirectEngine:
    """The compiled engine for ``w``'s path."""
    return CompiledEngine(w) if w.params.nodeport else DirectEngine(w)
