"""What a run will allocate, estimated from its scenario before anything is allocated.

A flow count inside the validator's range (up to 2**40) or a large cluster with full records can
ask for more memory than the machine has; numpy would then fail half-way (or the kernel kill the
process). :func:`check_memory` refuses such a run up front, the estimate in the message. The
estimate is an upper-end reckoning of lbsim's own arrays and tables (bytes per flow, per live
conntrack entry, per node and second, per pod), not a measurement: it errs on the high side.
"""

from __future__ import annotations

import math
import os

from .client_ports import time_wait_ns, walk_bytes
from .config import Arrival, DataPath, Protocol, Scenario, TrafficPolicy
from .config.dynamics import nodes_ever, pods_ever
from .kernel import NS

__all__ = ["SNAT_PAIRS_MAX", "STREAM_FLOWS", "STREAM_WINDOW", "streamed_rows", "estimate_bytes", "available_bytes", "check_memory", "check_disk", "DISK_PER_FLOW", "horizon_s", "flow_rate", "closed_loop_cycle_s", "check_clock",
           "MAX_HORIZON_S", "MAX_NODE_SECONDS", "MAX_HEALTH_CHECKS", "check_control", "LOAD_ROWS_MAX", "load_bins"]

#: the model's clock is int64 nanoseconds (2**63 ns is 292 years): every instant of a run, its
#: durations' tails included, must stay far below that
MAX_HORIZON_S = 1e9
#: each node's GC and gauge ticks come about once a simulated second: a run of more node-seconds
#: than this would tick for minutes and keep gigabytes of gauges, whatever its flow count
MAX_NODE_SECONDS = 1e7

#: the load table's most rows (lbsim.Result.load): a cluster of more than LOAD_ROWS_MAX / 100
#: pods gets fewer time bins (a million pods at 100 bins would be 10^8 rows, ~5 GB, whatever the
#: flow count)
LOAD_ROWS_MAX = 2_000_000

#: per flow: the workload's arrays and their draws (~80 B), the records (44 B), the summary's
#: per-flow passes (~80 B)
_PER_FLOW = 80 + 44 + 80
#: per flow with records = "full": the flows table and its derived columns, the load table's input
_PER_FLOW_FULL = 260
#: per live conntrack entry: its 80-byte row (grown by a quarter), two index slots of 8 B at
#: <= 50 % load, its free-list and scratch rows
_PER_ENTRY = 80 * 5 // 4 + 4 * 8 + 4 + 4 + 8
#: the reference engine keeps Python objects per event: about this much more per flow
_REFERENCE_FACTOR = 20


#: the most (node, pod) pairs whose SNAT entries full records count pair by pair as they come
#: and go (24 bytes a pair: 48 MiB at the limit): the per-node SNAT gauges and the per-pair
#: change points. With more pairs they count the gauges by walking every entry at each sample
#: and keep no per-pair table; summary records count neither
SNAT_PAIRS_MAX = 1 << 21


#: a run of more flows than this streams when it can (lbsim.workload.streams: summary records,
#: the steady state): its per-flow inputs drawn and its records handed out window by window,
#: STREAM_WINDOW flows at a time, so that its memory follows the live flows, not all of them
STREAM_FLOWS = 1 << 21
STREAM_WINDOW = 1 << 16
#: per row of a streamed run's ring: the inputs (7 x 8 B) and the records (44 B); and per flow
#: of a window drawn ahead, its draws
_PER_RING_ROW = 56 + 44
_PER_WINDOW_FLOW = 200


def streamed_rows(sc: Scenario) -> int:
    """Upper end of a streamed run's ring: two windows and the flows that may start while one
    waits for its last retransmission (the ring keeps every flow from the oldest unresolved
    on), rounded up to a power of two."""
    w = sc.workload
    gaps = sum(w.retry_gaps_ns) / NS
    rows = 2 * STREAM_WINDOW + flow_rate(sc) * gaps
    return 1 << int(min(rows, w.flows + 2 * STREAM_WINDOW)).bit_length()


def _total_workers(sc: Scenario) -> int:
    w = sc.pod.workers
    return sum(w) if isinstance(w, tuple) else w * sc.cluster.pods


