"""simpy as the clock and the control plane.

The data plane (an engine: :class:`lbsim.reference.ReferenceEngine` or the compiled one) runs in
windows; :func:`drive` is the simpy process that advances it, and a window always ends at the next
control-plane instant, so that a change made there (a kube-proxy's endpoints) applies to every
event from that instant on, whatever the window size and in both engines alike. Events at the
instant itself (GC ticks included) come after the change.

A control plane is any function ``control(env, plane)`` that starts simpy processes, the way
SimPy's own examples read::

    def rollout(env, plane):
        yield env.timeout(plane.ns(30.0))       # at 30 s of simulated time
        plane.set_endpoints(node=0, pods=[1, 2])

    lbsim.run(scenario, control=lambda env, plane: env.process(rollout(env, plane)))

Simulated time is integer nanoseconds, as everywhere in lbsim.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import simpy

from ..kernel import NEVER, NS
from ..workload import Params

__all__ = ["Engine", "ControlPlane", "drive", "run_engine"]


class Engine(Protocol):
    """What the driver and the control plane need from an engine (the reference engine, the
    compiled NodePort and direct engines: :class:`ControlPlane` says what each call means)."""

    def advance(self, t1: int) -> bool: ...          # events before t1; True when all are done

    def set_endpoints(self, node: int, pods: np.ndarray, rejects: bool = False) -> None: ...

    def set_targets(self, t: int, ids: np.ndarray) -> None: ...

    def set_pod(self, pod: int, listen: int, sigterm: int, gone: int,
                removed: int = ...) -> None: ...

    def clear_udp(self, node: int, pods: np.ndarray) -> None: ...

    def set_pod_node(self, pod: int, node: int) -> None: ...

    def last_close(self, pod: int) -> int: ...


class ControlPlane:
    """The changes a control-plane process may make to the data plane, at ``env.now``."""

    def __init__(self, env: simpy.Environment, engine: Engine, params: Params) -> None:
        self.env, self.engine, self.params = env, engine, params

    @staticmethod
    def ns(seconds: float) -> int:
        """Seconds to simulated time (integer ns)."""
        return int(round(seconds * NS))

    def set_endpoints(self, node: int, pods, rejects: bool = False) -> None:
        """From now on, ``node``'s kube-proxy lists ``pods`` (its iptables or nftables rules:
        a per-attempt choice). With an empty list the node drops new flows (Local: no local
        endpoint), or with ``rejects`` answers them with its REJECT rule (the Service has no
        endpoint at all). The direct path has no kube-proxy: there it changes nothing."""
        p = self.params
        pods = np.asarray(pods, np.int64).ravel()
        if not 0 <= node < p.nodes:
            raise ValueError(f"node = {node} is invalid: must be in [0, {p.nodes - 1}]")
        if pods.size and not ((0 <= pods) & (pods < p.pods)).all():
            raise ValueError(f"pods = {pods.tolist()} is invalid: each must be in "
                             f"[0, {p.pods - 1}]")
        if p.nodeport and not p.per_attempt:
            raise ValueError("set_endpoints changes per-attempt choices (kube_proxy.mode = "
                             "iptables or nftables, no session affinity); this kube-proxy fixes "
                             "each flow's pod when the run starts")
        self.engine.set_endpoints(node, pods, rejects)

    # -- the LB and the pods ([[events]]: lbsim.control.cluster.follow) ---------------------------
    def set_targets(self, t: int, pods) -> None:
        """From now on the LB sends new flows to ``pods`` (the direct path; the nodes on the
        NodePort path, a flow's node chosen when it reaches the LB)."""
        self.engine.set_targets(t, np.asarray(pods, np.int64))

    def clear_udp(self, node: int, pods) -> None:
        """Delete ``node``'s UDP conntrack entries DNATed to ``pods`` now (kube-proxy's
        conntrack -D after a sync dropped them from its rules)."""
        self.engine.clear_udp(node, np.asarray(pods, np.int64))

    def set_pod(self, pod: int, listen: int, sigterm: int, gone: int,
                removed: int = NEVER) -> None:
        """Pod ``pod``'s server listens from ``listen``, refuses connections from ``sigterm`` and
        is gone from ``gone``; the LB removed its target at ``removed`` (the direct path: the
        LB then forgets which pod a socket's queries went to) (ns; NEVER: not yet)."""
        self.engine.set_pod(pod, listen, sigterm, gone, removed)

    def set_pod_node(self, pod: int, node: int) -> None:
        """The scheduler bound pod ``pod`` to ``node`` (before it listens: the data plane reads
        a pod's node only once traffic reaches it), or -1: it is pending (no node yet)."""
        p = self.params
        if not (0 <= pod < p.pods and -1 <= node < p.nodes):
            raise ValueError(f"pod, node = {pod}, {node} is invalid: must be in [0, "
                             f"{p.pods - 1}] x [-1, {p.nodes - 1}]")
        self.engine.set_pod_node(pod, node)

    def last_close(self, pod: int) -> int:
        """When the last connection pod ``pod`` accepted so far closes (ns; 0: none)."""
        return self.engine.last_close(pod)


def drive(env: simpy.Environment, engine: Engine, t0: np.ndarray | None, d_in: int,
          batch_flows: int, progress: Callable[[int, int], None] | None = None):
    """The data plane's simpy process: windows of at most ``batch_flows`` new flows (flow f's
    first attempt arrives at ``t0[f] + d_in``, ns, ascending; None: the engine finds its
    flows' starts itself, a streamed run or a closed loop), each ending early at the next control-plane
    event. Returns when every flow is resolved. ``progress(t, started)`` hears of each window's
    end (simulated ns, flows started before it)."""
    F = 0 if t0 is None else t0.size
    while True:
        now = int(env.now)
        if env.peek() <= now:                  # a control-plane event is due now: it goes first
            yield env.timeout(0)
            continue
        if t0 is None:                         # the engine windows its flows itself (streamed)
            end = NEVER
        else:
            nn = int(np.searchsorted(t0, now - d_in, side="left"))   # flows already started
            end = int(t0[nn + batch_flows]) + d_in if nn + batch_flows < F else NEVER
        t1 = min(max(end, now + 1), _instant(env.peek()))
        if engine.advance(t1):
            return
        if progress is not None and t0 is not None:
            progress(t1, int(np.searchsorted(t0, t1 - d_in, side="left")))
        yield env.timeout(t1 - now)


def _instant(t: float) -> int:
    return NEVER if t == float("inf") else int(t)


def run_engine(engine: Engine, t0: np.ndarray | None, params: Params, batch_flows: int,
               control: Callable[[simpy.Environment, ControlPlane], object] | None = None,
               progress: Callable[[int, int], None] | None = None):
    """Run ``engine`` to the end under simpy, with the control plane ``control`` (if any); flow
    f's first attempt arrives at ``t0[f] + params.d_in``; ``progress``: :func:`drive`'s."""
    if batch_flows < 1:
        raise ValueError(f"batch_flows = {batch_flows} is invalid: must be >= 1")
    env = simpy.Environment()
    if control is not None:
        control(env, ControlPlane(env, engine, params))
    env.run(until=env.process(drive(env, engine, t0, params.d_in, batch_flows, progress)))

