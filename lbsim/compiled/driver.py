"""The compiled NodePort engine's driver: it allocates the run's arrays, runs the loop up to an
instant (growing arrays between events when the loop asks), applies control-plane changes, and
hands out :class:`~lbsim.records.Records`.
"""

from __future__ import annotations

import numpy as np

from ..balancing import iptables_cascade_cdf
from ..kernel import NEVER, NS
from ..lb import steady_targets
from ..budget import SNAT_PAIRS_MAX
from ..records import Records, RecordsBuilder
from ..rng import STREAMS
from ..shared_lists import SharedLists
from ..workload import Workload, own_starts, slot_opens, worker_slots
from .calendar import calendar_heads
from .index import rebuild_index
from .layout import (DONE, PENDING_WIDTH, RING, ROOM, S_HN,
                     S_MAX_WAIT, S_PAIR_BASE, S_PAIR_PODS,
                     S_NDROP, S_NEXT_TICK, S_NGAUGE, S_NSNAT, S_PSIZE, S_RESOLVED, S_SAMPLE_NEXT,
                     S_FLOW_END, S_NSLOT,
                     S_SIZE, S_USED, STATE_SLOTS, T_EXPIRE, Inputs, Outputs, State,
                     engine_params, entry_rows, ROW)
from .loop import advance
from .table import clear_udp
from .targets import TargetSets

__all__ = ["CompiledEngine"]

_CAP = 1024   # first capacity of the growing arrays (rows)


def _endpoint_groups(groups: list[np.ndarray]):
    """(ep_ptr, ep_list, cdf) of endpoint groups: group g lists ep_list[ep_ptr[g]:ep_ptr[g+1]]
    and, for the iptables cascade, its CDF at the same offsets."""
    sizes = np.array([g.size for g in groups], np.int64)
    ptr = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    lst = np.concatenate([np.asarray(g, np.int64) for g in groups] + [np.zeros(0, np.int64)])
    cdf = np.concatenate([iptables_cascade_cdf(int(n)) if n else np.zeros(0) for n in sizes]
                         + [np.zeros(0)]).astype(np.float64)
    return ptr, lst.astype(np.int64), cdf