def closed_loop_cycle_s(sc: Scenario, worst: bool = False) -> float:
    """A closed-loop client's cycle, s: from one flow's start to the next's on its slot (the
    path's latencies, the service, the hold and the think time, means); ``worst``: its upper
    end, the client giving up after its whole retry schedule or waiting behind every other
    flow in flight at a pod (distribution tails at 50 x their mean)."""
    w, net, service = sc.workload, sc.network, float(sc.pod.service_s.mean)
    path = 3 * (net.client_to_lb_s + net.lb_to_backend_s) + 4 * net.node_to_pod_s
    hold = float(w.hold_s.mean)
    if not worst:
        return path + service + hold + w.think_s
    queued = 50 * service * (w.concurrency + 1)
    gaps = sum(w.retry_gaps_ns) / NS
    return path + max(gaps, queued) + 50 * hold + w.think_s


def flow_rate(sc: Scenario) -> float:
    """New flows per second the run makes: ``rate_per_s``, or with a closed loop its expected
    throughput (``concurrency`` over a cycle, at most what the pods' workers serve)."""
    w = sc.workload
    if w.arrival is not Arrival.CLOSED_LOOP:
        return w.rate_per_s
    cycle, service = closed_loop_cycle_s(sc), float(sc.pod.service_s.mean)
    bounds = ([w.concurrency / cycle] if cycle > 0 else []) + (
        [_total_workers(sc) / service] if service > 0 else [])
    return min(bounds) if bounds else w.rate_per_s     # no time at all: as fast as the ramp


