"""The compiled event loop: one window of the data plane, event by event in the reference order.

:func:`advance` processes the events (and the GC and gauge ticks, which come first at an instant)
before ``T1``, exactly as :meth:`lbsim.reference.engine.ReferenceEngine.advance` does, dispatching
each to its handler (lbsim.compiled.handlers, inlined here). Arrays outgrow their capacity only
between events: before an event that might not fit it returns ROOM, the driver grows the arrays,
and the loop resumes where it stopped.
"""

from __future__ import annotations

import numpy as np

from ..kernel import ARRIVE, CONFIRM, NAT, QUEUE, SNAT
from ..rng import bits_nb as bits, uniform_nb as uniform
from .events import order, pop, push, unpack
from .handlers import (endpoint, no_client_port, on_arrive, on_confirm, on_direct, on_nat, on_queue, on_snat,
                       tick)
from .index import orig_key, prefetch_slot, reply_key
from .intrinsics import prefetch
from .layout import (AHEAD, DONE, K_ENDPOINT, K_NAT, PA_TCONF, PA_TNAT, PAUSE, ROOM,
                     S_FLOW_END, S_HN,
                     S_END, S_NDROP, S_NEXT_NEW, S_NSLOT, S_RESOLVED,
                     S_NEXT_TICK, S_NGAUGE, S_NSNAT, S_PFREE, S_PSIZE, S_SIZE, S_USED, hot,
                     inline)
from .nat import port_range
from .slots import slot_pop, slot_push

__all__ = ["advance"]

_U = np.uint64


@inline
def _no_room(P, X):
    """True when the next event might overflow an array (the driver then grows them)."""
    S = X.S
    return (S[S_SIZE] + 1 > X.E.shape[0] or 2 * (S[S_USED] + 2) > X.IX.size
            or S[S_HN] + 1 >= X.H.shape[0] or S[S_PSIZE] + 1 > X.PD.shape[0]
            or (P.full_records and S[S_NDROP] + 1 > X.D.shape[0]))


@inline
def _prefetch_ahead(P, I, X, g):
    """Prefetch the index slots flow ``g``'s first attempt will probe: its ORIGINAL tuple and,
    under random-fully SNAT, the first port select_port tries (and its pod's workers)."""
    i = g & P.flow_mask
    gnode, gsp = I.backend[i], I.sport[i]
    prefetch_slot(X.IX, orig_key(gnode, I.client[i], gsp), False)
    if P.snat and P.random_all and not P.rover_search:
        gpod = endpoint(P, X.ep_group, X.ep_ptr, X.ep_list, X.cdf, I.flow_pod, gnode,
                        uniform(I.K[K_ENDPOINT], g, 0, 0), g)
        if gpod >= 0:
            prefetch(X.worker_free, (gpod, 0))   # its pod's workers, served soon
            mn, size = port_range(P, gsp)
            port = mn + np.int64(bits(I.K[K_NAT], g, 0, 0) >> _U(48)) % size
            prefetch_slot(X.IX, reply_key(gnode, gpod, port), False)


