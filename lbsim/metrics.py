"""Records -> tidy DataFrames and the summary metrics of a run.

Columns and metrics (units in the names: ``_s`` seconds) are documented in ``FLOW_COLUMNS``,
``COUNTER_COLUMNS`` and ``SUMMARY_METRICS``; the README's glossary is generated from the same text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .budget import load_bins
from .flowstats import (C_PRESERVED, C_SECOND, FlowStats, _closed_ns, _datapath_delay_ns, _preserved,
                        _second_hop, _seconds)
from .headroom import HEADROOM_METRICS, headroom
from .jit import jit
from .kernel import CAUSE_NAMES, NS, OK
from .records import FlowChunk, Records
from .rollout import ROLLOUT_METRICS, resets, rollout_metrics

__all__ = ["FLOW_COLUMNS", "COUNTER_COLUMNS", "GAUGE_COLUMNS", "DROP_COLUMNS", "SNAT_COLUMNS",
           "LOAD_COLUMNS", "SUMMARY_METRICS", "flows_frame", "counters_frame", "gauges_frame",
           "drops_frame", "snat_frame", "snat_dense", "load_frame", "summarize", "chunk_frame",
           "drops_table", "snat_table", "load_table", "whole_chunk", "pod_load_metrics"]

FLOW_COLUMNS = {
    "flow": "flow number, in arrival order",
    "arrival_s": "time the client sent the first SYN (or UDP request), s",
    "client": "client number (its IP is 11.0.0.0 + client)",
    "client_port": "client's source port",
    "lb_instance": "LB instance that took the flow (ECMP hash of the client tuple)",
    "node": ("node the LB sent the flow to (-1 on the direct path, and for a flow whose client "
             "had no port: nothing was sent)"),
    "pod": "pod that served the flow (-1 if the flow failed)",
    "snat_port": "source port after SNAT as the pod saw it (-1: no SNAT or failed)",
    "outcome": '"established" or "failed"',
    "cause": "why the last dropped attempt was dropped (\"none\" if never dropped)",
    "attempts": "SYNs sent (1 + retransmissions) or UDP requests sent",
    "connect_latency_s": "first SYN to SYN-ACK at the client, s (NaN: failed or UDP)",
    "response_time_s": "first SYN or request to the response at the client, s (NaN: failed)",
    "closed_s": "time the client closed the connection (response + hold), s (NaN: failed)",
    "pod_wait_s": "time the request waited for a worker at its pod, s (NaN: failed)",
    "datapath_delay_s": "what the path between the LB and the pod added to the response: the "
                        "node's CPU, the second hop both ways, retransmissions after drops "
                        "(0 on the direct path), s (NaN: failed)",
    "source_ip": "source IP the pod saw, as a 32-bit integer (lbsim.tuples.ip_str formats it)",
    "source_ip_preserved": "the pod saw the client's own IP",
    "second_hop": "the pod ran on another node than the one the LB chose (NodePort only)",
    "reset": "the connection was still open at its pod when the pod was gone (SIGKILL at the "
             "grace period; [[events]] only): cut by an RST, its response time is the one it "
             "would have had",
}

COUNTER_COLUMNS = {
    "node": "node number",
    "found": "NAT probes that met a live entry (conntrack -S found; not a TCP SYN's last 32 "
             "probes of a round on 6.5+, whose lookup counts nothing)",
    "insert": "conntrack -S insert: not incremented by current kernels (0 on 6.18, kernel-facts 8)",
    "insert_failed": "confirms that clashed and were not resolved; one per dropped packet",
    "drop": "packets dropped by conntrack (failed confirms and table-full allocations)",
    "early_drop": "entries evicted to make room in a full table",
    "clash_resolve": "UDP clashes resolved at confirm (adopted or NAT_CLASH-inserted)",
    "entries_inserted": "entries confirmed into the table (what insert used to count)",
    "gc_early_drop": "entries the GC worker killed early while the table was >= 95 % full "
                     "(not a conntrack -S counter)",
}

DROP_COLUMNS = {
    "t_s": "time the packet was dropped, s",
    "flow": "flow number",
    "attempt": "attempt number (0: first SYN or request)",
    "node": "node that dropped it",
    "cause": "why (same categories as the flows table)",
}

SNAT_COLUMNS = {
    "t_s": "sample time (every second) at which the pair's count changed, s",
    "node": "node number",
    "pod": "pod number",
    "ports": "SNAT source ports held by live entries of this (node, pod) from t_s on, until its "
             "next row (0: it emptied); a pair never used has no row",
}

LOAD_COLUMNS = {
    "t_s": "start of the time bin (the run's span in 100 bins; fewer, at least 1, when pods x 100 "
           "would pass budget.LOAD_ROWS_MAX rows), s",
    "bin_s": "width of the bin, s",
    "pod": "pod number",
    "node": "node the pod runs on (-1: pending to the end, never bound to a node)",
    "new_flows": "established flows that arrived in the bin",
    "connections": "connections open at the pod at the start of the bin (arrival to close)",
}

GAUGE_COLUMNS = {
    "t_s": "sample time (every second), s",
    "node": "node number",
    "entries": "entries held, expired-but-uncollected included (nf_conntrack_count)",
    "live_entries": "entries not yet expired",
    "snat_ports_max": "SNAT source ports held by live entries of the node's busiest (node, pod) "
                      "pair (-1: not counted, records = \"summary\")",
    "snat_pairs": "the node's (node, pod) pairs holding any SNAT port (-1: not counted)",
}

SUMMARY_METRICS = {
    "flows": "flows simulated",
    "established": "flows that got through",
    "failed": "flows that never got through (all attempts dropped)",
    "failed_fraction": "failed / flows",
    "last_arrival_s": "the last flow's start, s from the run's start (with a closed loop: how "
                      "long the flows took to get through it)",
    "syn_retransmits": "retransmitted SYNs (TCP) or resent requests (UDP), all flows",
    "conntrack_insert": "sum over nodes of conntrack -S insert (0 on current kernels)",
    "conntrack_insert_failed": "sum over nodes of insert_failed (one per dropped packet)",
    "conntrack_drop": "sum over nodes of drop",
    "conntrack_early_drop": "sum over nodes of early_drop",
    "conntrack_clash_resolve": "sum over nodes of clash_resolve",
    "conntrack_found": "sum over nodes of found",
    "conntrack_entries_inserted": "entries confirmed into nodes' tables",
    "fail_cause_port_exhaustion": "dropped packets: the SNAT search found no free tuple",
    "fail_cause_insert_race": "dropped packets: another flow confirmed the same tuple first",
    "fail_cause_table_full": "dropped packets: nf_conntrack_max reached",
    "fail_cause_no_local_endpoint": "dropped packets: Local policy on a node without a local pod",
    "fail_cause_tuple_in_use": "dropped packets: the client tuple matched a live connection",
    "fail_cause_refused": "attempts refused by the pod (its server starting or after SIGTERM: "
                          "an RST; the flow fails at once)",
    "fail_cause_pod_gone": "packets lost to a pod that no longer exists (the LB keeps a flow's "
                           "pod, so every retransmission is lost too)",
    "fail_cause_no_target": "attempts the LB had no target for (dropped; the client retransmits)",
    "fail_cause_no_client_port": "flows whose client had no free ephemeral port to the Service "
                                 "(connect() or sendto() failed with EADDRNOTAVAIL, nothing sent)",
    "fail_cause_no_endpoints": "attempts rejected by a node whose kube-proxy listed no endpoint "
                               "(its REJECT rule: ICMP port unreachable; the flow fails at once)",
    "connect_latency_p50_s": "median connect latency of established TCP flows, s",
    "connect_latency_p99_s": "99th percentile connect latency, s",
    "response_time_p50_s": "median response time of established flows, s",
    "response_time_p99_s": "99th percentile response time, s",
    "pod_wait_p50_s": "median time an established flow's request waited for a worker at its pod "
                      "(queueing: where balancing shows), s",
    "pod_wait_p99_s": "99th percentile of that wait, s",
    "datapath_delay_p50_s": "median of what the path between the LB and the pod added to a "
                            "response (the node's CPU, the second hop both ways, retransmissions "
                            "after drops; 0 on the direct path), s",
    "datapath_delay_p99_s": "99th percentile of that delay, s",
    "pod_load_max_over_mean": "established flows per pod: max / mean over all pods (with events: every pod the run created)",
    "pod_load_cv": "established flows per pod: standard deviation / mean",
    "pod_load_jain": "Jain's fairness index of established flows per pod, (sum x)^2 / (n sum x^2): "
                     "1 = even, 1/n = all on one pod",
    "pod_conn_max_over_mean": "open connections per pod, time-averaged from 0 to the last arrival: "
                              "max / mean over pods",
    "node_load_max_over_mean": "established flows per node (the node the LB chose on NodePort, "
                               "the pod's node on direct): max / mean over nodes",
    "session_persistence_fraction": "established flows after a client's first that reach the "
                                    "pod of its first (clients with >= 2 established flows)",
    "source_ip_preserved_fraction": "established flows whose pod saw the client IP",
    "second_hop_fraction": "established flows served by a pod on another node than the LB's",
    **HEADROOM_METRICS,
    **ROLLOUT_METRICS,
    "wall_s": "wall-clock time of the run, s",
    "flows_per_wall_s": "flows simulated per wall-clock second",
}


def whole_chunk(r: Records) -> FlowChunk:
    """Every flow of a run's records as one chunk (flows 0 .. F - 1)."""
    w = r.workload
    return FlowChunk(0, r.outcome, r.attempts, r.pod, r.connect_ns, r.response_ns, r.pod_wait_ns,
                     r.src_ip, w.t0, w.client, w.backend, w.hold, w.service, cause=r.cause,
                     nat_port=r.nat_port, sport=w.sport, instance=w.instance)