def load_bins(pods: int) -> int:
    """Time bins of the load table: 100, fewer (at least 1) for a cluster too large for 100."""
    return max(1, min(100, LOAD_ROWS_MAX // pods))


def estimate_bytes(sc: Scenario, engine: str = "compiled", streamed: bool = False) -> int:
    """Upper-end estimate of the memory one run of ``sc`` allocates, in bytes (``streamed``: the
    run streams, lbsim.workload.streams)."""
    w, c, full = sc.workload, sc.cluster, sc.records == "full"
    flows, rate = w.flows, flow_rate(sc)
    span_s = flows / rate
    per_flow = _PER_FLOW + (_PER_FLOW_FULL if full else 0)
    if streamed:
        total = streamed_rows(sc) * _PER_RING_ROW + 2 * STREAM_WINDOW * _PER_WINDOW_FLOW
    else:
        total = flows * per_flow * (_REFERENCE_FACTOR if engine == "reference" else 1)
    workers = max(sc.pod.workers) if isinstance(sc.pod.workers, tuple) else sc.pod.workers
    total += c.pods * workers * 8                                  # the pods' workers
    if w.arrival is not Arrival.TRACE:       # the clients' port walk (lbsim.client_ports)
        tcp = w.protocol is Protocol.TCP
        held_s = ((time_wait_ns(w.tcp_tw_reuse) / NS if tcp else 0.0) + float(w.hold_s.mean)
                  + float(sc.pod.service_s.mean))
        lo, hi = w.client_port_range               # no client holds more than its range
        held = min(flows, rate * held_s + 1, w.clients * (hi - lo + 1))
        total += walk_bytes(w.clients, hi - lo + 1, int(held))
    if sc.path is DataPath.NODEPORT:
        held_s = (sc.conntrack.time_wait_s if w.protocol is Protocol.TCP else sc.conntrack.udp_s)
        held_s += float(w.hold_s.mean) + float(sc.pod.service_s.mean)
        live = min(flows, rate * held_s + 1)
        total += int(live * _PER_ENTRY)
        samples = span_s + held_s + 2
        # the gauges (entries and live in 4 bytes, full records' SNAT pair in 16, grown by
        # half), their int64 records and their table (6 columns of 8 bytes)
        total += int(samples * c.nodes * ((8 if not full else 24) * 3 // 2 + 32 + 48))
        if full:
            if c.nodes * c.pods <= SNAT_PAIRS_MAX:
                total += 24 * c.nodes * c.pods                     # the pairs' SNAT counts
            # the SNAT change points: a pair's count changes at most twice per entry (filed,
            # expired), and at most once per pair and sample; a streamed run hands them out
            # each window (its buffer: room for two table sizes and a window's samples)
            pairs = min(c.nodes * c.pods, live)
            rows = (3 * live + pairs * (STREAM_WINDOW / rate + 2) if streamed else
                    min(samples * pairs, 2 * flows * (w.retries + 1)))
            total += int(rows * 24 * 3)
    if sc.path is DataPath.DIRECT:
        # the direct path's gauges: an all-zero row per node and second up to the last arrival
        # (4 int64 arrays, and their table's 6 columns), however few flows the run has
        total += int((span_s + 2) * c.nodes * (32 + 48))
    if full and streamed:
        # a window's drops, and the row groups buffered for the Parquet files (lbsim.spill)
        total += STREAM_WINDOW * (w.retries + 1) * 40 * 2 + 3 * (1 << 17) * 160
    if full:
        total += c.pods * load_bins(c.pods) * 6 * 8 * 2            # the load table
    return int(total)


def available_bytes() -> int | None:
    """Memory the machine can give a new allocation now (Linux: MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(sc: Scenario, engine: str = "compiled", available: int | None = None,
                 streamed: bool = False) -> int:
    """Refuse (``ValueError``) a run whose estimate exceeds 80 % of the available memory; returns
    the estimate."""
    need = estimate_bytes(sc, engine, streamed)
    have = available if available is not None else available_bytes()
    if have is not None and need > 0.8 * have:
        hint = ('records = "summary", ' if sc.records == "full" else "") + "fewer workload.flows"
        raise ValueError(f"this run would need about {need / 2**30:,.1f} GiB (workload.flows = "
                         f"{sc.workload.flows:,}, cluster.nodes = {sc.cluster.nodes:,}, "
                         f"cluster.pods = {sc.cluster.pods:,}, records = {sc.records!r}) and "
                         f"{have / 2**30:,.1f} GiB are available: use {hint} or a smaller "
                         f"cluster")
    return need


#: bytes on disk per flow of a streamed run's flows table (Parquet): measured 34-39 on four
#: named scenarios (benchmarks/RESULTS.md); its drops and SNAT change points add ~11-14 bytes a
#: row on top, how many depends on the run (a disk that fills is reported when it does)
DISK_PER_FLOW = 48


def check_disk(sc: Scenario, directory, free: int | None = None) -> int:
    """Refuse (``ValueError``) a streamed run with full records whose tables would not fit in
    90 % of the free space of ``directory``; returns the estimate."""
    import shutil
    need = sc.workload.flows * DISK_PER_FLOW
    have = shutil.disk_usage(directory).free if free is None else free
    if need > 0.9 * have:
        raise ValueError(f"records_dir = {str(directory)!r}: this run's tables (workload.flows "
                         f"= {sc.workload.flows:,}, records = 'full') would need about "
                         f"{need / 2**30:,.1f} GiB there and {have / 2**30:,.1f} GiB are free: "
                         f"name another records_dir, or use records = \"summary\" or fewer "
                         f"workload.flows")
    return need


def _durations(sc: Scenario) -> dict[str, float]:
    """Every duration a run adds to an instant, s (a distribution's mean x 50: its tail)."""
    w, kp, ct, net = sc.workload, sc.kube_proxy, sc.conntrack, sc.network
    gaps = sum(w.retry_gaps_ns) / NS
    schedule = ("workload.syn_retries' SYN schedule (syn_rto_s, syn_linear_timeouts)"
                if w.protocol is Protocol.TCP else
                "workload.udp_timeout_s x (workload.udp_retries + 1)")
    return {"workload.hold_s": 50 * float(w.hold_s.mean),
            "pod.service_s": 50 * float(sc.pod.service_s.mean),
            "cluster.packet_time_s": 50 * float(sc.cluster.packet_time_s.mean),
            "cluster.packet_jitter_s": 50 * float(sc.cluster.packet_jitter_s.mean),
            "workload.pair_offset_s": 50 * float(w.pair_offset_s.mean),
            schedule: gaps,
            "workload.query_gap_s": w.query_gap_s * w.queries_per_socket,
            "workload.think_s": w.think_s,
            "conntrack.time_wait_s": ct.time_wait_s, "conntrack.udp_stream_s": sc.udp_stream_s,
            "conntrack.udp_s": ct.udp_s, "lb.persistence_s": sc.lb.persistence_s,
            "kube_proxy.session_affinity_timeout_s": kp.session_affinity_timeout_s,
            "network.client_to_lb_s + lb_to_backend_s + node_to_pod_s": net.client_to_lb_s + net.lb_to_backend_s + net.node_to_pod_s,
            "conntrack.gc_interval_s": 0.0 if ct.gc_interval_s == "auto" else ct.gc_interval_s}


#: durations that do not keep a run's ticks going: an entry's timeouts and a client's hold come
#: after its flow is resolved, and affinity and persistence only decide choices
_NOT_TICKED = ("workload.hold_s", "conntrack.time_wait_s", "conntrack.udp_stream_s",
               "conntrack.udp_s", "lb.persistence_s", "kube_proxy.session_affinity_timeout_s",
               "conntrack.gc_interval_s", "workload.think_s")


def _control_durations(sc: Scenario) -> dict[str, float]:
    """With [[events]]: every delay the control plane adds to an instant, s (a distribution's
    mean x 50: its tail)."""
    if not sc.events:
        return {}
    lc, d, cl = sc.lifecycle, sc.deployment, sc.cloud
    return {"events.at_s": sc.events[-1].at_s,
            "lifecycle.startup_s": 50 * float(lc.startup_s.mean),
            "lifecycle.readiness_initial_delay_s": lc.readiness_initial_delay_s,
            "lifecycle.readiness_period_s x readiness_success_threshold":
                lc.readiness_period_s * lc.readiness_success_threshold,
            "lifecycle.prestop_s": lc.prestop_s,
            "lifecycle.restart_backoff_s + startup_s": lc.restart_backoff_s
                + 50 * float(lc.startup_s.mean),
            "lifecycle.termination_grace_s": lc.termination_grace_s,
            "deployment.min_ready_s": d.min_ready_s,
            "cloud.registration_s": 50 * float(cl.value("registration_s").mean),
            "cloud.hc_interval_s x thresholds": cl.value("hc_interval_s")
                * (cl.value("hc_healthy_threshold") + cl.value("hc_unhealthy_threshold")),
            "cloud.deregistration_lag_s": 50 * float(cl.value("deregistration_lag_s").mean),
            "cloud.deregistration_delay_s": cl.value("deregistration_delay_s"),
            "cloud.draining_new_flows_s": cl.value("draining_new_flows_s"),
            "endpoints.propagation_s": 50 * float(sc.endpoints.propagation_s.mean),
            "endpoints.min_sync_period_s + sync_s": sc.endpoints.min_sync_period_s
                + 50 * float(sc.endpoints.sync_s.mean)}


#: the most health checks a run (or a timeline) may simulate: each target is checked every
#: cloud.hc_interval_s, so a long run of many pods at a short interval would check for hours
MAX_HEALTH_CHECKS = 2e7
#: the most EndpointSlice deliveries (a change reaching a node's kube-proxy) a run may simulate
MAX_DELIVERIES = 2e7
#: EndpointSlice changes per pod, at most: ready, deleted (terminating), not serving, gone
_SLICE_CHANGES_PER_POD = 4


def check_control(sc: Scenario, span_s: float) -> None:
    """Refuse (``ValueError``) control-plane delays past the clock, and more health checks than
    :data:`MAX_HEALTH_CHECKS` over ``span_s`` of simulated time."""
    for field, d in _control_durations(sc).items():
        if d > MAX_HORIZON_S:
            raise ValueError(f"{field} reaches {d:.3g} s: past the model's clock (instants must "
                             f"stay below {MAX_HORIZON_S:g} s: int64 nanoseconds)")
    if not sc.events:
        return
    pods = pods_ever(sc.cluster.pods, sc.events, sc.deployment.max_surge)
    targets, kind = pods, "pods"
    if sc.path is DataPath.NODEPORT:
        local = sc.kube_proxy.external_traffic_policy is TrafficPolicy.LOCAL
        nodes = nodes_ever(sc.cluster.nodes, sc.events)
        # a node that joins is checked until healthy, under either policy
        targets = nodes if local and sc.lb.health_check else nodes - sc.cluster.nodes
        kind = "local_nodes"
        deliveries = nodes * pods * _SLICE_CHANGES_PER_POD
        if deliveries > MAX_DELIVERIES:
            raise ValueError(f"cluster.nodes + add-node events = {nodes:,}: each EndpointSlice change "
                             f"reaches every node's kube-proxy, ~{deliveries:.3g} deliveries for "
                             f"up to {pods:,} pods, more than {MAX_DELIVERIES:g} (fewer nodes "
                             f"or pods)")
    interval = sc.cloud.value("hc_interval_s", kind)
    checks = targets * span_s / interval
    if checks > MAX_HEALTH_CHECKS:
        raise ValueError(f"cloud.hc_interval_s = {interval:g}: up to {targets:,} targets "
                         f"checked over ~{span_s:.3g} s is ~{checks:.3g} health checks, more "
                         f"than {MAX_HEALTH_CHECKS:g} (a longer interval, fewer targets or a "
                         f"shorter run)")


def horizon_s(sc: Scenario, worst: bool = True) -> float:
    """When the run's last arrival comes, s: exactly for periodic sockets, else its mean with 8
    standard deviations of a Poisson sum; a closed loop's after its ramp, flows / concurrency
    cycles (``worst``: each at its upper end, :func:`closed_loop_cycle_s`; else at the
    expected throughput)."""
    w = sc.workload
    if w.arrival is Arrival.CLOSED_LOOP:
        ramp = (w.concurrency - 1) / w.rate_per_s
        if not worst:
            return ramp + w.flows / flow_rate(sc)
        return ramp + math.ceil(w.flows / w.concurrency) * closed_loop_cycle_s(sc, worst=True)
    q = w.flows_per_socket                 # a socket's queries, or a pair
    sockets = w.flows / q
    if w.arrival is Arrival.PERIODIC:      # the last socket, and its last query's gap
        return (max(0, math.ceil(sockets) - 1) / (w.rate_per_s / q)
                + (w.queries_per_socket - 1) * w.query_gap_s)
    return (sockets + 8 * sockets ** 0.5 + 8) / (w.rate_per_s / q)


def check_clock(sc: Scenario) -> None:
    """Refuse (``ValueError``) a run whose instants would not fit the int64 ns clock, or whose
    per-node ticks would run for hours."""
    for field, d in _durations(sc).items():
        if d > MAX_HORIZON_S:
            raise ValueError(f"{field} reaches {d:.3g} s: past the model's clock (instants must "
                             f"stay below {MAX_HORIZON_S:g} s: int64 nanoseconds)")
    span, w = horizon_s(sc), sc.workload
    if span > MAX_HORIZON_S:
        what = ("workload.flows / workload.concurrency" if w.arrival is Arrival.CLOSED_LOOP
                else "workload.flows / workload.rate_per_s")
        by = w.concurrency if w.arrival is Arrival.CLOSED_LOOP else w.rate_per_s
        raise ValueError(f"{what} = {w.flows:g} / {by:g}: the arrivals could span "
                         f"~{span:.3g} s, past the model's clock (at most {MAX_HORIZON_S:g} s "
                         f"of simulated time: int64 nanoseconds)")
    if w.arrival is Arrival.CLOSED_LOOP:     # the ticks run for the expected span
        span = horizon_s(sc, worst=False)
    check_control(sc, span + sum(_durations(sc).values()))
    nodes = nodes_ever(sc.cluster.nodes, sc.events)
    # the ticks end with the last flow's resolution: after the last arrival, its retransmissions,
    # queues and service (not the timeouts of the entries it leaves, nor holds)
    after = {k: v for k, v in _durations(sc).items() if k not in _NOT_TICKED}
    node_s = (span + sum(after.values())) * nodes
    if sc.path is DataPath.NODEPORT and node_s > MAX_NODE_SECONDS:
        raise ValueError(f"the run spans ~{node_s / nodes:.3g} s on "
                         f"{nodes:,} nodes, whose GC and gauges tick about once a "
                         f"simulated second each: ~{node_s:.3g} ticks, more than "
                         f"{MAX_NODE_SECONDS:g} ("
                         + ("fewer workload.flows or more workload.concurrency)"
                            if w.arrival is Arrival.CLOSED_LOOP else
                            "raise workload.rate_per_s or shorten the run)"))
