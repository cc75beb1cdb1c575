"""The data plane's event handlers: an attempt's arrival, its NAT step, its confirm, and the ticks.

Each handler is the compiled twin of the reference engine's step of the same name
(:class:`lbsim.reference.engine.ReferenceEngine`), and is inlined into the loop (lbsim.compiled.loop)
by numba, so that it costs no call and no argument passing: the arrays travel in the
:mod:`lbsim.compiled.layout` named tuples ``P`` (parameters), ``I`` (inputs), ``O`` (records) and
``X`` (state).
"""

from __future__ import annotations

import math

import numpy as np

from ..kernel import (QUEUE, C_DROP, C_EARLY_DROP, C_ENTRIES_INSERTED, C_FOUND,
                      C_GC_EARLY_DROP, C_INSERT_FAILED, F_NAT_CLASH, F_SNAT,
                      F_TCP, F_UNREPLIED, FAILED, INSERT_RACE, NAT, NAT_CLASH_TIMEOUT, NEVER,
                      NO_CLIENT_PORT, NO_ENDPOINTS, NO_LOCAL_ENDPOINT, NO_TARGET, NS, OK, POD_GONE,
                      PORT_EXHAUSTION, REFUSED, TABLE_FULL, TCP_CLOSE_TIMEOUT,
                      TCP_SYN_SENT_TIMEOUT, TUPLE_IN_USE)
from ..rng import bits_nb as bits, mix64_nb as mix64, uniform_nb as uniform
from ..sampling import PT_FIXED, duration_ns
from ..tuples import CLIENT_BASE, NODE_IP_BASE
from .calendar import count_expired, nd
from .events import push
from .index import orig_key, reply_key, reply_key_nosnat
from .layout import (FLAGS, K_CPU_TIME, K_CT_SALT, K_ENDPOINT, K_ISN, K_JITTER, K_LB_SALT,
                     K_RSS, N_EXPD,
                     NODE, PA_ARRIVE,
                     PA_EXH, PA_FOLLOW, PA_ISN, PA_NODE, PA_ORIG, PA_POD, PA_PORT, PA_REPLY,
                     PA_TCONF, PA_TNAT, P_EXPD, P_HELD, POD, REPLY, S_MAX_WAIT, S_NDROP,
                     S_NGAUGE, S_NEXT_TICK, S_NSNAT, S_PAIR_BASE, S_PFREE, S_PSIZE, S_END, S_RESOLVED, S_SAMPLE_NEXT, S_SIZE, S_TARGETS,
                     T_CLOSE,
                     T_EXPIRE, hot, inline)
from .nat import select_port
from .table import early_drop, extend, gc_pass, insert, live_eid, release, sort_pairs, take

__all__ = ["on_arrive", "on_queue", "on_direct", "on_nat", "on_snat", "on_confirm", "tick", "endpoint", "lb_choice",
           "refuse", "gives_up", "no_client_port"]

_U = np.uint64


@inline
def no_client_port(S, cause_count, outcome, cause_rec, attempts_rec, pod, nat_port, connect,
                   response, pod_wait, src_ip, i, t_start):
    """The client's connect() found no free port (EADDRNOTAVAIL: lbsim.client_ports): the flow
    (row ``i``) fails at its start ``t_start`` with nothing sent (``ReferenceEngine.no_port``).
    Every record is written: the steady direct path's arrays are not filled beforehand."""
    cause_count[NO_CLIENT_PORT] += 1
    cause_rec[i] = NO_CLIENT_PORT
    outcome[i] = FAILED
    attempts_rec[i] = 0
    pod[i], nat_port[i], connect[i], response[i], pod_wait[i], src_ip[i] = -1, -1, -1, -1, -1, 0
    S[S_RESOLVED] += 1
    S[S_END] = t_start


