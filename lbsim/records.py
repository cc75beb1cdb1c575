"""What an engine hands out: one :class:`Records` per run, the same type from every engine.

Engines fill :class:`RecordsBuilder`'s arrays while they run and freeze them into ``Records`` at the
end; :mod:`lbsim.metrics` reads only ``Records`` (and the :class:`~lbsim.workload.Workload` it
carries), one formula per metric. Names carry their units (``_ns``); codes are
:mod:`lbsim.kernel`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernel import CAUSE_NAMES, COUNTERS
from .workload import Workload

__all__ = ["Records", "RecordsBuilder", "FlowChunk", "TABLE_ROWS"]

#: the per-drop and per-change-point arrays of :class:`Records` (its drops and SNAT tables)
TABLE_ROWS = ("drop_t_ns", "drop_flow", "drop_attempt", "drop_node", "drop_cause", "snat_t_ns",
              "snat_pair", "snat_ports")


@dataclass(frozen=True, kw_only=True, eq=False)
class Records:
    """The records of one run.

    Per flow (length ``flows``): ``outcome`` (kernel.OK / FAILED), ``cause`` (the last drop's
    kernel cause code, 0 if none), ``attempts``, ``pod`` and ``nat_port`` (-1 if none),
    ``connect_ns`` (first SYN to SYN-ACK, -1 for UDP), ``response_ns`` (first SYN or request to the
    response), ``pod_wait_ns`` (how long the request waited for a worker at its pod), ``src_ip``
    (the source address the pod saw). Per node: ``counters`` (kernel.COUNTERS
    order, ``conntrack -S`` style), ``table_count`` (entries held at the end). Gauges, sampled on
    whole seconds: ``gauge_t_ns`` (samples), ``gauge_entries`` and ``gauge_live`` (samples x
    nodes: held, and held and not expired), ``gauge_snat_max`` and ``gauge_snat_pairs`` (samples
    x nodes: the SNAT ports in use by the node's busiest (node, pod) pair, and how many of its
    pairs hold any; -1: not counted, with ``records = "summary"``). ``drop_*``: every dropped packet (full records
    only). ``snat_*``: SNAT ports in use per (node, pod) pair (``pair = node * pods + pod``) as
    change points: a row at each sample where the pair's count differs from the sample before
    (0 once it empties), so the count at any sample is its last row's (full records, at most
    :data:`lbsim.budget.SNAT_PAIRS_MAX` pairs; empty beyond). ``cause_count``: drops per cause
    code; ``max_cpu_wait_ns``: the longest wait of a new packet in a node CPU's queue.
    """

    workload: Workload
    outcome: np.ndarray
    cause: np.ndarray
    attempts: np.ndarray
    pod: np.ndarray
    nat_port: np.ndarray
    connect_ns: np.ndarray
    response_ns: np.ndarray
    pod_wait_ns: np.ndarray
    src_ip: np.ndarray
    counters: dict[str, np.ndarray]
    table_count: np.ndarray
    cause_count: np.ndarray
    gauge_t_ns: np.ndarray
    gauge_entries: np.ndarray
    gauge_live: np.ndarray
    gauge_snat_max: np.ndarray
    gauge_snat_pairs: np.ndarray
    drop_t_ns: np.ndarray
    drop_flow: np.ndarray
    drop_attempt: np.ndarray
    drop_node: np.ndarray
    drop_cause: np.ndarray
    snat_t_ns: np.ndarray
    snat_pair: np.ndarray
    snat_ports: np.ndarray
    max_cpu_wait_ns: int
    resolved: int
    #: with [[events]]: the control plane's record (lbsim.control.timeline.Timeline) and each
    #: pod's gone instant, ns (NEVER: it stayed); None in the steady state
    timeline: Any = None
    pod_gone_ns: np.ndarray | None = None
    #: with [[events]]: (pod, t_ns) rows, a crash cutting the pod's open connections at t
    pod_cuts_ns: np.ndarray | None = None
    #: a streamed run's per-flow statistics (lbsim.flowstats.FlowStats), its per-flow arrays
    #: then empty; None when the records hold every flow
    flow_stats: Any = None
    #: a streamed run with full records: where its flows, drops and SNAT tables were written
    #: (lbsim.spill.Spill), its per-flow, drop and SNAT arrays then empty
    spill: Any = None

    def without_table_rows(self) -> Records:
        """These records with no drop or SNAT rows (their tables went elsewhere, or nowhere)."""
        return dataclasses.replace(self, **{k: getattr(self, k)[:0] for k in TABLE_ROWS})

    @property
    def last_arrival_ns(self) -> int:
        """The last flow's start, ns (0: no flow)."""
        if self.flow_stats is not None:
            return int(self.flow_stats.last_t0)
        t0 = self.workload.t0
        return int(t0[-1]) if t0.size else 0


