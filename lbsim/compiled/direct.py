"""The direct path, compiled: no node, no table, so only the pods' queues connect one flow to the
next, and a window is a plain loop over its flows in arrival order (``ReferenceEngine.serve_direct``).

With ``[[events]]`` the LB's target set and the pods' states change at control-plane instants
(:mod:`lbsim.control.cluster`), and :func:`_direct_events` is the loop: it makes the LB's choice
per attempt among the targets in force when the attempt reaches the LB, keeps a flow's pod once
chosen (the LB tracks the flow), and merges retransmissions (an attempt with no target, or lost
to a gone pod) with new flows in time order (``ReferenceEngine.direct_attempt``).
"""

from __future__ import annotations

import numpy as np

from ..config import LBAlgorithm
from ..kernel import ARRIVE, FAILED, NEVER, NO_TARGET, NS, OK, POD_GONE, REFUSED
from ..records import Records, RecordsBuilder
from ..tuples import CLIENT_BASE
from ..workload import Workload, own_starts, slot_opens, worker_slots
from .events import order, pop, push, unpack
from .handlers import gives_up, lb_choice, no_client_port, refuse, serve
from .targets import TargetSets
from .layout import (DONE, PAUSE, ROOM, S_END, S_HN, S_LAST_SAMPLE, S_NDROP, S_NEXT_NEW,
                     S_NSLOT, S_RESOLVED, STATE_SLOTS, jit)
from .slots import slot_pop, slot_push

#: the direct path has no conntrack table: the last sample's slot holds the time of the last
#: attempt processed
S_LAST_EVENT = S_LAST_SAMPLE

__all__ = ["DirectEngine"]


@jit
def _direct(a, b, t1, mask, tcp, d_in, t0, backend, service, client, sport, worker_free,
            outcome, attempts, pod, nat_port, connect, response, pod_wait, src_ip, cause,
            cause_count, closed, slots, S, hold, think, starts):
    """Serve flows ``a`` .. ``b - 1`` (flow f in row ``f & mask``) up to the first arriving at
    or after ``t1``; returns the first flow not served. ``closed``: a closed loop, each flow
    taking the earliest of the free ``slots`` (lbsim.compiled.slots) and giving it back
    ``think`` after its client is done, its start written in ``starts`` (``t0`` is a read-only
    view of it then: lbsim.workload.own_starts)."""
    for f in range(a, b):
        i = f & mask
        t = (slots[0] if closed else t0[i]) + d_in
        if t >= t1:
            return f
        if closed:
            starts[i] = slot_pop(slots, S)
        if sport[i] < 0:                            # the client had no port: nothing sent
            no_client_port(S, cause_count, outcome, cause, attempts, pod, nat_port, connect,
                           response, pod_wait, src_ip, i, t - d_in)
            if closed:
                slot_push(slots, S, t - d_in + think)
            continue
        p = backend[i]
        q = t + 2 * d_in if tcp else t
        finish = serve(worker_free, p, q, service[i])
        pod_wait[i] = finish - service[i] - q
        outcome[i] = OK
        attempts[i] = 1
        pod[i] = p
        nat_port[i] = -1
        connect[i] = t + d_in - t0[i] if tcp else -1
        response[i] = finish + d_in - t0[i]
        src_ip[i] = CLIENT_BASE + client[i]
        if closed:
            slot_push(slots, S, finish + d_in + hold[i] + think)
    return b


