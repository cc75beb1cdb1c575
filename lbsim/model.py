"""The data-path model: per-flow inputs, shared state, and the per-attempt steps.

Time inside the model is integer nanoseconds, so that a batched computation (cumulative sums,
maxima) is bit-for-bit the sequential one. One flow makes one or more *attempts* (its SYN and
retransmissions, or its UDP request and resends). On the NodePort path an attempt:

1. reaches the LB's chosen node at ``arrive`` and waits for its CPU (RSS hash of its tuple; one
   CPU processes one new packet at a time, ``packet_time_s`` each);
2. at the start of processing (``t_nat``) gets a conntrack entry allocated, is DNAT-ed by
   kube-proxy to a pod and SNAT-ed (Cluster) to the node IP (:mod:`lbsim.nat`);
3. at the end of processing (``t_conf``) is confirmed into the node's table, or clashes with an
   entry confirmed meanwhile and is dropped (``insert_failed``, ``drop``);
4. if confirmed, its request queues at the pod (FIFO, ``workers`` servers, in confirm order), and
   the entry's whole timeline (TIME_WAIT start, expiry) is known from then on.

A dropped attempt is retried on the client's schedule. The direct path skips 1-3: the LB sends
to a pod, which serves it. :func:`run_reference` processes these steps one event at a time in
(time, kind, flow, attempt) order; :mod:`lbsim.batch` must produce the same records.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from . import tuples
from .kube_proxy import PER_ATTEMPT, KubeProxy
from .lb import LoadBalancer
from .config import DataPath, LBAlgorithm, NatKernel, Protocol, Scenario, Source, TrafficPolicy
from .conntrack import NAT_CLASH, SNAT, TCP, DictConntrackTable
from .nat import ROUNDS, NatRule, select_port
from .rng import Streams, mix64, mix64_nb
from .compiled import duration_params, durations_ns
from .durations import Exponential, Fixed, LogNormal

__all__ = ["Model", "Cause", "run_reference", "NS"]

NS = 1_000_000_000
_NEVER = np.iinfo(np.int64).max
#: conntrack and SNAT gauges are sampled every second
SAMPLE_INTERVAL = NS


def ns(seconds: float) -> int:
    return int(round(seconds * NS))


class Cause:
    """Why an attempt was dropped (codes stored in records)."""

    NONE = 0
    PORT_EXHAUSTION = 1   # the SNAT search found no free tuple; the confirm clashed
    INSERT_RACE = 2       # the tuple was free at NAT time, confirmed by another flow before ours
    TABLE_FULL = 3        # nf_conntrack_max reached
    NO_LOCAL_ENDPOINT = 4  # externalTrafficPolicy: Local on a node without a ready local pod
    TUPLE_IN_USE = 5      # the client's tuple matches a live, non-closing entry on the node
    NAMES = ("none", "port_exhaustion", "insert_race", "table_full", "no_local_endpoint",
             "tuple_in_use")


# Event kinds, in the order they are processed at equal times (GC ticks come first of all).
CONFIRM, NAT, ARRIVE = 1, 2, 3
OK, FAILED = 1, 2


@dataclass
class Pending:
    """An attempt between its NAT decision and its confirm."""

    flow: int
    attempt: int
    arrive: int
    t_conf: int
    node: int
    pod: int
    port: int
    exhausted: bool
    orig: int
    reply: int
    isn: int
    #: a UDP packet of a flow already tracked on the node: it follows that entry (no new one)
    follow: bool = False


class Model:
    """Inputs, state, records and counters of one run."""

    def __init__(self, scenario: Scenario, table_cls=DictConntrackTable) -> None:
        sc = self.scenario = scenario
        self.streams = st = Streams(sc.seed)
        self.nodeport = sc.path is DataPath.NODEPORT
        self.full_records = sc.records == "full"
        self.tcp = sc.workload.protocol is Protocol.TCP
        self.pod_clients = sc.workload.source is Source.POD
        # Local restricts external traffic to local pods; pods calling the ClusterIP use them all
        self.local = (sc.kube_proxy.external_traffic_policy is TrafficPolicy.LOCAL
                      and not self.pod_clients)
        self.snat = not self.local and not self.pod_clients   # Cluster masquerades external traffic
        c = sc.cluster
        self.n_nodes, self.n_pods, self.cpus = c.nodes, c.pods, c.cpus_per_node
        self.pod_node = pod_placement(sc)
        w = sc.pod.workers
        self.workers = (np.asarray(w, np.int64) if isinstance(w, tuple)
                        else np.full(c.pods, w, np.int64))
        self.local_pods = [np.flatnonzero(self.pod_node == n) for n in range(self.n_nodes)]
        net = sc.network
        self.d_in = ns(net.client_to_lb_s + net.lb_to_backend_s)
        self.d_hop = ns(net.node_to_pod_s)
        ct = sc.conntrack
        self.time_wait = ns(ct.time_wait_s)
        self.udp_t, self.udp_stream_t = ns(ct.udp_s), ns(ct.udp_stream_s)
        self.ct_max = ct.max
        # GC passes per node: autotuned ("auto", the first pass 1 s after start, as
        # nf_conntrack_init_start queues it HZ after loading) or every gc_interval_s
        self.gc_fixed = None if ct.gc_interval_s == "auto" else max(1, ns(ct.gc_interval_s))
        self.legacy = sc.nat.kernel is NatKernel.V4
        self.rule = NatRule(random_all=sc.nat.random_fully or sc.nat.random,
                            port_range=sc.nat.port_range,
                            evict_closing=sc.nat.kernel is NatKernel.MODERN, tcp=self.tcp,
                            legacy=self.legacy,
                            legacy_random=sc.nat.random and not sc.nat.random_fully)
        self._schedule()
        self._flows()
        # state
        self.table = table_cls(self.n_nodes, buckets=ct.buckets,
                               salt=int(st.keys["ct_hash"]))
        self.limit95 = self.ct_max // 100 * 95        # nf_conntrack_max95
        self.unconfirmed = np.zeros(self.n_nodes, dtype=np.int64)
        self.rover = [[0] for _ in range(self.n_nodes)]  # 4.x: per node (per protocol) rover
        self.cpu_free = np.zeros(self.n_nodes * self.cpus, dtype=np.int64)
        self.gc_next = np.full(self.n_nodes, self.gc_fixed or NS, dtype=np.int64)
        self.gc_flag = np.zeros(self.n_nodes, dtype=bool)    # gc_work->early_drop, per node
        # longest wait of a new packet in a CPU queue (a SYN waiting there is not retransmitted)
        self.max_cpu_wait = 0
        self.sample_next = SAMPLE_INTERVAL
        # a pod with fewer workers than the most has its missing ones busy for ever
        self.worker_free = np.where(np.arange(self.workers.max()) < self.workers[:, None], 0,
                                    _NEVER).astype(np.int64)
        self.pending: dict[tuple[int, int], Pending] = {}
        # records (per flow) and counters (per node)
        F = self.F
        self.out = np.zeros(F, dtype=np.int8)
        self.cause = np.zeros(F, dtype=np.int8)
        self.attempts = np.zeros(F, dtype=np.int16)
        # -1 until set; every engine sets these for every flow of the direct path (all served)
        unset = ((lambda dt: np.full(F, -1, dtype=dt)) if self.nodeport
                 else (lambda dt: np.empty(F, dtype=dt)))
        self.rec_pod = unset(np.int32)
        self.rec_port = unset(np.int32)
        self.connect = unset(np.int64)
        self.response = unset(np.int64)
        self.src_ip = np.zeros(F, dtype=np.int64)
        self.counters = {k: np.zeros(self.n_nodes, dtype=np.int64)
                         for k in ("found", "insert", "insert_failed", "drop", "early_drop",
                                   "clash_resolve", "entries_inserted", "gc_early_drop")}
        self.drop_log: list[tuple[np.ndarray, ...]] = []   # (t, flow, attempt, node, cause)
        self.cause_count = np.zeros(len(Cause.NAMES), dtype=np.int64)
        self.gauges: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.snat_gauges: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.resolved = 0

    # -- inputs ------------------------------------------------------------------------------
    def _schedule(self) -> None:
        w = self.scenario.workload
        R = w.retries
        if self.tcp:
            gaps = [ns(w.syn_rto_s * 2 ** max(0, k - w.syn_linear_timeouts)) for k in range(1, R + 2)]
        else:
            gaps = [ns(w.udp_timeout_s)] * (R + 1)
        self.retries = R
        self.gaps = np.array(gaps, dtype=np.int64)   # gaps[k]: from attempt k to attempt k+1
        self.gap_min = int(self.gaps.min())

    def _flows(self) -> None:
        """Per-flow inputs, drawn per socket (client, port, LB choice) and per flow."""
        sc, st = self.scenario, self.streams
        w = sc.workload
        F = self.F = w.flows
        q = w.queries_per_socket
        S = -(-F // q)
        sid = np.arange(S, dtype=np.int64)
        # rint(cumsum(-log1p(-u) / (rate / q)) * 1e9): log1p by numpy, the rest in one pass
        t_sock = _arrival_ns(_log1p_neg(st.uniform("arrivals", sid)), w.rate_per_s / q)
        if q == 1:                                      # a socket per flow, in arrival order
            socket, self.t0 = sid, t_sock
        else:
            sock = np.repeat(sid, q)[:F]
            t0 = t_sock[sock] + np.tile(np.arange(q), S)[:F] * ns(w.query_gap_s)
            order = np.argsort(t0, kind="stable")       # flow numbers follow arrival order
            socket, self.t0 = sock[order], t0[order]
        fid = np.arange(F, dtype=np.int64)
        client = _scaled(st.uniform("clients", sid), w.clients, 0)       # floor(u * n)
        lo, hi = w.client_port_range
        sport = _scaled(st.uniform("client_ports", sid), hi - lo + 1, lo)
        self.client, self.sport = (client, sport) if q == 1 else (client[socket], sport[socket])
        self.service = _durations(sc.pod.service_s, st, "service", fid)
        self.hold = _durations(w.hold_s, st, "hold", fid)
        # ECMP: an LB instance by a hash of the client's tuple; the instance's choice is made
        # once per socket (the LB tracks a tuple, so a socket's requests share a backend).
        if q == 1:
            first = fid
        else:
            first = np.full(S, F, np.int64)
            np.minimum.at(first, socket, fid)
        self.kube_proxy = KubeProxy(sc, self.local_pods, self.n_pods, self.local,
                                    int(st.keys["endpoint"]) ^ 0x2545F4914F6CDD1D)
        # how long the LB (or IPVS) counts a connection for least-connections: the handshake,
        # the service and the hold, without queueing or retransmissions (docs/design.md); only
        # the LB's lc and the per-flow kube-proxy choices read it
        life = (2 * self.d_in + self.service + self.hold
                if sc.lb.algorithm is LBAlgorithm.LC
                or (self.nodeport and not self.kube_proxy.per_attempt) else None)
        instance = _lb_instance(client, sport, st.keys["lb"], sc.lb.instances)
        lb = LoadBalancer(sc, self.pod_node, self.workers, int(st.keys["lb"]) ^ 0x2545F4914F6CDD1D)
        backend = lb.choose(instance, client, sport, t_sock,
                            life if q == 1 or life is None else life[np.minimum(first, F - 1)])
        self.instance, self.backend = ((instance, backend) if q == 1
                                       else (instance[socket], backend[socket]))
        # a flow's pod when it is fixed per flow; per-attempt modes draw it at each attempt
        # (one placeholder element then: nothing reads it)
        self.flow_pod = np.full(1, PER_ATTEMPT, np.int64)
        if self.nodeport:
            if self.pod_clients:                 # the client pod's own node
                self.instance = np.full(F, -1, np.int64)
                self.backend = self.client % self.n_nodes
            if not self.kube_proxy.per_attempt:
                self.flow_pod = self.kube_proxy.flow_pods(self.backend, self.client, self.sport,
                                                          self.t0, life,
                                                          st.uniform("endpoint", fid, 0))

    @functools.cached_property
    def orig(self) -> np.ndarray:
        """ORIGINAL-tuple key of each flow in its node's table (NodePort; the compiled engine
        computes it per attempt instead of holding F of them)."""
        return tuples.orig_key(self.backend, self.client, self.sport)

    @functools.cached_property
    def cpu(self) -> np.ndarray:
        """The node CPU (global index) of each flow: an RSS hash of its tuple."""
        rss = mix64(self.orig.view(np.uint64) ^ self.streams.keys["rss"])
        return self.backend * self.cpus + (rss % np.uint64(self.cpus)).astype(np.int64)

    def attempt_inputs(self, flow: np.ndarray, attempt: np.ndarray) -> dict[str, np.ndarray]:
        """Random inputs of attempts: CPU time, endpoint uniform, NAT offsets, ISN."""
        st = self.streams
        pt = self.scenario.cluster.packet_time_s
        # the compiled engine's sampler, so that every engine draws the same ns (numpy's and
        # libm's log1p may differ in the last bit); at least 1 ns: confirm after the NAT decision
        u0 = np.ravel(st.uniform("cpu_time", flow, attempt, 0))
        u1 = np.ravel(st.uniform("cpu_time", flow, attempt, 1))
        pkt = durations_ns(*duration_params(pt), u0, u1).reshape(np.shape(flow))
        offsets = np.stack([st.u16("nat", flow, attempt, r) for r in range(ROUNDS)], axis=-1)
        if self.nodeport and self.pod_clients:   # the sending thread's CPU, per packet
            cpu = self.backend[flow] * self.cpus + np.floor(
                st.uniform("rss", flow, attempt) * self.cpus).astype(np.int64)
        elif self.nodeport:
            cpu = self.cpu[flow]
        else:
            cpu = np.zeros(np.shape(flow), np.int64)
        return {"pkt": pkt, "u_ep": st.uniform("endpoint", flow, attempt),
                "offsets": offsets, "isn": st.u32("isn", flow, attempt), "cpu": cpu}

    def endpoint(self, node: np.ndarray, u: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """kube-proxy's choice of pod for attempts on ``node`` (-1: no local endpoint)."""
        if not self.kube_proxy.per_attempt:
            return self.flow_pod[flow]
        return self.kube_proxy.endpoint(node, u)

    def secure_port(self, node: int, pod: int) -> int:
        """4.x ``--random`` start: ``secure_ipv4_port_ephemeral(nat ip, dst ip, dst port)``, a
        keyed hash, the same for every flow from one node to one pod."""
        k = np.array([tuples.reply_key(node, pod, 0)], np.int64).view(np.uint64)
        return int(mix64(k ^ self.streams.keys["nat"])[0] >> np.uint64(32))

    def endpoint1(self, node: int, u: float, flow: int) -> int:
        """Scalar :meth:`endpoint` (the cascade's reference lookup)."""
        if not self.kube_proxy.per_attempt:
            return int(self.flow_pod[flow])
        return self.kube_proxy.endpoint1(node, u)

    def hop(self, node, pod):
        return np.where(self.pod_node[pod] == node, 0, self.d_hop)

    def reply_for(self, node, pod, port, flow):
        """The REPLY key: pod -> node:port when masqueraded, else pod -> client:port."""
        if self.snat:
            return tuples.reply_key(node, pod, port)
        return tuples.reply_key_nosnat(pod, self.client[flow], self.sport[flow])

    # -- outcome of an attempt ------------------------------------------------------------------
    def retry_arrival(self, flow: int, attempt: int, arrive: int, t_fail: int) -> int:
        """When the next attempt reaches the node: on the client's schedule, and never before
        ``gap_min`` after the drop (a retransmission cannot overtake its own dropped SYN)."""
        return max(arrive + int(self.gaps[attempt]), t_fail + self.gap_min)

    def fail(self, flow: int, attempt: int, arrive: int, t_fail: int, cause: int, node: int):
        """Record a dropped attempt; returns the next attempt's arrival time, or None."""
        self.cause_count[cause] += 1
        self.log_drops(np.array([t_fail]), np.array([flow]), np.array([attempt]), np.array([node]),
                       cause)
        self.cause[flow] = cause
        if attempt < self.retries:
            return self.retry_arrival(flow, attempt, arrive, t_fail)
        self.out[flow] = FAILED
        self.attempts[flow] = attempt + 1
        self.resolved += 1
        return None

    def log_drops(self, t, flow, attempt, node, cause: int) -> None:
        if self.full_records:
            self.drop_log.append((t, flow, attempt, node, np.full(np.size(t), cause)))

    def succeed(self, flow, attempt, pod, port, connect, response, src_ip) -> None:
        """Record established flows (scalars or arrays)."""
        self.out[flow] = OK
        self.attempts[flow] = attempt + 1
        self.rec_pod[flow] = pod
        self.rec_port[flow] = port
        self.connect[flow] = connect
        self.response[flow] = response
        self.src_ip[flow] = src_ip
        self.resolved += int(np.size(flow))

    # -- scalar steps (the reference; the batched engine falls back on them) --------------------
    def cpu_schedule(self, c: int, arrive: int, pkt: int) -> tuple[int, int]:
        t_nat = max(arrive, int(self.cpu_free[c]))
        self.max_cpu_wait = max(self.max_cpu_wait, t_nat - arrive)
        t_conf = t_nat + pkt
        self.cpu_free[c] = t_conf
        return t_nat, t_conf

    def nat_step(self, flow: int, attempt: int, arrive: int, t_nat: int, t_conf: int,
                 inp: dict) -> int | None:
        """Conntrack lookup, allocation, DNAT and SNAT at ``t_nat``. Returns the next attempt's
        arrival if dropped here, else None (the attempt waits for its confirm)."""
        node = int(self.backend[flow])
        orig = int(self.orig[flow])
        follow = -1
        eid = self._live_eid(orig, t_nat)          # resolve_normal_ct: is the tuple known?
        if eid >= 0:
            if not self.tcp:
                follow = eid                       # a UDP packet of a tracked flow: no new entry
            elif t_nat >= self.table.t_close[eid]:
                self.table.release1(eid)           # a SYN reopens a TIME_WAIT/CLOSE tuple
            else:
                return self.fail(flow, attempt, arrive, t_nat, Cause.TUPLE_IN_USE, node)
        if follow >= 0:
            tb = self.table
            pod, port, reply = int(tb.pod[follow]), int(tb.reply[follow]) & 0xFFFF, int(tb.reply[follow])
            self.pending[(flow, attempt)] = Pending(flow, attempt, arrive, t_conf, node, pod, port,
                                                    False, orig, reply, int(inp["isn"]), True)
            return None
        if self.table.count[node] + self.unconfirmed[node] + 1 > self.ct_max:
            # __nf_conntrack_alloc: over nf_conntrack_max, early_drop() or "table full"
            killed = self.table.early_drop(node, orig, t_nat)
            if not killed:
                self.counters["drop"][node] += 1
                self.gc_flag[node] = True            # the next GC pass may early-drop
                return self.fail(flow, attempt, arrive, t_nat, Cause.TABLE_FULL, node)
            self.counters["early_drop"][node] += killed
        pod = self.endpoint1(node, float(inp["u_ep"]), flow)
        if pod < 0:
            return self.fail(flow, attempt, arrive, t_nat, Cause.NO_LOCAL_ENDPOINT, node)
        sport = int(self.sport[flow])
        if not self.snat:
            port, exhausted = sport, False
        else:
            ch = select_port(self.table, t_nat, node, pod, sport, inp["offsets"], int(inp["isn"]),
                             self.rule, self.rover[node],
                             self.secure_port(node, pod) if self.rule.legacy_random else 0)
            port, exhausted = ch.port, ch.exhausted
            self.counters["found"][node] += ch.found
        self.unconfirmed[node] += 1
        reply = ((node << 36) | (pod << 16) | port if self.snat    # tuples.reply_key, scalar
                 else int(tuples.reply_key_nosnat(pod, self.client[flow], self.sport[flow])))
        self.pending[(flow, attempt)] = Pending(flow, attempt, arrive, t_conf, node, pod, port,
                                                exhausted, orig, reply, int(inp["isn"]))
        return None

    def _live_eid(self, key: int, t: int) -> int:
        """Entry held under ``key`` and live at ``t``, or -1; an expired one met is freed."""
        eid = self.table.get(key)
        if eid < 0:
            return -1
        if self.table.t_expire[eid] <= t:
            self.table.release1(eid)
            return -1
        return eid

    def confirm_step(self, p: Pending) -> int | None:
        """``__nf_conntrack_confirm`` at ``t_conf``; on success the pod serves the request.
        Returns the next attempt's arrival if the attempt was dropped, else None."""
        t, node = p.t_conf, p.node
        if p.follow:
            eid = self._live_eid(p.orig, t)
            if eid >= 0:
                self._serve_nodeport(p, adopt=eid)
                return None
            self.unconfirmed[node] += 1            # the entry vanished meanwhile: confirm anew
        self.unconfirmed[node] -= 1
        e_orig = self._live_eid(p.orig, t)
        e_reply = self._live_eid(p.reply, t)
        if e_orig < 0 and e_reply < 0:
            self._serve_nodeport(p)
            return None
        if not self.tcp and e_orig >= 0:
            # nf_ct_resolve_clash: UDP allows clashes (kernel-facts 2.3, 2.4).
            if self.table.reply[e_orig] == p.reply:            # identical tuples: adopt it
                self.counters["insert_failed" if self.legacy else "clash_resolve"][node] += 1
                self._serve_nodeport(p, adopt=e_orig)
                return None
            if e_reply < 0 and not self.legacy:                # NAT_CLASH, reply-only, 1 s
                self.counters["clash_resolve"][node] += 1
                self._serve_nodeport(p, nat_clash=True)
                return None
        self.counters["insert_failed"][node] += 1
        self.counters["drop"][node] += 1
        cause = Cause.PORT_EXHAUSTION if p.exhausted else Cause.INSERT_RACE
        return self.fail(p.flow, p.attempt, p.arrive, t, cause, node)

    def serve(self, pod: int, q: int, service: int) -> int:
        """FIFO with ``workers`` servers: the request arriving at ``q`` finishes at the return."""
        wf = self.worker_free[pod]
        w = int(wf.argmin())
        finish = max(q, int(wf[w])) + service
        wf[w] = finish
        return finish

    # -- the life of a confirmed attempt (works on scalars and arrays alike) --------------------
    def request_arrival(self, t_conf, hop):
        """When the request reaches the pod. TCP: the SYN goes on to the pod, the SYN-ACK back
        through the node to the client, which sends the request with its ACK. UDP: the datagram
        itself."""
        if self.tcp:
            return t_conf + 3 * hop + 2 * self.d_in
        return t_conf + hop

    def timeline(self, flow, t_conf, hop, finish):
        """Entry timeline and client-side latencies once the pod finishes at ``finish``.

        Returns ``(t_assured, t_close, t_expire, connect, response)`` in ns (connect -1 for UDP).
        TCP: ASSURED when the handshake's ACK passes the node; TIME_WAIT from the client's FIN
        (sent ``hold_s`` after the response) for ``time_wait_s``. UDP (kernel-facts 3.6): an entry
        expires ``udp_s`` after its last packet; packets after the reply that come more than 2 s
        after the start (``hold_s`` > 0) make it an ASSURED stream entry with ``udp_stream_s``.
        """
        t0 = self.t0[flow]
        resp = finish + hop + self.d_in
        if self.tcp:
            synack = t_conf + 2 * hop + self.d_in
            t_assured = synack + self.d_in
            t_close = resp + self.hold[flow] + self.d_in
            return t_assured, t_close, t_close + self.time_wait, synack - t0, resp - t0
        t_rep = finish + hop
        t_last = t_rep + self.hold[flow]
        stream = (self.hold[flow] > 0) & (t_last - t_conf > 2 * NS)
        t_assured = np.where(stream, np.maximum(t_rep, t_conf + 2 * NS), _NEVER)
        t_expire = t_last + np.where(stream, self.udp_stream_t, self.udp_t)
        return t_assured, t_last, t_expire, -1 + 0 * t0, resp - t0

    def _serve_nodeport(self, p: Pending, adopt: int = -1, nat_clash: bool = False) -> None:
        f, t = p.flow, p.t_conf
        hop = 0 if self.pod_node[p.pod] == p.node else self.d_hop
        finish = self.serve(p.pod, int(self.request_arrival(t, hop)), int(self.service[f]))
        t_assured, t_close, t_expire, connect, response = (
            int(x) for x in self.timeline(f, t, hop, finish))
        src = (tuples.NODE_BASE + 1 + p.node if self.snat
               else tuples.CLIENT_BASE + int(self.client[f]))
        self.succeed(f, p.attempt, p.pod, p.port if self.snat else -1, connect, response, src)
        if adopt >= 0:
            self.table.t_expire[adopt] = max(int(self.table.t_expire[adopt]), t_expire)
            return
        flags = (TCP if self.tcp else 0) | (SNAT if self.snat else 0)
        if nat_clash:   # IPS_NAT_CLASH | IPS_FIXED_TIMEOUT: reply-only, 1 s, never ASSURED
            flags |= NAT_CLASH
            t_expire, t_assured = t + NS, _NEVER
        if self.legacy:   # 4.x kernels counted confirmed inserts; current ones do not
            self.counters["insert"][p.node] += 1
        self.counters["entries_inserted"][p.node] += 1
        self.table.add1(p.orig if not nat_clash else -1, p.reply, p.node, p.pod, f, t, t_assured,
                        t_close, t_expire, int(flags), (p.isn + 2) & 0xFFFFFFFF)

    def _insert(self, orig, reply, node, pod, flow, t, t_assured, t_close, t_expire, flags,
                isn) -> None:
        if self.legacy:   # 4.x kernels counted confirmed inserts; current ones do not
            np.add.at(self.counters["insert"], np.asarray(node), 1)
        self.table.add(orig=orig, reply=reply, node=node, pod=pod, flow=flow, t_confirm=t,
                       t_assured=t_assured, t_close=t_close, t_expire=t_expire, flags=flags,
                       seq=(np.asarray(isn, np.int64) + 2) & 0xFFFFFFFF)
        np.add.at(self.counters["entries_inserted"], np.asarray(node), 1)

    def serve_direct(self, flow: int, arrive: int) -> None:
        """The direct path: the LB's pod serves the request; the pod sees the client's IP. Its
        timeline is the NodePort one with no node: confirm = arrival at the pod, no second hop."""
        pod = int(self.backend[flow])
        finish = self.serve(pod, int(self.request_arrival(arrive, 0)), int(self.service[flow]))
        _, _, _, connect, response = self.timeline(flow, arrive, 0, finish)
        self.succeed(flow, 0, pod, -1, int(connect), int(response),
                     int(tuples.client_ip(self.client[flow])))

    def next_tick(self) -> int:
        """Time of the next GC pass on any node or gauge sample."""
        return min(int(self.gc_next.min()), self.sample_next)

    def tick(self, t: int) -> None:
        """At ``t == next_tick()``: the GC passes due on each node, then the gauges if due."""
        due = self.gc_next <= t
        if due.any():
            killed, next_run = self.table.gc_pass(t, self.limit95, due, self.gc_flag)
            self.counters["gc_early_drop"] += killed
            self.gc_flag[due] = False
            self.gc_next[due] = t + (next_run[due] if self.gc_fixed is None else self.gc_fixed)
        if self.sample_next <= t:
            self.sample_next += SAMPLE_INTERVAL
            self._sample(t)

    def _sample(self, t: int) -> None:
        """Conntrack occupancy and SNAT ports per (node, pod), every second."""
        tb = self.table
        n = tb.size
        alive = tb.alive[:n] & (tb.t_expire[:n] > t)
        live = np.bincount(tb.node[:n][alive], minlength=self.n_nodes)
        self.gauges.append((t, tb.count.copy(), live))
        if not self.full_records:
            return
        snat = alive & ((tb.flags[:n] & SNAT) != 0)
        pair = tb.node[:n][snat].astype(np.int64) * self.n_pods + tb.pod[:n][snat]
        pairs, ports = np.unique(pair, return_counts=True)
        self.snat_gauges.append((t, pairs, ports))


