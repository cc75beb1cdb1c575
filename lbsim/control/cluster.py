"""Pods, the Deployment and the cloud LB's targets over time, as simpy processes.

Each pod lives through (lbsim.config.dynamics, docs/config.md "Dynamics"):

- **start**: created, its server listens ``lifecycle.startup_s`` later; the readiness probe runs
  ``readiness_initial_delay_s`` after creation and every ``readiness_period_s``; after
  ``readiness_success_threshold`` passes in a row (a probe passes once the server listens) its
  containers are ready. Without a readiness gate the pod is then Ready; with one, only once the
  LB reports its target healthy. Ready for ``deployment.min_ready_s``, it is available.
- **the LB's target**: the controller registers a pod whose containers are ready (with or without
  a gate: aws-load-balancer-controller registers gated pods once their containers are ready);
  the LB takes it ``cloud.registration_s`` later and health-checks it every ``hc_interval_s``
  from a phase drawn per target; ``hc_healthy_threshold`` passes in a row make it healthy,
  ``hc_unhealthy_threshold`` failures unhealthy. A check passes while the server accepts.
- **termination** (the Deployment deletes it): the Endpoints removal and the kubelet start at
  once. The preStop sleep (``prestop_s``) runs while the server serves as before; then SIGTERM:
  the server stops accepting (new connections are refused) and exits once its open connections
  close (the data plane says when: :meth:`Cluster.last_close`); SIGKILL at
  ``termination_grace_s`` cuts what is still open. The LB deregisters the target
  ``deregistration_lag_s`` after deletion, keeps sending it new flows for
  ``draining_new_flows_s`` more, and removes it once its connections are closed (at once if
  none is open), at most ``deregistration_delay_s`` after deregistering it.

The LB sends new flows to its healthy targets that are not deregistered (or still within
``draining_new_flows_s``); when none is healthy it fails open to every such target.

On the NodePort path the pods are not the LB's targets: the nodes are
(:mod:`lbsim.control.node_targets`), and each node's kube-proxy follows the EndpointSlice
(:mod:`lbsim.control.endpoints`): a pod is a ready endpoint from Ready to its deletion, and a
serving terminating one from its deletion until its readiness probe fails after SIGTERM
(``readiness_failure_threshold`` probes in a row) or it is gone. A readiness gate has no LB
target to wait for there: a pod is Ready when its containers are.

The Deployment controller follows kubernetes/pkg/controller/deployment/rolling.go: new pods while
the total stays within ``replicas + maxSurge``; old pods deleted while the available ones stay at
least ``replicas - maxUnavailable`` (both zero means maxUnavailable 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import simpy

from ..config import DataPath, LBAlgorithm, Scenario, Source
from ..kube_proxy import KubeProxy
from ..config.dynamics import resolve_count
from ..kernel import NEVER
from ..rng import Streams
from ..sampling import delays_ns
from ..workload import ns, pod_placement
from .endpoints import KubeProxies, Slice
from .node_targets import NodeTargets

__all__ = ["Pod", "Cluster", "TIMELINE_EVENTS", "follow", "check_events"]

#: what the timeline records of each pod, in the order a pod's life may go through them
TIMELINE_EVENTS = ("created", "pending", "scheduled", "evicted", "listening", "containers_ready", "registered", "healthy",
                   "ready", "available", "deleted", "deregistered", "sigterm", "not_serving",
                   "crashed", "restarted", "ready_again", "unhealthy", "stops_receiving", "gone",
                   "target_removed")

#: the changes the Deployment controller reacts to (a pod's count, readiness or availability)
_CONTROLLER_READS = frozenset({"created", "ready", "available", "deleted"})

#: what the nodes table records of a node besides its rules and health (the order at an instant)
NODE_EVENTS = ("joined", "cordoned", "registered", "rules", "healthy", "unhealthy")

#: the control stream's draw numbers (one per per-pod delay), flow = the pod's number
_D_STARTUP, _D_REGISTRATION, _D_HC_PHASE, _D_DEREGISTRATION = range(4)


def _per_pod_draws(sc: Scenario, pods: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pod's delays (ns, rows _D_*; the phase row unused) and health-check phase (a
    uniform in [0, 1)), drawn at once: a pure function of (seed, pod, draw), through the
    sampler the engines use. A fixed delay is exact (0 stays 0)."""
    st = Streams(sc.seed)
    pod = np.arange(pods, dtype=np.int64)
    u = [st.uniform("control", pod, 0, d) for d in range(8)]      # two per draw number
    delays = np.zeros((4, pods), np.int64)
    for row, d in ((_D_STARTUP, sc.lifecycle.startup_s),
                   (_D_REGISTRATION, sc.cloud.value("registration_s")),
                   (_D_DEREGISTRATION, sc.cloud.value("deregistration_lag_s"))):
        delays[row] = delays_ns(d, u[2 * row], u[2 * row + 1])
    return delays, u[2 * _D_HC_PHASE]


