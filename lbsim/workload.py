"""A run's inputs: the engine parameters derived from a Scenario, and every per-flow input drawn up
front by counter-based streams (:mod:`lbsim.rng`).

:class:`Params` holds scalars only (times in integer ns, switches as bools); :class:`Workload`
holds the per-flow arrays (arrival, client, port, service and hold times, the LB's choice, a
per-flow kube-proxy choice) and the cluster's layout (pod placement, workers, endpoints). Both are
immutable: engines read them and write only their own state and :class:`lbsim.records.Records`.
Per-attempt draws (CPU time, endpoint uniform, NAT offsets, ISN) are pure functions of (flow,
attempt) that each engine computes on demand from ``Workload.keys``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .budget import STREAM_FLOWS, check_clock, closed_loop_cycle_s
from .client_ports import PortWalk, holds_until, time_wait_ns
from .jit import jit
from .config.dynamics import nodes_ever, pods_ever
from .config import (Arrival, DataPath, LBAlgorithm, Pairing, Protocol, ProxyMode, Scenario,
                     Source, TrafficPolicy)
from .kernel import NEVER, NS
from .kube_proxy import PER_ATTEMPT, KubeProxy
from .durations import Exponential, Fixed, LogNormal
from .lb import LoadBalancer
from .rng import Streams, mix64_nb
from .trace import read_trace
from .sampling import arrivals_from, duration_params, exponential_ns, log1p_neg, periodic_ns, scaled

__all__ = ["Params", "Workload", "FlowSource", "draw_workload", "own_starts", "slot_opens", "streaming_refusal", "streams", "with_duration", "pod_placement", "worker_slots", "ns"]


def ns(seconds: float) -> int:
    """Seconds to integer nanoseconds (rounded half to even)."""
    return int(round(seconds * NS))


@dataclass(frozen=True, kw_only=True)
class Params:
    """The scalars every engine reads (times in ns). Fields typed ``int`` or ``bool`` form the
    compiled engine's parameter block, by name (:mod:`lbsim.compiled.layout`)."""

    flows: int
    nodes: int
    pods: int
    cpus: int
    nodeport: bool
    tcp: bool
    #: Cluster masquerades external traffic; Local and pod clients keep the client's address
    snat: bool
    #: Local restricts external traffic to local pods (pods calling the ClusterIP use them all)
    local: bool
    pod_clients: bool
    full_records: bool
    #: client -> LB -> backend, and node -> pod on another node (one way)
    d_in: int
    d_hop: int
    time_wait: int
    udp: int
    udp_stream: int
    ct_max: int
    #: nf_conntrack_max95: the GC's early-drop threshold
    limit95: int
    #: GC passes every ``gc_fixed`` ns (conntrack.gc_interval_s, or the release's scheme before
    #: 5.18), or 0: autotuned (the first pass 1 s after start, as nf_conntrack_init_start queues
    #: it HZ after loading)
    gc_fixed: int
    #: the first GC pass: ``gc_fixed`` when conntrack.gc_interval_s sets it, else 1 s (the
    #: kernel's own scheme, whatever the release)
    gc_first: int
    buckets: int
    retries: int
    #: the shortest retry gap: a retransmission never comes sooner after its drop
    gap_min: int
    # the MASQUERADE rule (lbsim.reference.nat.NatRule)
    random_all: bool
    has_range: bool
    port_lo: int
    port_hi: int
    # the kernel release's behaviour (lbsim.kernel_versions.KernelBehaviour)
    evict_closing: bool
    rover_search: bool
    legacy_random: bool
    clash_identical: bool
    nat_clash: bool
    nat_clash_deleted_on_reply: bool
    #: the counters an adopted UDP clash and a NAT_CLASH insertion increment, -1: none
    merged_counter: int
    nat_clash_counter: int
    #: a UDP entry takes the stream timeout only for packets this long after it began, ns
    udp_stream_after: int
    udp_assured_before_stream: bool
    # kube-proxy: a choice per attempt (iptables, nftables) or per flow (drawn up front)
    per_attempt: bool
    nftables: bool
    #: [[events]]: the LB's choice made per flow as it arrives among the targets in force
    #: (lbsim.control), pods' states and kube-proxy's endpoints change during the run
    dynamic: bool
    #: the LB to its backend, one way (an attempt reaches the LB that much before its backend)
    lb2b: int
    #: the LB's algorithm is round robin (else, with events, a hash of the client's address)
    rr_algo: bool
    packet_kind: int
    packet_a: float
    packet_b: float
    #: cluster.packet_jitter_s: each new packet's delay before its CPU (jittered: not all 0)
    jittered: bool
    jitter_kind: int
    jitter_a: float
    jitter_b: float
    #: workload.pin_pairs: flow f is processed on CPU ``lane[f] % cpus`` of its node
    pinned: bool
    #: cluster.snat_offset_s: a masqueraded packet's SNAT this long after its NAT step (at the
    #: latest at its confirm), ns; 0: in the NAT step
    snat_offset: int
    #: gaps[k]: from attempt k to attempt k + 1 (the client's retransmission schedule)
    gaps: tuple[int, ...]
    #: workload.arrival = "closed_loop": each flow takes the earliest free of ``concurrency``
    #: slots (slot i first free at i / rate_per_s: :func:`slot_opens`), which frees again
    #: ``think`` ns after the flow ends for its client
    closed_loop: bool = False
    concurrency: int = 0
    think: int = 0
    #: flow f's inputs and records are in row ``f & flow_mask`` of the engines' per-flow arrays:
    #: all ones over every flow's number in a whole run (row f), the ring's size less one in a
    #: streamed run (lbsim.compiled.stream)
    flow_mask: int = -1

    @classmethod
    def of(cls, sc: Scenario) -> Params:
        w, c, ct, nat, net = sc.workload, sc.cluster, sc.conntrack, sc.nat, sc.network
        tcp = w.protocol is Protocol.TCP
        pod_clients = w.source is Source.POD
        local = sc.kube_proxy.external_traffic_policy is TrafficPolicy.LOCAL and not pod_clients
        gaps = w.retry_gaps_ns       # the client's schedule (lbsim.kernel.syn_gaps_ns)
        lo, hi = nat.port_range if nat.port_range is not None else (0, 0)
        kind, a, b = duration_params(c.packet_time_s)
        jkind, ja, jb = duration_params(c.packet_jitter_s)
        kp = KubeProxy.per_attempt_mode(sc)
        kb = nat.behaviour
        gc = kb.gc_period_ns if ct.gc_interval_s == "auto" else max(1, ns(ct.gc_interval_s))
        return cls(
            flows=w.flows, nodes=nodes_ever(c.nodes, sc.events),
            pods=pods_ever(c.pods, sc.events, sc.deployment.max_surge), cpus=c.cpus_per_node,
            nodeport=sc.path is DataPath.NODEPORT, tcp=tcp, snat=not local and not pod_clients,
            local=local, pod_clients=pod_clients, full_records=sc.records == "full",
            d_in=ns(net.client_to_lb_s + net.lb_to_backend_s), d_hop=ns(net.node_to_pod_s),
            time_wait=ns(ct.time_wait_s), udp=ns(ct.udp_s), udp_stream=ns(sc.udp_stream_s),
            ct_max=ct.max, limit95=ct.max // 100 * 95,
            gc_fixed=gc, gc_first=NS if ct.gc_interval_s == "auto" else gc,
            buckets=ct.buckets, retries=len(gaps) - 1, gap_min=min(gaps),
            random_all=nat.random_fully or nat.random, has_range=nat.port_range is not None,
            port_lo=lo, port_hi=hi, evict_closing=kb.evict_closing,
            rover_search=kb.rover_search, legacy_random=nat.random and not nat.random_fully,
            clash_identical=kb.clash_identical, nat_clash=kb.nat_clash,
            nat_clash_deleted_on_reply=kb.nat_clash_deleted_on_reply,
            merged_counter=kb.merged_counter, nat_clash_counter=kb.nat_clash_counter,
            udp_stream_after=kb.udp_stream_after_ns,
            udp_assured_before_stream=kb.udp_assured_before_stream,
            per_attempt=kp, nftables=sc.kube_proxy.mode is ProxyMode.NFTABLES,
            dynamic=bool(sc.events), lb2b=ns(net.lb_to_backend_s),
            rr_algo=sc.lb.algorithm is LBAlgorithm.RR, packet_kind=kind, packet_a=a, packet_b=b,
            jittered=c.packet_jitter_s.mean > 0, jitter_kind=jkind, jitter_a=ja, jitter_b=jb,
            pinned=w.pin_pairs, snat_offset=ns(c.snat_offset_s), gaps=tuple(gaps),
            closed_loop=w.arrival is Arrival.CLOSED_LOOP, concurrency=w.concurrency,
            think=ns(w.think_s))

    def int_fields(self) -> dict[str, int]:
        """The ``int`` and ``bool`` fields as ints, in declaration order."""
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.type in ("int", "bool")}