@jit
def _direct_events(t1, X, d_in, lb2b, tcp, retries, gaps, rr_algo, salt, t0, service, hold,
                   client, sport, instance, socket, outcome, cause, attempts, pod_rec, nat_port,
                   connect, response, pod_wait, src_ip, cause_count, full, closed, slots,
                   think, starts):
    """Attempts reaching their pod before ``t1``, new flows and retransmissions in time order
    (ties by flow, then attempt, as the reference's heap). Returns DONE once every flow is
    resolved, PAUSE at ``t1``, ROOM when the heap or the drop rows must grow first. ``X``: (S, H,
    D, seg_t, seg_off, seg_ids, rr, target, listen, sigterm, gone, last_close, worker_free,
    removed, sock_target): a socket's queries (``socket``) keep its pod until the target is
    removed (``ReferenceEngine._socket_choice``). ``closed``: a closed loop (:func:`_direct`)."""
    (S, H, D, seg_t, seg_off, seg_ids, rr, target, listen, sigterm, gone, last_close, wf,
     removed, sock_target) = X
    F = t0.size
    while True:
        if S[S_HN] + 1 >= H.shape[0] or (full and S[S_NDROP] + 1 >= D.shape[0]):
            return ROOM
        f = S[S_NEXT_NEW]
        if closed:
            t_new = slots[0] + d_in if f < F and S[S_NSLOT] > 0 else NEVER
        else:
            t_new = t0[f] + d_in if f < F else NEVER
        heap = S[S_HN] > 0 and (H[0, 0] < t_new or (H[0, 0] == t_new
                                                    and H[0, 1] < order(ARRIVE, f, 0)))
        t = H[0, 0] if heap else t_new
        if t == NEVER:
            return DONE
        if t >= t1:
            return PAUSE
        S[S_LAST_EVENT] = t
        if heap:
            _, f, k = unpack(H[0, 1])
            pop(H, S)
        else:
            k = 0
            S[S_NEXT_NEW] += 1
            if closed:
                starts[f] = slot_pop(slots, S)
            if sport[f] < 0:                        # the client had no port: nothing sent
                no_client_port(S, cause_count, outcome, cause, attempts, pod_rec, nat_port,
                               connect, response, pod_wait, src_ip, f, t - d_in)
                if closed:
                    slot_push(slots, S, t - d_in + think)
                continue
        p = target[f]
        if p < 0:                                   # the LB chooses among its targets now
            tl = t - lb2b
            if socket.size:
                p = sock_target[socket[f]]
                if p < 0 or removed[p] <= tl:
                    p = lb_choice(S, rr_algo, salt, seg_t, seg_off, seg_ids, rr, instance,
                                  client, f, tl)
                    sock_target[socket[f]] = p
            else:
                p = lb_choice(S, rr_algo, salt, seg_t, seg_off, seg_ids, rr, instance, client,
                              f, tl)
            target[f] = p
        if p < 0:
            why = NO_TARGET
        elif listen[p] <= t and t < sigterm[p] and t < gone[p]:
            q = t + 2 * d_in if tcp else t
            finish = serve(wf, p, q, service[f])
            pod_wait[f] = finish - service[f] - q
            outcome[f] = OK
            attempts[f] = k + 1
            pod_rec[f] = p
            nat_port[f] = -1
            connect[f] = t + d_in - t0[f] if tcp else -1
            response[f] = finish + d_in - t0[f]
            src_ip[f] = CLIENT_BASE + client[f]
            last_close[p] = max(last_close[p], finish + 2 * d_in + hold[f])
            S[S_RESOLVED] += 1
            if closed:
                slot_push(slots, S, finish + d_in + hold[f] + think)
            continue
        else:
            why = POD_GONE if gone[p] <= t else REFUSED
        if why == REFUSED:                          # an RST: the flow fails at once
            refuse(S, full, D, cause_count, outcome, cause, attempts, f, k, t, why, -1, -1, d_in)
            if closed:
                slot_push(slots, S, S[S_END] + think)
            continue
        cause_count[why] += 1
        cause[f] = why
        if full:
            i = S[S_NDROP]
            D[i, 0], D[i, 1], D[i, 2], D[i, 3], D[i, 4] = t, f, k, -1, why
            S[S_NDROP] += 1
        if k < retries:                             # the client retransmits
            push(H, S, t + gaps[k], ARRIVE, f, k + 1, 0)
        else:
            outcome[f] = FAILED
            attempts[f] = k + 1
            S[S_RESOLVED] += 1
            if closed:
                slot_push(slots, S, gives_up(t, t, d_in, gaps[k]) + think)


