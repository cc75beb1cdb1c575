"""The cloud load balancer: ECMP over instances, each instance's backend choice, persistence.

Backends are nodes on the NodePort path and pods on the direct path. Every instance keeps its own
state (kernel-facts 6.1: "the CLB status may be overly distributed"); ``maglev`` and
``source_hash`` need none, so all instances agree. Decisions are made once per socket, in arrival
order, and are a pure function of the scenario and its seed.
"""

from __future__ import annotations

import numpy as np

from .balancing import (least_connections, least_connections_queued, maglev_lookup, maglev_table, round_robin, source_hash,
                        weighted_round_robin)
from .config import DataPath, LBAlgorithm, Protocol, Scenario, TrafficPolicy

__all__ = ["LoadBalancer", "steady_targets", "session_starts", "follow_sessions"]


def steady_targets(sc: Scenario, pod_node: np.ndarray) -> np.ndarray:
    """The backends the LB sends to in the steady state (``pod_node``: the first pods' nodes):
    every pod (direct), every node, or under Local with health checks the nodes with a pod."""
    if sc.path is DataPath.DIRECT:
        return np.arange(pod_node.size, dtype=np.int64)
    nodes = np.arange(sc.cluster.nodes, dtype=np.int64)
    if sc.kube_proxy.external_traffic_policy is TrafficPolicy.LOCAL and sc.lb.health_check:
        return nodes[np.bincount(pod_node, minlength=nodes.size) > 0]
    return nodes


class LoadBalancer:
    """The LB's view of the cluster: its backend set and their weights."""

    def __init__(self, sc: Scenario, pod_node: np.ndarray, workers: np.ndarray, salt: int) -> None:
        self.sc, self.cfg, self.salt = sc, sc.lb, int(salt)
        self.pod_node, self.workers = pod_node, workers
        nodeport = sc.path is DataPath.NODEPORT
        n_nodes = sc.cluster.nodes
        pods_on = np.bincount(pod_node, minlength=n_nodes)
        # Local: the health-check node port answers 503 where no local endpoint is ready
        backends = steady_targets(sc, pod_node)
        if nodeport:
            weight = {"equal": np.ones(n_nodes, np.int64), "local_pods": pods_on,
                      "workers": np.bincount(pod_node, weights=workers, minlength=n_nodes)
                      .astype(np.int64)}[self.cfg.weights][backends]
        else:
            weight = workers if self.cfg.weights == "workers" else np.ones(backends.size, np.int64)
        if backends.size == 0 or weight.sum() == 0:
            raise ValueError("the LB has no healthy backend: externalTrafficPolicy Local with no pods")
        self.backends, self.weight = backends, weight.astype(np.int64)
        #: each instance's round-robin picks so far
        self.counter = np.zeros(self.cfg.instances, np.int64)
        self._maglev = None

    @property
    def windowed(self) -> bool:
        """The choices of later sockets depend on earlier ones only through state kept here (so
        sockets may come window by window): not least connections (its heap of open
        connections) nor persistence (each client's session)."""
        return self.cfg.algorithm is not LBAlgorithm.LC and self.cfg.persistence_s <= 0

    def choose(self, instance: np.ndarray, client: np.ndarray, sport: np.ndarray, t: np.ndarray,
               life: np.ndarray | None, service: np.ndarray | None = None,
               hold: np.ndarray | None = None) -> np.ndarray:
        """Backend of each socket (sockets in arrival order), persistence applied. ``life``
        (connection lifetimes, ns) is read by least connections to nodes only, ``service`` and
        ``hold`` (ns) by least connections to pods (which runs their queues); None otherwise.
        Called again with the next sockets it goes on where it stopped (round robin's
        counters) when :attr:`windowed`."""
        p = self.cfg.persistence_s
        if p <= 0:
            return self._choose(instance, client, sport, t, life, service, hold)
        start = session_starts(client, t, int(round(p * 1e9)))
        pick = np.full(t.size, -1, np.int64)
        sub = (lambda a: None if a is None else a[start])
        pick[start] = self._choose(instance[start], client[start], sport[start], t[start],
                                   sub(life), sub(service), sub(hold))
        return follow_sessions(client, start, pick)

    def _choose(self, instance, client, sport, t, life, service=None, hold=None) -> np.ndarray:
        a, b, w = self.cfg.algorithm, self.backends, self.weight
        n, salt = b.size, self.salt
        if a is LBAlgorithm.RR:
            return b[round_robin(instance, n, self.cfg.instances, self.counter)]
        if a is LBAlgorithm.WRR:
            return b[weighted_round_robin(instance, w, self.cfg.instances, self.counter)]
        if a is LBAlgorithm.SOURCE_HASH:
            return b[source_hash(client, n, salt)]
        if a is LBAlgorithm.MAGLEV:
            if self._maglev is None:
                self._maglev = maglev_table(tuple(int(x) for x in b), self.cfg.maglev_table_size,
                                            salt, tuple(int(x) for x in w))
            return b[maglev_lookup(self._maglev, (client << np.int64(16)) | sport, salt)]
        # LC: every instance counts its own open connections per backend: to pods (direct)
        # until each closes, the pods' queues run alongside; to nodes by the connection's
        # handshake, service and hold (the pod kube-proxy picks, and its queue, are unknown here)
        if self.sc.path is DataPath.DIRECT and service is not None:
            return self._lc_pods(instance, t, service, hold)
        return least_connections(instance, t, life, [b] * self.cfg.instances)

    def _lc_pods(self, instance, t, service, hold) -> np.ndarray:
        net, k = self.sc.network, self.cfg.instances
        to_lb = int(round(net.client_to_lb_s * 1e9))
        lb2b = int(round(net.lb_to_backend_s * 1e9))
        b = self.backends
        cand = np.tile(b, k)
        off = np.arange(k + 1, dtype=np.int64) * b.size
        return least_connections_queued(
            np.ascontiguousarray(instance, np.int64), np.ascontiguousarray(t + to_lb, np.int64),
            cand, off, np.full(k, -1, np.int64), np.asarray(self.pod_node, np.int64), lb2b, lb2b,
            to_lb, np.asarray(self.workers, np.int64), np.ascontiguousarray(service, np.int64),
            np.ascontiguousarray(hold, np.int64), self.sc.workload.protocol is Protocol.TCP, 1, 0)


def session_starts(client: np.ndarray, t: np.ndarray, timeout: int) -> np.ndarray:
    """Boolean per socket (arrival order): the client had no socket in the ``timeout`` before, so
    its persistence entry had expired (each socket refreshes it)."""
    order = np.lexsort((np.arange(t.size), client))
    c, tt = client[order], t[order]
    first = np.r_[True, c[1:] != c[:-1]]
    gap = np.r_[0, np.diff(tt)]
    out = np.empty(t.size, bool)
    out[order] = first | (gap > timeout)
    return out


def follow_sessions(client: np.ndarray, start: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Every socket takes the pick of its client's latest session start."""
    order = np.lexsort((np.arange(client.size), client))
    s = start[order]
    idx = np.where(s, np.arange(client.size), 0)
    last = np.maximum.accumulate(idx)
    out = np.empty_like(pick)
    out[order] = pick[order][last]
    return out
