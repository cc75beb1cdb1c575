"""``run`` one scenario, or ``compare`` its NodePort and direct paths on the same seed."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import simpy

from .budget import STREAM_WINDOW, check_clock, check_disk, check_memory, horizon_s
from .caveats import duration_caveats, run_caveats, scenario_caveats
from .compiled import compiled_engine
from .compiled.stream import StreamedRun
from .config import DataPath, Scenario
from .control import ControlPlane, run_engine
from .control.cluster import check_events, follow
from .control.timeline import Timeline, tables
from .kernel import NEVER
from .metrics import (FLOW_COLUMNS, counters_frame, drops_frame, flows_frame, gauges_frame,
                      load_frame, snat_frame, summarize)
from .records import Records
from .reference import ReferenceEngine
from .flowstats import FlowStats
from .progress import RunProgress, wanted
from .spill import Lazy, Spill, prepare_dir, write_tables
from .trace import with_trace
from .workload import draw_workload, streaming_refusal, streams, with_duration

__all__ = ["Result", "Comparison", "run", "compare", "simulate", "warm_up"]

Engine = Literal["compiled", "reference"]
Control = Callable[[simpy.Environment, ControlPlane], object]


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
    warnings : what makes this run not mean what it seems, or settings it ignored
        (:mod:`lbsim.caveats`); each was also issued as a ``RuntimeWarning``
    timeline : with ``[[events]]``, the control plane's record as far as the run went
        (:class:`lbsim.Timeline`: pods, events, the LB's targets over time); else None
    records_dir : where the flows, drops and SNAT tables were written as Parquet
        (``flows.parquet``, ``drops.parquet``, ``snat.parquet``), or None. A streamed run with
        full records writes them as it goes (a temporary directory, removed once no Result,
        copy or table can read it, unless ``run(..., records_dir=...)`` named one) and ``flows``, ``drops``, ``snat`` and
        ``load`` read them on first access; read part of one with pandas or pyarrow
        (``pd.read_parquet(r.records_dir / "flows.parquet", columns=[...])``).
    """

    scenario: Scenario
    _flows: pd.DataFrame | Lazy
    counters: pd.DataFrame
    gauges: pd.DataFrame
    _drops: pd.DataFrame | Lazy
    _snat: pd.DataFrame | Lazy
    summary: dict[str, float]
    _load: pd.DataFrame | Lazy
    warnings: tuple[str, ...] = ()
    timeline: Timeline | None = None
    records_dir: Path | None = None

    @property
    def flows(self) -> pd.DataFrame:
        """One row per flow (``lbsim.metrics.FLOW_COLUMNS``)."""
        return _frame(self._flows)

    @property
    def drops(self) -> pd.DataFrame:
        """Every dropped packet (``lbsim.metrics.DROP_COLUMNS``)."""
        return _frame(self._drops)

    @property
    def snat(self) -> pd.DataFrame:
        """SNAT ports in use per (node, pod) over time (``lbsim.metrics.SNAT_COLUMNS``)."""
        return _frame(self._snat)

    @property
    def load(self) -> pd.DataFrame:
        """New flows and open connections per pod over time (``lbsim.metrics.LOAD_COLUMNS``)."""
        return _frame(self._load)


def _frame(x: pd.DataFrame | Lazy) -> pd.DataFrame:
    return x.frame() if isinstance(x, Lazy) else x