class DirectEngine:
    """The compiled direct path; the same interface as :class:`~lbsim.compiled.driver.CompiledEngine`."""

    def __init__(self, w: Workload) -> None:
        w, self.starts = own_starts(w)       # a closed loop writes each flow's start
        self.w, self.p = w, w.params
        #: a closed loop's free slots (lbsim.compiled.slots), their count in S[S_NSLOT]
        slots = slot_opens(w.scenario)
        self.slots = slots if slots.size else np.zeros(1, np.int64)
        self.S = np.zeros(STATE_SLOTS, np.int64)
        self.S[S_NSLOT] = slots.size
        self.pod_node = w.pod_node.copy()        # the scheduler may bind later pods elsewhere
        self.rec = RecordsBuilder(w)
        self.worker_free = worker_slots(w.workers)
        self.next = 0
        #: the flows whose inputs are loaded (all, or a streamed run's so far) and the start of
        #: the last one served, ns
        self.flow_end, self.last_t0 = self.p.flows, 0
        self.dynamic = bool(w.scenario.events)
        if self.dynamic:
            self._init_events()

    def _init_events(self) -> None:
        w, p, sc = self.w, self.p, self.w.scenario
        first = sc.cluster.pods
        never = lambda: np.full(p.pods, NEVER, np.int64)  # noqa: E731
        self.listen = never()
        self.listen[:first] = 0                    # the steady state's pods listen from the start
        self.sigterm, self.gone, self.removed = never(), never(), never()
        self.closes = np.zeros(p.pods, np.int64)
        self.sock_target = np.full(int(w.socket.max()) + 1 if w.socket.size else 1, -1,
                                   np.int64)
        self.H = np.zeros((1024, 3), np.int64)
        self.D = np.zeros((1024 if p.full_records else 1, 5), np.int64)
        self.targets = TargetSets(np.arange(first, dtype=np.int64))
        self.rr = np.zeros(sc.lb.instances, np.int64)
        self.target = np.full(p.flows, -1, np.int64)
        self.rr_algo = sc.lb.algorithm is LBAlgorithm.RR
        self.salt = np.uint64(w.lb_salt).view(np.int64)
        self.gaps = np.asarray(p.gaps, np.int64)
        self.lb2b = int(round(sc.network.lb_to_backend_s * NS))

    def rebind(self, w: Workload, rec: RecordsBuilder) -> None:
        """A streamed run's ring of per-flow rows grew (:meth:`CompiledEngine.rebind`)."""
        self.w, self.p, self.rec = w, w.params, rec

    def advance(self, t1: int) -> bool:
        """Serve the flows arriving before ``t1``; True once every flow is served."""
        w, p, r = self.w, self.p, self.rec
        if self.dynamic:
            return self._advance_events(t1)
        b = _direct(self.next, self.flow_end, t1, p.flow_mask, p.tcp, p.d_in, w.t0, w.backend,
                    w.service, w.client, w.sport, self.worker_free, r.outcome, r.attempts, r.pod,
                    r.nat_port, r.connect_ns, r.response_ns, r.pod_wait_ns, r.src_ip, r.cause,
                    r.cause_count, p.closed_loop, self.slots, self.S, w.hold, p.think, self.starts)
        if b > self.next:
            self.last_t0 = int(w.t0[(b - 1) & p.flow_mask])
            self.next = b
        return self.next >= p.flows

    def _advance_events(self, t1: int) -> bool:
        w, p, r = self.w, self.p, self.rec
        lb2b = self.lb2b
        while True:
            tg = self.targets
            X = (self.S, self.H, self.D, tg.seg_t, tg.seg_off, tg.seg_ids, self.rr,
                 self.target, self.listen, self.sigterm, self.gone, self.closes,
                 self.worker_free, self.removed, self.sock_target)
            code = _direct_events(t1, X, p.d_in, lb2b, p.tcp, p.retries,
                                  self.gaps, self.rr_algo, self.salt, w.t0,
                                  w.service, w.hold, w.client, w.sport, w.instance, w.socket,
                                  r.outcome, r.cause,
                                  r.attempts, r.pod, r.nat_port, r.connect_ns, r.response_ns,
                                  r.pod_wait_ns, r.src_ip, r.cause_count, p.full_records,
                                  p.closed_loop, self.slots, p.think, self.starts)
            if code != ROOM:
                break
            if self.S[S_HN] + 1 >= self.H.shape[0]:
                self.H = np.concatenate([self.H, np.zeros_like(self.H)])
            if p.full_records and self.S[S_NDROP] + 1 >= self.D.shape[0]:
                self.D = np.concatenate([self.D, np.zeros_like(self.D)])
        self.next = int(self.S[S_NEXT_NEW])
        return code == DONE

    # -- what the control plane changes (lbsim.control) -------------------------------------
    def set_endpoints(self, node: int, pods: np.ndarray, rejects: bool = False) -> None:
        """The direct path has no kube-proxy: nothing to change."""

    def set_targets(self, t: int, pods: np.ndarray) -> None:
        """From ``t`` on, the LB sends new flows to ``pods`` (an attempt reaching the LB at
        ``t`` or later sees them)."""
        self.targets.set(t, pods, self.lb2b, self.S)

    def clear_udp(self, node: int, pods: np.ndarray) -> None:
        """The direct path has no conntrack: nothing to delete."""

    def set_pod(self, pod: int, listen: int, sigterm: int, gone: int,
                removed: int = NEVER) -> None:
        """The pod's server listens from ``listen``, refuses from ``sigterm``, is gone from
        ``gone``; the LB removed its target at ``removed`` (ns; NEVER: not yet)."""
        self.listen[pod], self.sigterm[pod], self.gone[pod] = listen, sigterm, gone
        self.removed[pod] = removed

    def set_pod_node(self, pod: int, node: int) -> None:
        """The scheduler bound ``pod`` to ``node`` (the direct path reads it only in the
        records)."""
        self.pod_node[pod] = node

    def last_close(self, pod: int) -> int:
        """When the last connection the pod accepted closes (ns; 0: none)."""
        return int(self.closes[pod])

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """A streamed run's drops and SNAT change points since the last call
        (:meth:`CompiledEngine.drain`): none in the steady state (every flow is served, and
        the direct path has no SNAT)."""
        return np.zeros((0, 5), np.int64), np.zeros((0, 3), np.int64)

    def records(self) -> Records:
        """The reference's ticks leave one all-zero gauge row per whole second up to the last
        event it processed (GC passes over empty tables)."""
        p = self.p
        if self.dynamic:
            n = int(self.S[S_LAST_EVENT]) // NS
            nd = int(self.S[S_NDROP])
            drops = tuple(self.D[:nd, i].copy() for i in range(5))
        else:
            n = (self.last_t0 + p.d_in) // NS if p.flows else 0
            drops = (np.zeros(0, np.int64),) * 5
        empty = np.zeros(0, np.int64)
        return self.rec.freeze(
            table_count=np.zeros(p.nodes, np.int64), gauge_t_ns=(np.arange(n) + 1) * NS,
            gauge_entries=np.zeros((n, p.nodes), np.int64),
            gauge_live=np.zeros((n, p.nodes), np.int64),
            gauge_snat=(np.zeros((n, p.nodes), np.int64),) * 2, drops=drops,
            snat=(empty,) * 3, max_cpu_wait_ns=0,
            resolved=int(self.S[S_RESOLVED]) if self.dynamic else self.next,
            pod_node=self.pod_node)