@hot
def fail(S, P, gaps, D, cause_count, outcome, cause_rec, attempts_rec, flow, attempt, arrive,
         t_fail, cause, node):
    """Record a dropped attempt (``ReferenceEngine.fail``); returns the next attempt's arrival,
    or -1."""
    cause_count[cause] += 1
    if P.full_records:
        i = S[S_NDROP]
        D[i, 0], D[i, 1], D[i, 2], D[i, 3], D[i, 4] = t_fail, flow, attempt, node, cause
        S[S_NDROP] += 1
    i = flow & P.flow_mask               # the flow's row of the per-flow records
    cause_rec[i] = cause
    if attempt < P.retries:
        return max(arrive + gaps[attempt], t_fail + P.gap_min)
    outcome[i] = FAILED
    attempts_rec[i] = attempt + 1
    S[S_RESOLVED] += 1
    S[S_END] = gives_up(t_fail, arrive, P.d_in, gaps[attempt])
    return -1


@inline
def gives_up(t_fail, arrive, d_in, gap):
    """When a client whose last attempt (reaching its backend at ``arrive``, ``d_in`` after it
    left) was dropped at ``t_fail`` gives up: when that attempt's timer (``gap``) runs out, and
    not before the drop is seen (``ReferenceEngine.fail``)."""
    return max(t_fail, arrive - d_in + gap)


@hot
def refuse(S, full, D, cause_count, outcome, cause_rec, attempts_rec, flow, attempt, t, cause,
           node, mask, back):
    """An attempt answered with a refusal (an RST, an ICMP port unreachable): the flow fails at
    once, nothing is retransmitted (``ReferenceEngine.refuse``). Returns -1. ``mask``: the
    per-flow records' row of flow f is ``f & mask``; ``back``: the refusal's way back to the
    client, ns."""
    cause_count[cause] += 1
    if full:
        i = S[S_NDROP]
        D[i, 0], D[i, 1], D[i, 2], D[i, 3], D[i, 4] = t, flow, attempt, node, cause
        S[S_NDROP] += 1
    i = flow & mask
    cause_rec[i] = cause
    outcome[i] = FAILED
    attempts_rec[i] = attempt + 1
    S[S_RESOLVED] += 1
    S[S_END] = t + back
    return -1


@inline
def lb_choice(S, rr_algo, salt, seg_t, seg_off, seg_ids, rr, instance, client, f, tl):
    """The LB's target for the flow in row ``f`` of the per-flow arrays reaching it at ``tl``
    (``ReferenceEngine._lb_choice``):
    among the set in force then, by round robin per instance or a hash of the client's address;
    -1: none. Attempts come in time order, so the set in force only moves forward."""
    g = S[S_TARGETS]
    while g + 1 < seg_t.size and seg_t[g + 1] <= tl:
        g += 1
    S[S_TARGETS] = g
    n = seg_off[g + 1] - seg_off[g]
    if n == 0:
        return -1
    if rr_algo:
        i = rr[instance[f]] % n
        rr[instance[f]] += 1
    else:
        i = np.int64(mix64(_U(client[f]) ^ _U(salt)) % _U(n))
    return seg_ids[seg_off[g] + i]


@hot
def serve(worker_free, pod, q, service):
    """FIFO with ``workers`` servers (``ReferenceEngine.serve``)."""
    w = 0
    for j in range(1, worker_free.shape[1]):
        if worker_free[pod, j] < worker_free[pod, w]:
            w = j
    finish = max(q, worker_free[pod, w]) + service
    worker_free[pod, w] = finish
    return finish


@inline
def endpoint(P, ep_group, ep_ptr, ep_list, cdf, flow_pod, node, u, flow):
    """kube-proxy's pod for an attempt on ``node`` (``ReferenceEngine.endpoint``), -1: none."""
    if not P.per_attempt:
        return flow_pod[flow & P.flow_mask]
    g = ep_group[node]
    a, b = ep_ptr[g], ep_ptr[g + 1]
    n = b - a
    if n == 0:
        return -1
    if P.nftables:
        return ep_list[a + ((np.int64(u * 4294967296.0) * n) >> 32)]
    # bisect_right(cdf, u), at most n - 1: the first i with u < cdf[i]. The cascade's CDF is
    # uniform up to the rules' fixed-point rounding, so the search starts at u * n and walks
    # (a step or two; a bisection costs ~log2(n) mispredicted branches, per flow)
    i = min(np.int64(u * n), n - 1)
    while i > 0 and u < cdf[a + i - 1]:
        i -= 1
    while i < n and cdf[a + i] <= u:
        i += 1
    return ep_list[a + min(i, n - 1)]