@hot
def advance(T1, P, I, O, X):
    """Process events (and ticks) before ``T1``; returns DONE, PAUSE (reached ``T1``) or ROOM
    (an array must grow before the next step).

    New flows are read up to ``S[S_FLOW_END]`` (every flow, or in a streamed run those whose
    inputs are loaded: flow f's in row ``f & P.flow_mask``); the driver then never asks for a
    ``T1`` past the first unloaded flow's arrival, so no event is taken before it."""
    S, H, t0 = X.S, X.H, I.t0
    mask = P.flow_mask
    while True:
        nn = S[S_NEXT_NEW]
        hn = S[S_HN]
        if nn >= P.flows and hn == 0:
            return DONE
        F = S[S_FLOW_END]
        # the next new flow: at its drawn start, or with a closed loop when a slot frees
        new = nn < F and (not P.closed_loop or S[S_NSLOT] > 0)
        from_heap = hn > 0
        ta = T1
        if new:
            ta = (X.slots[0] if P.closed_loop else t0[nn & mask]) + P.d_in
            if from_heap:
                from_heap = H[0, 0] < ta or (H[0, 0] == ta and H[0, 1] < order(ARRIVE, nn, 0))
        if from_heap:
            t, o, ps = H[0, 0], H[0, 1], H[0, 2]
            kind, f, k = unpack(o)
        elif new:
            t, kind, f, k, ps = ta, ARRIVE, nn, 0, -1
        else:                            # nothing loaded before T1: only the ticks until then
            t, kind, f, k, ps = T1, ARRIVE, nn, 0, -1
        nt = S[S_NEXT_TICK]
        if nt <= t:
            if nt >= T1:
                return PAUSE
            if S[S_NGAUGE] >= X.G_t.size or (P.full_records
                                              and S[S_NSNAT] + 2 * S[S_SIZE] > X.SG.shape[0]):
                return ROOM
            tick(X.E, X.HD, S, X.free, X.IX, X.count, P, O.C, X.gc_next, X.gc_flag, X.G_t,
                 X.G_count, X.G_live, X.G_smax, X.G_spairs, X.SG, X.due, X.W, X.SK, X.SE, X.PC,
                 nt)
            continue
        if t >= T1:
            return PAUSE
        if _no_room(P, X):
            return ROOM
        if from_heap:
            pop(H, S)
        else:
            S[S_NEXT_NEW] = nn + 1
            if P.closed_loop:            # the flow takes its slot: now its start is known
                X.starts[nn & mask] = slot_pop(X.slots, S)   # I.t0 is a view of it
            if P.nodeport and not P.dynamic and nn + AHEAD < F:
                _prefetch_ahead(P, I, X, nn + AHEAD)
        resolved = S[S_RESOLVED]
        _dispatch(P, I, O, X, kind, f, k, t, ps)
        if P.closed_loop and S[S_RESOLVED] > resolved:   # its slot frees when the client is done
            slot_push(X.slots, S, S[S_END] + P.think)


@inline
def _dispatch(P, I, O, X, kind, f, k, t, ps):
    """Hand event ``kind`` of attempt ``k`` of flow ``f`` at ``t`` to its handler (each resolves
    at most that one flow)."""
    S, H = X.S, X.H
    if kind == ARRIVE:
        if k == 0 and I.sport[f & P.flow_mask] < 0:     # the client had no port: nothing sent
            no_client_port(S, O.cause_count, O.outcome, O.cause, O.attempts, O.pod, O.nat_port,
                           O.connect, O.response, O.pod_wait, O.src_ip, f & P.flow_mask,
                           t - P.d_in)
            return
        if P.nodeport:
            nxt = on_arrive(P, I, O, X, f, k, t)
            if nxt >= 0:                 # no target: the client retransmits
                push(H, S, nxt, ARRIVE, f, k + 1, -1)
        else:
            on_direct(P, I, O, X, f, t)
        return
    if kind == QUEUE:
        on_queue(P, I, O, X, f, k, t, ps)
        return
    if kind == SNAT:
        on_snat(P, I, O, X, f, k, t, ps)
        push(H, S, X.PD[ps, PA_TCONF], CONFIRM, f, k, ps)
        return
    if kind == NAT:
        nxt = on_nat(P, I, O, X, f, k, t, ps)
        if nxt == -2:                    # pending: its confirm comes at the end of processing
            push(H, S, X.PD[ps, PA_TCONF], CONFIRM, f, k, ps)
            return
        if nxt == -3:                    # pending, its SNAT at POSTROUTING still to come
            push(H, S, min(X.PD[ps, PA_TNAT] + P.snat_offset, X.PD[ps, PA_TCONF]), SNAT, f, k,
                 ps)
            return
    else:
        nxt = on_confirm(P, I, O, X, f, k, ps)
    X.pfree[S[S_PFREE]] = ps             # the attempt is over: free its pending slot
    S[S_PFREE] += 1
    if nxt >= 0:
        push(H, S, nxt, ARRIVE, f, k + 1, -1)