def _derived_args(c: FlowChunk, p, pod_node) -> tuple:
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    return (np.ascontiguousarray(c.outcome), i64(c.connect_ns), i64(c.response_ns),
            i64(c.src_ip), i64(c.client), i64(c.backend), i64(pod_node), i64(c.pod),
            bool(p.nodeport), i64(c.t0), i64(c.hold), i64(c.pod_wait_ns), i64(c.service),
            (4 if p.tcp else 2) * p.d_in)


@jit
def _columns(outcome, connect, response, src_ip, client, backend, pod_node, pod, nodeport, t0,
             hold, wait, service, base):
    """The derived columns of the flows table (NaN or False where they do not apply)."""
    n = outcome.size
    conn, resp, closed = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    waited, delay = np.full(n, np.nan), np.full(n, np.nan)
    preserved, second = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
    for i in range(n):
        if outcome[i] != OK:
            continue
        if connect[i] >= 0:
            conn[i] = _seconds(connect[i])
        resp[i] = _seconds(response[i])
        closed[i] = _seconds(_closed_ns(t0[i], response[i], hold[i]))
        preserved[i] = _preserved(src_ip[i], client[i])
        second[i] = nodeport and _second_hop(backend[i], pod_node, pod[i])
        waited[i] = _seconds(wait[i])
        delay[i] = _seconds(_datapath_delay_ns(response[i], wait[i], service[i], base))
    return conn, resp, closed, preserved, second, waited, delay