def simulate(scenario: Scenario, *, engine: Engine = "compiled", batch_flows: int = 4096,
             control: Control | None = None, stream_window: int | None = None,
             progress: bool | None = None, records_dir: str | os.PathLike | None = None,
             tables: bool = True) -> Records:
    """Draw ``scenario``'s workload and run it through ``engine`` under simpy; the records.

    ``control(env, plane)`` may start simpy processes that change the data plane at instants
    (:mod:`lbsim.control`); both engines see a change from its instant on. A run of more than
    :data:`lbsim.budget.STREAM_FLOWS` flows that can stream (:func:`lbsim.workload.streams`)
    streams in windows of :data:`lbsim.budget.STREAM_WINDOW` flows, ``stream_window`` flows if
    given (any size: the same records), keeping no per-flow rows: its records then carry the
    per-flow statistics (``Records.flow_stats``) and no per-flow arrays; with full records it
    writes its flows, drops and SNAT tables to Parquet in ``records_dir`` (None: a new
    temporary directory, removed when the records and every table read from it are gone) as it
    goes (``Records.spill``), unless ``tables`` is False (only the summary is wanted: a sweep).
    ``progress``: draw a bar (:mod:`lbsim.progress`; None: on an interactive terminal, for runs
    over 2 s).
    """
    records = _simulate(scenario, engine, batch_flows, control, stream_window, progress,
                        records_dir, tables)
    if records_dir is not None and records.spill is None:
        why = ("tables=False builds none" if not tables else
               "simulate() writes the tables of a streamed run with full records only "
               "(lbsim.run writes a whole run's)")
        warnings.warn(f"records_dir = {str(records_dir)!r} is ignored: {why}", RuntimeWarning,
                      stacklevel=2)
    return records


def _check_outputs(records_dir, tables) -> None:
    if records_dir is not None and not isinstance(records_dir, (str, os.PathLike)):
        raise TypeError(f"records_dir must be a path (str or os.PathLike), not "
                        f"{type(records_dir).__name__}")
    if records_dir is not None and os.fspath(records_dir) == "":
        raise ValueError("records_dir = '' is invalid: must name a directory")
    if not isinstance(tables, bool):
        raise TypeError(f"tables must be True or False, not {tables!r}")


def _simulate(scenario: Scenario, engine: str, batch_flows: int, control,
              stream_window: int | None, progress: bool | None,
              records_dir: str | os.PathLike | None, tables: bool) -> Records:
    _check_outputs(records_dir, tables)
    if engine not in ("compiled", "reference"):
        raise ValueError(f"engine = {engine!r} is invalid: must be 'compiled' or 'reference'")
    if batch_flows < 1:
        raise ValueError(f"batch_flows = {batch_flows} is invalid: must be >= 1")
    scenario = with_duration(scenario)   # workload.duration_s: the flows that start in time
    scenario = with_trace(scenario)      # arrival = "trace": the trace's flows and clients
    streamed = _streamed(scenario, engine, control, stream_window)
    if scenario.events:
        check_events(scenario)
    check_clock(scenario)                # refuse what would overflow the clock or tick forever,
    check_memory(scenario, engine, streamed=streamed)   # or not fit, before allocating anything
    bar = (RunProgress(scenario.workload.flows, horizon_s(scenario, worst=False))
           if wanted(progress) else None)
    try:
        if streamed:
            return _simulate_streamed(scenario, stream_window or STREAM_WINDOW, bar,
                                      records_dir, tables)
        return _simulate_whole(scenario, engine, batch_flows, control, bar)
    finally:
        if bar is not None:
            bar.close()


def _simulate_whole(scenario: Scenario, engine: str, batch_flows: int, control,
                    bar: RunProgress | None) -> Records:
    w = draw_workload(scenario)
    eng = compiled_engine(w) if engine == "compiled" else ReferenceEngine(w)
    p = w.params
    clusters: list = []
    if scenario.events:
        control = _both(follow(scenario, clusters), control)
    # a closed loop's starts are found as the run goes: windows end only at control events
    run_engine(eng, None if p.closed_loop else w.t0, p, batch_flows, control, bar)
    rec = eng.records()
    if clusters:
        cl = clusters[0]
        gone = np.array([NEVER if q.gone is None else q.gone for q in cl.pods]
                        + [NEVER] * (p.pods - len(cl.pods)), np.int64)
        rec = dataclasses.replace(rec, timeline=tables(cl), pod_gone_ns=gone,
                                  pod_cuts_ns=np.array(cl.cuts, np.int64).reshape(-1, 2))
    return rec


