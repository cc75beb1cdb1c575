"""The default engine: simpy drives time window by window; flows move in numpy batches.

A window ``[T0, T1)`` holds at most ``batch_flows`` new flows, ends at the next GC tick and is never
longer than the shortest retry interval, so an attempt dropped inside it is retried after it. In a
window, the events (NAT decisions, confirms) of attempts that chose the same pod are processed in
time order; different pods cannot affect each other (their tuples differ), so the k-th event of
every pod is processed together, vectorized ("rounds by rank"). Windows where flows *can* affect
each other across pods (a client tuple seen twice on a node, a table near ``nf_conntrack_max``) are
processed event by event with the reference steps of :mod:`lbsim.model`. Either way the per-flow
records equal :func:`lbsim.model.run_reference`'s, which tests/property checks.
"""

from __future__ import annotations

import numpy as np
import simpy

from .conntrack import SNAT, TCP
from .model import ARRIVE, CONFIRM, NAT, NS, Cause, Model, Pending
from .nat import select_ports
from . import tuples

__all__ = ["run_batched"]

_FIELDS = ("flow", "attempt", "arrive", "t_nat", "t_conf", "pkt", "u_ep", "isn", "state", "node",
           "pod", "port", "exhausted", "orig", "reply", "follow")
_AWAIT_NAT, _AWAIT_CONFIRM, _DONE = 0, 1, 2


def run_batched(model: Model, batch_flows: int = 4096) -> Model:
    """Run ``model`` with the batched engine; ``batch_flows`` >= 1 new flows per window."""
    if batch_flows < 1:
        raise ValueError(f"batch_flows = {batch_flows} is invalid: must be >= 1")
    env = simpy.Environment()
    env.process(_Windows(model, batch_flows).run(env))
    env.run()
    return model


