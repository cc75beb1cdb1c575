"""What changes during a run (``[lifecycle]``, ``[deployment]``, ``[cloud]``, ``[[events]]``):
each pod's life in Kubernetes, the Deployment's rolling update, the cloud LB's registration,
health checks and draining of its targets, and the cluster events on a timeline.

A scenario without events is the steady state: every pod ready, registered and healthy for the
whole run, and none of these settings matters. The cloud profiles (:data:`CLOUD_PROFILES`) fill
the ``[cloud]`` fields a scenario leaves unset with one cloud's documented defaults; docs/config.md
("Dynamics") cites the source of each, and says which are assumptions.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any

from ..durations import Duration, Exponential, Fixed, parse_duration
from .fields import MAX_NODES, MAX_PODS, _check_float, _check_int, _fail, _is_int, _Section

__all__ = ["LifecycleConfig", "DeploymentConfig", "EndpointsConfig", "CloudConfig", "Event",
           "EVENT_KINDS", "CLOUD_PROFILES", "CLOUDS", "CLOUD_FIELDS", "TARGET_KINDS",
           "pods_ever", "nodes_ever"]


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig(_Section):
    """Each pod's life in Kubernetes (``[lifecycle]``): start, readiness probe, termination."""

    _prefix: typing.ClassVar[str] = "lifecycle"

    #: pod created to its server listening (scheduling, image pull, container start, app init), s
    startup_s: Duration = Fixed(value=5.0)
    #: readinessProbe.initialDelaySeconds: container start to the first probe, s
    readiness_initial_delay_s: float = 0.0
    #: readinessProbe.periodSeconds (Kubernetes default 10), s
    readiness_period_s: float = 10.0
    #: readinessProbe.successThreshold (Kubernetes default 1): passes in a row before Ready
    readiness_success_threshold: int = 1
    #: readinessProbe.failureThreshold (Kubernetes default 3): failures in a row before a pod is
    #: no longer ready (a terminating pod: no longer serving, once SIGTERM closed its server)
    readiness_failure_threshold: int = 3
    #: a crashed container's restart: the kubelet's first CrashLoopBackOff delay (10 s), s
    restart_backoff_s: float = 10.0
    #: the preStop hook's sleep: deletion to SIGTERM, the server serving as before, s
    prestop_s: float = 0.0
    #: terminationGracePeriodSeconds (Kubernetes default 30): deletion to SIGKILL, s
    termination_grace_s: float = 30.0

    def __post_init__(self) -> None:
        n = self._name
        object.__setattr__(self, "startup_s", parse_duration(n("startup_s"), self.startup_s))
        _check_float(n("readiness_initial_delay_s"), self.readiness_initial_delay_s)
        _check_period(n("readiness_period_s"), self.readiness_period_s)
        _check_int(n("readiness_success_threshold"), self.readiness_success_threshold, 1, 1000)
        _check_int(n("readiness_failure_threshold"), self.readiness_failure_threshold, 1, 1000)
        _check_float(n("restart_backoff_s"), self.restart_backoff_s)
        _check_float(n("prestop_s"), self.prestop_s)
        _check_float(n("termination_grace_s"), self.termination_grace_s)


def _check_period(name: str, v: Any) -> None:
    """A probe's or a health check's period: at least 1 ms (Kubernetes' minimum is 1 s, clouds'
    2 s; shorter ones are for experiments, and a zero period would never let time pass)."""
    _check_float(name, v, positive=True)
    if v < 0.001:
        _fail(name, v, "a number of seconds >= 0.001")


def _check_count_or_percent(name: str, v: Any, most: int | None = None) -> None:
    """A count of pods or a percentage of the replicas (at most ``most`` %: Kubernetes bounds
    maxUnavailable by 100 %, not maxSurge)."""
    ok = (_is_int(v) and 0 <= v < 1 << 20) or (
        isinstance(v, str) and v.endswith("%") and v[:-1].isdigit()
        and (most is None or int(v[:-1]) <= most) and int(v[:-1]) <= 1_000_000)
    if not ok:
        bound = f"{most} %" if most is not None else "10^6 %"
        _fail(name, v, f'an integer in [0, {(1 << 20) - 1}] or a percentage up to {bound} '
              f'such as "25%"')