@dataclass
class Pod:
    """One pod's instants (ns; None until they happen)."""

    index: int
    #: the node it is bound to; -1 while pending (no schedulable node)
    node: int
    revision: int
    created: int
    #: bound to its node (its startup runs from here); None while pending
    scheduled: int | None = None
    listening: int | None = None
    containers_ready: int | None = None
    registered: int | None = None
    healthy: bool = False
    ready: int | None = None
    available: int | None = None
    deleted: int | None = None
    deregistered: int | None = None
    sigterm: int | None = None
    #: its readiness probe failed after SIGTERM (or it was gone): no longer a serving endpoint
    not_serving: int | None = None
    gone: int | None = None
    removed: int | None = None
    #: when its server (the current instance, after a crash its restart) listens; None while
    #: crashed or before it starts
    up: int | None = None
    #: crashed and not Ready again yet
    unready: bool = False
    #: when its container (the current one, after a crash its restart) started: the readiness
    #: probes' origin
    started: int = 0
    log: list[tuple[int, str]] = field(default_factory=list)

    def accepting(self, t: int) -> bool:
        """Does the server accept a connection at ``t``?"""
        return (self.up is not None and self.up <= t
                and (self.sigterm is None or t < self.sigterm)
                and (self.gone is None or t < self.gone))

    @property
    def is_available(self) -> bool:
        return self.available is not None and not self.unready


