"""The reference engine: the data path one event at a time, in plain Python (the test oracle).

One flow makes one or more *attempts* (its SYN and retransmissions, or its UDP request and
resends). On the NodePort path an attempt:

1. reaches the LB's chosen node at ``arrive`` and, ``packet_jitter_s`` later (a draw per packet,
   if set), its CPU (an RSS hash of its tuple, or pinned: its place in its pair), where it waits:
   one CPU processes one new packet at a time, ``packet_time_s`` each, in the order they reach it;
2. at the start of processing (``t_nat``) gets a conntrack entry allocated, is DNAT-ed by
   kube-proxy to a pod and SNAT-ed (Cluster) to the node IP (:mod:`lbsim.reference.nat`); with
   ``snat_offset_s`` the SNAT comes that much later (POSTROUTING), at the latest at the confirm;
3. at the end of processing (``t_conf``) is confirmed into the node's table, or clashes with an
   entry confirmed meanwhile and is dropped (``insert_failed``, ``drop``);
4. if confirmed, its request queues at the pod (FIFO, ``workers`` servers, in confirm order), and
   the entry's whole timeline (TIME_WAIT start, expiry) is known from then on.

A dropped attempt is retried on the client's schedule. The direct path skips 1-3: the LB sends
to a pod, which serves it. Events are processed in (time, kind, flow, attempt) order, each node's
GC passes and the gauge samples before the events of their instant; :meth:`ReferenceEngine.advance`
runs them up to an instant, so that the control plane (:mod:`lbsim.control`) can change the
endpoints there. :mod:`lbsim.compiled` must take every decision this engine takes.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass

import numpy as np

from .. import tuples
from ..kernel import (ARRIVE, C_DROP, C_EARLY_DROP, C_ENTRIES_INSERTED,
                      C_FOUND, C_GC_EARLY_DROP, C_INSERT_FAILED, CONFIRM, F_NAT_CLASH,
                      F_SNAT, F_TCP, F_UNREPLIED, FAILED, INSERT_RACE, NAT, NAT_CLASH_TIMEOUT,
                      NEVER, NO_CLIENT_PORT, NO_ENDPOINTS, NO_LOCAL_ENDPOINT, NO_TARGET, NS, OK, POD_GONE,
                      PORT_EXHAUSTION, QUEUE, REFUSED, ROUNDS, SAMPLE_INTERVAL, SNAT,
                      TABLE_FULL,
                      TCP_CLOSE_TIMEOUT, TCP_SYN_SENT_TIMEOUT, TUPLE_IN_USE)
from ..kube_proxy import endpoint_scalar
from ..budget import SNAT_PAIRS_MAX
from ..records import Records, RecordsBuilder
from ..config import LBAlgorithm
from ..lb import steady_targets
from ..rng import Streams, mix64, mix64_scalar
from ..sampling import durations_ns
from ..workload import Workload, own_starts, slot_opens, worker_slots
from .conntrack import ConntrackTable
from .nat import NatRule, select_port

__all__ = ["ReferenceEngine", "Pending"]


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
    #: when its SNAT is still to come (snat_offset_s), else -1
    snat_at: int = -1


class ReferenceEngine:
    """The state of one run and the steps that change it."""

    def __init__(self, w: Workload) -> None:
        w, self.starts = own_starts(w)       # a closed loop writes each flow's start
        p = self.p = w.params
        self.w = w
        self.pod_node = w.pod_node.copy()        # the scheduler may bind later pods elsewhere
        self.streams = Streams(w.scenario.seed)
        self.rec = RecordsBuilder(w)
        self.rule = NatRule(random_all=p.random_all,
                            port_range=(p.port_lo, p.port_hi) if p.has_range else None,
                            evict_closing=p.evict_closing, tcp=p.tcp, rover_search=p.rover_search,
                            legacy_random=p.legacy_random)
        self.table = ConntrackTable(p.nodes, buckets=p.buckets, salt=int(w.keys["ct_hash"]))
        self.unconfirmed = np.zeros(p.nodes, dtype=np.int64)
        self.rover = [[0] for _ in range(p.nodes)]  # 4.x: per node (per protocol) rover
        self.cpu_free = np.zeros(p.nodes * p.cpus, dtype=np.int64)
        self.gc_next = np.full(p.nodes, p.gc_first, dtype=np.int64)
        self.gc_flag = np.zeros(p.nodes, dtype=bool)    # gc_work->early_drop, per node
        # longest wait of a new packet in a CPU queue (a SYN waiting there is not retransmitted)
        self.max_cpu_wait = 0
        self.sample_next = SAMPLE_INTERVAL
        # a pod with fewer workers than the most has its missing ones busy for ever
        self.worker_free = worker_slots(w.workers)
        #: each node's kube-proxy endpoints (the control plane may change them at an instant)
        self.endpoints = list(w.endpoints)
        self.rejects = [False] * p.nodes        # nodes whose empty list rejects (no endpoint)
        self.pending: dict[tuple[int, int], Pending] = {}
        self.cpu_of: dict[tuple[int, int], tuple[int, int, dict]] = {}
        self.resolved = 0
        self.gauges: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.snat_gauges: list[tuple[int, np.ndarray, np.ndarray]] = []
        # SNAT ports per (node, pod) pair at the last sample, for the change points
        pairs = p.nodes * p.pods
        self.snat_last = np.zeros(pairs if p.full_records and pairs <= SNAT_PAIRS_MAX else 0,
                                  np.int64)
        self.drop_log: list[tuple[int, int, int, int, int]] = []
        #: a closed loop's free slots (a heapq of instants, ns): each new flow takes the earliest
        #: (lbsim.compiled.slots); without one, every first attempt is in the heap up front
        self.slots = [int(t) for t in slot_opens(w.scenario)]
        self.next_new = 0                    # the next flow a closed loop starts
        self.end = 0                         # when the flow resolved last ends for its client
        if p.closed_loop:
            self.heap = []
        else:
            first = w.t0 + p.d_in
            self.heap = [(int(first[f]), ARRIVE, f, 0, 0) for f in range(p.flows)]
            heapq.heapify(self.heap)
        self.orig = tuples.orig_key(w.backend, w.client, w.sport)
        rss = mix64(self.orig.view(np.uint64) ^ w.keys["rss"])
        self.cpu = w.backend * p.cpus + (rss % np.uint64(p.cpus)).astype(np.int64)
        self.dynamic = bool(w.scenario.events)
        self.lb2b = int(round(w.scenario.network.lb_to_backend_s * NS))
        if self.dynamic:
            self._init_events()

    # -- the event loop ----------------------------------------------------------------------
    def advance(self, t1: int) -> bool:
        """Process the ticks and events before ``t1``; True once every flow is resolved."""
        heap = self.heap
        while True:
            new = self._new_flow()
            if heap and (new is None or heap[0] < new):
                t, kind, f, k, arrive = heap[0]
            elif new is not None:
                t, kind, f, k, arrive = new
            else:
                return True
            tick = self.next_tick()
            if tick <= t:
                if tick >= t1:
                    return False
                self.tick(tick)
                continue
            if t >= t1:
                return False
            if new is not None and (t, kind, f, k, arrive) == new:
                self.next_new += 1
                self.starts[f] = heapq.heappop(self.slots)   # w.t0 is a view of it
            else:
                heapq.heappop(heap)
            resolved = self.resolved
            self._dispatch(t, kind, f, k, arrive)
            if self.p.closed_loop and self.resolved > resolved:
                heapq.heappush(self.slots, self.end + self.p.think)   # the client is done

    def _new_flow(self) -> tuple | None:
        """A closed loop's next flow's first arrival, as a heap entry (None: none now): it
        starts when the earliest slot frees."""
        if not self.p.closed_loop or self.next_new >= self.p.flows or not self.slots:
            return None
        return (self.slots[0] + self.p.d_in, ARRIVE, self.next_new, 0, 0)

    def _dispatch(self, t: int, kind: int, f: int, k: int, arrive: int) -> None:
        """Event ``kind`` of attempt ``k`` of flow ``f`` at ``t``, to its step (each resolves
        at most that one flow)."""
        heap = self.heap
        if kind == ARRIVE:
            self.arrive(f, k, t)
        elif kind == QUEUE:
            self.queue(f, k, t, arrive, self.attempt_inputs(f, k))
        elif kind == NAT:
            nxt = self.nat_step(f, k, arrive, t)
            if (f, k) in self.pending:
                pd = self.pending[(f, k)]
                if pd.snat_at >= 0:
                    heapq.heappush(heap, (pd.snat_at, SNAT, f, k, arrive))
                else:
                    heapq.heappush(heap, (pd.t_conf, CONFIRM, f, k, arrive))
            elif nxt is not None:
                heapq.heappush(heap, (nxt, ARRIVE, f, k + 1, 0))
        elif kind == SNAT:
            pd = self.pending[(f, k)]
            self.snat_step(pd, t)
            heapq.heappush(heap, (pd.t_conf, CONFIRM, f, k, arrive))
        else:
            nxt = self.confirm_step(self.pending.pop((f, k)))
            if nxt is not None:
                heapq.heappush(heap, (nxt, ARRIVE, f, k + 1, 0))

    def arrive(self, f: int, k: int, t: int) -> None:
        """An attempt reaches its node (or, direct, its pod) at ``t``."""
        if k == 0 and self.w.sport[f] < 0:
            self.no_port(f, t - self.p.d_in)
            return
        if not self.p.nodeport:
            if self.dynamic:
                self.direct_attempt(f, k, t)
            else:
                self.serve_direct(f, t)
            return
        if self.dynamic and self.target[f] < 0:
            # the LB chooses the flow's node when its first attempt reaches it, and keeps it
            # (for every query of its socket: they share a tuple)
            self.target[f] = self._socket_choice(f, t - self.lb2b)
            if self.target[f] < 0:
                nxt = self.fail(f, k, t, t, NO_TARGET, -1)
                if nxt is not None:
                    heapq.heappush(self.heap, (nxt, ARRIVE, f, k + 1, 0))
                return
        inp = self.attempt_inputs(f, k)
        if self.p.jittered:                  # it reaches its CPU a little later
            heapq.heappush(self.heap, (t + inp["jitter"], QUEUE, f, k, t))
        else:
            self.queue(f, k, t, t, inp)

    def queue(self, f: int, k: int, t: int, arrive: int, inp: dict) -> None:
        """An attempt that reached its node at ``arrive`` reaches its CPU at ``t``: processed
        from when the CPU is free (FIFO), its NAT at the start and its confirm at the end."""
        c = int(inp["cpu"])
        t_nat = max(t, int(self.cpu_free[c]))
        self.max_cpu_wait = max(self.max_cpu_wait, t_nat - t)
        t_conf = t_nat + int(inp["pkt"])
        self.cpu_free[c] = t_conf
        self.cpu_of[(f, k)] = (t_nat, t_conf, inp)
        heapq.heappush(self.heap, (t_nat, NAT, f, k, arrive))

    def set_endpoints(self, node: int, pods: np.ndarray, rejects: bool = False) -> None:
        """From now on, ``node``'s kube-proxy lists ``pods`` (per-attempt choices only); with
        none, ``rejects``: it rejects (the Service has no endpoint) rather than drops."""
        self.endpoints[node] = np.asarray(pods, np.int64)
        self.rejects[node] = bool(rejects) and not len(pods)

    def node_of(self, f: int) -> int:
        """The node the LB sent flow ``f`` to (with events: chosen when it reached the LB)."""
        return self.target[f] if self.dynamic else int(self.w.backend[f])

    def orig_of(self, f: int) -> int:
        """Flow ``f``'s ORIGINAL tuple key (its node's address is in it)."""
        if not self.dynamic:
            return int(self.orig[f])
        w = self.w
        return int(tuples.orig_key(np.array([self.target[f]]), w.client[f:f + 1],
                                   w.sport[f:f + 1])[0])

    def attempt_inputs(self, f: int, k: int) -> dict:
        """Random inputs of one attempt: CPU time, endpoint uniform, NAT offsets, ISN, CPU and
        the delay before it (jitter)."""
        st, p = self.streams, self.p
        fa, ka = np.array([f]), np.array([k])
        u0 = st.uniform("cpu_time", fa, ka, 0)
        u1 = st.uniform("cpu_time", fa, ka, 1)
        pkt = durations_ns(p.packet_kind, p.packet_a, p.packet_b, u0, u1)[0]
        jitter = 0
        if p.jittered:
            jitter = int(durations_ns(p.jitter_kind, p.jitter_a, p.jitter_b,
                                      st.uniform("jitter", fa, ka, 0),
                                      st.uniform("jitter", fa, ka, 1))[0])
        offsets = [int(st.u16("nat", fa, ka, r)[0]) for r in range(ROUNDS)]
        if p.pinned:        # a pair's i-th flow on its node's CPU i
            cpu = self.node_of(f) * p.cpus + int(self.w.lane[f]) % p.cpus
        elif p.pod_clients:   # the sending thread's CPU, per packet
            cpu = self.w.backend[f] * p.cpus + int(np.floor(st.uniform("rss", fa, ka)[0] * p.cpus))
        elif self.dynamic:
            rss = mix64(np.array([self.orig_of(f)], np.int64).view(np.uint64) ^ self.w.keys["rss"])
            cpu = self.target[f] * p.cpus + int(rss[0] % np.uint64(p.cpus))
        else:
            cpu = self.cpu[f]
        return {"pkt": pkt, "u_ep": float(st.uniform("endpoint", fa, ka)[0]),
                "offsets": offsets, "isn": int(st.u32("isn", fa, ka)[0]), "cpu": cpu,
                "jitter": jitter}

    # -- outcome of an attempt ------------------------------------------------------------------
    def fail(self, flow: int, attempt: int, arrive: int, t_fail: int, cause: int, node: int):
        """Record a dropped attempt; returns the next attempt's arrival time, or None. The next
        attempt comes on the client's schedule, and never sooner than ``gap_min`` after the drop
        (a retransmission cannot overtake its own dropped SYN)."""
        rec, p = self.rec, self.p
        rec.cause_count[cause] += 1
        if p.full_records:
            self.drop_log.append((t_fail, flow, attempt, node, cause))
        rec.cause[flow] = cause
        if attempt < p.retries:
            return max(arrive + p.gaps[attempt], t_fail + p.gap_min)
        rec.outcome[flow] = FAILED
        rec.attempts[flow] = attempt + 1
        self.resolved += 1
        # the client gives up when its last attempt's timer runs out (not before the drop)
        self.end = max(t_fail, arrive - p.d_in + p.gaps[attempt])
        return None

    def refuse(self, flow: int, attempt: int, t: int, cause: int, node: int, back: int) -> None:
        """An attempt answered with a refusal (an RST, an ICMP port unreachable) at ``t``:
        connect() fails when it reaches the client (``back`` ns later) and nothing is
        retransmitted."""
        rec = self.rec
        rec.cause_count[cause] += 1
        if self.p.full_records:
            self.drop_log.append((t, flow, attempt, node, cause))
        rec.cause[flow], rec.outcome[flow], rec.attempts[flow] = cause, FAILED, attempt + 1
        self.resolved += 1
        self.end = t + back
        return None

    def no_port(self, flow: int, t: int) -> None:
        """The client's connect() (or UDP autobind) found no free port at ``t``, the flow's
        start (EADDRNOTAVAIL, lbsim.reference.ports): it fails with nothing sent."""
        rec = self.rec
        rec.cause_count[NO_CLIENT_PORT] += 1
        rec.cause[flow], rec.outcome[flow], rec.attempts[flow] = NO_CLIENT_PORT, FAILED, 0
        for a in (rec.pod, rec.nat_port, rec.connect_ns, rec.response_ns, rec.pod_wait_ns):
            a[flow] = -1             # the steady direct path's records are not pre-filled
        rec.src_ip[flow] = 0
        self.resolved += 1
        self.end = t

    def succeed(self, flow, attempt, pod, port, connect, response, src_ip, wait) -> None:
        rec = self.rec
        rec.pod_wait_ns[flow] = wait
        rec.outcome[flow] = OK
        rec.attempts[flow] = attempt + 1
        rec.pod[flow] = pod
        rec.nat_port[flow] = port
        rec.connect_ns[flow] = connect
        rec.response_ns[flow] = response
        rec.src_ip[flow] = src_ip
        self.resolved += 1
        # the client has its answer, holds the connection, closes
        self.end = int(self.w.t0[flow]) + response + int(self.w.hold[flow])

    # -- the NAT step and the confirm ----------------------------------------------------------
    def nat_step(self, flow: int, attempt: int, arrive: int, t_nat: int) -> int | None:
        """Conntrack lookup, allocation, DNAT and SNAT at ``t_nat``. Returns the next attempt's
        arrival if dropped here, else None (the attempt waits for its confirm)."""
        p, w, C = self.p, self.w, self.rec.counters
        _, t_conf, inp = self.cpu_of.pop((flow, attempt))
        node = self.node_of(flow)
        orig = self.orig_of(flow)
        eid = self._live_eid(orig, t_nat)          # resolve_normal_ct: is the tuple known?
        if eid >= 0 and (not p.tcp or self.table.flags[eid] & F_UNREPLIED):
            # a UDP packet of a tracked flow, or a SYN retransmitted into its unanswered entry
            # (SYN_SENT): it follows the entry's NAT, no new entry
            tb = self.table
            reply = int(tb.reply[eid])
            self.pending[(flow, attempt)] = Pending(flow, attempt, arrive, t_conf, node,
                                                    int(tb.pod[eid]), reply & 0xFFFF, False, orig,
                                                    reply, inp["isn"], True)
            return None
        if eid >= 0:
            if t_nat < self.table.t_close[eid]:
                return self.fail(flow, attempt, arrive, t_nat, TUPLE_IN_USE, node)
            self.table.release1(eid)               # a SYN reopens a TIME_WAIT/CLOSE tuple
        if self.table.count[node] + self.unconfirmed[node] + 1 > p.ct_max:
            # __nf_conntrack_alloc: over nf_conntrack_max, early_drop() or "table full"
            killed = self.table.early_drop(node, orig, t_nat)
            if not killed:
                C[C_DROP, node] += 1
                self.gc_flag[node] = True            # the next GC pass may early-drop
                return self.fail(flow, attempt, arrive, t_nat, TABLE_FULL, node)
            C[C_EARLY_DROP, node] += killed
        pod = self.endpoint(node, inp["u_ep"], flow)
        if pod < 0 and self.rejects[node]:   # KUBE-EXTERNAL-SERVICES' REJECT: the flow fails
            return self.refuse(flow, attempt, t_nat, NO_ENDPOINTS, node, p.d_in)
        if pod < 0:
            return self.fail(flow, attempt, arrive, t_nat, NO_LOCAL_ENDPOINT, node)
        sport = int(w.sport[flow])
        self.unconfirmed[node] += 1
        pd = self.pending[(flow, attempt)] = Pending(
            flow, attempt, arrive, t_conf, node, pod, sport, False, orig,
            int(tuples.reply_key_nosnat(pod, int(w.client[flow]), sport)), inp["isn"])
        if p.snat and p.snat_offset > 0:           # MASQUERADE at POSTROUTING, later
            pd.snat_at = min(t_nat + p.snat_offset, t_conf)
        elif p.snat:
            self.snat_step(pd, t_nat, inp)
        return None

    def snat_step(self, pd: Pending, t: int, inp: dict | None = None) -> None:
        """MASQUERADE of a pending attempt at ``t``: its source port, against the entries
        confirmed by then (``nf_nat_setup_info``; :mod:`lbsim.reference.nat`)."""
        inp = inp if inp is not None else self.attempt_inputs(pd.flow, pd.attempt)
        node, pod = pd.node, pd.pod
        ch = select_port(self.table, t, node, pod, int(self.w.sport[pd.flow]), inp["offsets"],
                         inp["isn"], self.rule, self.rover[node],
                         self.secure_port(node, pod) if self.rule.legacy_random else 0)
        pd.port, pd.exhausted, pd.snat_at = ch.port, ch.exhausted, -1
        self.rec.counters[C_FOUND, node] += ch.found
        pd.reply = tuples.reply_key(node, pod, ch.port)

    def endpoint(self, node: int, u: float, flow: int) -> int:
        """kube-proxy's choice of pod for an attempt on ``node`` (-1: no local endpoint)."""
        p = self.p
        if not p.per_attempt:
            return int(self.w.flow_pod[flow])
        return endpoint_scalar(p.nftables, self.endpoints[node], u)

    def secure_port(self, node: int, pod: int) -> int:
        """4.x ``--random`` start: ``secure_ipv4_port_ephemeral(nat ip, dst ip, dst port)``, a
        keyed hash, the same for every flow from one node to one pod."""
        k = np.array([tuples.reply_key(node, pod, 0)], np.int64).view(np.uint64)
        return int(mix64(k ^ self.w.keys["nat"])[0] >> np.uint64(32))

    def _live_eid(self, key: int, t: int) -> int:
        """Entry held under ``key`` and live at ``t``, or -1; an expired one met is freed."""
        eid = self.table.get(key)
        if eid < 0:
            return -1
        if self.table.t_expire[eid] <= t:
            self.table.release1(eid)
            return -1
        return eid

    def confirm_step(self, pd: Pending) -> int | None:
        """``__nf_conntrack_confirm`` at ``t_conf``; on success the pod serves the request.
        Returns the next attempt's arrival if the attempt was dropped, else None."""
        t, node, C = pd.t_conf, pd.node, self.rec.counters
        if pd.follow:
            eid = self._live_eid(pd.orig, t)
            if eid >= 0:
                return self._serve_nodeport(pd, adopt=eid)
            self.unconfirmed[node] += 1            # the entry vanished meanwhile: confirm anew
        self.unconfirmed[node] -= 1
        e_orig = self._live_eid(pd.orig, t)
        e_reply = self._live_eid(pd.reply, t)
        if e_orig < 0 and e_reply < 0:
            return self._serve_nodeport(pd)
        p = self.p
        if not p.tcp and e_orig >= 0:
            # nf_ct_resolve_clash: UDP allows clashes (kernel-facts 2.3, 2.4; which release
            # resolves which clash and what it counts: lbsim.kernel_versions).
            if p.clash_identical and self.table.reply[e_orig] == pd.reply:  # identical: adopt
                if p.merged_counter >= 0:
                    C[p.merged_counter, node] += 1
                return self._serve_nodeport(pd, adopt=e_orig)
            if p.nat_clash and e_reply < 0:                      # NAT_CLASH, reply-only, 1 s
                if p.nat_clash_counter >= 0:
                    C[p.nat_clash_counter, node] += 1
                return self._serve_nodeport(pd, nat_clash=True)
        C[C_INSERT_FAILED, node] += 1
        C[C_DROP, node] += 1
        cause = PORT_EXHAUSTION if pd.exhausted else INSERT_RACE
        return self.fail(pd.flow, pd.attempt, pd.arrive, t, cause, node)

    # -- serving ------------------------------------------------------------------------------
    def serve(self, pod: int, q: int, service: int) -> int:
        """FIFO with ``workers`` servers: the request arriving at ``q`` finishes at the return."""
        wf = self.worker_free[pod]
        k = int(wf.argmin())
        finish = max(q, int(wf[k])) + service
        wf[k] = finish
        return finish

    def timeline(self, flow: int, t_conf: int, hop: int, finish: int):
        """Entry timeline and client-side latencies once the pod finishes at ``finish``.

        Returns ``(t_assured, t_close, t_expire, connect, response)`` in ns (connect -1 for UDP).
        TCP: the SYN goes on to the pod, the SYN-ACK back through the node, the request comes
        with the client's ACK; ASSURED when that ACK passes the node; TIME_WAIT from the
        client's FIN (sent ``hold_s`` after the response) for ``time_wait_s``. UDP (kernel-facts
        3.6): an entry expires ``udp_s`` after its last packet; packets after the reply that
        come more than 2 s after the start (``hold_s`` > 0; any packet after the reply before
        5.0, lbsim.kernel_versions) make it a stream entry with ``udp_stream_s``, ASSURED
        from then on (from the first packet after the reply before 5.15).
        """
        p, w = self.p, self.w
        t0, hold = int(w.t0[flow]), int(w.hold[flow])
        resp = finish + hop + p.d_in
        if p.tcp:
            synack = t_conf + 2 * hop + p.d_in
            t_close = resp + hold + p.d_in
            return synack + p.d_in, t_close, t_close + p.time_wait, synack - t0, resp - t0
        t_rep = finish + hop
        t_last = t_rep + hold
        stream = hold > 0 and t_last - t_conf > p.udp_stream_after
        if hold > 0 and p.udp_assured_before_stream:   # before 5.15: at the next packet
            t_assured = t_rep
        else:
            t_assured = max(t_rep, t_conf + p.udp_stream_after) if stream else NEVER
        return t_assured, t_last, t_last + (p.udp_stream if stream else p.udp), -1, resp - t0

    def request_arrival(self, t_conf: int, hop: int) -> int:
        """When the request reaches the pod: TCP after the handshake, UDP with the datagram."""
        return t_conf + 3 * hop + 2 * self.p.d_in if self.p.tcp else t_conf + hop

    def _serve_nodeport(self, pd: Pending, adopt: int = -1, nat_clash: bool = False):
        """The confirmed attempt's SYN or request reaches its pod a hop later. A pod that accepts
        serves it, and the entry's timeline follows; with events, a pod that refuses answers
        with an RST (the entry closes; the flow fails) and one that is gone loses it (the entry
        stays unanswered; the client retransmits). Returns the next attempt's arrival, or None."""
        p, w, f, t = self.p, self.w, pd.flow, pd.t_conf
        hop = 0 if self.pod_node[pd.pod] == pd.node else p.d_hop
        if self.dynamic and not self._accepts(pd.pod, t + hop):
            return self._lost_at_pod(pd, adopt, nat_clash, t + hop, hop)
        q = self.request_arrival(t, hop)
        finish = self.serve(pd.pod, q, int(w.service[f]))
        t_assured, t_close, t_expire, connect, response = self.timeline(f, t, hop, finish)
        t_reply = NEVER if p.tcp else finish + hop   # the answer passes the node
        src = (tuples.NODE_IP_BASE + pd.node if p.snat
               else tuples.CLIENT_BASE + int(w.client[f]))
        self.succeed(f, pd.attempt, pd.pod, pd.port if p.snat else -1, connect, response, src,
                     finish - int(w.service[f]) - q)
        if self.dynamic:     # the client's FIN (or last datagram) reaches the pod a hop later
            self.last_closes[pd.pod] = max(self.last_closes[pd.pod], t_close + hop)
        self._track(pd, adopt, nat_clash, t_assured, t_close, t_expire, 0, t_reply)
        return None

    def _accepts(self, pod: int, t: int) -> bool:
        return self.listen[pod] <= t < min(self.sigterm[pod], self.gone[pod])

    def _lost_at_pod(self, pd: Pending, adopt: int, nat_clash: bool, ta: int, hop: int):
        """The pod did not accept the attempt reaching it at ``ta``: gone (lost: TCP's entry
        stays SYN_SENT for 2 min, renewed by each retransmission that follows it) or refusing
        (TCP: an RST, the entry CLOSE for 10 s; UDP: ICMP port unreachable). A UDP entry stays
        unreplied (``conntrack.udp_s``)."""
        p, t = self.p, pd.t_conf
        gone = self.gone[pd.pod] <= ta
        flags = 0
        if not p.tcp:
            t_close, t_expire = t, t + p.udp
        elif gone:
            t_close = t_expire = t + TCP_SYN_SENT_TIMEOUT
            flags = F_UNREPLIED
        else:
            t_close = ta + hop                     # the RST passes the node
            t_expire = t_close + TCP_CLOSE_TIMEOUT
        self._track(pd, adopt, nat_clash, NEVER, t_close, t_expire, flags, NEVER)
        if gone:
            return self.fail(pd.flow, pd.attempt, pd.arrive, ta, POD_GONE, pd.node)
        return self.refuse(pd.flow, pd.attempt, ta, REFUSED, pd.node, hop + p.d_in)

    def _track(self, pd: Pending, adopt: int, nat_clash: bool, t_assured: int, t_close: int,
               t_expire: int, flags: int, t_reply: int) -> None:
        """The confirmed attempt's entry: inserted, or the followed one's timeout raised."""
        p, t = self.p, pd.t_conf
        tb = self.table
        if adopt >= 0:
            tb.t_expire[adopt] = max(int(tb.t_expire[adopt]), t_expire)
            if flags & F_UNREPLIED:              # SYN_SENT renewed: still not closing
                tb.t_close[adopt] = max(int(tb.t_close[adopt]), t_expire)
            return
        flags |= (F_TCP if p.tcp else 0) | (F_SNAT if p.snat else 0)
        if nat_clash:   # IPS_NAT_CLASH | IPS_FIXED_TIMEOUT: reply-only, 1 s, never ASSURED
            flags |= F_NAT_CLASH
            t_expire, t_assured = t + NAT_CLASH_TIMEOUT, NEVER
            if p.nat_clash_deleted_on_reply:     # 5.6-5.8: its first reply kills it
                t_expire = min(t_expire, t_reply)
        C = self.rec.counters
        C[C_ENTRIES_INSERTED, pd.node] += 1
        self.table.add1(pd.orig if not nat_clash else -1, pd.reply, pd.node, pd.pod, pd.flow, t,
                        t_assured, t_close, t_expire, flags, (pd.isn + 2) & 0xFFFFFFFF)

    def serve_direct(self, flow: int, arrive: int) -> None:
        """The direct path: the LB's pod serves the request; the pod sees the client's IP. Its
        timeline is the NodePort one with no node: confirm = arrival at the pod, no second hop."""
        w = self.w
        pod = int(w.backend[flow])
        q = self.request_arrival(arrive, 0)
        finish = self.serve(pod, q, int(w.service[flow]))
        _, _, _, connect, response = self.timeline(flow, arrive, 0, finish)
        self.succeed(flow, 0, pod, -1, connect, response, tuples.CLIENT_BASE + int(w.client[flow]),
                     finish - int(w.service[flow]) - q)

    # -- the direct path over time ([[events]]) ----------------------------------------------
    def _init_events(self) -> None:
        p, sc = self.p, self.w.scenario
        first = sc.cluster.pods
        self.listen = [0 if i < first else NEVER for i in range(p.pods)]
        self.sigterm, self.gone = [NEVER] * p.pods, [NEVER] * p.pods
        self.removed = [NEVER] * p.pods           # the LB's target removed (direct)
        self.last_closes = [0] * p.pods
        #: the LB's target sets, each in force from its instant on (times ascending)
        self.target_times: list[int] = [-1]
        self.target_sets: list[list[int]] = [
            [int(x) for x in steady_targets(sc, self.w.pod_node[:first])]]
        self.rr = [0] * sc.lb.instances
        #: the LB's choice for each flow: its pod (direct) or node (NodePort); -1: not yet
        self.target = [-1] * p.flows
        self.socket_target: dict[int, int] = {}     # ... and for each socket with queries

    def _socket_choice(self, f: int, t_lb: int) -> int:
        """The LB's backend for flow ``f``: its socket's, if an earlier query of the socket got
        one; else chosen now (:meth:`_lb_choice`)."""
        sock = self.w.socket
        if not sock.size:
            return self._lb_choice(f, t_lb)
        s = int(sock[f])
        b = self.socket_target.get(s, -1)
        # the LB forgets the socket's pod once the target is removed (after its draining)
        if b < 0 or (not self.p.nodeport and self.removed[b] <= t_lb):
            b = self.socket_target[s] = self._lb_choice(f, t_lb)
        return b

    def clear_udp(self, node: int, pods: np.ndarray) -> None:
        """kube-proxy's conntrack -D: free ``node``'s UDP entries DNATed to ``pods``."""
        tb = self.table
        n = tb.size
        hit = (tb.alive[:n] & (tb.node[:n] == node) & np.isin(tb.pod[:n], pods)
               & ((tb.flags[:n] & F_TCP) == 0))
        for e in np.flatnonzero(hit):
            tb.release1(int(e))

    def _lb_choice(self, f: int, t_lb: int) -> int:
        """The LB's target for flow ``f`` reaching it at ``t_lb``: among the targets in force
        then, by round robin per LB instance or by a hash of the client IP (-1: none)."""
        ids = self.target_sets[bisect.bisect_right(self.target_times, t_lb) - 1]
        if not ids:
            return -1
        if self.w.scenario.lb.algorithm is LBAlgorithm.RR:
            inst = int(self.w.instance[f])
            i = self.rr[inst] % len(ids)
            self.rr[inst] += 1
        else:
            i = mix64_scalar(int(self.w.client[f]) ^ self.w.lb_salt) % len(ids)
        return ids[i]

    def direct_attempt(self, f: int, k: int, t: int) -> None:
        """Attempt ``k`` of flow ``f`` reaches its pod at ``t`` (the LB ``lb_to_backend_s``
        earlier). The LB keeps a flow's pod once it chose one. A listening server serves it; one
        that is starting or got SIGTERM answers with an RST (the flow fails at once); a pod that
        is gone, or no target at all, loses it and the client retransmits."""
        p, w = self.p, self.w
        pod = self.target[f]
        if pod < 0:
            pod = self.target[f] = self._socket_choice(f, t - self.lb2b)
        if pod >= 0 and self.listen[pod] <= t < min(self.sigterm[pod], self.gone[pod]):
            q = self.request_arrival(t, 0)
            finish = self.serve(pod, q, int(w.service[f]))
            _, _, _, connect, response = self.timeline(f, t, 0, finish)
            self.succeed(f, k, pod, -1, connect, response, tuples.CLIENT_BASE + int(w.client[f]),
                         finish - int(w.service[f]) - q)
            self.last_closes[pod] = max(self.last_closes[pod],
                                        finish + 2 * p.d_in + int(w.hold[f]))
            return
        why = NO_TARGET if pod < 0 else POD_GONE if self.gone[pod] <= t else REFUSED
        if why == REFUSED:                  # an RST: connect() fails, nothing is retransmitted
            self.refuse(f, k, t, why, -1, p.d_in)
            return
        nxt = self.fail(f, k, t, t, why, -1)
        if nxt is not None:
            heapq.heappush(self.heap, (nxt, ARRIVE, f, k + 1, 0))

    def set_targets(self, t: int, pods) -> None:
        """From ``t`` on, the LB sends new flows to ``pods``."""
        ids = [int(x) for x in pods]
        if self.target_times[-1] == t:
            self.target_sets[-1] = ids
        else:
            self.target_times.append(t)
            self.target_sets.append(ids)

    def set_pod(self, pod: int, listen: int, sigterm: int, gone: int,
                removed: int = NEVER) -> None:
        self.listen[pod], self.sigterm[pod], self.gone[pod] = listen, sigterm, gone
        self.removed[pod] = removed

    def set_pod_node(self, pod: int, node: int) -> None:
        self.pod_node[pod] = node

    def last_close(self, pod: int) -> int:
        return self.last_closes[pod]

    # -- GC passes and gauges -------------------------------------------------------------------
    def next_tick(self) -> int:
        """Time of the next GC pass on any node or gauge sample."""
        return min(int(self.gc_next.min()), self.sample_next)

    def tick(self, t: int) -> None:
        """At ``t == next_tick()``: the GC passes due on each node, then the gauges if due."""
        due = self.gc_next <= t
        if due.any():
            killed, next_run = self.table.gc_pass(t, self.p.limit95, due, self.gc_flag)
            self.rec.counters[C_GC_EARLY_DROP] += killed
            self.gc_flag[due] = False
            self.gc_next[due] = t + (next_run[due] if not self.p.gc_fixed else self.p.gc_fixed)
        if self.sample_next <= t:
            self.sample_next += SAMPLE_INTERVAL
            self._sample(t)

    def _sample(self, t: int) -> None:
        """Conntrack occupancy per node, every second, and the SNAT ports in use per (node,
        pod) pair: per node its busiest pair's and how many pairs hold any, and (full records)
        each pair whose count changed since the last sample."""
        tb, p = self.table, self.p
        n = tb.size
        alive = tb.alive[:n] & (tb.t_expire[:n] > t)
        live = np.bincount(tb.node[:n][alive], minlength=p.nodes)
        smax = np.zeros(p.nodes, np.int64)
        spairs = np.zeros(p.nodes, np.int64)
        snat_path = p.nodeport and p.snat         # the direct path has no SNAT: 0
        if snat_path and p.full_records:
            snat = alive & ((tb.flags[:n] & F_SNAT) != 0)
            pair = tb.node[:n][snat].astype(np.int64) * p.pods + tb.pod[:n][snat]
            pairs, ports = np.unique(pair, return_counts=True)
            np.maximum.at(smax, pairs // p.pods, ports)
            spairs = np.bincount(pairs // p.pods, minlength=p.nodes)
            if self.snat_last.size:
                now = np.zeros_like(self.snat_last)
                now[pairs] = ports
                changed = np.flatnonzero(now != self.snat_last)
                self.snat_gauges.append((t, changed, now[changed]))
                self.snat_last = now
        elif snat_path:                          # summary records: not counted
            smax[:], spairs[:] = -1, -1
        self.gauges.append((t, tb.count.copy(), live, smax, spairs))

    # -- the records ---------------------------------------------------------------------------
    def records(self) -> Records:
        g, s = self.gauges, self.snat_gauges
        drops = tuple(np.array(c, np.int64) for c in zip(*self.drop_log)) or ((),) * 5
        snat = ((np.concatenate([np.full(x[1].size, x[0]) for x in s]),
                 np.concatenate([x[1] for x in s]), np.concatenate([x[2] for x in s]))
                if s else ((), (), ()))
        return self.rec.freeze(
            table_count=self.table.count.copy(), gauge_t_ns=[x[0] for x in g],
            gauge_entries=np.array([x[1] for x in g], np.int64).reshape(len(g), self.p.nodes),
            gauge_live=np.array([x[2] for x in g], np.int64).reshape(len(g), self.p.nodes),
            gauge_snat=tuple(np.array([x[k] for x in g], np.int64).reshape(len(g), self.p.nodes)
                             for k in (3, 4)),
            drops=drops, snat=snat, max_cpu_wait_ns=self.max_cpu_wait, resolved=self.resolved,
            backend=self.target if self.dynamic and self.p.nodeport else None,
            pod_node=self.pod_node)