@dataclass(frozen=True, kw_only=True, eq=False)
class Workload:
    """Every per-flow input of one run (arrays of length ``flows`` unless said otherwise)."""

    scenario: Scenario
    params: Params
    #: the streams' 64-bit keys, by name (rng.STREAMS), for the per-attempt draws
    keys: dict[str, np.uint64]
    #: start of each flow (its first SYN or request leaves the client), ns, ascending; with a
    #: closed loop NEVER up front: each starts when a slot frees, as the engine finds in its
    #: own copy (:func:`own_starts`, :func:`slot_opens`)
    t0: np.ndarray
    client: np.ndarray
    sport: np.ndarray
    service: np.ndarray
    hold: np.ndarray
    #: the LB instance (ECMP) of each flow; -1 for pod clients
    instance: np.ndarray
    #: the LB's choice: a node (NodePort) or a pod (direct); for pod clients their own node
    backend: np.ndarray
    #: the flow's pod when kube-proxy fixes it per flow; one PER_ATTEMPT element otherwise
    flow_pod: np.ndarray
    #: node of each pod (pods)
    pod_node: np.ndarray
    #: workers of each pod (pods)
    workers: np.ndarray
    #: the endpoints each node's rules list at the start: its local pods with Local, else all
    endpoints: tuple[np.ndarray, ...]
    #: the LB's hash salt (source_hash, Maglev): its choices up front and, with [[events]], the
    #: engines' choices per attempt use the same one
    lb_salt: int
    #: the socket of each flow when a socket sends several queries (queries_per_socket > 1: they
    #: share a tuple, so the LB keeps them on one backend); empty otherwise (flow f: socket f)
    socket: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    #: each flow's place in its pair or socket (0 first, 1 second, ...) when workload.pin_pairs
    #: puts it on that CPU of its node; empty otherwise
    lane: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def flows(self) -> int:
        return self.params.flows


