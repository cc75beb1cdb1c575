"""The Service's endpoints as each node's kube-proxy sees them, over time (the NodePort path).

An EndpointSlice lists every pod with its conditions (KEP-1672): *ready* (Ready and not
terminating), *serving* (its readiness, terminating or not) and *terminating*. A change reaches
node v's kube-proxy ``endpoints.propagation_s`` later (drawn per node and change; a watch
delivers in order), and kube-proxy syncs its rules at most once per ``min_sync_period_s``
(pkg/util/async BoundedFrequencyRunner: a sync asked for sooner waits for the period, and syncs
never overlap); a sync's rules are in force ``sync_s`` after it starts, built from the slice as
the node had it when the sync started.

Which endpoints a node's rules list (pkg/proxy/topology.go CategorizeEndpoints): the ready ones,
or if there are none and ``terminating_fallback`` (KEP-1669, kube-proxy 1.26+) the serving
terminating ones; under ``externalTrafficPolicy: Local`` the same among the node's own pods.
With no endpoint at all the rules REJECT (pkg/proxy/iptables/proxier.go: "has no endpoints",
ICMP port unreachable); under Local a node with none of its own DROPs ("has no local
endpoints") while other nodes have some. The health-check node port
(pkg/proxy/healthcheck/service_health.go) answers 200 while the node has a local *ready*
endpoint: a node whose only pods are terminating fails it (endpointschangetracker.go,
getLocalReadyEndpointIPs), and the LB's check finds out at its next checks.

After a sync that drops endpoints from a node's rules, kube-proxy deletes the node's UDP
conntrack entries DNATed to them (pkg/proxy/conntrack: ``conntrack -D -p udp --dst-nat <pod>``
in effect); until then, and for ever with ``udp_conntrack_cleanup = false``, a client that keeps
sending on its tuple follows its entry to the removed pod, each packet renewing the entry.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import simpy

from ..config import Protocol, Scenario, TrafficPolicy
from ..durations import Duration, Fixed
from ..rng import Streams
from ..shared_lists import SharedLists
from ..sampling import duration_params, durations_ns
from ..config.dynamics import nodes_ever
from ..workload import ns

__all__ = ["Slice", "KubeProxies"]

#: the control stream's flow numbers for kube-proxy draws: 2^37 + seq * 2^14 + node (pods use
#: flows below 2^20), seq the node's change or sync number (mod 2^22)
_PROXY_FLOWS = 1 << 37
#: the draw numbers: two uniforms per delay
_PROPAGATION, _SYNC = 0, 2


class Slice:
    """The EndpointSlice at one version: the ready pods and the serving terminating ones (sorted
    pod numbers)."""

    __slots__ = ("ready", "serving_terminating")

    def __init__(self, ready: np.ndarray, serving_terminating: np.ndarray) -> None:
        self.ready, self.serving_terminating = ready, serving_terminating


class KubeProxies:
    """Every node's kube-proxy. :meth:`changed` is told each new slice; ``on_program(node, pods,
    rejects, stale)`` is called when a node's rules change (``stale``: the endpoints whose UDP
    conntrack entries the sync deletes), and ``programmed[v]`` / ``hc_ready[v]`` are
    node v's endpoints in force and its local ready endpoints (the health-check node port's
    count) as of its last sync."""

    def __init__(self, env: simpy.Environment, sc: Scenario, pod_node: np.ndarray,
                 first: Slice, on_program: Callable[[int, np.ndarray, bool, np.ndarray], None]
                 ) -> None:
        self.env, self.sc, self.pod_node = env, sc, pod_node
        self.on_program = on_program
        self.udp_cleanup = (sc.workload.protocol is Protocol.UDP
                            and sc.endpoints.udp_conntrack_cleanup)
        self.local = sc.kube_proxy.external_traffic_policy is TrafficPolicy.LOCAL
        self.fallback = sc.endpoints.terminating_fallback
        n = nodes_ever(sc.cluster.nodes, sc.events)
        #: the nodes in the cluster: the first cluster.nodes, then each one as it joins
        self.joined = [v < sc.cluster.nodes for v in range(n)]
        #: a node's rules are in force (its first sync after joining is done)
        self.synced = list(self.joined)
        self.streams = Streams(sc.seed)
        self.slices: dict[int, Slice] = {0: first}
        self.version = 0
        self.delivered = [0] * n                # the newest version each node has
        self.arrival = [0] * n                  # when its newest delivery arrives (in order)
        self.changes = [0] * n                  # changes sent to the node (a draw's number)
        self.syncs = [0] * n
        self.last_start = [-(1 << 62)] * n
        self.busy_until = [0] * n
        self.sync_pending = [False] * n
        #: (t, node, endpoints listed): each change of a node's rules, in order
        self.log: list[tuple[int, int, int]] = []
        self.programmed: list[np.ndarray] = []
        self.rejects: list[bool] = []
        self.hc_ready: list[int] = []
        for v in range(n):
            pods, rejects, ready = self._rules(v, first)
            if not self.joined[v]:   # no kube-proxy yet: no rules, the host's RST (Cluster's
                pods, rejects, ready = np.zeros(0, np.int64), True, 0   # data plane says so)
            self.programmed.append(pods)
            self.rejects.append(rejects)
            self.hc_ready.append(ready)
        #: the nodes' programmed lists, equal ones shared (what the LB's nodes list at once)
        self.lists = SharedLists(self.programmed)

    # -- the slice ----------------------------------------------------------------------------
    def changed(self, s: Slice) -> None:
        """The EndpointSlice is ``s`` from now on: every node will hear of it."""
        self.version += 1
        v_new = self.version
        self.slices[v_new] = s
        now = int(self.env.now)
        lags = self._draws(self.sc.endpoints.propagation_s, _PROPAGATION, self.changes)
        for v, lag in enumerate(lags):
            if self.joined[v]:
                self._send(v, v_new, now + int(lag))
        # no node will read an older version again (a node that joins reads the newest)
        oldest = min(d for d, j in zip(self.delivered, self.joined) if j)
        for k in [k for k in self.slices if k < oldest]:
            del self.slices[k]

    def join(self, v: int) -> None:
        """Node v joins now: its kube-proxy starts, lists the Service and syncs (its first
        list arrives after a propagation delay, as a change would)."""
        self.joined[v] = True
        self.delivered[v] = self.version            # what it will read once its list arrives
        lag = self._draws(self.sc.endpoints.propagation_s, _PROPAGATION, self.changes, node=v)
        self._send(v, self.version, int(self.env.now) + int(lag[0]))

    def _send(self, v: int, version: int, at: int) -> None:
        self.changes[v] += 1
        self.arrival[v] = max(self.arrival[v], at)
        self.env.process(self._deliver(v, version, self.arrival[v]))

    def _deliver(self, v: int, version: int, at: int):
        yield self.env.timeout(at - self.env.now)
        self.delivered[v] = max(self.delivered[v], version)
        self._want_sync(v)

    def idle(self) -> bool:
        """Has every node's kube-proxy put the newest slice in force (nothing to deliver, no
        sync pending or running)?"""
        now = int(self.env.now)
        return all(not j or (d == self.version and a <= now and not p and b <= now)
                   for j, d, a, p, b in zip(self.joined, self.delivered, self.arrival,
                                            self.sync_pending, self.busy_until))

    # -- kube-proxy's syncs -------------------------------------------------------------------
    def _want_sync(self, v: int) -> None:
        if not self.sync_pending[v]:
            self.sync_pending[v] = True
            self.env.process(self._sync(v))

    def _sync(self, v: int):
        env = self.env
        start = max(int(env.now), self.last_start[v] + ns(self.sc.endpoints.min_sync_period_s),
                    self.busy_until[v])
        yield env.timeout(start - env.now)
        self.sync_pending[v] = False
        self.last_start[v] = start
        version = self.delivered[v]
        s = self.slices[version]
        took = int(self._draws(self.sc.endpoints.sync_s, _SYNC, self.syncs, node=v)[0])
        self.syncs[v] += 1
        self.busy_until[v] = start + took
        yield env.timeout(took)
        pods, rejects, ready = self._rules(v, s)
        self.hc_ready[v] = ready
        self.synced[v] = True
        if rejects != self.rejects[v] or not np.array_equal(pods, self.programmed[v]):
            # the UDP entries of endpoints the rules dropped go with them (conntrack -D)
            stale = (np.setdiff1d(self.programmed[v], pods) if self.udp_cleanup
                     else np.zeros(0, np.int64))
            self.programmed[v], self.rejects[v] = pods, rejects
            self.lists.set(v, pods)
            self.log.append((int(env.now), v, int(pods.size)))
            self.on_program(v, pods, rejects, stale)
        if self.delivered[v] > version:          # changes came during the sync: sync again
            self._want_sync(v)

    def _rules(self, v: int, s: Slice) -> tuple[np.ndarray, bool, int]:
        """Node v's endpoints, whether an empty list rejects, and its local ready count."""
        cluster = s.ready if s.ready.size or not self.fallback else s.serving_terminating
        local_ready = s.ready[self.pod_node[s.ready] == v]
        if not self.local:
            return cluster, cluster.size == 0, local_ready.size
        pods = local_ready
        if not pods.size and self.fallback:
            st = s.serving_terminating
            pods = st[self.pod_node[st] == v]
        return pods, cluster.size == 0, local_ready.size

    # -- draws --------------------------------------------------------------------------------
    def _draws(self, d: Duration, what: int, seq: list[int], node: int | None = None):
        """One delay per node (or for ``node`` alone), ns: a pure function of (seed, node, what,
        the node's sequence number)."""
        nodes = np.arange(len(seq), dtype=np.int64) if node is None else np.array([node])
        if isinstance(d, Fixed):
            return np.full(nodes.size, ns(d.value), np.int64)
        seqs = np.asarray(seq, np.int64)[nodes] & ((1 << 22) - 1)
        flow = _PROXY_FLOWS + (seqs << 14) + nodes
        u0 = self.streams.uniform("control", flow, 0, what)
        u1 = self.streams.uniform("control", flow, 0, what + 1)
        return durations_ns(*duration_params(d), u0, u1)