def flows_frame(r: Records) -> pd.DataFrame:
    """One row per flow; columns as in :data:`FLOW_COLUMNS`."""
    return chunk_frame(whole_chunk(r), r.workload.params, r.workload.pod_node, resets(r))


def chunk_frame(c: FlowChunk, p, pod_node: np.ndarray, reset: np.ndarray | None = None
                ) -> pd.DataFrame:
    """The flows table's rows of chunk ``c`` (full records' fields), ``p`` the run's
    :class:`~lbsim.workload.Params`; ``reset``: per flow (None: none was reset)."""
    ok = c.outcome == OK
    n = c.n
    node = c.backend if p.nodeport else np.full(n, -1)
    conn, resp, closed, preserved, second, waited, delay = _columns(*_derived_args(c, p, pod_node))
    return pd.DataFrame({
        "flow": np.arange(c.first, c.first + n),
        "arrival_s": c.t0 / NS,
        "client": c.client,
        "client_port": c.sport,
        "lb_instance": c.instance,
        "node": node,
        "pod": np.where(ok, c.pod, -1),
        "snat_port": np.where(ok, c.nat_port, -1),
        "outcome": pd.Categorical.from_codes(np.where(ok, 0, 1), ["established", "failed"]),
        "cause": pd.Categorical.from_codes(c.cause.astype(np.int64), list(CAUSE_NAMES)),
        "attempts": c.attempts.astype(np.int64),
        "connect_latency_s": conn,
        "response_time_s": resp,
        "closed_s": closed,
        "pod_wait_s": waited,
        "datapath_delay_s": delay,
        "source_ip": np.where(ok, c.src_ip, 0).astype(np.uint32),
        "source_ip_preserved": preserved,
        "second_hop": second,
        "reset": np.zeros(n, bool) if reset is None else reset,
    })


