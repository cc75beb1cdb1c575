"""One scenario on both data paths, and its figures: the unit of work of ``python -m lbsim.bench``.

:func:`run_scenario` turns a :class:`Task` (plain, picklable data) into an :class:`Outcome` (both
paths' summary metrics, the figures drawn, timings). It is a module-level function so that the
worker processes of :func:`lbsim.runner.run_tasks` can import it. It sits in the pipeline between
the simulation and figures below it and the report and the bench above it, which import it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .config import Scenario
from .simulation import compare

__all__ = ["Task", "Outcome", "run_scenario"]


@dataclass(frozen=True)
class Task:
    """One scenario to run on both paths (and draw, when ``out_dir`` is set)."""

    index: int
    name: str
    scenario: Scenario
    engine: str = "compiled"
    batch_flows: int = 4096
    out_dir: str | None = None
    #: start of its figure files' names
    prefix: str = ""


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_scenario` gives back for one task."""

    index: int
    name: str
    #: path -> summary metrics (raw floats; NaN where undefined)
    paths: dict[str, dict[str, float]]
    #: FigureInfo of every figure kind (empty without out_dir)
    figures: list[Any] = field(default_factory=list)
    sim_s: float = 0.0
    fig_s: float = 0.0
    #: path -> the run's warnings (lbsim.caveats)
    warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)


def run_scenario(task: Task) -> Outcome:
    """Simulate ``task.scenario`` on both paths; draw its figures if ``task.out_dir`` is set."""
    t0 = time.perf_counter()
    # without figures only the summaries are read: no tables built (or written to Parquet)
    c = compare(task.scenario, engine=task.engine, batch_flows=task.batch_flows,
                tables=task.out_dir is not None)
    t1 = time.perf_counter()
    figures: list[Any] = []
    if task.out_dir is not None:
        from .figures import scenario_figures  # matplotlib only when drawing

        figures = scenario_figures(task.name, c, task.out_dir, task.prefix or None)
    return Outcome(task.index, task.name, {"nodeport": dict(c.nodeport.summary),
                                           "direct": dict(c.direct.summary)},
                   figures, t1 - t0, time.perf_counter() - t1,
                   {"nodeport": c.nodeport.warnings, "direct": c.direct.warnings})