class CompiledEngine:
    """The NodePort path compiled: the reference engine's every decision, on flat arrays."""

    def __init__(self, w: Workload) -> None:
        w, starts = own_starts(w)            # a closed loop writes each flow's start
        p = w.params
        self.w, self.p, self.P = w, p, engine_params(p)
        self.rec = r = RecordsBuilder(w)
        K = np.zeros(len(STREAMS) + 2, np.uint64)
        K[: len(STREAMS)] = [w.keys[name] for name in STREAMS]
        K[len(STREAMS)] = w.keys["ct_hash"]
        K[len(STREAMS) + 1] = np.uint64(w.lb_salt)
        # with events the LB chooses each flow's node as it arrives: the engine's own array
        backend = np.full(p.flows, -1, np.int64) if p.dynamic else w.backend
        self.I = Inputs(K=K, pt=np.array([p.packet_a, p.packet_b, p.jitter_a, p.jitter_b],
                                         np.float64),
                        gaps=np.array(p.gaps, np.int64), backend=backend, sport=w.sport,
                        client=w.client, service=w.service, hold=w.hold, t0=w.t0,
                        flow_pod=w.flow_pod, instance=w.instance,
                        # the scheduler may bind a later pod elsewhere (set_pod_node)
                        pod_node=w.pod_node.copy() if p.dynamic else w.pod_node,
                        socket=w.socket, lane=w.lane)
        self.O = Outputs(outcome=r.outcome, cause=r.cause, attempts=r.attempts, pod=r.pod,
                         nat_port=r.nat_port, connect=r.connect_ns, response=r.response_ns,
                         pod_wait=r.pod_wait_ns,
                         src_ip=r.src_ip, C=r.counters, cause_count=r.cause_count)
        # nodes listing the same pods share an endpoint group (a Cluster service's: all)
        self.groups = SharedLists([np.asarray(e, np.int64) for e in w.endpoints])
        ep_group = self.groups.group.copy()
        ep_ptr, ep_list, cdf = _endpoint_groups(self.groups.lists)
        first = w.scenario.cluster.pods
        per_pod = p.pods if p.dynamic else 1
        listen = np.full(per_pod, NEVER, np.int64)
        listen[:first] = 0                          # the steady state's pods listen from the start
        self.targets = TargetSets(steady_targets(w.scenario, w.pod_node[:first]))
        S = np.zeros(STATE_SLOTS, np.int64)
        S[S_SAMPLE_NEXT] = NS
        S[S_FLOW_END] = p.flows              # every flow's inputs are loaded (a whole run)
        slots = slot_opens(w.scenario)
        S[S_NSLOT] = slots.size
        # full records count each (node, pod) pair's SNAT entries as they come and go
        pairs = (p.nodes * p.pods if p.full_records and p.snat and p.nodes * p.pods <= SNAT_PAIRS_MAX
                 else 0)
        if pairs:
            S[S_PAIR_BASE], S[S_PAIR_PODS] = p.nodes * (RING + 3), p.pods
        gc_next = np.full(p.nodes, p.gc_first, np.int64)
        S[S_NEXT_TICK] = min(int(gc_next.min()), NS)
        E = entry_rows(_CAP)
        full = _CAP if p.full_records else 1
        snat_rows = 64 if p.full_records else 1
        self.X = State(
            S=S, count=np.zeros(p.nodes, np.int64), unconfirmed=np.zeros(p.nodes, np.int64),
            rover=np.zeros(p.nodes, np.int64), cpu_free=np.zeros(p.nodes * p.cpus, np.int64),
            gc_next=gc_next, gc_flag=np.zeros(p.nodes, np.bool_),
            worker_free=worker_slots(w.workers),
            HD=calendar_heads(p.nodes, pairs), due=np.zeros(p.nodes, np.int64),
            W=np.zeros((2, p.nodes), np.int64), ep_group=ep_group.astype(np.int64),
            # one more than the pairs: a size of 1 means none are tracked
            PC=np.zeros(pairs + 1 if pairs else 1, np.int64),
            ep_ptr=ep_ptr, ep_list=ep_list, cdf=cdf, ep_reject=np.zeros(p.nodes, np.int64),
            listen=listen, sigterm=np.full(per_pod, NEVER, np.int64),
            gone=np.full(per_pod, NEVER, np.int64), closes=np.zeros(per_pod, np.int64),
            seg_t=np.zeros(1, np.int64), seg_off=np.zeros(2, np.int64),
            seg_ids=np.zeros(0, np.int64), rr=np.zeros(w.scenario.lb.instances, np.int64),
            node=backend if p.dynamic else np.zeros(1, np.int64),
            sock_node=np.full(int(w.socket.max()) + 1 if p.dynamic and w.socket.size else 1, -1,
                              np.int64),
            slots=slots if slots.size else np.zeros(1, np.int64),
            starts=starts,
            E=E, IX=np.full(3 * _CAP, -1, np.int64), free=np.zeros(_CAP, ROW),
            SK=np.zeros(_CAP, np.int64), SE=np.zeros(_CAP, ROW),
            H=np.zeros((_CAP, 3), np.int64), PD=np.zeros((_CAP, PENDING_WIDTH), np.int64),
            pfree=np.zeros(_CAP, np.int64), D=np.zeros((full, 5), np.int64),
            # the entry gauges in 4 bytes (a node holds < 2^32 entries): 8 B a node-second,
            # the SNAT gauges only with full records (summary records read them as -1)
            G_t=np.zeros(64, np.int64), G_count=np.zeros((64, p.nodes), np.uint32),
            G_live=np.zeros((64, p.nodes), np.uint32), G_smax=np.zeros((snat_rows, p.nodes), np.int64),
            G_spairs=np.zeros((snat_rows, p.nodes), np.int64), SG=np.zeros((full, 3), np.int64))

    def rebind(self, w: Workload, rec: RecordsBuilder) -> None:
        """A streamed run's ring of per-flow rows grew: read ``w``'s inputs and write ``rec``'s
        records from now on (flow f in row ``f & w.params.flow_mask``)."""
        self.w, self.p, self.P, self.rec = w, w.params, engine_params(w.params), rec
        self.I = self.I._replace(t0=w.t0, client=w.client, sport=w.sport, service=w.service,
                                 hold=w.hold, instance=w.instance, backend=w.backend)
        self.O = self.O._replace(outcome=rec.outcome, cause=rec.cause, attempts=rec.attempts,
                                 pod=rec.pod, nat_port=rec.nat_port, connect=rec.connect_ns,
                                 response=rec.response_ns, pod_wait=rec.pod_wait_ns,
                                 src_ip=rec.src_ip)

    def advance(self, t1: int) -> bool:
        """Process the ticks and events before ``t1``; True once every flow is resolved."""
        code = advance(t1, self.P, self.I, self.O, self.X)
        while code == ROOM:
            if not self._make_room():       # the loop asked for room nothing gives: a bug
                X = self.X
                raise RuntimeError(f"compiled engine: no array can grow for the next event "
                                   f"(state {X.S.tolist()}, E {X.E.shape}, IX {X.IX.shape}, "
                                   f"H {X.H.shape}, PD {X.PD.shape}, G {X.G_t.shape})")
            code = advance(t1, self.P, self.I, self.O, self.X)
        return code == DONE

        self._pack_targets()

    def set_endpoints(self, node: int, pods: np.ndarray, rejects: bool = False) -> None:
        """From now on, ``node``'s kube-proxy lists ``pods`` (per-attempt choices); with none,
        ``rejects``: it rejects (the Service has no endpoint) rather than drops. Nodes listing
        the same pods share a group."""
        X = self.X
        pods = np.asarray(pods, np.int64)
        X.ep_reject[node] = int(bool(rejects) and pods.size == 0)
        if self.groups.set(node, pods):     # a list no node had: the packed lists change
            ep_ptr, ep_list, cdf = _endpoint_groups(self.groups.lists)
            self.X = X._replace(ep_group=self.groups.group.copy(), ep_ptr=ep_ptr,
                                ep_list=ep_list, cdf=cdf)
        else:
            self.X = X._replace(ep_group=self.groups.group.copy())

    def set_targets(self, t: int, nodes: np.ndarray) -> None:
        """From ``t`` on, the LB sends new flows to ``nodes``."""
        self.targets.set(t, nodes, self.p.lb2b, self.X.S)
        self._pack_targets()

    def _pack_targets(self) -> None:
        tg = self.targets
        self.X = self.X._replace(seg_t=tg.seg_t, seg_off=tg.seg_off, seg_ids=tg.seg_ids)

    def clear_udp(self, node: int, pods: np.ndarray) -> None:
        """kube-proxy's conntrack -D: free ``node``'s UDP entries DNATed to ``pods``."""
        X = self.X
        gone = np.zeros(self.p.pods, np.bool_)
        gone[np.asarray(pods, np.int64)] = True
        clear_udp(X.E, X.HD, X.S, X.free, X.IX, X.count, X.SK, node, gone)

    def set_pod(self, pod: int, listen: int, sigterm: int, gone: int,
                removed: int = NEVER) -> None:
        """The pod's server listens from ``listen``, refuses from ``sigterm``, is gone from
        ``gone`` (ns; NEVER: not yet); ``removed`` (the LB's pod target) is the direct path's."""
        X = self.X
        X.listen[pod], X.sigterm[pod], X.gone[pod] = listen, sigterm, gone

    def set_pod_node(self, pod: int, node: int) -> None:
        """The scheduler bound ``pod`` to ``node`` (kube-proxy's hop reads it)."""
        self.I.pod_node[pod] = node

    def last_close(self, pod: int) -> int:
        """When the last connection the pod accepted closes (ns; 0: none)."""
        return int(self.X.closes[pod])

    def _make_room(self) -> bool:
        """Grow whatever the next step might overflow (see lbsim.compiled.loop); False if
        nothing needed to grow."""
        X, p = self.X, self.p
        S = X.S
        new = {}

        def bigger(name, rows, fill=0, grow=(3, 2)):
            old = new.get(name, getattr(X, name))
            if rows > old.shape[0]:
                n0, n1 = old.shape[0], max(rows, old.shape[0] * grow[0] // grow[1])
                if old.flags.owndata and old.flags.c_contiguous:
                    # in place (realloc: a large block is remapped, not copied, so the old and
                    # the new array are never both in memory); nothing else holds a view of it
                    old.resize((n1,) + old.shape[1:], refcheck=False)
                    if fill:
                        old[n0:] = fill
                    new[name] = old
                else:
                    arr = np.full((n1,) + old.shape[1:], fill, old.dtype)
                    arr[:n0] = old
                    new[name] = arr
            return new.get(name, old)

        e_rows = X.E.shape[0]
        # the table's rows (most of a long run's memory) grow by a quarter: growing in place
        # costs no copy, so a smaller step only trims the rows held beyond the peak
        rows = bigger("E", int(S[S_SIZE]) + 1, grow=(5, 4)).shape[0]
        if "E" in new:
            new["E"][T_EXPIRE][e_rows:] = -1   # T_EXPIRE -1: the row holds no entry
        for name in ("free", "SK", "SE"):
            bigger(name, rows, grow=(5, 4))
        bigger("H", int(S[S_HN]) + 2)
        bigger("pfree", bigger("PD", int(S[S_PSIZE]) + 1).shape[0])
        if p.full_records:
            bigger("D", int(S[S_NDROP]) + 1)
            bigger("SG", int(S[S_NSNAT] + 2 * S[S_SIZE]) + 1)   # a sample's change points
        gauges = ("G_t", "G_count", "G_live") + (("G_smax", "G_spairs") if p.full_records else ())
        for name in gauges:
            bigger(name, int(S[S_NGAUGE]) + 1)
        rebuilt = 2 * (int(S[S_USED]) + 2) > X.IX.size   # keys + tombstones > 50 % of slots
        if rebuilt:
            keys = 2 * int(X.count.sum()) + 2
            self.X = X = X._replace(IX=np.zeros(0, np.int64))   # free the old index first
            new["IX"], S[S_USED] = rebuild_index(new.get("E", X.E), S[S_SIZE], 4 * keys + 64)
        self.X = X._replace(**new)
        return rebuilt or bool(new)

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """A streamed run with full records: the drop rows (t, flow, attempt, node, cause) and
        SNAT change points (t, pair, ports) written since the last call, handed out and
        forgotten (their rows are written again from the first)."""
        X, S = self.X, self.X.S
        D, SG = X.D[: int(S[S_NDROP])].copy(), X.SG[: int(S[S_NSNAT])].copy()
        S[S_NDROP] = S[S_NSNAT] = 0
        return D, SG

    def records(self) -> Records:
        X, S = self.X, self.X.S
        n = int(S[S_NGAUGE])
        D = X.D[: int(S[S_NDROP])] if self.p.full_records else np.zeros((0, 5), np.int64)
        SG = X.SG[: int(S[S_NSNAT])] if self.p.full_records else np.zeros((0, 3), np.int64)
        snat = ((X.G_smax[:n].copy(), X.G_spairs[:n].copy()) if self.p.full_records else
                # summary records: -1, not counted (0 where no flow is SNATed: none to count)
                (np.broadcast_to(np.int64(-1 if self.p.snat else 0), (n, self.p.nodes)),) * 2)
        # the finished table's arrays are not needed for the records: free them first, so that
        # the records' int64 copies of the gauges do not add to the run's peak
        self.X = X = X._replace(**{k: np.zeros((0,) + getattr(X, k).shape[1:], getattr(X, k).dtype)
                                   for k in ("E", "IX", "free", "SK", "SE")})
        return self.rec.freeze(
            table_count=X.count.copy(), gauge_t_ns=X.G_t[:n].copy(),
            gauge_entries=X.G_count[:n].astype(np.int64), gauge_live=X.G_live[:n].astype(np.int64),
            gauge_snat=snat,
            drops=tuple(D[:, i].copy() for i in range(5)),
            snat=tuple(SG[:, i].copy() for i in range(3)),
            max_cpu_wait_ns=int(S[S_MAX_WAIT]), resolved=int(S[S_RESOLVED]),
            backend=self.I.backend if self.p.dynamic else None,
            pod_node=self.I.pod_node if self.p.dynamic else None)
