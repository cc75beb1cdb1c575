"""The whole scenario: every section, the seed, and the TOML round trip."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .fields import MAX_NODES, MAX_PODS, _check_enum, _check_int, _fail, _plain, _Section
from .dynamics import (CloudConfig, DeploymentConfig, EndpointsConfig, Event, LifecycleConfig,
                       pods_ever)
from .sections import (Arrival, ClusterConfig, ConntrackConfig, DataPath, IpvsScheduler,
                       KubeProxyConfig, LBAlgorithm, LBConfig, NatConfig, NetworkConfig,
                       PodConfig, ProxyMode, SessionAffinity, WorkloadConfig)

__all__ = ["Scenario"]


@dataclass(frozen=True, kw_only=True)
class Scenario(_Section):
    """A whole simulation: data path, seed and every component's settings.

    A run is a pure function of the scenario (its ``seed`` included).
    """

    path: DataPath = DataPath.NODEPORT
    seed: int = 1
    #: what a run keeps: "full" (every table of lbsim.Result) or "summary" (the summary metrics,
    #: counters and conntrack gauges only: no per-flow, per-drop, SNAT or load tables, so memory
    #: follows the live conntrack entries, not the flows)
    records: str = "full"
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    lb: LBConfig = field(default_factory=LBConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    pod: PodConfig = field(default_factory=PodConfig)
    kube_proxy: KubeProxyConfig = field(default_factory=KubeProxyConfig)
    nat: NatConfig = field(default_factory=NatConfig)
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    #: cluster events in time order (``[[events]]`` in TOML); none: the steady state
    events: tuple[Event, ...] = ()

    def __post_init__(self) -> None:
        _check_enum("path", self.path, DataPath)
        _check_int("seed", self.seed, 0, (1 << 63) - 1)
        if self.records not in ("full", "summary"):
            _fail("records", self.records, '"full" or "summary"')
        object.__setattr__(self, "events", _events(self.events))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, dict):  # allow Scenario(workload={...}) from plain data
                hint = typing.get_type_hints(type(self))[f.name]
                object.__setattr__(self, f.name, hint.from_dict(v, f.name))
        if self.events and isinstance(self.pod.workers, tuple):
            _fail("pod.workers", list(self.pod.workers), "one count with [[events]] (a "
                  "Deployment's pods share their template)")
        if self.events and pods_ever(self.cluster.pods, self.events,
                                     self.deployment.max_surge) > MAX_PODS:
            _fail("events", f"{len(self.events)} events",
                  f"at most {MAX_PODS} pods created in all (cluster.pods + each rollout's "
                  f"replicas + each scale out + replicas and maxSurge per drain)")
        _check_nodes(self.cluster.nodes, self.events)
        w = self.pod.workers
        if isinstance(w, tuple) and len(w) != self.cluster.pods:
            _fail("pod.workers", list(w), f"one count or a list of cluster.pods = "
                  f"{self.cluster.pods} counts")
        _check_closed_loop(self)
        if self.workload.pin_pairs and self.cluster.cpus_per_node < 2:
            _fail("cluster.cpus_per_node", self.cluster.cpus_per_node, "at least 2 with "
                  "workload.pin_pairs = true (a pair's two flows on two CPUs)")

    @property
    def udp_stream_s(self) -> float:
        """``nf_conntrack_udp_timeout_stream``: conntrack.udp_stream_s, or the default of the
        kernel nat.kernel names (lbsim.kernel_versions), s."""
        v = self.conntrack.udp_stream_s
        return float(v) if v is not None else self.nat.behaviour.udp_stream_default_s

    # -- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.events:            # the steady state's files and tables stay as they were
            del out["events"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], prefix: str | None = None) -> Scenario:
        """Build a scenario from plain data (as read from TOML); unknown keys are errors."""
        return super().from_dict(data, "")

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read a scenario from a TOML file."""
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ValueError(f"cannot read config {path}: {e.strerror}") from None
        return cls.from_toml_string(text, source=str(path))

    @classmethod
    def from_toml_string(cls, text: str, source: str = "<string>") -> Scenario:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"malformed TOML in {source}: {e}") from None
        return cls.from_dict(data)

    def to_toml(self) -> str:
        """The scenario as TOML text; ``Scenario.from_toml_string(s.to_toml()) == s``."""
        return tomli_w.dumps(self.to_dict())

    def replace(self, **changes: Any) -> Scenario:
        """A copy with dotted fields changed: ``s.replace(**{"cluster.nodes": 3, "seed": 2})``."""
        data = self.to_dict()
        for key, value in changes.items():
            section, _, name = key.rpartition(".")
            target = data.setdefault(section, {}) if section else data
            target[name] = _plain(value)
        return Scenario.from_dict(data)


