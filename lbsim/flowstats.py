"""The summary's per-flow statistics, accumulated over chunks of flows in flow order.

A whole run hands :class:`FlowStats` all its flows at once; a streamed run (records of finished
flows handed out window by window and not kept, :mod:`lbsim.simulation`) hands them chunk by
chunk. Every count and sum is exact and independent of the chunks: sums of durations are kept as
whole seconds plus leftover nanoseconds in int64, so no rounding depends on the order of
addition. Percentiles are exact (``np.quantile`` on the values) when the statistics keep the
values (``exact=True``, a whole run) and otherwise read from a :class:`~lbsim.histogram.LogHistogram`
(within :data:`lbsim.histogram.RELATIVE_ERROR`).

The per-flow formulas (a flow's closing instant, its data-path delay, whether its pod saw the
client's address or sat on another node) are here once; the flows table calls the same ones.
"""

from __future__ import annotations

import numpy as np

from .histogram import LogHistogram
from .jit import jit
from .kernel import NS, OK
from .records import FlowChunk
from .tuples import CLIENT_BASE
from .workload import Params

__all__ = ["FlowStats", "QUANTITIES"]

#: the durations whose median and 99th percentile the summary reports (established flows; the
#: connect latency of TCP flows only)
QUANTITIES = ("connect_latency", "response_time", "pod_wait", "datapath_delay")


# The values derived from one flow's records, one formula each; the flows table's columns and the
# statistics' pass both call them.
@jit(inline="always")
def _seconds(x_ns):
    """ns -> s (a latency, a response time, an instant), as numpy's ``x / 1e9``."""
    return np.float64(x_ns) / 1e9


@jit(inline="always")
def _closed_ns(t0, response, hold):
    """When the client closed the connection: its response plus its hold, ns."""
    return t0 + response + hold


@jit(inline="always")
def _datapath_delay_ns(response, wait, service, base):
    """What the path between the LB and the pod added to a response: the response time less
    the client <-> LB <-> backend legs every path has (``base``: 4 of them for TCP, 2 for UDP),
    the wait for a worker and the service. 0 on the direct path; on NodePort the node's CPU
    (queue and packet time), the second hop both ways, and the retransmissions after drops."""
    return response - base - wait - service


@jit(inline="always")
def _preserved(src_ip, client):
    """The pod saw the client's own IP."""
    return src_ip == client + CLIENT_BASE


@jit(inline="always")
def _second_hop(backend, pod_node, pod):
    """The pod ran on another node than the one the LB chose (NodePort)."""
    return backend >= 0 and pod_node[max(pod, 0)] != backend


#: FlowStats.counts: established flows, connect latencies counted, source IPs preserved, second
#: hops, flows after their client's first and those on its first pod, the sum of response + hold
#: as whole seconds and leftover ns
C_OK, C_CONNECT, C_PRESERVED, C_SECOND, C_LATER, C_SAME, C_LIFE_S, C_LIFE_NS = range(8)
C_SLOTS = 8


@jit
def _pass(outcome, connect, response, wait, src_ip, client, backend, pod_node, pod, t0, hold,
          service, nodeport, base, end, load, node_load, open_sec, open_rem, pend_n,
          pend_pod, pend_t0, pend_close, vals, first, counts):
    """One pass over a chunk's flows. Established flows count toward their pod's and node's load;
    a flow's open time up to the last arrival ``end`` (the chunk's last, so far the latest) is
    added to its pod's whole seconds and leftover ns, or, for a connection still open at
    ``end``, held in the pending rows (``pend_*``, from ``pend_n`` on) until a later chunk or
    the end settles it. ``vals`` (4 x n) receives the chunk's durations in ns (the established
    flows', connect latencies of TCP flows only) and ``first`` each client's first pod.
    ``counts``: the ``C_*`` counts. Returns the pending rows' new count."""
    nv = 0
    nc = 0
    for i in range(outcome.size):
        if outcome[i] != OK:
            continue
        p = pod[i]
        load[p] += 1
        node_load[backend[i] if nodeport else pod_node[p]] += 1
        if connect[i] >= 0:
            vals[0, nc] = connect[i]
            nc += 1
        vals[1, nv] = response[i]
        vals[2, nv] = wait[i]
        vals[3, nv] = _datapath_delay_ns(response[i], wait[i], service[i], base)
        nv += 1
        counts[C_PRESERVED] += _preserved(src_ip[i], client[i])
        if nodeport:
            counts[C_SECOND] += _second_hop(backend[i], pod_node, p)
        c = client[i]
        if first[c] < 0:
            first[c] = p
        else:
            counts[C_LATER] += 1
            counts[C_SAME] += p == first[c]
        life = response[i] + hold[i]
        counts[C_LIFE_S] += life // NS
        counts[C_LIFE_NS] += life % NS
        closed = _closed_ns(t0[i], response[i], hold[i])
        if closed <= end:
            d = closed - t0[i]
            open_sec[p] += d // NS
            open_rem[p] += d % NS
        else:
            pend_pod[pend_n], pend_t0[pend_n], pend_close[pend_n] = p, t0[i], closed
            pend_n += 1
    counts[C_OK] += nv
    counts[C_CONNECT] += nc
    return pend_n