def _log1p_neg(u: np.ndarray) -> np.ndarray:
    """``np.log1p(-u)``, computed in ``u``'s own memory (no new arrays to fault in)."""
    np.negative(u, out=u)
    return np.log1p(u, out=u)


@nb.njit(cache=True, nogil=True)
def _arrival_ns(log1p_neg_u, rate):
    """Socket start times in ns: the running sum of exponential gaps ``-log1p(-u) / rate``
    (added in order, as np.cumsum does), times 1e9, rounded half to even."""
    out = np.empty(log1p_neg_u.size, np.int64)
    acc = 0.0
    for i in range(log1p_neg_u.size):
        acc += -log1p_neg_u[i] / rate
        out[i] = np.int64(np.rint(acc * 1e9))
    return out


@nb.njit(cache=True, nogil=True)
def _exponential_ns(log1p_neg_u, mean):
    """``rint(-mean * log1p(-u) * 1e9)`` as int64 (Exponential.sample, then ns)."""
    out = np.empty(log1p_neg_u.size, np.int64)
    m = -mean
    for i in range(log1p_neg_u.size):
        out[i] = np.int64(np.rint(m * log1p_neg_u[i] * 1e9))
    return out


@nb.njit(cache=True, nogil=True)
def _scaled(u, n, lo):
    """``lo + floor(u * n)`` as int64, element by element (numpy's float ops, one pass)."""
    out = np.empty(u.size, np.int64)
    for i in range(u.size):
        out[i] = lo + np.int64(math.floor(u[i] * np.float64(n)))
    return out