def counters_frame(r: Records) -> pd.DataFrame:
    """Per-node ``conntrack -S`` counters (all zero on the direct path: no node is crossed)."""
    w = r.workload
    p = w.params
    df = pd.DataFrame({"node": np.arange(p.nodes)})
    for k in COUNTER_COLUMNS:
        if k != "node":
            df[k] = r.counters[k]
    return df


def gauges_frame(r: Records) -> pd.DataFrame:
    """Conntrack occupancy per node over time, long format."""
    nodes = r.workload.params.nodes
    n = r.gauge_t_ns.size
    if not n:
        return pd.DataFrame({k: [] for k in GAUGE_COLUMNS})
    return pd.DataFrame({
        "t_s": np.repeat(r.gauge_t_ns / NS, nodes),
        "node": np.tile(np.arange(nodes), n),
        "entries": r.gauge_entries.ravel(),
        "live_entries": r.gauge_live.ravel(),
        "snat_ports_max": r.gauge_snat_max.ravel(),
        "snat_pairs": r.gauge_snat_pairs.ravel(),
    })


def snat_dense(snat: pd.DataFrame, gauges: pd.DataFrame) -> pd.DataFrame:
    """The SNAT change points as one row per sample and pair in use (t_s, node, pod, ports > 0),
    the gauges' sample times filling the steps."""
    if snat.empty:
        return snat.copy()
    times = np.unique(gauges["t_s"].to_numpy())
    c = snat.sort_values(["node", "pod", "t_s"], kind="stable")
    c = c.reset_index(drop=True)
    node, pod, t = c["node"].to_numpy(), c["pod"].to_numpy(), c["t_s"].to_numpy()
    # a row holds from its sample until the pair's next row (or the last sample)
    same = np.r_[(node[1:] == node[:-1]) & (pod[1:] == pod[:-1]), False]
    end = np.where(same, np.r_[t[1:], np.inf], np.inf)
    lo = np.searchsorted(times, t, side="left")
    hi = np.searchsorted(times, end, side="left")
    n = np.where(c["ports"].to_numpy() > 0, hi - lo, 0)
    rows = np.repeat(np.arange(len(c)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    k = lo[rows] + np.arange(rows.size) - first
    out = pd.DataFrame({"t_s": times[k], "node": node[rows], "pod": pod[rows],
                        "ports": c["ports"].to_numpy()[rows]})
    return out.sort_values(["t_s", "node", "pod"], kind="stable").reset_index(drop=True)


def drops_frame(r: Records) -> pd.DataFrame:
    """Every dropped packet, in time order (ties by flow and attempt)."""
    return drops_table(r.drop_t_ns, r.drop_flow, r.drop_attempt, r.drop_node, r.drop_cause)


def drops_table(t, flow, attempt, node, cause) -> pd.DataFrame:
    """The drops table (:data:`DROP_COLUMNS`) of the drops given (ns, per-drop int64 arrays),
    sorted by time, flow and attempt."""
    order = np.lexsort((attempt, flow, t))
    return pd.DataFrame({
        "t_s": t[order] / NS, "flow": flow[order], "attempt": attempt[order],
        "node": node[order],
        "cause": pd.Categorical.from_codes(cause[order], list(CAUSE_NAMES)),
    })


def snat_frame(r: Records) -> pd.DataFrame:
    """SNAT ports in use per (node, pod) over time, long format, a row where a pair's count
    changes (:data:`SNAT_COLUMNS`; :func:`snat_dense` expands it to every sample)."""
    return snat_table(r.snat_t_ns, r.snat_pair, r.snat_ports, r.workload.params.pods)


def snat_table(t, pair, ports, pods: int) -> pd.DataFrame:
    """The SNAT table's rows of the change points given (ns, pair = node x pods + pod)."""
    return pd.DataFrame({"t_s": t / NS, "node": pair // pods, "pod": pair % pods,
                         "ports": ports})


def nodes_existed(r: Records) -> int:
    """How many nodes the run had: with [[events]] cluster.nodes and those that joined (the
    engines' per-node arrays also hold the nodes of add-node events the run never reached)."""
    tl = r.timeline
    if tl is None:
        return r.workload.params.nodes
    return r.workload.scenario.cluster.nodes + int((tl.nodes["event"] == "joined").sum())


def pods_existed(r: Records) -> int:
    """How many pods the run had: with [[events]] those its control plane created (the engines'
    per-pod arrays are sized by an upper bound, ``pods_ever``), else every pod."""
    tl = r.timeline
    return len(tl.pods) if tl is not None else r.workload.params.pods


def load_frame(r: Records, flows, bins: int | None = None) -> pd.DataFrame:
    """Per pod and time bin: new established flows and open connections (:data:`LOAD_COLUMNS`)."""
    p = r.workload.params
    ok = r.outcome == OK
    batch = (np.asarray(flows["arrival_s"])[ok], np.asarray(flows["closed_s"])[ok],
             r.pod[ok].astype(np.int64))
    return load_table(lambda: [batch], pods_existed(r), r.workload.pod_node,
                      load_bins(p.pods) if bins is None else bins)


def load_table(batches, pods: int, pod_node: np.ndarray, bins: int) -> pd.DataFrame:
    """The load table of ``pods`` pods from the established flows ``batches()`` yields as
    (arrival_s, closed_s, pod) arrays; it is called twice (the span first, then the counts), so
    that a table on disk is read in batches (:mod:`lbsim.spill`)."""
    end = max((float(c.max()) for _, c, _ in batches() if c.size), default=1.0)
    width = end / bins if end > 0 else 1.0
    edges = np.arange(bins) * width
    new = np.zeros((pods, bins), np.int64)
    closed = np.zeros((pods, bins), np.int64)

    def per_bin(x: np.ndarray, pod: np.ndarray) -> np.ndarray:   # counts per (pod, bin) of x
        b = np.minimum((x / width).astype(np.int64), bins - 1)
        return np.bincount(pod * bins + b, minlength=pods * bins).reshape(pods, bins)

    for a, c, pod in batches():
        new += per_bin(a, pod)
        closed += per_bin(c, pod)
    # open at edge k: arrived before it, closed at or after it
    opened = np.cumsum(new, axis=1) - new
    closed = np.cumsum(closed, axis=1) - closed
    return pd.DataFrame({
        "t_s": np.tile(edges, pods), "bin_s": width, "pod": np.repeat(np.arange(pods), bins),
        "node": np.repeat(pod_node[:pods], bins), "new_flows": new.ravel(),
        "connections": (opened - closed).ravel(),
    })


def pod_load_metrics(load: np.ndarray) -> dict[str, float]:
    """pod_load_max_over_mean, pod_load_cv and pod_load_jain of established flows per pod
    (NaN where no pod served any)."""
    load = np.asarray(load, float)
    mean = load.mean() if load.size else 0.0
    if mean <= 0:
        return dict.fromkeys(("pod_load_max_over_mean", "pod_load_cv", "pod_load_jain"),
                             float("nan"))
    return {"pod_load_max_over_mean": float(load.max() / mean),
            "pod_load_cv": float(load.std() / mean),
            "pod_load_jain": float(load.sum() ** 2 / (load.size * (load ** 2).sum()))}


def _max_over_mean(x: np.ndarray) -> float:
    mean = x.mean() if x.size else 0.0
    return float(x.max() / mean) if mean > 0 else float("nan")


def flow_stats(r: Records) -> FlowStats:
    """The per-flow statistics of a run: a streamed run's own, else all its flows' (exact)."""
    if r.flow_stats is not None:
        return r.flow_stats
    w = r.workload
    st = FlowStats(w.params, w.pod_node, exact=True)
    st.add(whole_chunk(r))
    st.settle()
    return st


def summarize(r: Records, wall_s: float) -> dict[str, float]:
    """The summary metrics of :data:`SUMMARY_METRICS`, from the records (the per-flow values
    through :class:`lbsim.flowstats.FlowStats`, whose formulas the flows table uses too)."""
    w = r.workload
    p = w.params
    st = flow_stats(r)
    n_ok = st.established
    existed = pods_existed(r)
    load = st.load[:existed].astype(float)
    c50, c99 = st.quantiles(0, (0.5, 0.99))
    r50, r99 = st.quantiles(1, (0.5, 0.99))
    c = r.counters
    out: dict[str, float] = {
        "flows": p.flows,
        "established": n_ok,
        "failed": p.flows - n_ok,
        "failed_fraction": (p.flows - n_ok) / p.flows,
        "last_arrival_s": r.last_arrival_ns / NS,
        # sum of (attempts - 1) over flows with an attempt
        "syn_retransmits": st.retransmits,
        "conntrack_insert": int(c["insert"].sum()),
        "conntrack_insert_failed": int(c["insert_failed"].sum()),
        "conntrack_drop": int(c["drop"].sum()),
        "conntrack_early_drop": int(c["early_drop"].sum()),
        "conntrack_clash_resolve": int(c["clash_resolve"].sum()),
        "conntrack_found": int(c["found"].sum()),
        "conntrack_entries_inserted": int(c["entries_inserted"].sum()),
    }
    for code, name in enumerate(CAUSE_NAMES):
        if code:
            out[f"fail_cause_{name}"] = int(r.cause_count[code])
    out.update({
        "connect_latency_p50_s": c50,
        "connect_latency_p99_s": c99,
        "response_time_p50_s": r50,
        "response_time_p99_s": r99,
        **dict(zip(("pod_wait_p50_s", "pod_wait_p99_s"), st.quantiles(2, (0.5, 0.99)))),
        **dict(zip(("datapath_delay_p50_s", "datapath_delay_p99_s"),
                   st.quantiles(3, (0.5, 0.99)))),
        **pod_load_metrics(load),
        "pod_conn_max_over_mean": _max_over_mean(st.open_time_s()[:existed]),
        "node_load_max_over_mean": _max_over_mean(st.node_load[:nodes_existed(r)]),
        "session_persistence_fraction": st.persistence(),
        "source_ip_preserved_fraction": int(st.counts[C_PRESERVED]) / n_ok if n_ok
        else float("nan"),
        "second_hop_fraction": int(st.counts[C_SECOND]) / n_ok if n_ok else float("nan"),
        **headroom(r, st),
        **rollout_metrics(r),
        "wall_s": wall_s,
        "flows_per_wall_s": p.flows / wall_s if wall_s > 0 else float("nan"),
    })
    return out