def _streamed(sc: Scenario, engine: str, control, window: int | None) -> bool:
    """Whether the run streams; a ``window`` asked for where it cannot is refused."""
    if window is None:
        return control is None and streams(sc, engine)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"stream_window = {window!r} is invalid: must be an int >= 1 (flows)")
    why = ("engine = 'reference'" if engine != "compiled" else
           "a control plane (control=...)" if control is not None else streaming_refusal(sc))
    if why is not None:
        raise ValueError(f"stream_window = {window} is invalid for this run: it cannot stream "
                         f"with {why}")
    return True


def _simulate_streamed(sc: Scenario, window: int, bar: RunProgress | None,
                       records_dir: str | os.PathLike | None, tables: bool) -> Records:
    """A streamed run (:mod:`lbsim.compiled.stream`): records of finished flows go straight
    into the summary's statistics, and with full records (and ``tables``) into Parquet files
    (lbsim.spill)."""
    full = sc.records == "full" and tables
    directory, temporary = prepare_dir(records_dir) if full else (None, False)
    spill: Spill | None = None

    def sink(chunk) -> None:                 # (stats and spill are bound below)
        stats.add(chunk)
        if spill is not None:
            spill.flows(chunk)

    def drained(D, SG) -> None:
        spill.drops(D)
        spill.snat(SG)
    try:
        if full:
            check_disk(sc, directory)
        run = StreamedRun(sc, window, sink, drained if full else None)
        stats = FlowStats(run.p, run.src.pod_node, exact=False)
        if full:
            spill = Spill(directory, run.p, run.src.pod_node, temporary)
        run.progress = bar
        run_engine(run, None, run.p, STREAM_WINDOW, None)
        stats.settle()
        records = run.records()
        if spill is not None:
            spill.close()
    except BaseException as e:
        # a run that did not finish leaves no temporary directory behind (whatever still holds
        # the exception, and with it this frame: an interactive session keeps the last one)
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
        if spill is not None and isinstance(e, OSError):    # a full disk, a directory gone
            raise ValueError(f"records_dir = {str(spill.directory)!r}: writing the run's "
                             f"tables failed: {e.strerror or e}") from None
        raise
    return dataclasses.replace(records, flow_stats=stats, spill=spill)


def _both(a: Control, b: Control | None) -> Control:
    if b is None:
        return a

    def control(env, plane):
        a(env, plane)
        b(env, plane)
    return control


def run(scenario: Scenario, *, engine: Engine = "compiled", batch_flows: int = 4096,
        control: Control | None = None, stream_window: int | None = None,
        progress: bool | None = None, records_dir: str | os.PathLike | None = None,
        tables: bool = True) -> Result:
    """Simulate ``scenario``.

    ``engine="compiled"`` (default) runs the event loop compiled with numba, in simpy windows of
    at most ``batch_flows`` new flows; ``engine="reference"`` processes one event at a time in
    Python. Both give identical records (tests/property/test_engines_agree.py). ``control``: a
    control plane (:func:`simulate`). ``records_dir``: with full records, write the flows,
    drops and SNAT tables there as Parquet (:attr:`Result.records_dir`); a streamed run with
    full records writes them as it goes, to a temporary directory if none is named.
    ``tables=False``: build no flows, drops, SNAT or load table (empty; a sweep reads only the
    summary), and write none.
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be an lbsim.Scenario, not {type(scenario).__name__}")
    _check_outputs(records_dir, tables)
    out = (prepare_dir(records_dir)[0]     # a directory it cannot write is refused up front
           if records_dir is not None and tables and scenario.records == "full" else None)
    if engine == "compiled":
        warm_up()          # the one-off JIT compilation is not part of a run's wall time
    start = time.perf_counter()
    records = _simulate(scenario, engine, batch_flows, control, stream_window, progress,
                        records_dir, tables)
    asked, scenario = scenario, records.workload.scenario   # workload.duration_s: its flows
    notes = tuple(scenario_caveats(scenario) + run_caveats(scenario, records)
                  + duration_caveats(asked, scenario)
                  + ([f"records_dir = {str(records_dir)!r} is ignored: "
                      + ('records = "summary" keeps' if tables else "tables=False builds")
                      + " no flows, drops or SNAT tables"]
                     if records_dir is not None and (scenario.records == "summary" or not tables)
                     else []))
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    if scenario.records == "summary" or not tables:
        summary = summarize(records, time.perf_counter() - start)
        none = records if scenario.records == "summary" else records.without_table_rows()
        return Result(scenario, _empty(), counters_frame(records), gauges_frame(records),
                      drops_frame(none), snat_frame(none), summary, _empty_load(), notes,
                      records.timeline)
    if records.spill is not None:            # streamed: the tables are on disk already
        t = records.spill.frames()
        wall = time.perf_counter() - start
        return Result(scenario, t["flows"], counters_frame(records), gauges_frame(records),
                      t["drops"], t["snat"], summarize(records, wall), t["load"], notes,
                      records.timeline, records.spill.directory)
    flows = flows_frame(records)
    wall = time.perf_counter() - start
    drops, snat = drops_frame(records), snat_frame(records)
    if out is not None:
        write_tables(out, {"flows": flows, "drops": drops, "snat": snat})
    return Result(scenario, flows, counters_frame(records), gauges_frame(records), drops, snat,
                  summarize(records, wall), load_frame(records, flows), notes, records.timeline,
                  out)


def _empty_load() -> pd.DataFrame:
    """The load table's columns with no rows (``records = "summary"``)."""
    return pd.DataFrame({"t_s": np.zeros(0), "bin_s": np.zeros(0), "pod": np.zeros(0, np.int64),
                         "node": np.zeros(0, np.int64), "new_flows": np.zeros(0, np.int64),
                         "connections": np.zeros(0, np.int64)})


