"""Named scenarios, each runnable on both data paths by ``python -m lbsim.bench --scenario NAME``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import Scenario

__all__ = ["NamedScenario", "SCENARIOS", "get", "quick"]


@dataclass(frozen=True)
class NamedScenario:
    name: str
    description: str
    build: Callable[[], Scenario]


def _default() -> Scenario:
    return Scenario()


SCENARIOS: dict[str, NamedScenario] = {
    s.name: s for s in [
        NamedScenario("default",
                      "10 nodes, 100 pods spread, 1,000 TCP flows/s for 100 s, iptables + Cluster: "
                      "the everyday case, no pathology forced",
                      _default),
    ]
}


def get(name: str) -> Scenario:
    """The scenario called ``name``; ``ValueError`` lists the known names."""
    try:
        return SCENARIOS[name].build()
    except KeyError:
        raise ValueError(f"scenario = {name!r} is invalid: must be one of {sorted(SCENARIOS)}") from None


def quick(s: Scenario, factor: int = 10) -> Scenario:
    """A scaled-down copy: ``factor`` times fewer flows (at least 1,000), same rates and sizes."""
    return s.replace(**{"workload.flows": max(min(1000, s.workload.flows), s.workload.flows // factor)})