@dataclass(frozen=True)
class FlowChunk:
    """Flows ``first`` .. ``first + n - 1``, in flow order: their records (:class:`Records`' per-flow
    fields) and the workload's inputs the statistics read; with full records also what the
    flows table shows besides (``cause``, ``nat_port``, ``sport``, ``instance``)."""

    first: int
    outcome: np.ndarray
    attempts: np.ndarray
    pod: np.ndarray
    connect_ns: np.ndarray
    response_ns: np.ndarray
    pod_wait_ns: np.ndarray
    src_ip: np.ndarray
    t0: np.ndarray
    client: np.ndarray
    backend: np.ndarray
    hold: np.ndarray
    service: np.ndarray
    cause: np.ndarray | None = None
    nat_port: np.ndarray | None = None
    sport: np.ndarray | None = None
    instance: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.t0.size)


class RecordsBuilder:
    """The per-flow record arrays and counters an engine writes into while it runs."""

    def __init__(self, workload: Workload) -> None:
        p = workload.params
        F = workload.t0.size    # every flow's row, or a streamed run's ring of them
        self.workload = workload
        self.outcome = np.zeros(F, np.int8)
        self.cause = np.zeros(F, np.int8)
        self.attempts = np.zeros(F, np.int16)
        # -1 until set; in the steady state every engine sets these for every flow of the
        # direct path (all served), so they need no fill
        steady_direct = not p.nodeport and not workload.scenario.events
        unset = ((lambda dt: np.empty(F, dt)) if steady_direct
                 else (lambda dt: np.full(F, -1, dt)))  # noqa: E731
        self.pod = unset(np.int32)
        self.nat_port = unset(np.int32)
        self.connect_ns = unset(np.int64)
        self.response_ns = unset(np.int64)
        self.pod_wait_ns = unset(np.int64)
        self.src_ip = np.zeros(F, np.int64)
        self.counters = np.zeros((len(COUNTERS), p.nodes), np.int64)
        self.cause_count = np.zeros(len(CAUSE_NAMES), np.int64)

    def freeze(self, *, table_count, gauge_t_ns, gauge_entries, gauge_live, gauge_snat, drops,
               snat, max_cpu_wait_ns: int, resolved: int, backend=None, pod_node=None) -> Records:
        """``gauge_snat``: (busiest pair's ports, pairs in use), each samples x nodes;
        ``drops``: (t, flow, attempt, node, cause) arrays; ``snat``: (t, pair, ports);
        ``backend``: the LB's choice per flow when the engine made it as the run went (the
        NodePort path with events: its node, -1 if none), and ``pod_node``: each pod's node
        when the control plane's scheduler bound some elsewhere than the workload's placement
        (drain and add-node events), recorded in the workload."""
        i64 = lambda a: np.asarray(a, np.int64)  # noqa: E731
        gauge_entries = i64(gauge_entries).reshape(-1, self.workload.params.nodes)
        w = self.workload
        if backend is not None:
            w = dataclasses.replace(w, backend=i64(backend))
        if pod_node is not None and not np.array_equal(pod_node, w.pod_node):
            w = dataclasses.replace(w, pod_node=i64(pod_node).copy())
        return Records(
            workload=w, outcome=self.outcome, cause=self.cause,
            attempts=self.attempts, pod=self.pod, nat_port=self.nat_port,
            connect_ns=self.connect_ns, response_ns=self.response_ns,
            pod_wait_ns=self.pod_wait_ns, src_ip=self.src_ip,
            counters={k: self.counters[i] for i, k in enumerate(COUNTERS)},
            table_count=i64(table_count), cause_count=self.cause_count,
            gauge_t_ns=i64(gauge_t_ns), gauge_entries=gauge_entries,
            gauge_live=i64(gauge_live).reshape(gauge_entries.shape),
            gauge_snat_max=i64(gauge_snat[0]).reshape(gauge_entries.shape),
            gauge_snat_pairs=i64(gauge_snat[1]).reshape(gauge_entries.shape),
            drop_t_ns=i64(drops[0]), drop_flow=i64(drops[1]), drop_attempt=i64(drops[2]),
            drop_node=i64(drops[3]), drop_cause=i64(drops[4]),
            snat_t_ns=i64(snat[0]), snat_pair=i64(snat[1]), snat_ports=i64(snat[2]),
            max_cpu_wait_ns=int(max_cpu_wait_ns), resolved=int(resolved))