def _empty() -> pd.DataFrame:
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
    """Run ``scenario`` on the NodePort path and on the direct path; ``kwargs`` go to :func:`run`
    (a ``records_dir`` gets one subdirectory per path: ``nodeport/`` and ``direct/``)."""
    _check_outputs(kwargs.get("records_dir"), kwargs.get("tables", True))

    def on(path: DataPath) -> Result:
        kw = dict(kwargs)
        if isinstance(kw.get("records_dir"), (str, os.PathLike)):
            kw["records_dir"] = Path(kw["records_dir"]) / path.value
        return run(scenario.replace(path=path), **kw)
    return Comparison(on(DataPath.NODEPORT), on(DataPath.DIRECT))


_warm = False


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the engine once per process, so that a run's
    ``wall_s`` measures the simulation, not the one-off compilation (benchmarks/ times both)."""
    global _warm
    if _warm:
        return
    _warm = True
    import sys

    from .compiled.index import rebuild_index
    from .compiled.layout import entry_rows
    start = time.perf_counter()
    from .scenarios import get
    # both paths, both record modes, the draws of the default and the perf scenarios: every
    # compiled function a run calls (the summary's included) is loaded here, not inside a run
    with warnings.catch_warnings():      # tiny runs: their caveats are not the user's
        warnings.simplefilter("ignore", RuntimeWarning)
        for sc in (Scenario(), get("perf-nodeport")):
            for path in ("nodeport", "direct"):
                for records in ("summary", "full"):
                    run(sc.replace(**{"workload.flows": 300, "path": path, "records": records}),
                        progress=False)
                # streamed (windows of 64 flows): the engines' per-flow rows in a ring
                run(sc.replace(**{"workload.flows": 300, "path": path, "records": "summary"}),
                    stream_window=64, progress=False)
        # the direct path through events (a scale in at 0.1 s)
        run(Scenario().replace(**{"workload.flows": 300, "path": "direct", "events": [
            {"at_s": 0.1, "kind": "scale", "replicas": 50}]}), progress=False)
    rebuild_index(entry_rows(2), 2, 16)
    took = time.perf_counter() - start
    if took > 5:
        print(f"lbsim: compiled the simulation engine in {took:.0f} s (first run with this "
              f"version on this machine; numba caches it on disk)", file=sys.stderr, flush=True)