def resolve_count(v: int | str, replicas: int, round_up: bool) -> int:
    """maxSurge / maxUnavailable as pods: a percentage of ``replicas``, surge rounded up and
    unavailable down (as the Deployment controller's ResolveFenceposts)."""
    if isinstance(v, int):
        return v
    exact = replicas * int(v[:-1]) / 100
    return math.ceil(exact) if round_up else math.floor(exact)


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig(_Section):
    """The Deployment's rolling update (``[deployment]``)."""

    _prefix: typing.ClassVar[str] = "deployment"

    #: strategy.rollingUpdate.maxSurge: pods above the replicas during a rollout (Kubernetes
    #: default "25%", rounded up)
    max_surge: int | str = "25%"
    #: strategy.rollingUpdate.maxUnavailable: pods below the replicas (default "25%", rounded down)
    max_unavailable: int | str = "25%"
    #: minReadySeconds: Ready this long before a pod counts as available, s
    min_ready_s: float = 0.0
    #: a readiness gate on the LB's health (AWS pod-readiness-gate-inject, GKE NEG readiness, TKE
    #: direct access): a pod is Ready only once the LB reports its target healthy
    readiness_gate: bool = False

    def __post_init__(self) -> None:
        n = self._name
        _check_count_or_percent(n("max_surge"), self.max_surge)
        _check_count_or_percent(n("max_unavailable"), self.max_unavailable, most=100)
        _check_float(n("min_ready_s"), self.min_ready_s)
        if not isinstance(self.readiness_gate, bool):
            _fail(n("readiness_gate"), self.readiness_gate, "true or false")


@dataclass(frozen=True, kw_only=True)
class EndpointsConfig(_Section):
    """How a change of the Service's endpoints reaches each node's kube-proxy (``[endpoints]``):
    the NodePort path's rules over time."""

    _prefix: typing.ClassVar[str] = "endpoints"

    #: the EndpointSlice change to a node's kube-proxy seeing it (controller, API server, watch),
    #: drawn per node and change, s (assumed: with sync_s, a mean of 0.76 s as measured on kind)
    propagation_s: Duration = Exponential(mean=0.5)
    #: kube-proxy's --iptables-min-sync-period: one sync at most this often (kubernetes#92836), s
    min_sync_period_s: float = 1.0
    #: a sync's start to its rules in force (iptables-restore), s (assumed, see propagation_s)
    sync_s: Duration = Fixed(value=0.26)
    #: KEP-1669 (kube-proxy 1.26+): with no ready endpoint, proxy to the serving terminating
    #: ones; false reproduces earlier kube-proxies (none: drop, Local; reject, Cluster)
    terminating_fallback: bool = True
    #: after a sync, kube-proxy deletes the node's UDP conntrack entries DNATed to endpoints its
    #: rules no longer list (conntrack -D); false reproduces the versions that did not (NodePort
    #: UDP before kubernetes#71573; the 1.32 reconciler with 0 endpoints, kubernetes#139628)
    udp_conntrack_cleanup: bool = True

    def __post_init__(self) -> None:
        n = self._name
        for f in ("propagation_s", "sync_s"):
            object.__setattr__(self, f, parse_duration(n(f), getattr(self, f)))
        _check_float(n("min_sync_period_s"), self.min_sync_period_s)
        for f in ("terminating_fallback", "udp_conntrack_cleanup"):
            if not isinstance(getattr(self, f), bool):
                _fail(n(f), getattr(self, f), "true or false")


#: the ``[cloud]`` fields a profile fills, with their checks' ranges
CLOUD_FIELDS = ("registration_s", "hc_interval_s", "hc_timeout_s", "hc_healthy_threshold",
                "hc_unhealthy_threshold", "deregistration_lag_s", "deregistration_delay_s",
                "draining_new_flows_s")

def _targets(registration_s, hc_interval_s, hc_timeout_s, hc_healthy_threshold,
             hc_unhealthy_threshold, deregistration_lag_s=0.0, deregistration_delay_s=0.0,
             draining_new_flows_s=0.0) -> dict[str, Any]:
    return dict(registration_s=registration_s, hc_interval_s=hc_interval_s,
                hc_timeout_s=hc_timeout_s, hc_healthy_threshold=hc_healthy_threshold,
                hc_unhealthy_threshold=hc_unhealthy_threshold,
                deregistration_lag_s=deregistration_lag_s,
                deregistration_delay_s=deregistration_delay_s,
                draining_new_flows_s=draining_new_flows_s)