def worker_slots(workers: np.ndarray) -> np.ndarray:
    """When each pod's workers are next free, pods x the most workers of any pod: 0 (free from
    the start) for a pod's own workers, NEVER for the slots past its count (busy for ever)."""
    slots = np.zeros((workers.size, int(workers.max())), np.int64)
    if workers.min() < slots.shape[1]:
        slots[np.arange(slots.shape[1]) >= workers[:, None]] = NEVER
    return slots


def pod_placement(sc: Scenario, count: int | None = None) -> np.ndarray:
    """Node of each of the first ``count`` pods (default: every pod the run may create): the
    first ``cluster.pods`` spread round robin, packed on the first k nodes, or by explicit
    counts; pods created later go round robin (over the packed nodes when packed)."""
    c = sc.cluster
    count = (pods_ever(c.pods, sc.events, sc.deployment.max_surge) if count is None
             else count)
    later = np.arange(c.pods, max(count, c.pods))
    if c.placement == "spread":
        first = np.arange(c.pods) % c.nodes
    elif c.placement == "packed":
        first, later = np.arange(c.pods) % c.packed_nodes, later % c.packed_nodes
    else:
        first = np.repeat(np.arange(c.nodes), np.asarray(c.placement, dtype=np.int64))
    if c.placement != "packed":
        later = later % c.nodes
    return np.concatenate([first, later])[:count]


def socket_starts(sc: Scenario, uniform, lo: int, hi: int, rate: float, acc: float
                  ) -> tuple[np.ndarray, float]:
    """Sockets ``lo`` .. ``hi - 1``'s start times (ns) at ``rate`` per second, as
    ``workload.arrival`` says, and the running sum a Poisson process carries to the next window
    (``acc``, s; a periodic one needs none); ``uniform``: the run's ``Streams.uniform``."""
    if sc.workload.arrival is Arrival.PERIODIC:
        return periodic_ns(lo, hi, rate), acc
    if sc.workload.arrival is Arrival.CLOSED_LOOP:   # when a slot frees: the engine finds it
        return np.full(hi - lo, NEVER, np.int64), acc
    t = np.empty(hi - lo, np.int64)
    acc = arrivals_from(log1p_neg(uniform("arrivals", np.arange(lo, hi, dtype=np.int64))),
                        rate, acc, t)
    return t, acc