class _Windows:
    def __init__(self, model: Model, batch_flows: int) -> None:
        self.m = model
        self.B = batch_flows
        self.first_arrival = model.t0 + model.d_in
        self.next_new = 0
        self.retry = {"flow": np.zeros(0, np.int64), "attempt": np.zeros(0, np.int64),
                      "arrive": np.zeros(0, np.int64)}
        self.pend = {f: np.zeros(0, np.float64 if f == "u_ep" else np.int64) for f in _FIELDS}
        self.pend["offsets"] = np.zeros((0, 5), np.int64)

    # -- the simpy process -----------------------------------------------------------------------
    def run(self, env: simpy.Environment):
        m = self.m
        t0 = 0
        while m.resolved < m.F:
            nxt = self._next_event_time()
            if nxt > t0:                     # idle until the next event, GC pass or sample
                t_next = min(nxt, m.next_tick())
                yield env.timeout(t_next - t0)
                t0 = t_next
            while m.next_tick() <= t0:
                m.tick(m.next_tick())
            if self._next_event_time() > t0:
                continue
            t1 = min(m.next_tick(), t0 + m.gap_min)
            if self.next_new + self.B < m.F:
                t1 = min(t1, int(self.first_arrival[self.next_new + self.B]))
            t1 = max(t1, t0 + 1)
            self._window(t0, t1)
            yield env.timeout(t1 - t0)
            t0 = t1

    def _next_event_time(self) -> int:
        c = [np.iinfo(np.int64).max]
        if self.next_new < self.m.F:
            c.append(int(self.first_arrival[self.next_new]))
        if self.retry["arrive"].size:
            c.append(int(self.retry["arrive"].min()))
        p = self.pend
        if p["flow"].size:
            c.append(int(np.where(p["state"] == _AWAIT_NAT, p["t_nat"], p["t_conf"]).min()))
        return min(c)

    # -- one window ------------------------------------------------------------------------------
    def _window(self, t0: int, t1: int) -> None:
        m = self.m
        j = int(np.searchsorted(self.first_arrival, t1, side="left"))
        flow = np.arange(self.next_new, j, dtype=np.int64)
        attempt = np.zeros(flow.size, np.int64)
        arrive = self.first_arrival[self.next_new:j]
        self.next_new = j
        due = self.retry["arrive"] < t1
        if due.any():
            flow = np.concatenate((flow, self.retry["flow"][due]))
            attempt = np.concatenate((attempt, self.retry["attempt"][due]))
            arrive = np.concatenate((arrive, self.retry["arrive"][due]))
            self.retry = {k: v[~due] for k, v in self.retry.items()}
        if not m.nodeport:
            self._direct(flow, arrive)
            return
        if flow.size:
            self._schedule(flow, attempt, arrive)
        self._events(t1)

    def _direct(self, flow: np.ndarray, arrive: np.ndarray) -> None:
        m = self.m
        pod = m.backend[flow]
        order = np.lexsort((flow, arrive, pod))
        flow, arrive, pod = flow[order], arrive[order], pod[order]
        rank = _rank(pod)
        finish = self._serve_ranked(pod, m.request_arrival(arrive, 0), m.service[flow], rank)
        _, _, _, connect, response = m.timeline(flow, arrive, 0, finish)
        self.m.succeed(flow, np.zeros(flow.size, np.int64), pod, np.full(flow.size, -1), connect,
                      response, tuples.client_ip(m.client[flow]))

    def _schedule(self, flow, attempt, arrive) -> None:
        """CPU FIFO per (node, CPU) in arrival order: t_nat = start, t_conf = end of processing."""
        m = self.m
        inp = m.attempt_inputs(flow, attempt)
        cpu = inp["cpu"]
        order = np.lexsort((attempt, flow, arrive, cpu))
        cpu_o, a, s = cpu[order], arrive[order], inp["pkt"][order]
        end = _lindley(cpu_o, a, s, m.cpu_free)
        t_nat = np.empty_like(end)
        t_conf = np.empty_like(end)
        t_nat[order] = end - s
        t_conf[order] = end
        m.max_cpu_wait = max(m.max_cpu_wait, int((end - s - a).max()))
        last = np.flatnonzero(np.r_[cpu_o[1:] != cpu_o[:-1], True])
        m.cpu_free[cpu_o[last]] = end[last]
        n = flow.size
        new = {"flow": flow, "attempt": attempt, "arrive": arrive, "t_nat": t_nat, "t_conf": t_conf,
               "pkt": inp["pkt"], "u_ep": inp["u_ep"], "isn": inp["isn"],
               "state": np.full(n, _AWAIT_NAT), "node": m.backend[flow], "pod": np.full(n, -1),
               "port": np.full(n, -1), "exhausted": np.zeros(n, np.int64), "orig": m.orig[flow],
               "reply": np.full(n, -1), "follow": np.zeros(n, np.int64), "offsets": inp["offsets"]}
        self.pend = {k: np.concatenate((self.pend[k], new[k].astype(self.pend[k].dtype)))
                     for k in self.pend}

    def _events(self, t1: int) -> None:
        """Process every event before ``t1``: vectorized up to the first event where flows of
        different pods could interact, that event (and its instant) one by one, and so on."""
        while True:
            p = self.pend
            nat = np.flatnonzero((p["state"] == _AWAIT_NAT) & (p["t_nat"] < t1))
            conf = np.flatnonzero((p["state"] != _DONE) & (p["t_conf"] < t1))
            if nat.size == 0 and conf.size == 0:
                break
            if self._few_pods(nat, conf):
                cut = -1                             # rounds by rank would be nearly one event each
            else:
                cut = self._first_interaction(nat, conf, t1)
            if cut is None:
                self._events_vector(nat, conf)
                break
            self._events_vector(nat[p["t_nat"][nat] < cut], conf[p["t_conf"][conf] < cut])
            if cut == -1:                        # the whole window, one event at a time
                cut = t1 - 1
            p = self.pend
            nat = np.flatnonzero((p["state"] == _AWAIT_NAT) & (p["t_nat"] <= cut))
            conf = np.flatnonzero((p["state"] != _DONE) & (p["t_conf"] <= cut))
            self._events_scalar(nat, conf)
        keep = self.pend["state"] != _DONE
        self.pend = {k: v[keep] for k, v in self.pend.items()}

    def _few_pods(self, nat: np.ndarray, conf: np.ndarray) -> bool:
        """True when the events crowd on so few pods that event-by-event is faster than rounds
        (a round costs about as much as 16 events done one by one)."""
        p = self.pend
        n = nat.size + conf.size
        if n < 64:
            return False
        pods = np.concatenate((self.m.endpoint(p["node"][nat], p["u_ep"][nat], p["flow"][nat]),
                               p["pod"][conf]))
        return n < 16 * np.bincount(pods[pods >= 0]).max(initial=1)

    def _first_interaction(self, nat: np.ndarray, conf: np.ndarray, t1: int) -> int | None:
        """Earliest instant at which attempts to different pods could affect each other, -1 for
        "anywhere in the window" (a node near nf_conntrack_max), or None."""
        m, p = self.m, self.pend
        if m.legacy:
            return -1                            # 4.x: the SNAT rover is shared by all pods
        follow = conf[p["follow"][conf] != 0]
        per_node = np.bincount(p["node"][nat], minlength=m.n_nodes) if nat.size else 0
        if np.any(m.table.count + m.unconfirmed + per_node > m.ct_max):
            return -1                            # table full (or early_drop) possible
        cut = None
        ev = np.concatenate((nat, conf))
        held = ev[m.table.lookup(p["orig"][ev]) >= 0]
        if held.size:                            # a client tuple already in a node's table
            cut = int(np.where(p["state"][held] == _AWAIT_NAT, p["t_nat"][held],
                               p["t_conf"][held]).min())
        waiting = np.flatnonzero(p["state"] != _DONE)
        orig = p["orig"][waiting]
        _, inv, cnt = np.unique(orig, return_inverse=True, return_counts=True)
        twice = waiting[cnt[inv] > 1]
        if twice.size:                           # a client tuple twice in flight
            nxt = np.where(p["state"][twice] == _AWAIT_NAT, p["t_nat"][twice], p["t_conf"][twice])
            t = int(nxt.min())
            cut = t if cut is None else min(cut, t)
        if follow.size:                          # a UDP packet following a tracked flow
            t = int(p["t_conf"][follow].min())
            cut = t if cut is None else min(cut, t)
        return cut if cut is None or cut < t1 else None

    # -- event by event (reference steps) -------------------------------------------------------
    def _events_scalar(self, nat: np.ndarray, conf: np.ndarray) -> None:
        m, p = self.m, self.pend
        ev = [(int(p["t_nat"][i]), NAT, int(p["flow"][i]), int(p["attempt"][i]), int(i)) for i in nat]
        ev += [(int(p["t_conf"][i]), CONFIRM, int(p["flow"][i]), int(p["attempt"][i]), int(i))
               for i in conf]
        ev.sort()
        for i in np.flatnonzero(p["state"] == _AWAIT_CONFIRM):
            m.pending[(int(p["flow"][i]), int(p["attempt"][i]))] = self._pending_obj(int(i))
        for t, kind, f, k, i in ev:
            if kind == NAT:
                inp = {"u_ep": p["u_ep"][i], "offsets": p["offsets"][i], "isn": p["isn"][i]}
                nxt = m.nat_step(f, k, int(p["arrive"][i]), t, int(p["t_conf"][i]), inp)
                p["state"][i] = _AWAIT_CONFIRM if (f, k) in m.pending else _DONE
                if nxt is not None:
                    self._add_retries(np.array([f]), np.array([k + 1]), np.array([nxt]))
            elif (f, k) in m.pending:
                nxt = m.confirm_step(m.pending.pop((f, k)))
                p["state"][i] = _DONE
                if nxt is not None:
                    self._add_retries(np.array([f]), np.array([k + 1]), np.array([nxt]))
        where = {(int(f), int(k)): i for i, (f, k) in enumerate(zip(p["flow"], p["attempt"]))}
        for (f, k), po in m.pending.items():          # still waiting for a later confirm
            i = where[(f, k)]
            p["pod"][i], p["port"][i], p["exhausted"][i] = po.pod, po.port, po.exhausted
            p["reply"][i], p["follow"][i] = po.reply, int(po.follow)
        m.pending.clear()

    def _pending_obj(self, i: int) -> Pending:
        p = self.pend
        return Pending(int(p["flow"][i]), int(p["attempt"][i]), int(p["arrive"][i]),
                       int(p["t_conf"][i]), int(p["node"][i]), int(p["pod"][i]), int(p["port"][i]),
                       bool(p["exhausted"][i]), int(p["orig"][i]), int(p["reply"][i]),
                       int(p["isn"][i]), bool(p["follow"][i]))

    def _add_retries(self, flow, attempt, arrive) -> None:
        r = self.retry
        self.retry = {"flow": np.concatenate((r["flow"], flow)),
                      "attempt": np.concatenate((r["attempt"], attempt)),
                      "arrive": np.concatenate((r["arrive"], arrive))}

    # -- vectorized: rounds by rank within each pod ---------------------------------------------
    def _events_vector(self, nat: np.ndarray, conf: np.ndarray) -> None:
        m, p = self.m, self.pend
        if nat.size:
            p["pod"][nat] = m.endpoint(p["node"][nat], p["u_ep"][nat], p["flow"][nat])
            lost = nat[p["pod"][nat] < 0]
            if lost.size:
                self._fail(lost, p["t_nat"][lost], Cause.NO_LOCAL_ENDPOINT)
                nat = nat[p["pod"][nat] >= 0]
                conf = np.setdiff1d(conf, lost)
        idx = np.concatenate((nat, conf))
        kind = np.concatenate((np.full(nat.size, NAT), np.full(conf.size, CONFIRM)))
        time = np.concatenate((p["t_nat"][nat], p["t_conf"][conf]))
        pod = p["pod"][idx]
        order = np.lexsort((p["attempt"][idx], p["flow"][idx], kind, time, pod))
        idx, kind, pod = idx[order], kind[order], pod[order]
        rank = _rank(pod)
        by_rank = np.argsort(rank, kind="stable")
        bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2 if rank.size else 1))
        for r in range(bounds.size - 1):
            sel = by_rank[bounds[r]:bounds[r + 1]]
            k = kind[sel]
            self._nat_vector(idx[sel][k == NAT])
            self._confirm_vector(idx[sel][k == CONFIRM])

    def _nat_vector(self, i: np.ndarray) -> None:
        if i.size == 0:
            return
        m, p = self.m, self.pend
        node, pod = p["node"][i], p["pod"][i]
        sport = m.sport[p["flow"][i]]
        if not m.snat:
            port, exhausted = sport, np.zeros(i.size, bool)
        else:
            port, exhausted, found, _ = select_ports(m.table, p["t_nat"][i], node, pod, sport,
                                                     p["offsets"][i], p["isn"][i], m.rule)
            np.add.at(m.counters["found"], node, found)
        np.add.at(m.unconfirmed, node, 1)
        p["port"][i] = port
        p["exhausted"][i] = exhausted
        p["reply"][i] = m.reply_for(node, pod, port, p["flow"][i])
        p["state"][i] = _AWAIT_CONFIRM

    def _confirm_vector(self, i: np.ndarray) -> None:
        if i.size == 0:
            return
        m, p = self.m, self.pend
        t, node = p["t_conf"][i], p["node"][i]
        np.subtract.at(m.unconfirmed, node, 1)
        eid = m.table.lookup(p["reply"][i])
        held = (eid >= 0) & m.table.alive[np.maximum(eid, 0)]
        live = held & (m.table.t_expire[np.maximum(eid, 0)] > t)
        stale = eid[held & ~live]
        if stale.size:
            m.table.release(stale)
        bad = i[live]
        if bad.size:
            np.add.at(m.counters["insert_failed"], p["node"][bad], 1)
            np.add.at(m.counters["drop"], p["node"][bad], 1)
            ex = p["exhausted"][bad].astype(bool)
            self._fail(bad[ex], p["t_conf"][bad[ex]], Cause.PORT_EXHAUSTION)
            self._fail(bad[~ex], p["t_conf"][bad[~ex]], Cause.INSERT_RACE)
        self._serve_nodeport(i[~live])

    def _serve_nodeport(self, i: np.ndarray) -> None:
        if i.size == 0:
            return
        m, p = self.m, self.pend
        f, t, node, pod = p["flow"][i], p["t_conf"][i], p["node"][i], p["pod"][i]
        hop = m.hop(node, pod)
        finish = self._serve_ranked(pod, m.request_arrival(t, hop), m.service[f], None)
        t_assured, t_close, t_expire, connect, response = m.timeline(f, t, hop, finish)
        src = tuples.node_ip(node) if m.snat else tuples.client_ip(m.client[f])
        port = p["port"][i] if m.snat else np.full(i.size, -1)
        self.m.succeed(f, p["attempt"][i], pod, port, connect, response, src)
        flags = np.uint8((int(TCP) if m.tcp else 0) | (int(SNAT) if m.snat else 0))
        m._insert(p["orig"][i], p["reply"][i], node, pod, f, t, t_assured, t_close, t_expire,
                  np.full(i.size, flags), p["isn"][i])
        p["state"][i] = _DONE

    def _serve_ranked(self, pod, q, service, rank) -> np.ndarray:
        """FIFO service for requests already in per-pod order (``rank`` = position in pod)."""
        m = self.m
        finish = np.empty(pod.size, np.int64)
        if rank is None:                       # pods are distinct
            groups = [np.arange(pod.size)]
        else:
            by = np.argsort(rank, kind="stable")
            cut = np.searchsorted(rank[by], np.arange(rank.max() + 2 if rank.size else 1))
            groups = [by[cut[r]:cut[r + 1]] for r in range(cut.size - 1)]
        for g in groups:
            wf = m.worker_free[pod[g]]
            w = np.argmin(wf, axis=1)
            start = np.maximum(q[g], wf[np.arange(g.size), w])
            finish[g] = start + service[g]
            m.worker_free[pod[g], w] = finish[g]
        return finish

    def _fail(self, i: np.ndarray, t_fail: np.ndarray, cause: int) -> None:
        if i.size == 0:
            return
        m, p = self.m, self.pend
        f, k = p["flow"][i], p["attempt"][i]
        m.cause_count[cause] += i.size
        m.cause[f] = cause
        m.log_drops(t_fail, f, k, p["node"][i], cause)
        last = k >= m.retries
        m.out[f[last]] = 2
        m.attempts[f[last]] = k[last] + 1
        m.resolved += int(last.sum())
        more = ~last
        nxt = np.maximum(p["arrive"][i][more] + m.gaps[k[more]], t_fail[more] + m.gap_min)
        self._add_retries(f[more], k[more] + 1, nxt)
        p["state"][i] = _DONE


