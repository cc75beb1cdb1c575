"""A streamed run: per-flow inputs drawn window by window, records of finished flows handed out
and forgotten, so that memory follows what is live, not the number of flows.

The engines (:class:`~lbsim.compiled.driver.CompiledEngine`,
:class:`~lbsim.compiled.direct.DirectEngine`) keep flow f's inputs and records in row
``f & flow_mask`` of their per-flow arrays: a ring of a power-of-two size here. The run draws the
next window of flows (:class:`lbsim.workload.FlowSource`: counter-based draws, the same values
as a whole run's) before it needs them, advances the engine up to that window's first arrival
(so no event is processed before a flow that is not loaded yet), then hands the flows resolved
so far, in flow order, to ``sink`` as :class:`~lbsim.records.FlowChunk` and clears their rows.
A flow resolved out of order waits for the ones before it; when the unresolved ones span the
whole ring (long retransmission chains at a high rate) the ring doubles.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..jit import jit
from ..kernel import NEVER
from ..kube_proxy import PER_ATTEMPT
from ..records import FlowChunk, Records
from ..workload import FlowSource, Workload
from .direct import DirectEngine
from .driver import CompiledEngine
from .layout import S_FLOW_END

__all__ = ["StreamedRun", "INPUTS", "OUTPUTS"]

#: the per-flow inputs the engines read, and the per-flow records they write (RecordsBuilder's)
INPUTS = ("t0", "client", "sport", "service", "hold", "instance", "backend")
OUTPUTS = ("outcome", "cause", "attempts", "pod", "nat_port", "connect_ns", "response_ns",
           "pod_wait_ns", "src_ip")
#: what a row of each record holds before its flow is resolved (RecordsBuilder's fill)
_UNSET = {"outcome": 0, "cause": 0, "attempts": 0, "pod": -1, "nat_port": -1, "connect_ns": -1,
          "response_ns": -1, "pod_wait_ns": -1, "src_ip": 0}


@jit
def _first_unresolved(outcome, lo, hi, mask):
    """The first flow of ``lo`` .. ``hi - 1`` not resolved yet (``hi``: all are)."""
    for f in range(lo, hi):
        if outcome[f & mask] == 0:
            return f
    return hi


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class StreamedRun:
    """One streamed run of ``sc`` (steady state, summary records: see
    :func:`lbsim.workload.streaming_refusal`), windows of ``window`` flows; ``sink`` receives
    every flow's records once, in flow order. Drive it like an engine (``advance``)."""

    def __init__(self, sc, window: int, sink: Callable[[FlowChunk], None],
                 drained: Callable[[np.ndarray, np.ndarray], None] | None = None) -> None:
        self.src = src = FlowSource(sc)
        self.p, self.window, self.sink = src.p, int(window), sink
        #: full records: the chunks carry the flows table's fields, and ``drained(D, SG)`` is
        #: given the drop rows and SNAT change points written since the last window (None:
        #: they are dropped; the engine keeps none of them)
        self.full = self.p.full_records
        self.drained = drained
        #: progress(t, started): told of each window's end (simulated ns, flows loaded)
        self.progress: Callable[[int, int], None] | None = None
        self.size = 1 << max(4, (2 * self.window - 1).bit_length())   # the ring: >= 2 windows
        self.frontier = 0      # flows handed to the sink
        self.loaded = 0        # flows in the ring
        self.staged = self._draw()   # the next window, drawn ahead: its first arrival ends a step
        rows = {k: np.zeros(self.size, np.int64) for k in INPUTS}
        self.w = self._workload(rows)
        self.eng = (CompiledEngine(self.w) if self.p.nodeport else DirectEngine(self.w))
        self._load()

    # -- windows ----------------------------------------------------------------------------------
    def _draw(self) -> dict[str, np.ndarray] | None:
        lo = self.src.next
        hi = min(lo + self.window, self.p.flows)
        return self.src.draw(lo, hi) if hi > lo else None

    def _workload(self, rows: dict[str, np.ndarray]) -> Workload:
        """The engines' view: the ring's rows as the per-flow inputs, row f & (size - 1). The
        engines get read-only views, as a whole run's inputs are (this run writes the rows
        through ``self.rows``): the same compiled code, which may assume that no record it
        writes changes an input."""
        self.rows = rows
        views = {k: _read_only(a) for k, a in rows.items()}
        w = self.src.workload(dict(views, flow_pod=np.full(1, PER_ATTEMPT, np.int64)))
        return dataclasses.replace(w, params=dataclasses.replace(self.p,
                                                                 flow_mask=self.size - 1))

    def _edge(self) -> int:
        """Where the engine must stop: the staged window's first arrival (NEVER: none left)."""
        return NEVER if self.staged is None else int(self.staged["t0"][0]) + self.p.d_in

    def _load(self) -> None:
        """Move the staged window into the ring (doubling it if the unresolved flows leave no
        room) and draw the next."""
        a = self.staged
        n = a["t0"].size
        if self.loaded + n - self.frontier > self.size:
            self._grow(self.loaded + n - self.frontier)
        rows = (np.arange(self.loaded, self.loaded + n) & (self.size - 1))
        for k in INPUTS:
            self.rows[k][rows] = a[k]
        self.loaded += n
        self._set_flow_end()
        self.staged = self._draw()

    def _set_flow_end(self) -> None:
        if self.p.nodeport:
            self.eng.X.S[S_FLOW_END] = self.loaded
        else:
            self.eng.flow_end = self.loaded

    def _grow(self, need: int) -> None:
        """Double the ring until ``need`` flows fit; the live ones move to their new rows."""
        old_mask = self.size - 1
        size = self.size
        while size < need:
            size *= 2
        live = np.arange(self.frontier, self.loaded)
        src_rows, dst_rows = live & old_mask, live & (size - 1)

        def moved(a: np.ndarray, fill) -> np.ndarray:
            b = np.full(size, fill, a.dtype)
            b[dst_rows] = a[src_rows]
            return b

        self.size = size
        rows = {k: moved(self.rows[k], 0) for k in INPUTS}
        self.w = self._workload(rows)
        rec = self.eng.rec
        for k in OUTPUTS:
            setattr(rec, k, moved(getattr(rec, k), _UNSET[k]))
        self.eng.rebind(self.w, rec)

    # -- the engine's interface for drive() --------------------------------------------------------
    def advance(self, t1: int) -> bool:
        """Process the events before ``t1``; True once every flow is resolved (and handed out)."""
        while True:
            edge = self._edge()
            done = self.eng.advance(min(t1, edge))
            self._hand_out()
            if done:
                return True
            if edge > t1 or (edge == t1 and self.staged is None):
                return False
            self._load()
            if self.progress is not None:
                self.progress(edge, self.loaded)

    def _hand_out(self) -> None:
        """Hand the flows resolved since the last call (up to the first unresolved) to the sink
        and clear their rows."""
        rec, w, mask = self.eng.rec, self.w, self.size - 1
        end = int(_first_unresolved(rec.outcome, self.frontier, self.loaded, mask))
        f = self.frontier
        full = self.full
        while f < end:
            a = f & mask
            b = min(a + (end - f), self.size)         # up to the ring's end, then from row 0
            extra = (dict(cause=rec.cause[a:b], nat_port=rec.nat_port[a:b],
                          sport=w.sport[a:b], instance=w.instance[a:b]) if full else {})
            self.sink(FlowChunk(f, *(getattr(rec, k)[a:b] for k in
                                     ("outcome", "attempts", "pod", "connect_ns", "response_ns",
                                      "pod_wait_ns", "src_ip")),
                                *(getattr(w, k)[a:b] for k in
                                  ("t0", "client", "backend", "hold", "service")), **extra))
            for k in OUTPUTS:
                getattr(rec, k)[a:b] = _UNSET[k]
            f += b - a
        self.frontier = end
        if full:                             # the engine's drop and SNAT rows: handed on
            D, SG = self.eng.drain()         # or dropped, never kept
            if self.drained is not None:
                self.drained(D, SG)

    def records(self) -> Records:
        """The run's records without per-flow rows (``flow_stats`` is the caller's to set);
        with full records, no drop or SNAT rows either (``drained`` was given them all)."""
        r = self.eng.records()
        empty = self.src.workload({k: np.zeros(0, np.int64) for k in INPUTS + ("flow_pod",)})
        r = dataclasses.replace(r, workload=empty, **{k: getattr(r, k)[:0] for k in OUTPUTS})
        return r.without_table_rows() if self.full else r