@inline
def _record_ok(P, O, f, k, pod, port, conn, resp, src, wait):
    i = f & P.flow_mask
    O.pod_wait[i] = wait
    O.outcome[i] = OK
    O.attempts[i] = k + 1
    O.pod[i] = pod
    O.nat_port[i] = port
    O.connect[i] = conn
    O.response[i] = resp
    O.src_ip[i] = src


@inline
def on_direct(P, I, O, X, f, t):
    """The direct path (``ReferenceEngine.serve_direct``): the LB's pod serves the request."""
    pod = I.backend[f & P.flow_mask]
    d_in = P.d_in
    q = t + 2 * d_in if P.tcp else t
    finish = serve(X.worker_free, pod, q, I.service[f & P.flow_mask])
    _record_ok(P, O, f, 0, pod, -1, t + d_in - I.t0[f & P.flow_mask] if P.tcp else -1,
               finish + d_in - I.t0[f & P.flow_mask], CLIENT_BASE + I.client[f & P.flow_mask], finish - I.service[f & P.flow_mask] - q)
    X.S[S_RESOLVED] += 1
    X.S[S_END] = finish + d_in + I.hold[f & P.flow_mask]


@inline
def on_arrive(P, I, O, X, f, k, t):
    """An attempt reaches its node (``ReferenceEngine.arrive``): it waits for its CPU. With
    events the LB chooses the flow's node when its first attempt reaches it (no target: the
    attempt is lost, the return is the retransmission's arrival or -1); else returns -2."""
    if P.dynamic and I.backend[f & P.flow_mask] < 0:
        # X.node is I.backend's very array in such a run (the workload's may be read only);
        # the queries of a socket share a tuple, so the LB keeps them on its first choice
        n = X.sock_node[I.socket[f & P.flow_mask]] if I.socket.size else -1
        if n < 0:
            n = lb_choice(X.S, P.rr_algo, I.K[K_LB_SALT], X.seg_t, X.seg_off, X.seg_ids, X.rr,
                          I.instance, I.client, f & P.flow_mask, t - P.lb2b)
            if I.socket.size:
                X.sock_node[I.socket[f & P.flow_mask]] = n
        X.node[f & P.flow_mask] = n
        if n < 0:
            return _fail(P, I, O, X, f, k, t, t, NO_TARGET, -1)
    slot = take(X.pfree, X.S, S_PFREE, S_PSIZE)
    X.PD[slot, PA_ARRIVE] = t
    if P.jittered:                       # it reaches its CPU a little later
        push(X.H, X.S, t + duration_ns(P.jitter_kind, I.pt[2], I.pt[3],
                                       uniform(I.K[K_JITTER], f, k, 0),
                                       uniform(I.K[K_JITTER], f, k, 1)), QUEUE, f, k, slot)
    else:
        on_queue(P, I, O, X, f, k, t, slot)
    return -2


@inline
def on_queue(P, I, O, X, f, k, t, slot):
    """The attempt in pending slot ``slot`` reaches its CPU at ``t`` (``ReferenceEngine.queue``):
    processed from when the CPU is free, its NAT at the start and its confirm at the end."""
    if P.packet_kind == PT_FIXED:
        pkt = duration_ns(PT_FIXED, I.pt[0], 0.0, 0.0, 0.0)
    else:
        pkt = duration_ns(P.packet_kind, I.pt[0], I.pt[1], uniform(I.K[K_CPU_TIME], f, k, 0),
                          uniform(I.K[K_CPU_TIME], f, k, 1))
    node = I.backend[f & P.flow_mask]
    if P.pinned:                         # a pair's i-th flow on its node's CPU i
        c = node * P.cpus + I.lane[f & P.flow_mask] % P.cpus
    elif P.pod_clients:                  # the sending thread's CPU, per packet
        c = node * P.cpus + np.int64(math.floor(uniform(I.K[K_RSS], f, k, 0) * P.cpus))
    else:                                # an RSS hash of the tuple
        orig = orig_key(node, I.client[f & P.flow_mask], I.sport[f & P.flow_mask])
        c = node * P.cpus + np.int64(mix64(_U(orig) ^ I.K[K_RSS]) % _U(P.cpus))
    S = X.S
    t_nat = max(t, X.cpu_free[c])
    S[S_MAX_WAIT] = max(S[S_MAX_WAIT], t_nat - t)
    t_conf = t_nat + pkt
    X.cpu_free[c] = t_conf
    PD = X.PD
    PD[slot, PA_TNAT], PD[slot, PA_TCONF] = t_nat, t_conf
    push(X.H, S, t_nat, NAT, f, k, slot)