def slot_opens(sc: Scenario) -> np.ndarray:
    """A closed loop's slots at the start (ns, ascending: a valid min-heap): slot ``i`` opens at
    ``i / rate_per_s`` s, ``concurrency`` of them (lbsim.compiled.slots); none otherwise."""
    w = sc.workload
    if w.arrival is not Arrival.CLOSED_LOOP:
        return np.zeros(0, np.int64)
    return periodic_ns(0, w.concurrency, w.rate_per_s)


def own_starts(w: Workload) -> tuple[Workload, np.ndarray]:
    """``(w, starts)``: with a closed loop, a copy of ``w`` whose ``t0`` is a read-only view of
    ``starts``, the engine's own array (NEVER until it starts each flow as a slot frees); else
    ``w`` itself and a one-element dummy. The view keeps ``t0``'s read-only type, so the compiled
    loop needs no second compilation for it."""
    if not w.params.closed_loop:
        return w, np.zeros(1, np.int64)
    starts = w.t0.copy()
    t0 = starts.view()
    t0.flags.writeable = False
    return dataclasses.replace(w, t0=t0), starts


def with_duration(sc: Scenario) -> Scenario:
    """``sc`` with ``workload.flows`` the number of flows that start within
    ``workload.duration_s`` (``sc`` itself when that is 0). The sockets' arrivals are counted
    window by window from the same draws a run makes; with several queries per socket, every
    query of a socket that starts within the duration counts. Refused (``ValueError``) before
    counting if the flows expected would not fit the clock, and when no flow starts in time."""
    w = sc.workload
    if w.duration_s <= 0:
        return sc
    q = w.flows_per_socket
    expected = min(1 << 40, max(1, math.ceil(w.rate_per_s * w.duration_s)))
    check_clock(sc.replace(**{"workload.flows": expected}))
    end, rate = ns(w.duration_s), w.rate_per_s / q
    uniform = Streams(sc.seed).uniform
    sockets, acc, chunk = 0, 0.0, 1 << 16
    while True:
        t, acc = socket_starts(sc, uniform, sockets, sockets + chunk, rate, acc)
        n = int(np.searchsorted(t, end, side="left"))    # sockets starting before the end
        sockets += n
        if n < chunk:
            break
        chunk = min(chunk * 2, 1 << 22)
    if sockets == 0:
        raise ValueError(f"workload.duration_s = {w.duration_s:g} is invalid: no flow starts "
                         f"within it (the first starts at {t[0] / NS:.6g} s at this seed)")
    return sc.replace(**{"workload.flows": min(sockets * q, 1 << 40)})


def streaming_refusal(sc: Scenario) -> str | None:
    """Why ``sc``'s flows cannot be drawn and run window by window (None: they can). A window's
    draws may depend on the flows before it only through state the source carries (the
    arrivals' running sum, round robin's counters)."""
    lb = sc.lb
    if sc.workload.arrival is Arrival.CLOSED_LOOP:
        return "workload.arrival = \"closed_loop\" (each flow starts when an earlier one ends)"
    if sc.events:
        return "[[events]] (the control plane reads every flow's records)"
    if sc.workload.queries_per_socket > 1:
        return "workload.queries_per_socket > 1 (a socket's queries are interleaved by time)"
    if sc.workload.pairs is not Pairing.NONE:
        return "workload.pairs (a pair's flows are interleaved with other pairs' by time)"
    if lb.algorithm is LBAlgorithm.LC or lb.persistence_s > 0:
        return "lb.algorithm = \"lc\" or lb.persistence_s > 0 (they follow every open connection)"
    if sc.path is DataPath.NODEPORT and not KubeProxy.per_attempt_mode(sc):
        return ("a kube-proxy that fixes each flow's pod up front (IPVS, Cilium, session "
                "affinity)")
    return None


def streams(sc: Scenario, engine: str = "compiled") -> bool:
    """A run of ``sc`` streams (:mod:`lbsim.compiled.stream`): the compiled engine, more than
    :data:`lbsim.budget.STREAM_FLOWS` flows, and nothing that needs every flow at once (full
    records then go to Parquet files as the run goes: :mod:`lbsim.spill`)."""
    return (engine == "compiled" and sc.workload.flows > STREAM_FLOWS
            and streaming_refusal(sc) is None)