def _check_closed_loop(sc: Scenario) -> None:
    """A closed loop's starts are found as the run goes, so no choice made from every flow's
    start up front can follow it: the LB's least connections and persistence, kube-proxy's
    session affinity and IPVS least connections (lbsim.lb, lbsim.kube_proxy)."""
    if sc.workload.arrival is not Arrival.CLOSED_LOOP:
        return
    lb, kp = sc.lb, sc.kube_proxy
    why = None
    if lb.algorithm is LBAlgorithm.LC:
        why = 'lb.algorithm = "lc"'
    elif lb.persistence_s > 0:
        why = f"lb.persistence_s = {lb.persistence_s:g}"
    elif sc.path is DataPath.NODEPORT and kp.session_affinity is SessionAffinity.CLIENT_IP:
        why = 'kube_proxy.session_affinity = "ClientIP"'
    elif (sc.path is DataPath.NODEPORT and kp.mode is ProxyMode.IPVS
          and kp.ipvs_scheduler in (IpvsScheduler.LC, IpvsScheduler.WLC)):
        why = f'kube_proxy.ipvs_scheduler = "{kp.ipvs_scheduler.value}"'
    if why is not None:
        _fail("workload.arrival", sc.workload.arrival.value, f'"poisson", "periodic" or "trace" '
              f"with {why} (lbsim makes that choice from every flow's start up front, and a "
              f"closed loop's starts are found as the run goes)")


def _check_nodes(nodes: int, events: tuple[Event, ...]) -> None:
    """Each drain names a node that exists at its instant; add-node events stay within
    MAX_NODES."""
    for i, e in enumerate(events):
        if e.kind == "add-node":
            nodes += 1
            if nodes > MAX_NODES:
                _fail(f"events[{i}].kind", e.kind, f"at most {MAX_NODES} nodes in all "
                      f"(cluster.nodes + each add-node)")
        elif e.kind == "drain" and e.node >= nodes:
            _fail(f"events[{i}].node", e.node, f"in [0, {nodes - 1}] (the nodes at "
                  f"{e.at_s:g} s: cluster.nodes and the add-node events listed before it; an "
                  f"add-node at the same instant must come first)")


def _events(v: Any) -> tuple[Event, ...]:
    """``[[events]]`` as Event objects, each error naming its entry; in time order."""
    if not isinstance(v, (list, tuple)):
        _fail("events", v, "a list of tables ([[events]] in TOML)")
    out = []
    for i, e in enumerate(v):
        if isinstance(e, Event):
            out.append(e)
            continue
        if isinstance(e, dict) and not {"at_s", "kind"} <= set(e):
            _fail(f"events[{i}]", e, "a table with at_s and kind (and replicas, to scale; pod, to "
                  "crash; node, to drain)")
        try:
            out.append(Event.from_dict(e, "events"))
        except ValueError as err:            # name the entry: events[2].kind = ...
            raise ValueError(str(err).replace("events.", f"events[{i}].", 1)) from None
    times = [e.at_s for e in out]
    if times != sorted(times):
        _fail("events", [e.at_s for e in out], "in time order (each at_s >= the one before)")
    return tuple(out)