@nb.njit(cache=True, nogil=True)
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
        return _exponential_ns(_log1p_neg(u1), float(d.mean))
    u2 = st.uniform(stream, fid, 0, 1) if isinstance(d, LogNormal) else u1
    return np.rint(d.sample(u1, u2) * NS).astype(np.int64)


def pod_placement(sc: Scenario) -> np.ndarray:
    """Node of each pod: spread round robin, packed on the first k nodes, or explicit counts."""
    c = sc.cluster
    if c.placement == "spread":
        return np.arange(c.pods) % c.nodes
    if c.placement == "packed":
        return np.arange(c.pods) % c.packed_nodes
    return np.repeat(np.arange(c.nodes), np.asarray(c.placement, dtype=np.int64))


def run_reference(model: Model) -> Model:
    """Process every event one at a time, in (time, kind, flow, attempt) order."""
    heap: list[tuple[int, int, int, int]] = []
    first = model.t0 + model.d_in
    for f in range(model.F):
        heap.append((int(first[f]), ARRIVE, f, 0))
    heapq.heapify(heap)
    arrive_at: dict[tuple[int, int], int] = {}
    times: dict[tuple[int, int], tuple[int, int]] = {}
    while heap:
        t, kind, f, k = heap[0]
        tick = model.next_tick()
        if tick <= t:
            model.tick(tick)
            continue
        heapq.heappop(heap)
        if kind == ARRIVE:
            if not model.nodeport:
                model.serve_direct(f, t)
                continue
            inp = {k2: v[0] for k2, v in model.attempt_inputs(np.array([f]), np.array([k])).items()}
            t_nat, t_conf = model.cpu_schedule(int(inp["cpu"]), t, int(inp["pkt"]))
            arrive_at[(f, k)] = t
            times[(f, k)] = (t_nat, t_conf, inp)
            heapq.heappush(heap, (t_nat, NAT, f, k))
        elif kind == NAT:
            t_nat, t_conf, inp = times.pop((f, k))
            nxt = model.nat_step(f, k, arrive_at.pop((f, k)), t_nat, t_conf, inp)
            if (f, k) in model.pending:
                heapq.heappush(heap, (t_conf, CONFIRM, f, k))
            elif nxt is not None:
                heapq.heappush(heap, (nxt, ARRIVE, f, k + 1))
        else:  # CONFIRM
            nxt = model.confirm_step(model.pending.pop((f, k)))
            if nxt is not None:
                heapq.heappush(heap, (nxt, ARRIVE, f, k + 1))
    return model