class FlowSource:
    """The cluster's layout and the per-flow inputs of ``sc``, flow by flow number: a whole run
    draws flows 0 .. F - 1 at once (:func:`draw_workload`), a streamed one window by window in
    order (:meth:`draw`), with the same values either way."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.p = p = Params.of(sc)
        self.st = st = Streams(sc.seed)
        self.pod_node = pod_placement(sc)
        self.workers = (np.asarray(sc.pod.workers, np.int64) if isinstance(sc.pod.workers, tuple)
                        else np.full(p.pods, sc.pod.workers, np.int64))
        # the LB and kube-proxy start from the steady state's pods (later ones come with
        # [[events]])
        steady = sc.cluster.pods
        local_pods = [np.flatnonzero(self.pod_node[:steady] == n) for n in range(p.nodes)]
        self.kube_proxy = KubeProxy(sc, local_pods, steady, p.local, _salt(st.keys["endpoint"]),
                                    self.pod_node[:steady], self.workers[:steady])
        self.lb_salt = _salt(st.keys["lb"])
        self.lb = LoadBalancer(sc, self.pod_node[:steady], self.workers[:steady], self.lb_salt)
        self.next = 0          # the next flow to draw
        self._acc = 0.0        # the arrivals' running sum so far, s
        self.trace = (read_trace(sc.workload.trace) if sc.workload.arrival is Arrival.TRACE
                      else None)
        if self.trace is not None and self.trace.flows != p.flows:
            raise ValueError(f"workload.flows = {p.flows} but the trace has {self.trace.flows} "
                             "flows (lbsim.trace.with_trace sets it)")
        w = sc.workload
        # the clients' kernels pick their ports (a trace's are as recorded)
        self.ports = (PortWalk(w.client_port_range, p.tcp, w.clients, st.keys["client_ports"])
                      if self.trace is None else None)
        self.rtt = 2 * (p.d_in + (p.d_hop if p.nodeport else 0))
        self.time_wait = time_wait_ns(w.tcp_tw_reuse)
        self._last_open = 0

    def draw(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """The inputs of flows ``lo`` .. ``hi - 1`` (``lo``: the next flow; a partial window only
        where :func:`streaming_refusal` allows): t0, client, sport, service, hold, instance,
        backend, flow_pod."""
        sc, p, st, w = self.sc, self.p, self.st, self.sc.workload
        if lo != self.next or not lo <= hi <= p.flows:
            raise ValueError(f"flows [{lo}, {hi}) do not follow flow {self.next}")
        if (lo, hi) != (0, p.flows) and streaming_refusal(sc) is not None:
            raise ValueError(f"this scenario is drawn whole: {streaming_refusal(sc)}")
        self.next = hi
        if w.flows_per_socket > 1:
            return self._draw_queries()
        fid = np.arange(lo, hi, dtype=np.int64)
        if self.trace is not None:                   # the recorded flows, as they are
            tr = self.trace
            t0, client, sport = tr.t0[lo:hi].copy(), tr.client[lo:hi], tr.sport[lo:hi]
            instance = _lb_instance(client, sport, st.keys["lb"], sc.lb.instances)
        else:
            # Poisson: rint(cumsum(-log1p(-u) / rate) * 1e9), log1p by numpy, the rest in one
            # pass
            t0, self._acc = socket_starts(sc, st.uniform, lo, hi, w.rate_per_s, self._acc)
        service, hold, life = self._durations(fid)
        if self.trace is None:
            t_open = self._open_times(t0, fid)
            client, sport, instance = self._tuples(
                fid, t_open, holds_until(p.tcp, self.rtt, self.time_wait, t_open, service, hold))
        backend = sent_only(sport, self.lb.choose, instance, client, sport, t0, life, service,
                            hold)
        return self._kube_proxy(dict(t0=t0, client=client, sport=sport, service=service,
                                     hold=hold, instance=instance, backend=backend), fid, life)

    def _tuples(self, sid: np.ndarray, t_open: np.ndarray, until: np.ndarray):
        """Each socket's client (floor(u * n)), source port (its client's kernel's choice as it
        opens at ``t_open``, held until ``until``: lbsim.client_ports; -1: none free) and LB
        instance (ECMP: a hash of the client's tuple)."""
        w, st = self.sc.workload, self.st
        client = scaled(st.uniform("clients", sid), w.clients, 0)
        sport = self.ports.open(client, t_open, until, sid)
        return client, sport, _lb_instance(client, sport, st.keys["lb"], self.sc.lb.instances)

    def _open_times(self, t: np.ndarray, sid: np.ndarray) -> np.ndarray:
        """When sockets ``sid`` open, as the port walk sees it: ``t``, or in a closed loop (whose
        starts the engine finds) the nominal ones: socket i on slot i mod concurrency, one
        cycle (budget.closed_loop_cycle_s) after that slot's previous one."""
        sc = self.sc
        if sc.workload.arrival is not Arrival.CLOSED_LOOP:
            return t
        conc = sc.workload.concurrency
        nominal = (slot_opens(sc)[sid % conc]
                   + (sid // conc) * max(1, ns(closed_loop_cycle_s(sc))))
        if not nominal.size:
            return nominal
        # in time order across windows too (the walk drops ports already free at each start)
        nominal = np.maximum.accumulate(np.maximum(nominal, self._last_open))
        self._last_open = int(nominal[-1])
        return nominal

    def _durations(self, fid: np.ndarray):
        """Each flow's service and hold times, and its lifetime for least connections."""
        service = _durations(self.sc.pod.service_s, self.st, "service", fid)
        if self.trace is not None and self.trace.hold is not None:
            hold = self.trace.hold[fid]
        else:
            hold = _durations(self.sc.workload.hold_s, self.st, "hold", fid)
        return service, hold, self._life(service, hold)

    def _life(self, service: np.ndarray, hold: np.ndarray) -> np.ndarray | None:
        """How long the LB counts a connection to a node for least-connections: the handshake,
        the service and the hold, without queueing or retransmissions (docs/design.md); the
        LB's lc to nodes and the per-flow kube-proxy choices read it (least connections to pods
        runs their queues instead: balancing.least_connections_queued)."""
        sc, p = self.sc, self.p
        if sc.lb.algorithm is LBAlgorithm.LC or (p.nodeport and not p.per_attempt):
            return 2 * p.d_in + service + hold
        return None

    def _kube_proxy(self, a: dict, fid: np.ndarray, life) -> dict:
        p = self.p
        a["flow_pod"] = np.full(1, PER_ATTEMPT, np.int64)
        if p.nodeport:
            if p.pod_clients:                            # the client pod's own node
                a["instance"] = np.full(fid.size, -1, np.int64)
                a["backend"] = a["client"] % p.nodes
            if not p.per_attempt:
                a["flow_pod"] = sent_only(
                    a["sport"], self.kube_proxy.flow_pods, a["backend"], a["client"], a["sport"],
                    a["t0"], life, self.st.uniform("endpoint", fid, 0), a["service"], a["hold"])
        return {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in a.items()}

    def _draw_queries(self) -> dict[str, np.ndarray]:
        """Every flow when a socket sends several queries, or flows come in pairs (the flows
        interleave with other sockets' or pairs' by time, so they are drawn whole): per socket
        (pair) the client, port and LB choice, per flow the rest; also ``socket`` (the pair's
        number for a pair: the LB keeps its flows together) and, pinned, ``lane``."""
        p, st, w = self.p, self.st, self.sc.workload
        F, q = p.flows, w.flows_per_socket
        S = -(-F // q)
        sid = np.arange(S, dtype=np.int64)
        t_sock = socket_starts(self.sc, st.uniform, 0, S, w.rate_per_s / q, 0.0)[0]
        sock = np.repeat(sid, q)[:F]
        lane = np.tile(np.arange(q, dtype=np.int64), S)[:F]
        if w.pairs is Pairing.NONE:
            t0 = t_sock[sock] + lane * ns(w.query_gap_s)
        else:                                        # the second of a pair, its offset later
            t0 = t_sock[sock] + lane * _durations(w.pair_offset_s, st, "pair", sid)[sock]
        order = np.argsort(t0, kind="stable")       # flow numbers follow arrival order
        socket, t0, lane = sock[order], t0[order], lane[order]
        fid = np.arange(F, dtype=np.int64)
        service, hold, life = self._durations(fid)
        # a socket's port is held from its start until its last flow's is free (no closed
        # loop here: the config refuses it with queries and pairs)
        until = t_sock.copy()
        np.maximum.at(until, socket, holds_until(p.tcp, self.rtt, self.time_wait, t0, service, hold))
        client, sport, instance = self._tuples(sid, t_sock, until)
        # the instance's choice is made once per socket (the LB tracks a tuple, so a socket's
        # requests share a backend), with the lifetime of the socket's first flow
        if life is not None:
            first = np.full(S, F, np.int64)
            np.minimum.at(first, socket, fid)
            life_sock = life[np.minimum(first, F - 1)]
        else:
            life_sock = None
        backend = sent_only(sport, self.lb.choose, instance, client, sport, t_sock,
                            life_sock)[socket]
        flow_client = client[socket]
        if w.pairs is Pairing.SAME_PORT:             # the second: any other client
            other = (client + 1 + scaled(st.uniform("pair", sid, 1), w.clients - 1, 0)) \
                % w.clients
            flow_client = np.where(lane == 1, other[socket], flow_client)
        a = self._kube_proxy(dict(t0=t0, client=flow_client, sport=sport[socket],
                                  service=service, hold=hold, instance=instance[socket],
                                  backend=backend), fid, life)
        a["socket"] = np.ascontiguousarray(socket, dtype=np.int64)
        if w.pin_pairs:
            a["lane"] = np.ascontiguousarray(lane, dtype=np.int64)
        return a

    def workload(self, arrays: dict[str, np.ndarray]) -> Workload:
        """A Workload of every flow's ``arrays`` (:meth:`draw` of all of them)."""
        arrays = dict(arrays, pod_node=self.pod_node, workers=self.workers)
        arrays.setdefault("socket", np.zeros(0, np.int64))
        arrays.setdefault("lane", np.zeros(0, np.int64))
        arrays = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in arrays.items()}
        for a in arrays.values():
            a.flags.writeable = False
        endpoints = tuple(np.ascontiguousarray(g, dtype=np.int64)
                          for g in self.kube_proxy.endpoints)
        return Workload(scenario=self.sc, params=self.p, keys=dict(self.st.keys),
                        endpoints=endpoints, lb_salt=self.lb_salt, **arrays)


def sent_only(sport: np.ndarray, choose, *arrays) -> np.ndarray:
    """``choose(*arrays)`` (one choice per row, rows in time order) of the rows that are sent:
    a socket whose client had no port (``sport`` -1) sends nothing, so it takes no round-robin
    turn, counts as no connection and starts no session at the LB or kube-proxy; its choice is
    -1 (the engines fail it before reading it), as the engines' own LB choice does with
    [[events]]."""
    sent = sport >= 0
    if sent.all():
        return choose(*arrays)
    out = np.full(sport.size, -1, np.int64)
    if sent.any():
        out[sent] = choose(*(None if a is None else a[sent] for a in arrays))
    return out


def draw_workload(sc: Scenario) -> Workload:
    """Draw every per-flow input of ``sc``: per socket (client, port, LB choice) and per flow."""
    src = FlowSource(sc)
    return src.workload(src.draw(0, src.p.flows))


def _salt(key: np.uint64) -> int:
    """A hash salt from a stream's key (the LB's source_hash and Maglev, kube-proxy's)."""
    return int(key) ^ 0x2545F4914F6CDD1D


@jit
def _lb_instance(client, sport, key, instances):
    """ECMP: ``mix64((client << 16 | sport) ^ key) % instances`` (the rng's SplitMix64)."""
    out = np.zeros(client.size, np.int64)
    if instances == 1:
        return out
    for i in range(client.size):
        z = mix64_nb(np.uint64((client[i] << 16) | sport[i]) ^ key)
        out[i] = np.int64(z % np.uint64(instances))
    return out


def _durations(d, st: Streams, stream: str, fid: np.ndarray) -> np.ndarray:
    # draw only the uniforms the distribution reads (a fixed one none, an exponential one)
    if isinstance(d, Fixed):
        v = int(np.rint(float(d.value) * NS))
        return np.zeros(fid.size, np.int64) if v == 0 else np.full(fid.size, v, np.int64)
    u1 = st.uniform(stream, fid, 0, 0)
    if isinstance(d, Exponential):    # -mean * log1p(-u): log1p by numpy, the rest in one pass
        return exponential_ns(log1p_neg(u1), float(d.mean))
    u2 = st.uniform(stream, fid, 0, 1) if isinstance(d, LogNormal) else u1
    return np.rint(d.sample(u1, u2) * NS).astype(np.int64)

