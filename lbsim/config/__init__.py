"""Scenario configuration: frozen, keyword-only dataclasses that round-trip to dicts and TOML.

Every field has its unit in its name (``_s`` seconds, ``_per_s`` per second) and its default here,
in one place. Construction validates each field and raises ``ValueError`` naming the field, the
value and what is allowed. See ``docs/config.md`` for the full reference.
"""

from __future__ import annotations

from .fields import MAX_CLIENTS, MAX_NODES, MAX_PODS, _plain, _Section  # noqa: F401 (sweep)
from .dynamics import (CLOUD_PROFILES, EVENT_KINDS, CloudConfig, DeploymentConfig,
                       EndpointsConfig, Event, LifecycleConfig)
from .scenario import Scenario
from .sections import (CiliumAlgorithm, ClusterConfig, ConntrackConfig, DataPath, IpvsScheduler,
                       KubeProxyConfig, LBAlgorithm, LBConfig, NatConfig, NatKernel,
                       NetworkConfig, PodConfig, Protocol, ProxyMode, SessionAffinity, Source, Arrival,
                       Pairing,
                       TrafficPolicy, WorkloadConfig)

__all__ = [
    "DataPath", "Protocol", "Source", "Arrival", "Pairing", "LBAlgorithm", "ProxyMode", "IpvsScheduler",
    "CiliumAlgorithm", "SessionAffinity", "TrafficPolicy", "NatKernel",
    "WorkloadConfig", "LBConfig", "ClusterConfig", "PodConfig", "KubeProxyConfig", "NatConfig",
    "ConntrackConfig", "NetworkConfig", "LifecycleConfig", "DeploymentConfig", "EndpointsConfig",
    "CloudConfig",
    "Event", "EVENT_KINDS", "CLOUD_PROFILES", "Scenario",
    "MAX_NODES", "MAX_PODS", "MAX_CLIENTS",
]