#: the kinds of LB target: pods (the direct path), nodes under externalTrafficPolicy Cluster
#: (checked on the traffic port or kube-proxy's 10256) and under Local (the health-check node
#: port)
TARGET_KINDS = ("pods", "nodes", "local_nodes")

#: each cloud LB's defaults by kind of target (docs/config.md cites each; "assumed" there marks
#: the undocumented ones)
CLOUDS: dict[str, dict[str, dict[str, Any]]] = {
    # a generic LB: every value a round number, for experiments
    "custom": dict.fromkeys(TARGET_KINDS, _targets(10.0, 10.0, 5.0, 3, 3, 0.0, 300.0, 0.0)),
    "aws-nlb": {
        # target type ip (aws-load-balancer-controller): registration 90-300 s reported,
        # CreateTargetGroup defaults 30 s x 5 healthy / 2 unhealthy, TCP timeout 10 s,
        # deregistration_delay 300 s, new connections still sent ~120 s after deregistration
        "pods": _targets(180.0, 30.0, 10.0, 5, 2, 0.0, 300.0, 120.0),
        # target type instance (pkg/service/model_builder.go): TCP on the traffic port,
        # 10 s / 10 s, 3 / 3; Local: HTTP /healthz on the health-check node port, 10 s / 6 s,
        # 2 / 2
        "nodes": _targets(180.0, 10.0, 10.0, 3, 3, 0.0, 300.0, 0.0),
        "local_nodes": _targets(180.0, 10.0, 6.0, 2, 2, 0.0, 300.0, 0.0),
    },
    "gke": {
        # NEG (ingress-gce): 15 s x 1 healthy / 2 unhealthy, timeout 15 s
        "pods": _targets(30.0, 15.0, 15.0, 1, 2),
        # L4 NetLB instance groups (ingress-gce pkg/l4/healthchecks): shared check of
        # kube-proxy's 10256 every 8 s, timeout 1 s, 1 / 3; Local: the health-check node port
        # every 3 s, 1 / 2
        "nodes": _targets(30.0, 8.0, 1.0, 1, 3),
        "local_nodes": _targets(30.0, 3.0, 1.0, 1, 2),
    },
    # Tencent CLB: 5 s x 3 healthy / 3 unhealthy, timeout 2 s (the CLB API's defaults); TKE
    # direct access sets a terminating pod's weight to 0 (graceful shutdown)
    "tencent-clb": dict.fromkeys(TARGET_KINDS, _targets(5.0, 5.0, 2.0, 3, 3)),
}

#: the profiles: each names a cloud LB in one of its target modes; the path decides which
#: targets the LB has (a direct profile on the NodePort path takes its cloud's node targets)
CLOUD_PROFILES: dict[str, str] = {
    "custom": "custom",
    "aws-nlb-ip": "aws-nlb", "aws-nlb-instance": "aws-nlb",
    "gke-neg": "gke", "gke-instance-group": "gke",
    "tencent-clb-direct": "tencent-clb", "tencent-clb-nodeport": "tencent-clb",
}


@dataclass(frozen=True, kw_only=True)
class CloudConfig(_Section):
    """The cloud LB's handling of its targets (``[cloud]``). Fields left unset take the profile's
    value (:meth:`value`)."""

    _prefix: typing.ClassVar[str] = "cloud"

    #: whose defaults fill the unset fields: one of :data:`CLOUD_PROFILES`
    profile: str = "custom"
    #: a ready target to the LB taking it (controller and cloud API), then its health checks, s
    registration_s: Duration | None = None
    #: health check interval, s
    hc_interval_s: float | None = None
    #: a check of a target that does not answer fails after this, s
    hc_timeout_s: float | None = None
    #: checks passed in a row before a target is healthy (a new target starts unhealthy)
    hc_healthy_threshold: int | None = None
    #: checks failed in a row before a healthy target is unhealthy
    hc_unhealthy_threshold: int | None = None
    #: a terminating pod to the LB starting to deregister its target, s
    deregistration_lag_s: Duration | None = None
    #: deregistration_delay: a deregistered target's draining (open connections go on), s
    deregistration_delay_s: float | None = None
    #: after deregistration, the LB still sends new flows to the target for this long (AWS NLB
    #: in IP mode, measured), s
    draining_new_flows_s: float | None = None

    def __post_init__(self) -> None:
        n = self._name
        if self.profile not in CLOUD_PROFILES:
            _fail(n("profile"), self.profile, f"one of {sorted(CLOUD_PROFILES)}")
        for f in ("registration_s", "deregistration_lag_s"):
            if getattr(self, f) is not None:
                object.__setattr__(self, f, parse_duration(n(f), getattr(self, f)))
        for f in ("hc_timeout_s", "deregistration_delay_s", "draining_new_flows_s"):
            if getattr(self, f) is not None:
                _check_float(n(f), getattr(self, f))
        if self.hc_interval_s is not None:
            _check_period(n("hc_interval_s"), self.hc_interval_s)
        for f in ("hc_healthy_threshold", "hc_unhealthy_threshold"):
            if getattr(self, f) is not None:
                _check_int(n(f), getattr(self, f), 1, 100)

    def value(self, name: str, targets: str = "pods") -> Any:
        """The field's value, or the profile's cloud's for ``targets`` (one of
        :data:`TARGET_KINDS`) when unset."""
        v = getattr(self, name)
        if v is not None:
            return v
        v = CLOUDS[CLOUD_PROFILES[self.profile]][targets][name]
        return Fixed(value=v) if name in ("registration_s", "deregistration_lag_s") else v