def _rank(group: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal (sorted) ``group`` values."""
    n = group.size
    if n == 0:
        return np.zeros(0, np.int64)
    start = np.r_[True, group[1:] != group[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return np.arange(n) - first


def _lindley(group: np.ndarray, a: np.ndarray, s: np.ndarray, free: np.ndarray) -> np.ndarray:
    """End times of single-server FIFO queues (one per ``group`` value, sorted by group then
    arrival), starting with ``free[group]``: ``end_i = max(a_i, end_{i-1}) + s_i``, in closed form
    ``end_i = S_i + max(F, max_{j<=i}(a_j - S_{j-1}))``; exact in integers."""
    n = a.size
    start = np.r_[True, group[1:] != group[:-1]]
    seg = np.cumsum(start) - 1
    cs = np.cumsum(s)
    base = (cs - s)[start][seg]                     # sum of s before each segment
    S = cs - base                                   # inclusive cumsum within segment
    v = a - (S - s)                                 # a_j - S_{j-1}
    lo = a[start][seg]                              # first arrival of the segment
    F = np.maximum(free[group[start]][seg], lo)     # the server's free time, >= first arrival
    v = np.maximum(v, np.where(start, F, v))
    rel = v - lo
    span = int(rel.max() - rel.min()) if n else 0
    if span >= 1 << 42 or seg[-1] >= 1 << 20:
        out = np.empty(n, np.int64)                 # too wide for the offset trick: loop
        prev, g = 0, -1
        for i in range(n):
            if start[i]:
                prev = int(free[group[i]])
            prev = max(int(a[i]), prev) + int(s[i])
            out[i] = prev
        return out
    off = seg.astype(np.int64) << np.int64(43)
    run = np.maximum.accumulate(rel - rel.min() + off) - off + rel.min() + lo
    return S + run