@inline
def _fail(P, I, O, X, f, k, arrive, t, cause, node):
    return fail(X.S, P, I.gaps, X.D, O.cause_count, O.outcome, O.cause, O.attempts, f, k, arrive,
                t, cause, node)


@inline
def _pend(PD, ps, node, pod, port, exhausted, orig, reply, isn, follow):
    PD[ps, PA_NODE], PD[ps, PA_POD], PD[ps, PA_PORT] = node, pod, port
    PD[ps, PA_EXH], PD[ps, PA_ORIG], PD[ps, PA_REPLY] = exhausted, orig, reply
    PD[ps, PA_ISN], PD[ps, PA_FOLLOW] = isn, follow


@inline
def on_nat(P, I, O, X, f, k, t, ps):
    """Conntrack lookup, allocation, DNAT and SNAT at ``t`` (``ReferenceEngine.nat_step``).
    Returns the next attempt's arrival if dropped (-1: none), or -2: the attempt is pending."""
    E, S, count = X.E, X.S, X.count
    arrive = X.PD[ps, PA_ARRIVE]
    node = I.backend[f & P.flow_mask]
    orig = orig_key(node, I.client[f & P.flow_mask], I.sport[f & P.flow_mask])
    isn = np.int64(bits(I.K[K_ISN], f, k, 0) >> _U(32))
    e = live_eid(E, X.HD, S, X.free, X.IX, count, orig, t)
    if e >= 0 and (not P.tcp or (E[e][FLAGS] & F_UNREPLIED) != 0):
        # a UDP packet of a tracked flow, or a SYN into its unanswered entry: no new entry
        _pend(X.PD, ps, node, E[e][POD], E[e][REPLY] & 0xFFFF, 0, orig, E[e][REPLY], isn, 1)
        return -2
    if e >= 0:
        if t < E[e][T_CLOSE]:
            return _fail(P, I, O, X, f, k, arrive, t, TUPLE_IN_USE, node)
        release(E, X.HD, S, X.free, X.IX, count, e)  # a SYN reopens a TIME_WAIT/CLOSE tuple
    if count[node] + X.unconfirmed[node] + 1 > P.ct_max:
        killed = early_drop(E, X.HD, S, X.free, X.IX, count, I.K[K_CT_SALT], P.buckets, X.SK,
                            node, orig, t)
        if killed == 0:
            O.C[C_DROP, node] += 1
            X.gc_flag[node] = True
            return _fail(P, I, O, X, f, k, arrive, t, TABLE_FULL, node)
        O.C[C_EARLY_DROP, node] += killed
    pod = endpoint(P, X.ep_group, X.ep_ptr, X.ep_list, X.cdf, I.flow_pod, node,
                   uniform(I.K[K_ENDPOINT], f, k, 0), f)
    if pod < 0 and X.ep_reject[node]:    # KUBE-EXTERNAL-SERVICES' REJECT: the flow fails
        return refuse(S, P.full_records, X.D, O.cause_count, O.outcome, O.cause, O.attempts, f,
                      k, t, NO_ENDPOINTS, node, P.flow_mask, P.d_in)
    if pod < 0:
        return _fail(P, I, O, X, f, k, arrive, t, NO_LOCAL_ENDPOINT, node)
    sp = I.sport[f & P.flow_mask]
    X.unconfirmed[node] += 1
    _pend(X.PD, ps, node, pod, sp, 0, orig, reply_key_nosnat(pod, I.client[f & P.flow_mask], sp),
          isn, 0)
    if P.snat and P.snat_offset > 0:     # MASQUERADE at POSTROUTING, later
        return -3
    if P.snat:
        on_snat(P, I, O, X, f, k, t, ps)
    return -2


