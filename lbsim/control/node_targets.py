"""The cloud LB's targets on the NodePort path: the nodes, and its health checks of them.

Every node is a registered target from the start. What the LB checks depends on the Service
(docs/config.md "Dynamics"): under ``externalTrafficPolicy: Cluster`` the NodePort or
kube-proxy's port 10256, which answer once the node's kube-proxy has synced its rules and as
long as it runs, so a node stays healthy; under ``Local`` the health-check node port, which
answers while the node's kube-proxy lists a local ready endpoint
(:attr:`lbsim.control.endpoints.KubeProxies.hc_ready`). Checks run every ``cloud.hc_interval_s``
from a phase drawn per node; ``hc_healthy_threshold`` passes in a row make a node healthy,
``hc_unhealthy_threshold`` failures unhealthy. The LB sends new flows to its healthy nodes, or
fails open to every registered node when none is; with ``lb.health_check = false`` it sends to
every registered node.

A node that joins (an add-node event) is registered ``cloud.registration_s`` (the node targets'
value) later: the service controller's node sync and the cloud API (docs/config.md); it starts
unhealthy and is checked like the others from a phase drawn per node. A drained (cordoned) node
stays a target: the service controller selects nodes by label, readiness and deletion taints,
not by schedulability (docs/config.md "Dynamics").
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import simpy

from ..config import Scenario, TrafficPolicy
from ..lb import steady_targets
from ..rng import Streams
from ..config.dynamics import nodes_ever
from ..sampling import delays_ns
from ..workload import ns
from .endpoints import KubeProxies

__all__ = ["NodeTargets"]

#: the control stream's flow numbers for the nodes' health-check phases (2^36 + node)
_NODE_FLOWS = 1 << 36


class NodeTargets:
    """The LB's node targets; ``on_change()`` is called when a node's health changes."""

    def __init__(self, env: simpy.Environment, sc: Scenario, pod_node: np.ndarray,
                 proxies: KubeProxies, on_change: Callable[[], None]) -> None:
        self.env, self.sc, self.proxies, self.on_change = env, sc, proxies, on_change
        n = nodes_ever(sc.cluster.nodes, sc.events)
        #: the registered nodes (the LB's targets)
        self.nodes = tuple(range(sc.cluster.nodes))
        self.healthy = {int(v) for v in steady_targets(sc, pod_node[:sc.cluster.pods])}
        self.streams = Streams(sc.seed)
        self._phase = self.streams.uniform("control", _NODE_FLOWS + np.arange(n), 0, 0)
        #: (t, node, "healthy" | "unhealthy"): each change of a node's health, in order
        self.log: list[tuple[int, int, str]] = []
        local = sc.kube_proxy.external_traffic_policy is TrafficPolicy.LOCAL
        self.kind = "local_nodes" if local else "nodes"
        self.local = local
        self.joining = 0                      # nodes joined and not registered yet
        self._receiving: tuple[int, ...] | None = None     # receiving(), until a change
        self._receiving_array = np.zeros(0, np.int64)
        if local and sc.lb.health_check:      # a Cluster service's nodes always answer
            for v in self.nodes:
                env.process(self._checks(v, float(self._phase[v])))

    def join(self, v: int) -> None:
        """Node v joined the cluster now: the LB registers it after its registration delay."""
        self.joining += 1
        self.env.process(self._register(v))

    def settled(self) -> bool:
        """Is every node that joined registered and, checked, healthy?"""
        return self.joining == 0 and all(
            v in self.healthy for v in self.nodes if not self.local and self.sc.lb.health_check)

    def _register(self, v: int):
        flow = np.array([_NODE_FLOWS + v])
        u1, u2 = (self.streams.uniform("control", flow, 0, k) for k in (1, 2))
        lag = int(delays_ns(self.sc.cloud.value("registration_s", self.kind), u1, u2)[0])
        yield self.env.timeout(lag)
        self.nodes = tuple(sorted((*self.nodes, v)))
        self._receiving = None
        self.joining -= 1
        self.log.append((int(self.env.now), v, "registered"))
        self.on_change()
        if self.sc.lb.health_check:
            self.env.process(self._checks(v, float(self._phase[v])))

    def receiving(self) -> tuple[int, ...]:
        """The nodes the LB sends new flows to now (fail open: every node when none is
        healthy)."""
        if self._receiving is None:
            self._receiving = (tuple(sorted(self.healthy)) or self.nodes
                               if self.sc.lb.health_check else self.nodes)
            self._receiving_array = np.array(self._receiving, np.int64)
        return self._receiving

    def receiving_nodes(self) -> np.ndarray:
        """:meth:`receiving` as an array (kept until the next change, as the tuple)."""
        self.receiving()
        return self._receiving_array

    def _answers(self, v: int) -> bool:
        """Does node v pass a check now? Local: its health-check node port (a local ready
        endpoint); Cluster: the NodePort or 10256, once its kube-proxy's rules are in force."""
        return self.proxies.hc_ready[v] > 0 if self.local else self.proxies.synced[v]

    def _checks(self, v: int, phase: float):
        cl, env = self.sc.cloud, self.env
        kind = self.kind
        interval = ns(cl.value("hc_interval_s", kind))
        k = 0
        passes = fails = 0
        first = int(env.now) + int(phase * interval)
        while self.local or v not in self.healthy:   # a Cluster node, once healthy, stays so
            yield env.timeout(first + k * interval - env.now)
            k += 1
            if self._answers(v):
                passes, fails = passes + 1, 0
                if v not in self.healthy and passes >= cl.value("hc_healthy_threshold", kind):
                    self._set(v, True)
            else:
                passes, fails = 0, fails + 1
                if v in self.healthy and fails >= cl.value("hc_unhealthy_threshold", kind):
                    self._set(v, False)

    def _set(self, v: int, healthy: bool) -> None:
        (self.healthy.add if healthy else self.healthy.discard)(v)
        self._receiving = None
        self.log.append((int(self.env.now), v, "healthy" if healthy else "unhealthy"))
        self.on_change()