#: what an event does: a rolling update of every pod, scaling to ``replicas``, the crash of pod
#: ``pod``'s container, ``kubectl drain`` of node ``node`` (cordon, then evict its pods), or a
#: node joining the cluster (numbered cluster.nodes, cluster.nodes + 1, ... in event order)
EVENT_KINDS = ("rollout", "scale", "crash", "drain", "add-node")


@dataclass(frozen=True, kw_only=True)
class Event(_Section):
    """One cluster event (an entry of ``[[events]]``)."""

    _prefix: typing.ClassVar[str] = "events"

    #: when, s from the start of the run
    at_s: float
    #: "rollout" (a new pod template: every pod replaced), "scale" (to ``replicas``), "crash"
    #: (pod ``pod``'s server dies and its container restarts), "drain" (``kubectl drain`` of
    #: node ``node``) or "add-node" (a new node joins)
    kind: str
    #: with kind = "scale": the new replica count
    replicas: int | None = None
    #: with kind = "crash": the pod's number (the pods table's: the first cluster.pods are 0 ..
    #: pods - 1, later ones numbered in creation order)
    pod: int | None = None
    #: with kind = "drain": the node's number (0 .. cluster.nodes - 1, or one an earlier
    #: add-node event added)
    node: int | None = None

    def __post_init__(self) -> None:
        n = self._name
        _check_float(n("at_s"), self.at_s)
        if self.kind not in EVENT_KINDS:
            _fail(n("kind"), self.kind, f"one of {list(EVENT_KINDS)}")
        if self.kind == "scale":
            _check_int(n("replicas"), self.replicas, 0, MAX_PODS)
        elif self.replicas is not None:
            _fail(n("replicas"), self.replicas, f"unset for kind = {self.kind!r} (scale reads it)")
        if self.kind == "crash":
            _check_int(n("pod"), self.pod, 0, MAX_PODS - 1)
        elif self.pod is not None:
            _fail(n("pod"), self.pod, f"unset for kind = {self.kind!r} (crash reads it)")
        if self.kind == "drain":
            _check_int(n("node"), self.node, 0, MAX_NODES - 1)
        elif self.node is not None:
            _fail(n("node"), self.node, f"unset for kind = {self.kind!r} (drain reads it)")


def pods_ever(pods: int, events: tuple[Event, ...], max_surge: int | str = 0) -> int:
    """The most pods a run can create: the first ``pods``, a rollout's new revision of the
    replicas at its start, a scale out's new ones, and a drain's replacements of the pods it
    evicts (at most replicas + maxSurge exist then) (the engines size their per-pod arrays by
    it)."""
    total = replicas = pods
    for e in events:
        if e.kind == "rollout":
            total += replicas
        elif e.kind == "scale":
            total += max(0, e.replicas - replicas)
            replicas = e.replicas
        elif e.kind == "drain":
            total += replicas + resolve_count(max_surge, replicas, round_up=True)
    return total


def nodes_ever(nodes: int, events: tuple[Event, ...]) -> int:
    """The nodes a run has at its end: the first ``nodes`` and one per add-node event."""
    return nodes + sum(e.kind == "add-node" for e in events)