@jit
def _settle(end, final, pend_n, pend_pod, pend_t0, pend_close, open_sec, open_rem):
    """Add the pending connections closed by ``end`` (all of them, cut at ``end``, when
    ``final``) to their pods' open time; returns how many stay pending (compacted)."""
    keep = 0
    for j in range(pend_n):
        c = pend_close[j]
        if c <= end or final:
            d = min(c, end) - pend_t0[j]
            p = pend_pod[j]
            open_sec[p] += d // NS
            open_rem[p] += d % NS
        else:
            pend_pod[keep], pend_t0[keep], pend_close[keep] = pend_pod[j], pend_t0[j], c
            keep += 1
    return keep


@jit
def _busiest(sec, key):
    """The longest run of one key within one second (``sec`` ascending; keys sorted per second
    here)."""
    best = 0
    i = 0
    n = sec.size
    while i < n:
        j = i
        while j < n and sec[j] == sec[i]:
            j += 1
        keys = np.sort(key[i:j])
        run = 0
        for k in range(keys.size):
            run = run + 1 if k > 0 and keys[k] == keys[k - 1] else 1
            best = max(best, run)
        i = j
    return best


class FlowStats:
    """The summary's per-flow statistics of one run, fed chunks of flows in flow order.

    ``pod_node``: each pod's node (the second hop and, on the direct path, a flow's node);
    ``exact``: keep the durations for exact percentiles (else a histogram each)."""

    def __init__(self, p: Params, pod_node: np.ndarray, exact: bool) -> None:
        self.p, self.exact = p, exact
        self.pod_node = np.ascontiguousarray(pod_node, np.int64)
        self.flows = 0
        self.retransmits = 0
        self.last_t0 = -1                         # the latest arrival so far, ns (-1: none)
        self.load = np.zeros(p.pods, np.int64)
        self.node_load = np.zeros(p.nodes, np.int64)
        self.open_sec = np.zeros(p.pods, np.int64)
        self.open_rem = np.zeros(p.pods, np.int64)
        self.counts = np.zeros(C_SLOTS, np.int64)
        self.first = np.full(1024, -1, np.int64)   # each client's first pod (grown as needed)
        self.pend_n = 0
        self.pend = np.zeros((3, 1024), np.int64)
        self.values: list[list[np.ndarray]] = [[] for _ in QUANTITIES]
        self.hist = [LogHistogram() for _ in QUANTITIES]
        self.busiest = 0
        self._carry = (np.zeros(0, np.int64), np.zeros(0, np.int64))   # the last second's pairs
        self._pairs = p.nodeport and p.snat

    def add(self, c: FlowChunk) -> None:
        """Count flows ``c.first`` .. ``c.first + c.n - 1`` (the next ones in flow order)."""
        if c.first != self.flows:
            raise ValueError(f"chunk starts at flow {c.first}, expected {self.flows}")
        if c.n == 0:
            return
        p = self.p
        self.flows += c.n
        att = c.attempts
        self.retransmits += int(att.sum(dtype=np.int64)) - int(np.count_nonzero(att))
        end = int(c.t0[-1])
        self.last_t0 = end
        self.pend_n = _settle(end, False, self.pend_n, *self.pend, self.open_sec, self.open_rem)
        if self.pend.shape[1] < self.pend_n + c.n:
            grown = np.zeros((3, 2 * (self.pend_n + c.n)), np.int64)
            grown[:, : self.pend_n] = self.pend[:, : self.pend_n]
            self.pend = grown
        top = int(c.client.max())
        if top >= self.first.size:
            grown = np.full(2 * top + 2, -1, np.int64)
            grown[: self.first.size] = self.first
            self.first = grown
        vals = np.zeros((len(QUANTITIES), c.n), np.int64)
        i64 = lambda a: np.ascontiguousarray(a, np.int64)  # noqa: E731
        n_ok0, nc0 = int(self.counts[C_OK]), int(self.counts[C_CONNECT])
        self.pend_n = _pass(
            np.ascontiguousarray(c.outcome), i64(c.connect_ns), i64(c.response_ns),
            i64(c.pod_wait_ns), i64(c.src_ip), i64(c.client), i64(c.backend), self.pod_node,
            i64(c.pod), i64(c.t0), i64(c.hold), i64(c.service), bool(p.nodeport),
            (4 if p.tcp else 2) * p.d_in, end, self.load, self.node_load, self.open_sec,
            self.open_rem, self.pend_n, self.pend[0], self.pend[1], self.pend[2], vals,
            self.first, self.counts)
        n_ok, nc = int(self.counts[C_OK]) - n_ok0, int(self.counts[C_CONNECT]) - nc0
        for k in range(len(QUANTITIES)):
            v = vals[k, : nc if k == 0 else n_ok]
            if self.exact:
                self.values[k].append(v)
            else:
                self.hist[k].add(v)
        if self._pairs:
            self._count_pairs(c)

    def _count_pairs(self, c: FlowChunk) -> None:
        """The busiest (node, pod) pair's established flows within one second; the chunk's last
        second may go on in the next chunk, so its flows wait for it."""
        ok = c.outcome == OK
        sec = np.concatenate((self._carry[0], c.t0[ok] // NS))
        key = np.concatenate((self._carry[1], c.backend[ok].astype(np.int64) * self.p.pods
                              + c.pod[ok]))
        last_sec = int(c.t0[-1]) // NS
        done = int(np.searchsorted(sec, last_sec, side="left"))
        self.busiest = max(self.busiest, int(_busiest(sec[:done], key[:done])))
        self._carry = (sec[done:], key[done:])

    # -- what the summary reads -------------------------------------------------------------------
    def settle(self) -> None:
        """The run is over: every pending connection counts up to the last arrival."""
        self.pend_n = _settle(self.last_t0, True, self.pend_n, *self.pend, self.open_sec,
                              self.open_rem)
        if self._pairs:
            self.busiest = max(self.busiest, int(_busiest(*self._carry)))
            self._carry = (np.zeros(0, np.int64), np.zeros(0, np.int64))

    @property
    def established(self) -> int:
        return int(self.counts[C_OK])

    def open_time_s(self) -> np.ndarray:
        """Per pod, the time its connections were open within [0, the last arrival], s."""
        return self.open_sec + self.open_rem / NS

    def quantiles(self, k: int, qs) -> list[float]:
        """The ``qs`` quantiles of :data:`QUANTITIES`\\ [k], s (NaN: no value)."""
        if self.exact:
            x = np.concatenate(self.values[k]) / 1e9 if self.values[k] else np.zeros(0)
            return [float(v) for v in np.quantile(x, qs)] if x.size else [float("nan")] * len(qs)
        return [v / 1e9 for v in self.hist[k].quantiles(qs)]

    def persistence(self) -> float:
        """Flows after each client's first that reach its first pod."""
        later, same = int(self.counts[C_LATER]), int(self.counts[C_SAME])
        return same / later if later else float("nan")

    def mean_connection_s(self) -> float:
        """Mean over established flows of response + hold, s (0: none)."""
        n = self.established
        return (int(self.counts[C_LIFE_S]) + int(self.counts[C_LIFE_NS]) / NS) / n if n else 0.0