@inline
def on_snat(P, I, O, X, f, k, t, ps):
    """MASQUERADE of the attempt in pending slot ``ps`` at ``t`` (``ReferenceEngine.snat_step``):
    its source port, against the entries confirmed by then."""
    PD = X.PD
    node, pod = PD[ps, PA_NODE], PD[ps, PA_POD]
    port, exhausted, found = select_port(X.E, X.HD, X.S, X.free, X.IX, X.count, I.K, P, X.rover,
                                         t, node, pod, I.sport[f & P.flow_mask], f, k,
                                         PD[ps, PA_ISN])
    O.C[C_FOUND, node] += found
    PD[ps, PA_PORT], PD[ps, PA_EXH], PD[ps, PA_REPLY] = port, np.int64(exhausted), \
        reply_key(node, pod, port)


@inline
def on_confirm(P, I, O, X, f, k, ps):
    """``__nf_conntrack_confirm`` (``ReferenceEngine.confirm_step``); on success the pod serves
    the request. Returns the next attempt's arrival if dropped, else -1."""
    E, S, PD, count = X.E, X.S, X.PD, X.count
    t = PD[ps, PA_TCONF]
    node, orig, reply = PD[ps, PA_NODE], PD[ps, PA_ORIG], PD[ps, PA_REPLY]
    adopt, clash = -2, False     # -2: dropped, -1: a new entry, >= 0: the entry followed
    if PD[ps, PA_FOLLOW]:
        adopt = live_eid(E, X.HD, S, X.free, X.IX, count, orig, t)
        if adopt < 0:
            adopt = -2
            X.unconfirmed[node] += 1     # the entry vanished meanwhile: confirm anew
    if adopt == -2:
        X.unconfirmed[node] -= 1
        e_orig = live_eid(E, X.HD, S, X.free, X.IX, count, orig, t)
        e_reply = live_eid(E, X.HD, S, X.free, X.IX, count, reply, t)
        if e_orig < 0 and e_reply < 0:
            adopt = -1
        elif not P.tcp and e_orig >= 0:  # nf_ct_resolve_clash: UDP allows clashes
            if P.clash_identical and E[e_orig][REPLY] == reply:
                adopt = e_orig
                if P.merged_counter >= 0:
                    O.C[P.merged_counter, node] += 1
            elif P.nat_clash and e_reply < 0:
                adopt, clash = -1, True
                if P.nat_clash_counter >= 0:
                    O.C[P.nat_clash_counter, node] += 1
    if adopt == -2:
        O.C[C_INSERT_FAILED, node] += 1
        O.C[C_DROP, node] += 1
        return _fail(P, I, O, X, f, k, PD[ps, PA_ARRIVE], t,
                     PORT_EXHAUSTION if PD[ps, PA_EXH] else INSERT_RACE, node)
    return _serve_nodeport(P, I, O, X, f, k, ps, t, adopt, clash)


