"""``run`` one scenario, or ``compare`` its NodePort and direct paths on the same seed."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .batch import run_batched
from .compiled import run_compiled, warm_up
from .config import DataPath, Scenario
from .conntrack import ConntrackTable, DictConntrackTable
from .metrics import (FLOW_COLUMNS, counters_frame, drops_frame, flows_frame, gauges_frame,
                      load_frame, snat_frame, summarize)
from .model import Model, run_reference

__all__ = ["Result", "Comparison", "run", "compare"]

Engine = Literal["compiled", "batched", "reference"]


@dataclass(frozen=True)
class Result:
    """What one run produced.

    Attributes
    ----------
    scenario : the scenario that was run (a run is a pure function of it)
    flows : one row per flow (``lbsim.metrics.FLOW_COLUMNS``)
    counters : one row per node, ``conntrack -S`` style (``lbsim.metrics.COUNTER_COLUMNS``)
    gauges : conntrack occupancy per node over time (``lbsim.metrics.GAUGE_COLUMNS``)
    drops : every dropped packet with its time, node and cause (``lbsim.metrics.DROP_COLUMNS``)
    snat : SNAT ports in use per (node, pod) over time (``lbsim.metrics.SNAT_COLUMNS``)
    load : new flows and open connections per pod over time (``lbsim.metrics.LOAD_COLUMNS``)
    summary : the summary metrics (``lbsim.metrics.SUMMARY_METRICS``)
    """

    scenario: Scenario
    flows: pd.DataFrame
    counters: pd.DataFrame
    gauges: pd.DataFrame
    drops: pd.DataFrame
    snat: pd.DataFrame
    summary: dict[str, float]
    load: pd.DataFrame


def run(scenario: Scenario, *, engine: Engine = "compiled", batch_flows: int = 4096) -> Result:
    """Simulate ``scenario``.

    ``engine="compiled"`` (default) runs the reference event loop compiled with numba, in simpy
    windows of ``batch_flows`` new flows; ``engine="batched"`` moves flows in numpy batches of up to
    ``batch_flows`` new flows; ``engine="reference"`` processes one event at a time in Python. All
    three give identical records (tests/property/test_engines_agree.py).
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be an lbsim.Scenario, not {type(scenario).__name__}")
    if engine == "compiled":
        warm_up()          # the one-off JIT compilation is not part of a run's wall time
    start = time.perf_counter()
    if engine == "compiled":
        model = run_compiled(Model(scenario, ConntrackTable), batch_flows)
    elif engine == "batched":
        model = run_batched(Model(scenario, ConntrackTable), batch_flows)
    elif engine == "reference":
        model = run_reference(Model(scenario, DictConntrackTable))
    else:
        raise ValueError(f"engine = {engine!r} is invalid: must be 'compiled', 'batched' or 'reference'")
    _warn_cpu_queue(model, scenario)
    if scenario.records == "summary":
        summary = summarize(model, time.perf_counter() - start)
        empty = _empty(model)
        return Result(scenario, empty, counters_frame(model), gauges_frame(model), drops_frame(model),
                      snat_frame(model), summary, _empty_load())
    flows = flows_frame(model)
    wall = time.perf_counter() - start
    return Result(scenario, flows, counters_frame(model), gauges_frame(model), drops_frame(model),
                  snat_frame(model), summarize(model, wall), load_frame(model, flows))


def _warn_cpu_queue(model, scenario: Scenario) -> None:
    """A new packet that waits in a node CPU's queue longer than the client's retransmission
    timeout would be retransmitted by a real client; the model retransmits only dropped packets,
    so such a run is outside the model: say so rather than return it silently."""
    w = scenario.workload
    rto = w.syn_rto_s if w.protocol.value == "tcp" else w.udp_timeout_s
    wait = model.max_cpu_wait / 1e9
    if wait > rto:
        warnings.warn(
            f"a new packet waited {wait:.3g} s in a node CPU's queue, longer than the client's "
            f"retransmission timeout ({rto:g} s): the node's CPUs are overloaded (rate x "
            f"cluster.packet_time_s per CPU >= 1) and client retransmissions of queued packets "
            f"are not modelled, so this run's latencies and retransmission counts are not what a "
            f"node would show", RuntimeWarning, stacklevel=3)


def _empty_load() -> pd.DataFrame:
    """The load table's columns with no rows (``records = "summary"``)."""
    return pd.DataFrame({"t_s": np.zeros(0), "bin_s": np.zeros(0), "pod": np.zeros(0, np.int64),
                         "node": np.zeros(0, np.int64), "new_flows": np.zeros(0, np.int64),
                         "connections": np.zeros(0, np.int64)})


def _empty(model) -> pd.DataFrame:
    """The flows table's columns with no rows (``records = "summary"``)."""
    return pd.DataFrame({k: [] for k in FLOW_COLUMNS})


@dataclass(frozen=True)
class Comparison:
    """Both data paths of one scenario, run on the same seed (same clients, arrivals, durations)."""

    nodeport: Result
    direct: Result

    @property
    def summary(self) -> pd.DataFrame:
        """Metrics as rows, ``nodeport`` and ``direct`` as columns."""
        return pd.DataFrame({"nodeport": pd.Series(self.nodeport.summary),
                             "direct": pd.Series(self.direct.summary)})


def compare(scenario: Scenario, **kwargs) -> Comparison:
    """Run ``scenario`` on the NodePort path and on the direct path; ``kwargs`` go to :func:`run`."""
    return Comparison(run(scenario.replace(path=DataPath.NODEPORT), **kwargs),
                      run(scenario.replace(path=DataPath.DIRECT), **kwargs))
