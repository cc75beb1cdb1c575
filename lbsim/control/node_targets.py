"""The cloud LB's targets on the NodePort path: the nodes, and its health checks of them.

Every node is a registered target from the start. What the LB checks depends on the Service
(docs/config.md "Dynamics"): under ``externalTrafficPolicy: Cluster`` the NodePort or
kube-proxy's port 10256, which answer while the node and its kube-proxy run, so a node stays
healthy (node events are not modelled yet); under ``Local`` the health-check node port, which
answers while the node's kube-proxy lists a local ready endpoint
(:attr:`lbsim.control.endpoints.KubeProxies.hc_ready`). Checks run every ``cloud.hc_interval_s``
from a phase drawn per node; ``hc_healthy_threshold`` passes in a row make a node healthy,
``hc_unhealthy_threshold`` failures unhealthy. The LB sends new flows to its healthy nodes, or
fails open to every node when none is; with ``lb.health_check = false`` it sends to every node.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import simpy

from ..config import Scenario, TrafficPolicy
from ..lb import steady_targets
from ..rng import Streams
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
        n = sc.cluster.nodes
        self.nodes = tuple(range(n))
        self.healthy = {int(v) for v in steady_targets(sc, pod_node[:sc.cluster.pods])}
        #: (t, node, "healthy" | "unhealthy"): each change of a node's health, in order
        self.log: list[tuple[int, int, str]] = []
        local = sc.kube_proxy.external_traffic_policy is TrafficPolicy.LOCAL
        self.kind = "local_nodes" if local else "nodes"
        if local and sc.lb.health_check:      # a Cluster service's nodes always answer
            phase = Streams(sc.seed).uniform("control", _NODE_FLOWS + np.arange(n), 0, 0)
            for v in range(n):
                env.process(self._checks(v, float(phase[v])))

    def receiving(self) -> tuple[int, ...]:
        """The nodes the LB sends new flows to now (fail open: every node when none is
        healthy)."""
        if not self.sc.lb.health_check:
            return self.nodes
        return tuple(sorted(self.healthy)) or self.nodes

    def _checks(self, v: int, phase: float):
        cl, env = self.sc.cloud, self.env
        kind = self.kind
        interval = ns(cl.value("hc_interval_s", kind))
        k = 0
        passes = fails = 0
        first = int(phase * interval)
        while True:
            yield env.timeout(first + k * interval - env.now)
            k += 1
            if self.proxies.hc_ready[v] > 0:
                passes, fails = passes + 1, 0
                if v not in self.healthy and passes >= cl.value("hc_healthy_threshold", kind):
                    self._set(v, True)
            else:
                passes, fails = 0, fails + 1
                if v in self.healthy and fails >= cl.value("hc_unhealthy_threshold", kind):
                    self._set(v, False)

    def _set(self, v: int, healthy: bool) -> None:
        (self.healthy.add if healthy else self.healthy.discard)(v)
        self.log.append((int(self.env.now), v, "healthy" if healthy else "unhealthy"))
        self.on_change()