@inline
def _serve_nodeport(P, I, O, X, f, k, ps, t, adopt, clash):
    """``ReferenceEngine._serve_nodeport``: the pod serves the request; the entry's timeline is
    fixed, and it is inserted (or the followed one's timeout raised). With events a pod that
    does not accept when the attempt reaches it refuses or loses it (:func:`_lost_at_pod`).
    Returns the next attempt's arrival, or -1."""
    PD = X.PD
    node, pod, port = PD[ps, PA_NODE], PD[ps, PA_POD], PD[ps, PA_PORT]
    hop = 0 if I.pod_node[pod] == node else P.d_hop
    if P.dynamic:
        ta = t + hop
        if not (X.listen[pod] <= ta and ta < X.sigterm[pod] and ta < X.gone[pod]):
            return _lost_at_pod(P, I, O, X, f, k, ps, t, adopt, clash, ta, hop)
    d_in = P.d_in
    q = t + 3 * hop + 2 * d_in if P.tcp else t + hop
    finish = serve(X.worker_free, pod, q, I.service[f & P.flow_mask])
    resp = finish + hop + d_in
    if P.tcp:
        synack = t + 2 * hop + d_in
        t_assured = synack + d_in
        t_close = resp + I.hold[f & P.flow_mask] + d_in
        t_expire = t_close + P.time_wait
        conn = synack - I.t0[f & P.flow_mask]
    else:
        t_rep = finish + hop
        t_close = t_rep + I.hold[f & P.flow_mask]
        stream = I.hold[f & P.flow_mask] > 0 and t_close - t > P.udp_stream_after
        if I.hold[f & P.flow_mask] > 0 and P.udp_assured_before_stream:
            t_assured = t_rep
        else:
            t_assured = max(t_rep, t + P.udp_stream_after) if stream else NEVER
        t_expire = t_close + (P.udp_stream if stream else P.udp)
        conn = -1
    _record_ok(P, O, f, k, pod, port if P.snat else -1, conn, resp - I.t0[f & P.flow_mask],
               NODE_IP_BASE + node if P.snat else CLIENT_BASE + I.client[f & P.flow_mask],
               finish - I.service[f & P.flow_mask] - q)
    X.S[S_RESOLVED] += 1
    X.S[S_END] = resp + I.hold[f & P.flow_mask]   # the client has its answer, holds, closes
    if P.dynamic:        # the client's FIN (or last datagram) reaches the pod a hop later
        X.closes[pod] = max(X.closes[pod], t_close + hop)
    _track(P, I, O, X, ps, t, adopt, clash, t_assured, t_close, t_expire, 0,
           NEVER if P.tcp else finish + hop)
    return -1


@inline
def _lost_at_pod(P, I, O, X, f, k, ps, t, adopt, clash, ta, hop):
    """``ReferenceEngine._lost_at_pod``: gone (lost; TCP's entry stays SYN_SENT) or refusing
    (TCP: an RST, the entry CLOSE; UDP: ICMP port unreachable)."""
    PD = X.PD
    pod, node = PD[ps, PA_POD], PD[ps, PA_NODE]
    gone = X.gone[pod] <= ta
    flags = 0
    if not P.tcp:
        t_close, t_expire = t, t + P.udp
    elif gone:
        t_close = t + TCP_SYN_SENT_TIMEOUT
        t_expire = t_close
        flags = F_UNREPLIED
    else:
        t_close = ta + hop
        t_expire = t_close + TCP_CLOSE_TIMEOUT
    _track(P, I, O, X, ps, t, adopt, clash, NEVER, t_close, t_expire, flags, NEVER)
    if gone:
        return _fail(P, I, O, X, f, k, PD[ps, PA_ARRIVE], ta, POD_GONE, node)
    return refuse(X.S, P.full_records, X.D, O.cause_count, O.outcome, O.cause, O.attempts, f, k,
                  ta, REFUSED, node, P.flow_mask, hop + P.d_in)


@inline
def _track(P, I, O, X, ps, t, adopt, clash, t_assured, t_close, t_expire, flags, t_reply):
    """``ReferenceEngine._track``: the confirmed attempt's entry inserted, or the followed one's
    timeout raised; ``t_reply``: when the answer passes the node (NEVER: none)."""
    PD = X.PD
    node, pod = PD[ps, PA_NODE], PD[ps, PA_POD]
    if adopt >= 0:
        extend(X.E, X.HD, X.S, adopt, t_expire)
        if (flags & F_UNREPLIED) != 0:   # SYN_SENT renewed: still not closing
            X.E[adopt][T_CLOSE] = max(X.E[adopt][T_CLOSE], t_expire)
        return
    flags |= (F_TCP if P.tcp else 0) | (F_SNAT if P.snat else 0)
    orig = PD[ps, PA_ORIG]
    if clash:                    # IPS_NAT_CLASH | IPS_FIXED_TIMEOUT: reply-only, 1 s
        flags |= F_NAT_CLASH
        t_expire, t_assured = t + NAT_CLASH_TIMEOUT, NEVER
        if P.nat_clash_deleted_on_reply:   # 5.6-5.8: its first reply kills it
            t_expire = min(t_expire, t_reply)
        orig = -1
    O.C[C_ENTRIES_INSERTED, node] += 1
    insert(X.E, X.HD, X.S, X.free, X.IX, X.count, I.K[K_CT_SALT], P.buckets, orig,
           PD[ps, PA_REPLY], node, pod, t_assured, t_close, t_expire, flags,
           (PD[ps, PA_ISN] + 2) & 0xFFFFFFFF)


