"""The direct path, compiled: no node, no table, so only the pods' queues connect one flow to the
next, and a window is a plain loop over its flows in arrival order (``ReferenceEngine.serve_direct``).
"""

from __future__ import annotations

import numpy as np

from ..kernel import NS, OK
from ..records import Records, RecordsBuilder
from ..tuples import CLIENT_BASE
from ..workload import Workload, worker_slots
from .handlers import serve
from .layout import jit

__all__ = ["DirectEngine"]


@jit
def _direct(a, b, tcp, d_in, t0, backend, service, client, worker_free, outcome, attempts,
            pod, nat_port, connect, response, pod_wait, src_ip):
    """Serve flows ``a`` to ``b - 1``."""
    for f in range(a, b):
        t = t0[f] + d_in
        p = backend[f]
        q = t + 2 * d_in if tcp else t
        finish = serve(worker_free, p, q, service[f])
        pod_wait[f] = finish - service[f] - q
        outcome[f] = OK
        attempts[f] = 1
        pod[f] = p
        nat_port[f] = -1
        connect[f] = t + d_in - t0[f] if tcp else -1
        response[f] = finish + d_in - t0[f]
        src_ip[f] = CLIENT_BASE + client[f]


class DirectEngine:
    """The compiled direct path; the same interface as :class:`~lbsim.compiled.driver.CompiledEngine`."""

    def __init__(self, w: Workload) -> None:
        self.w, self.p = w, w.params
        self.rec = RecordsBuilder(w)
        self.worker_free = worker_slots(w.workers)
        self.next = 0

    def advance(self, t1: int) -> bool:
        """Serve the flows arriving before ``t1``; True once every flow is served."""
        w, p, r = self.w, self.p, self.rec
        b = int(np.searchsorted(w.t0, t1 - p.d_in, side="left"))   # arriving before t1
        if b > self.next:
            _direct(self.next, b, p.tcp, p.d_in, w.t0, w.backend, w.service, w.client,
                    self.worker_free, r.outcome, r.attempts, r.pod, r.nat_port, r.connect_ns,
                    r.response_ns, r.pod_wait_ns, r.src_ip)
            self.next = b
        return self.next >= p.flows

    def set_endpoints(self, node: int, pods: np.ndarray) -> None:
        """The direct path has no kube-proxy: nothing to change."""

    def records(self) -> Records:
        """The reference's ticks leave one all-zero gauge row per whole second up to the last
        arrival (GC passes over empty tables)."""
        p = self.p
        n = (int(self.w.t0[-1]) + p.d_in) // NS if p.flows else 0
        empty = np.zeros(0, np.int64)
        return self.rec.freeze(
            table_count=np.zeros(p.nodes, np.int64), gauge_t_ns=(np.arange(n) + 1) * NS,
            gauge_entries=np.zeros((n, p.nodes), np.int64),
            gauge_live=np.zeros((n, p.nodes), np.int64), drops=(empty,) * 5,
            snat=(empty,) * 3, max_cpu_wait_ns=0, resolved=self.next)