class Cluster:
    """The Kubernetes and cloud-LB control plane of one run.

    ``Cluster(env, scenario)`` starts with ``cluster.pods`` pods ready, registered and healthy
    at time 0 (the steady state) and runs the scenario's events. ``on_change`` (if given) is
    called after every change with the cluster, so the data plane can follow.
    """

    def __init__(self, env: simpy.Environment, sc: Scenario, on_change=None,
                 last_close=None) -> None:
        self.env, self.sc, self.on_change = env, sc, on_change
        self.nodeport = sc.path is DataPath.NODEPORT
        self._last_close = last_close
        self.placement = pod_placement(sc)        # the workload's own rule, for every pod
        self._delays, self._phase = _per_pod_draws(sc, self.placement.size)
        # the scheduler's state: each pod's node (the data plane's copy follows), the nodes a
        # later pod may go to (placement "packed", a nodeSelector: the packed ones only; else
        # every node, each added one too), and the nodes cordoned by a drain
        c = sc.cluster
        self.node_of = self.placement.copy()
        self.nodes = c.nodes
        self.pool = list(range(c.packed_nodes if c.placement == "packed" else c.nodes))
        self.cordoned: set[int] = set()
        self._pending: list[Pod] = []
        self._node_events = any(e.kind in ("drain", "add-node") for e in sc.events)
        #: (t, node, "joined" | "cordoned"): each change of a node's membership, in order
        self.node_log: list[tuple[int, int, str]] = []
        self.pods: list[Pod] = []
        self.revision = 0
        self.replicas = sc.cluster.pods
        self.changed = env.event()
        self._controller_dirty = False
        self.dirty: set[int] = set()              # pods changed since the last update
        self._cand: set[int] = set()              # targets taking new flows
        self._cand_healthy: set[int] = set()      # ... and healthy
        self._live_pods: dict[int, Pod] = {}      # pods not deleted, in creation order
        self._on_node: dict[int, int] = {}        # node -> its bound pods not deleted
        self._flush_pending = self._targets_dirty = False
        self.rollouts: list[tuple[int, int | None]] = []      # (start, end) of each rollout
        #: (pod, t): a crash cut the pod's open connections at t; the events that crashed
        #: nothing (their index)
        self.cuts: list[tuple[int, int]] = []
        self.ignored: list[int] = []
        self.receiving: tuple[int, ...] = ()
        self.series: list[tuple[int, tuple[int, ...]]] = []
        self._ready: set[int] = set()             # ready endpoints (Ready, not deleted)
        self._terminating: set[int] = set()       # deleted, Ready before, still serving
        self._slice_dirty = False
        #: NodePort: the node rules changed since the last update, (node, pods, rejects, the
        #: endpoints whose UDP conntrack entries go)
        self.programs: list[tuple[int, np.ndarray, bool, np.ndarray]] = []
        for _ in range(sc.cluster.pods):
            pod = self._new_pod(steady=True)
            pod.listening = pod.up = pod.containers_ready = pod.ready = pod.available = 0
            self._ready.add(pod.index)
            if not self.nodeport:
                pod.registered, pod.healthy = 0, True
                self._candidate(pod, True)
                env.process(self._health_checks(pod))
        if self.nodeport:
            self.proxies = KubeProxies(env, sc, self.node_of, self._slice(), self._programmed)
            self.node_targets = NodeTargets(env, sc, self.placement, self.proxies,
                                            lambda: self._update())
            # a node that joins later has no rules until its kube-proxy's first sync: nothing
            # answers its NodePort but the host's RST, which lbsim counts as the REJECT rule
            # (no_endpoints: the attempt fails at once)
            for v in range(sc.cluster.nodes, len(self.proxies.joined)):
                self.programs.append((v, np.zeros(0, np.int64), True, np.zeros(0, np.int64)))
        self._update()
        env.process(self._controller())
        for i, e in enumerate(sc.events):
            env.process(self._event(i, e))

    # -- what the data plane asks ------------------------------------------------------------
    def last_close(self, pod: Pod) -> int:
        """When the pod's last open connection closes (ns): the data plane's answer, or (the
        control plane run alone) at once."""
        if self._last_close is None:
            return int(self.env.now)
        return self._last_close(pod.index)

    # -- pods ---------------------------------------------------------------------------------
    def _new_pod(self, steady: bool = False) -> Pod:
        i, now = len(self.pods), int(self.env.now)
        pod = Pod(index=i, node=int(self.placement[i]), revision=self.revision, created=now,
                  scheduled=now, started=now)
        self.pods.append(pod)
        self._live_pods[i] = pod
        self._log(pod, "created")
        if steady:
            self._on_node[pod.node] = self._on_node.get(pod.node, 0) + 1
        elif not self._bind(pod):
            pod.node, pod.scheduled = -1, None
            self._pending.append(pod)
            self._log(pod, "pending")
            self._update(targets=False)
        return pod

    def _bind(self, pod: Pod) -> bool:
        """The scheduler binds a later pod to a schedulable node and its startup begins; False
        when no node is schedulable (the pod stays pending).

        Without node events the rule is the workload's round robin over the pool by pod number
        (:func:`lbsim.workload.pod_placement`: the runs before node events existed keep their
        numbers). With drain or add-node events it is kube-scheduler's choice for a
        Deployment's identical pods: the schedulable node with the fewest of its pods not
        terminating (PodTopologySpread's default spreading, which leaves terminating pods out,
        and least-allocated scoring agree), ties broken round robin by pod number."""
        pool = [v for v in self.pool if v not in self.cordoned]
        if not pool:
            return False
        now = int(self.env.now)
        start = pod.index % len(pool)
        pool = pool[start:] + pool[:start]
        if self._node_events:                  # the first of the fewest
            pool = [min(pool, key=lambda v: self._on_node.get(v, 0))]
        pod.node = pool[0]
        self._on_node[pod.node] = self._on_node.get(pod.node, 0) + 1
        pod.scheduled = pod.started = now
        self.node_of[pod.index] = pod.node
        self.env.process(self._start(pod))
        return True

    def _log(self, pod: Pod, what: str) -> None:
        pod.log.append((int(self.env.now), what))
        self.dirty.add(pod.index)
        if what in _CONTROLLER_READS:
            self._controller_dirty = True

    def _probes_see(self, pod: Pod, t: int, threshold: int) -> int:
        """When ``threshold`` readiness probes in a row have seen a change of the server at
        ``t``: probes run ``readiness_initial_delay_s`` after the container starts and every
        ``readiness_period_s``; the first at or after ``t`` is the first to see it."""
        lc = self.sc.lifecycle
        first = pod.started + ns(lc.readiness_initial_delay_s)
        period = ns(lc.readiness_period_s)
        k = max(0, math.ceil((t - first) / period))
        return first + (k + threshold - 1) * period

    def _start(self, pod: Pod):
        lc, env = self.sc.lifecycle, self.env
        up = pod.scheduled + int(self._delays[_D_STARTUP, pod.index])
        ready = self._probes_see(pod, up, lc.readiness_success_threshold)
        yield env.timeout(up - env.now)
        if pod.deleted is not None:
            return
        pod.listening = pod.up = up
        self._log(pod, "listening")
        self._update(targets=False)
        yield env.timeout(max(0, ready - env.now))
        if pod.deleted is not None:
            return
        pod.containers_ready = ready
        self._log(pod, "containers_ready")
        if self.nodeport or not self.sc.deployment.readiness_gate:
            self._set_ready(pod)
        if not self.nodeport:
            env.process(self._register(pod))

    def _set_ready(self, pod: Pod) -> None:
        pod.ready = int(self.env.now)
        self._log(pod, "ready")
        self._ready.add(pod.index)
        self._slice_dirty = True
        self._update(targets=False)
        self.env.process(self._become_available(pod))

    def _become_available(self, pod: Pod):
        yield self.env.timeout(ns(self.sc.deployment.min_ready_s))
        if pod.deleted is None:
            pod.available = int(self.env.now)
            self._log(pod, "available")
            self._update(targets=False)

    def _delete(self, pod: Pod) -> None:
        """The Deployment deletes ``pod`` now: the Endpoints removal, the kubelet's termination
        and the LB's deregistration start together."""
        pod.deleted = int(self.env.now)
        del self._live_pods[pod.index]
        if pod.node >= 0:
            self._on_node[pod.node] -= 1
        self._log(pod, "deleted")
        if pod.index in self._ready:           # a ready endpoint becomes a terminating one
            self._ready.discard(pod.index)
            self._terminating.add(pod.index)
            self._slice_dirty = True
        if pod.registered is not None:       # a pending registration stops by itself
            self.env.process(self._deregister(pod))
        self.env.process(self._terminate(pod))
        self._update(targets=False)

    def _terminate(self, pod: Pod):
        lc, env = self.sc.lifecycle, self.env
        grace = ns(lc.termination_grace_s)
        if pod.scheduled is not None:         # a pending pod has no container to stop
            yield env.timeout(min(ns(lc.prestop_s), grace))
        if pod.listening is not None:
            pod.sigterm = int(env.now)
            self._log(pod, "sigterm")
            self._update(targets=False)
            if pod.index in self._terminating:
                env.process(self._readiness_fails(pod))
        exit_at = min(max(int(env.now), self.last_close(pod)), pod.deleted + grace)
        yield env.timeout(exit_at - env.now)
        pod.gone = int(env.now)
        self._log(pod, "gone")
        self._not_serving(pod)
        self._update(targets=False)

    def _readiness_fails(self, pod: Pod):
        """After SIGTERM the kubelet's probes fail: ``readiness_failure_threshold`` of them in
        a row (on the pod's probe grid) and the pod is no longer ready: not serving."""
        at = self._probes_see(pod, pod.sigterm, self.sc.lifecycle.readiness_failure_threshold)
        yield self.env.timeout(at - self.env.now)
        self._not_serving(pod)
        self._update(targets=False)

    def _not_serving(self, pod: Pod) -> None:
        if pod.index in self._terminating:
            self._terminating.discard(pod.index)
            pod.not_serving = int(self.env.now)
            self._log(pod, "not_serving")
            self._slice_dirty = True

    # -- the NodePort path's endpoints ----------------------------------------------------------
    def _slice(self) -> Slice:
        return Slice(np.array(sorted(self._ready), np.int64),
                     np.array(sorted(self._terminating), np.int64))

    def _programmed(self, node: int, pods: np.ndarray, rejects: bool,
                    stale: np.ndarray) -> None:
        """A node's kube-proxy put new rules in force (KubeProxies calls this)."""
        self.programs.append((node, pods, rejects, stale))
        self._update()

    # -- the cloud LB's target ----------------------------------------------------------------
    def _register(self, pod: Pod):
        lag = int(self._delays[_D_REGISTRATION, pod.index])
        yield self.env.timeout(lag)
        if pod.deleted is not None:
            return
        pod.registered = int(self.env.now)
        self._log(pod, "registered")
        self._candidate(pod, True)
        self._update()
        yield from self._health_checks(pod)

    def _health_checks(self, pod: Pod):
        """Checks at phase + k x interval; a check the server answers (accepting: pass; refusing:
        an RST, fail) counts at once, one nobody answers (the pod is gone) after the timeout
        (at most the interval, so results keep their order)."""
        cl, env = self.sc.cloud, self.env
        interval = ns(cl.value("hc_interval_s"))
        timeout = ns(min(cl.value("hc_timeout_s"), cl.value("hc_interval_s")))
        first = int(env.now) + int(self._phase[pod.index] * interval)
        passes = fails = k = 0
        while pod.removed is None:
            yield env.timeout(first + k * interval - env.now)
            t = int(env.now)
            ok = pod.accepting(t)
            if pod.gone is not None and pod.gone <= t:
                yield env.timeout(timeout)
            k += 1
            if ok:
                passes, fails = passes + 1, 0
                if not pod.healthy and passes >= cl.value("hc_healthy_threshold"):
                    self._set_healthy(pod, True)
                    self._log(pod, "healthy")
                    if self.sc.deployment.readiness_gate and pod.ready is None \
                            and pod.deleted is None:
                        self._set_ready(pod)
                    self._update()
            else:
                passes, fails = 0, fails + 1
                if pod.healthy and fails >= cl.value("hc_unhealthy_threshold"):
                    self._set_healthy(pod, False)
                    self._log(pod, "unhealthy")
                    self._update()

    def _deregister(self, pod: Pod):
        cl, env = self.sc.cloud, self.env
        yield env.timeout(int(self._delays[_D_DEREGISTRATION, pod.index]))
        pod.deregistered = int(env.now)
        self._log(pod, "deregistered")
        new_flows = ns(cl.value("draining_new_flows_s"))
        delay = ns(cl.value("deregistration_delay_s"))
        if new_flows > 0 and delay > 0:
            self._update()
            yield env.timeout(min(new_flows, delay))
        self._candidate(pod, False)        # the LB stops sending it new flows now
        self._update()
        # draining: the LB waits for the target's open connections, at most
        # deregistration_delay; with none open it completes at once (the ELB target-group docs)
        deadline = pod.deregistered + delay
        while True:
            now = int(env.now)
            done = min(deadline, max(now, self._open_until(pod)))
            if done <= now:
                break
            yield env.timeout(done - now)      # a connection accepted meanwhile: look again
        pod.removed = int(env.now)
        self._log(pod, "target_removed")
        self._update()

    def _open_until(self, pod: Pod) -> int:
        """When the pod's last accepted connection ends: it closes, or the pod's SIGKILL cuts
        it (ns)."""
        t = self.last_close(pod)
        if pod.deleted is not None:
            t = min(t, pod.deleted + ns(self.sc.lifecycle.termination_grace_s))
        return t

    # -- the LB's choice of targets -----------------------------------------------------------
    def _candidate(self, pod: Pod, takes: bool) -> None:
        """The pod's target takes new flows (registered, and not deregistered longer ago than
        draining_new_flows_s, nor removed) from now on, or no longer."""
        if takes:
            self._cand.add(pod.index)
            if pod.healthy:
                self._cand_healthy.add(pod.index)
        else:
            self._cand.discard(pod.index)
            self._cand_healthy.discard(pod.index)

    def _set_healthy(self, pod: Pod, healthy: bool) -> None:
        pod.healthy = healthy
        if healthy and pod.index in self._cand:
            self._cand_healthy.add(pod.index)
        elif not healthy:
            self._cand_healthy.discard(pod.index)

    def receiving_targets(self) -> tuple[int, ...]:
        """The pods new flows go to now. Direct: the LB's healthy candidates, or every
        candidate when none is healthy (fail open). NodePort: the pods the rules of the LB's
        nodes list."""
        if self.nodeport:
            # each distinct list once (a Cluster service's nodes list the same pods)
            shared = self.proxies.lists
            listed = np.bincount(shared.group[self.node_targets.receiving_nodes()],
                                 minlength=len(shared.lists))
            lists = [shared.lists[g] for g in np.flatnonzero(listed)]
            if len(lists) == 1:
                return tuple(lists[0].tolist())
            return tuple(np.unique(np.concatenate(lists)).tolist()) if lists else ()
        return tuple(sorted(self._cand_healthy or self._cand))

    def _update(self, targets: bool = True) -> None:
        """Something changed now (``targets``: maybe the LB's set). The LB's set, the data plane
        and the Deployment controller catch up once, after the instant's other changes: a mass
        deletion is one update, not one per pod."""
        self._targets_dirty |= targets
        if not self._flush_pending:
            self._flush_pending = True
            self.env.process(self._flush())

    def _flush(self):
        yield self.env.timeout(0)
        self._flush_pending = False
        t = int(self.env.now)
        if self._slice_dirty and self.nodeport:
            self._slice_dirty = False
            self.proxies.changed(self._slice())
        if self._targets_dirty:
            self._targets_dirty = False
            now = self.receiving_targets()
            if now != self.receiving:
                for i in set(self.receiving) - set(now):
                    self._log(self.pods[i], "stops_receiving")
                self.receiving = now
                self.series.append((t, now))
        if self.on_change is not None:
            self.on_change(self)
        self.dirty.clear()
        self.programs.clear()
        if self._controller_dirty and not self.changed.triggered:
            self._controller_dirty = False
            self.changed.succeed()

    # -- the Deployment -----------------------------------------------------------------------
    def _event(self, i: int, e):
        yield self.env.timeout(ns(e.at_s))
        if e.kind == "rollout":
            self.revision += 1
            self.rollouts.append((int(self.env.now), None))
        elif e.kind == "scale":
            self.replicas = e.replicas
        elif e.kind == "crash":
            self._crash(i, e)
        elif e.kind == "drain":
            self._drain(i, e.node)
        elif e.kind == "add-node":
            self._add_node()
        self._controller_dirty = True
        self._update(targets=False)

    # -- nodes --------------------------------------------------------------------------------
    def _drain(self, i: int, v: int) -> None:
        """``kubectl drain``: cordon the node (no new pod is bound to it), then evict each of its
        pods at once (the Eviction API with no PodDisruptionBudget deletes it: it terminates
        as a deleted pod does, and the ReplicaSet replaces it on another node). The node
        stays, and so does its kube-proxy; a drain of a node already cordoned with no pod on
        it changes nothing (``ignored``)."""
        on = [p for p in self._live() if p.node == v]
        if v in self.cordoned and not on:
            self.ignored.append(i)
            return
        if v not in self.cordoned:
            self.cordoned.add(v)
            self.node_log.append((int(self.env.now), v, "cordoned"))
        for p in on:
            self._log(p, "evicted")
            self._delete(p)

    def _add_node(self) -> None:
        """A node joins, numbered after the existing ones: pods may be bound to it from now on
        (the pending ones at once; not those of placement "packed", whose nodeSelector names
        the packed nodes), its kube-proxy starts, and on the NodePort path the service
        controller adds it to the LB's targets."""
        v = self.nodes
        self.nodes += 1
        if self.sc.cluster.placement != "packed":     # packed: a nodeSelector it does not match
            self.pool.append(v)
        self.node_log.append((int(self.env.now), v, "joined"))
        if self.nodeport:
            self.proxies.join(v)
            self.node_targets.join(v)
        pending, self._pending = self._pending, []
        for p in pending:
            if p.deleted is None:
                if self._bind(p):
                    self._log(p, "scheduled")
                else:
                    self._pending.append(p)

    # -- a container's crash and restart ------------------------------------------------------
    def _crash(self, i: int, e) -> None:
        """Pod ``e.pod``'s server dies now: its open connections are cut (``cuts``), new ones
        are refused (an RST: nothing listens), and the kubelet marks the pod not Ready (the
        container exited) until the container restarts (``restart_backoff_s``, then the pod's
        startup time) and its readiness probe passes again. A pod that does not exist, or is
        not running then, is left alone (``ignored``)."""
        pod = self.pods[e.pod] if e.pod < len(self.pods) else None
        if pod is None or pod.up is None or pod.deleted is not None:
            self.ignored.append(i)
            return
        t = int(self.env.now)
        pod.up, pod.unready = None, True
        self.cuts.append((pod.index, t))
        self._log(pod, "crashed")
        if pod.index in self._ready:
            self._ready.discard(pod.index)
            self._slice_dirty = True
        self.env.process(self._restart(pod, t))

    def _restart(self, pod: Pod, crashed: int):
        lc, env = self.sc.lifecycle, self.env
        start = crashed + ns(lc.restart_backoff_s)
        up = start + int(self._delays[_D_STARTUP, pod.index])   # as its first start took
        yield env.timeout(start - env.now)
        if pod.deleted is not None:
            return
        pod.started = start                     # the new container's probes start over
        ready = self._probes_see(pod, up, lc.readiness_success_threshold)
        yield env.timeout(up - env.now)
        if pod.deleted is not None:
            return
        pod.up = up
        self._log(pod, "restarted")
        self._update(targets=False)
        yield env.timeout(max(0, ready - env.now))
        if pod.deleted is not None or pod.up is None:
            return
        pod.unready = False
        self._log(pod, "ready_again")
        self._ready.add(pod.index)
        self._slice_dirty = True
        self._update(targets=False)

    def _live(self) -> list[Pod]:
        return list(self._live_pods.values())

    def _controller(self):
        """Reconcile whenever anything changed (rolling.go's rolloutRolling)."""
        while True:
            yield self.changed
            self.changed = self.env.event()
            self._reconcile()

    def _reconcile(self) -> None:
        d, n = self.sc.deployment, self.replicas
        surge = resolve_count(d.max_surge, n, round_up=True)
        unavailable = resolve_count(d.max_unavailable, n, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        live = self._live()
        new = [p for p in live if p.revision == self.revision]
        old = [p for p in live if p.revision != self.revision]
        # reconcileNewReplicaSet: grow the new revision within replicas + maxSurge
        for _ in range(max(0, min(n + surge - len(live), n - len(new)))):
            self._new_pod()
        live = self._live()
        new = [p for p in live if p.revision == self.revision]
        victims: list[Pod] = []
        if old:
            # reconcileOldReplicaSets: unavailable old pods first (within maxScaledDown), then
            # available ones while the available pods stay >= replicas - maxUnavailable
            min_available = n - unavailable
            available = sum(p.is_available for p in live)
            new_unavailable = sum(not p.is_available for p in new)
            max_down = len(live) - min_available - new_unavailable
            if max_down > 0:
                unready = [p for p in old if not p.is_available][:max_down]
                ready = sorted((p for p in old if p.is_available),
                               key=lambda p: -p.index)
                victims = unready + ready[:max(0, available - min_available)]
        elif len(new) > n:
            # a scale in: the ReplicaSet deletes not-ready pods first, then the most recently
            # ready (controller.ActivePods' ranking)
            rank = sorted(new, key=lambda p: (p.ready is not None, -(p.ready or 0), -p.index))
            victims = rank[:len(new) - n]
        for p in victims:
            self._delete(p)
        self._close_rollout()

    def _close_rollout(self) -> None:
        if not self.rollouts or self.rollouts[-1][1] is not None:
            return
        live = self._live()
        done = (all(p.revision == self.revision for p in live)
                and sum(p.is_available for p in live) >= self.replicas)
        if done:
            self.rollouts[-1] = (self.rollouts[-1][0], int(self.env.now))


def follow(sc: Scenario, holder: list):
    """A control plane (``control(env, plane)``, :func:`lbsim.control.run_engine`) that runs the
    scenario's :class:`Cluster` and hands each change to the data plane at its instant: the LB's
    target set, and each pod's listening, SIGTERM and gone instants. The cluster is appended to
    ``holder`` (its timeline is built from it after the run)."""
    def control(env: simpy.Environment, plane) -> None:
        state = {"targets": None}
        sent: dict[int, int] = {}                 # pods bound elsewhere than the workload says

        def on_change(cl: Cluster) -> None:
            t = int(env.now)
            targets = cl.node_targets.receiving() if cl.nodeport else cl.receiving
            if targets != state["targets"]:
                state["targets"] = targets
                plane.set_targets(t, np.asarray(targets, np.int64))
            for node, pods, rejects, stale in cl.programs:
                plane.set_endpoints(node, pods, rejects)
                if stale.size:
                    plane.clear_udp(node, stale)
            for i in sorted(cl.dirty):
                p = cl.pods[i]
                if p.node != sent.get(i, int(cl.placement[i])):      # bound, or pending: -1
                    sent[i] = p.node
                    plane.set_pod_node(i, p.node)
                plane.set_pod(i, _at(p.up), _at(p.sigterm), _at(p.gone), _at(p.removed))

        holder.append(Cluster(env, sc, on_change=on_change, last_close=plane.last_close))
    return control


def _at(t: int | None) -> int:
    return NEVER if t is None else t


def check_events(sc: Scenario) -> None:
    """Refuse (``ValueError``, one line naming the field) what the data plane does not follow
    with ``[[events]]`` yet."""
    def no(field: str, value, allowed: str) -> None:
        raise ValueError(f"{field} = {value!r} with [[events]]: not modelled yet ({allowed})")

    if sc.path is DataPath.NODEPORT and not KubeProxy.per_attempt_mode(sc):
        kp = sc.kube_proxy
        if kp.mode.value not in ("iptables", "nftables"):
            no("kube_proxy.mode", kp.mode.value, "iptables or nftables")
        no("kube_proxy.session_affinity", kp.session_affinity.value, "none")
    if sc.lb.algorithm not in (LBAlgorithm.RR, LBAlgorithm.SOURCE_HASH):
        no("lb.algorithm", sc.lb.algorithm.value, "rr or source_hash")
    if sc.lb.persistence_s > 0:
        no("lb.persistence_s", sc.lb.persistence_s, "0")
    if sc.workload.source is Source.POD:
        no("workload.source", "pod", "external: pod clients do not go through the LB")