@hot
def tick(E, HD, S, free, IX, count, P, C, gc_next, gc_flag, G_t, G_count, G_live, G_smax,
         G_spairs, SG, due, W, SK, SE, PC, t):
    """``ReferenceEngine.tick``: the GC passes due at ``t``, then the gauges if due."""
    nodes = P.nodes
    ndue = 0
    nt = NEVER                           # the next GC time of the nodes not due now
    for v in range(nodes):
        if gc_next[v] <= t:
            due[ndue] = v
            ndue += 1
        else:
            nt = min(nt, gc_next[v])
    if ndue:
        gc_pass(E, HD, S, free, IX, count, P.limit95, t, due, ndue, gc_flag, W, SK, SE)
        for i in range(ndue):
            v = due[i]
            C[C_GC_EARLY_DROP, v] += W[0, v]
            gc_flag[v] = False
            gc_next[v] = t + (W[1, v] if P.gc_fixed == 0 else P.gc_fixed)
            nt = min(nt, gc_next[v])
    if S[S_SAMPLE_NEXT] <= t:
        S[S_SAMPLE_NEXT] += NS
        g = S[S_NGAUGE]
        G_t[g] = t
        count_expired(E, HD, S, nodes, t // NS)    # samples fall on whole seconds
        for v in range(nodes):
            G_count[g, v] = count[v]
            G_live[g, v] = count[v] - HD[nd(v) + 1, N_EXPD]
        S[S_NGAUGE] += 1
        if P.snat:
            _sample_snat(E, HD, S, P, SG, SK, SE, PC, G_smax, G_spairs, g, t)
    S[S_NEXT_TICK] = min(nt, S[S_SAMPLE_NEXT])


@hot
def _sample_snat(E, HD, S, P, SG, SK, SE, PC, G_smax, G_spairs, g, t):
    """SNAT ports in use per (node, pod) pair at ``t`` (its SNAT entries not expired): per node
    the busiest pair's and how many hold any (gauge row ``g``), and with full records each pair
    whose count changed since the last sample, appended to ``SG`` in pair order. With the
    pairs' counts kept in HD (lbsim.compiled.calendar: full records, at most SNAT_PAIRS_MAX
    pairs) a pass over the pairs reads them; else full records sort the live SNAT entries'
    pairs and count them, and summary records leave the gauges -1 (not counted: its bookkeeping
    cost perf-nodeport ~17 % of its summary rate), and keep no rows for them."""
    base = S[S_PAIR_BASE]
    pods = P.pods
    j = S[S_NSNAT]
    if base > 0:
        track = PC.size > 1
        for v in range(P.nodes):
            mx = 0
            k = 0
            for q in range(pods):
                pair = v * pods + q
                n = HD[base + pair, P_HELD] - HD[base + pair, P_EXPD]
                if n > 0:
                    k += 1
                    mx = max(mx, n)
                if track and n != PC[pair]:
                    SG[j, 0], SG[j, 1], SG[j, 2] = t, pair, n
                    PC[pair] = n
                    j += 1
            G_smax[g, v], G_spairs[g, v] = mx, k
        S[S_NSNAT] = j
        return
    if not P.full_records:              # summary records keep no SNAT gauge rows (records: -1)
        return
    for v in range(P.nodes):
        G_smax[g, v] = 0
        G_spairs[g, v] = 0
    m = 0
    for e in range(S[S_SIZE]):
        if E[e][T_EXPIRE] > t and (E[e][FLAGS] & F_SNAT) != 0:
            SK[m] = E[e][NODE] * pods + E[e][POD]
            SE[m] = 0
            m += 1
    sort_pairs(SK, SE, m)
    i = 0
    while i < m:
        k = i + 1
        while k < m and SK[k] == SK[i]:
            k += 1
        v = SK[i] // pods
        G_smax[g, v] = max(G_smax[g, v], k - i)
        G_spairs[g, v] += 1
        i = k

