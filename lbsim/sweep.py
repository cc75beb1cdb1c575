"""Parameter sweeps: a grid of scenarios x replications x data paths, run into one tidy table.

>>> import lbsim
>>> base = lbsim.Scenario().replace(**{"workload.flows": 300, "cluster.nodes": 2, "cluster.pods": 4})
>>> df = lbsim.sweep(base, {"cluster.nodes": [2, 3]}, replications=2, executor="inprocess",
...                  progress=False)
>>> len(df), list(df.columns[:4])
(8, ['point', 'replication', 'path', 'seed'])

One row per (grid point, replication, path). Every config field is a dotted column (``cluster.nodes``,
``nat.random_fully``, ...), every summary metric of :data:`lbsim.metrics.SUMMARY_METRICS` a column,
then ``wall_s`` (wall-clock seconds of that row's run) and ``error`` (``None``, or why the row has no
metrics: its run raised; its metrics are NaN and the sweep goes on; a point whose values the
validator refuses is refused before anything runs). Seeds come from ``(base seed, point, replication)`` through ``numpy.random.SeedSequence``
(:func:`derive_seed`), so the table does not depend on the executor or on the order runs finish
in; both paths of a (point, replication) share the seed. See docs/sweep.md.

``python -m lbsim.sweep --grid cluster.nodes=10,50,100 --out results.parquet`` is the command line
(``--help``); bad input prints one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import inspect
import itertools
import json
import math
import os
import sys
import time
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .budget import check_clock
from .control.cluster import check_events
from .config import DataPath, Scenario, _Section
from .metrics import SUMMARY_METRICS
from .runner import check_executor, default_jobs, run_tasks
from .simulation import run

__all__ = ["sweep", "expand_grid", "derive_seed", "load_cache", "CONFIG_COLUMNS", "METRIC_COLUMNS",
           "TIMING_COLUMNS", "main"]

#: Version of the cache file layout; part of every cache key.
CACHE_FORMAT = 2   # 2: the headroom metrics

#: Columns that depend on the machine's speed (leave them out when comparing tables).
TIMING_COLUMNS = ("wall_s", "flows_per_wall_s")


def _config_fields() -> tuple[str, ...]:
    """Every field of a Scenario as a dotted name, in declaration order."""
    hints = typing.get_type_hints(Scenario)
    out: list[str] = []
    for f in dataclasses.fields(Scenario):
        h = hints[f.name]
        if isinstance(h, type) and issubclass(h, _Section):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(h)]
        else:
            out.append(f.name)
    return tuple(out)


_FIELDS = _config_fields()
#: Config columns of the table (``path`` and ``seed`` are row columns of their own).
CONFIG_COLUMNS = tuple(c for c in _FIELDS if c not in ("path", "seed"))
#: Metric columns of the table: the summary metrics (``wall_s`` is the sweep's own, see above).
METRIC_COLUMNS = tuple(m for m in SUMMARY_METRICS if m != "wall_s")
_COLUMNS = ("point", "replication", "path", "seed", *CONFIG_COLUMNS, *METRIC_COLUMNS,
            "wall_s", "error")


# -- grid and seeds ---------------------------------------------------------------------------

def _scalar(v: Any) -> Any:
    """numpy scalars -> Python scalars (so values hash, pickle and compare the same everywhere)."""
    return v.item() if isinstance(v, np.generic) else v


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise ValueError(f"grid key {key!r} is invalid: must be a dotted field name such as "
                         f"'cluster.nodes'")
    if key == "path":
        raise ValueError("grid key 'path' is invalid: choose the data paths with paths=...")
    if key not in _FIELDS:
        close = difflib.get_close_matches(key, _FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown grid key {key!r}{hint}: must be a dotted field name of a "
                         f"Scenario such as 'cluster.nodes' (docs/config.md lists them)")
    return key


def expand_grid(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None
                ) -> list[dict[str, Any]]:
    """The points of ``grid``, in order: a point is a dict of dotted field -> value.

    A mapping of field -> list of values is expanded to the full factorial, the first field
    varying slowest (``itertools.product`` order); a list of dicts is taken as explicit points;
    ``None`` is one point, the base scenario itself.
    """
    if grid is None:
        return [{}]
    if isinstance(grid, Mapping):
        keys = [_check_key(k) for k in grid]
        values = []
        for k in keys:
            v = grid[k]
            if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray, range)):
                raise ValueError(f"grid[{k!r}] = {v!r} is invalid: must be a list of values")
            if len(v) == 0:
                raise ValueError(f"grid[{k!r}] is empty: must list at least one value")
            values.append([_scalar(x) for x in v])
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence):
        raise ValueError(f"grid must be a dict of field -> list of values or a list of dicts, "
                         f"not {type(grid).__name__}")
    points = []
    for i, p in enumerate(grid):
        if not isinstance(p, Mapping):
            raise ValueError(f"grid point {i} = {p!r} is invalid: must be a dict of field -> value")
        points.append({_check_key(k): _scalar(v) for k, v in p.items()})
    if not points:
        raise ValueError("grid has no points")
    return points


def derive_seed(base_seed: int, point: int, replication: int) -> int:
    """The seed of (point, replication): two 64-bit words of ``SeedSequence([base_seed, point,
    replication])`` folded (xor) into an integer in [0, 2**63)."""
    a, b = np.random.SeedSequence([base_seed, point, replication]).generate_state(2, np.uint64)
    return int(a ^ b) >> 1


# -- one task: a (point, replication), every path -----------------------------------------------

def _flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario's plain dict -> {dotted column: value}; lists and tables become JSON strings."""
    out: dict[str, Any] = {}
    for col in CONFIG_COLUMNS:
        section, _, name = col.rpartition(".")
        v = data.get(section, {}).get(name) if section else data.get(name)
        if isinstance(v, (Mapping, list, tuple)):
            v = json.dumps(v, sort_keys=True, default=str)
        out[col] = _scalar(v)
    return out


def _nan_metrics() -> dict[str, float]:
    return {m: math.nan for m in METRIC_COLUMNS}


def _error_rows(task: dict[str, Any], message: str) -> list[dict[str, Any]]:
    return [{"point": task["point"], "replication": task["replication"], "path": p,
             "seed": task["seed"], **task["config"], **_nan_metrics(), "wall_s": 0.0,
             "error": message} for p in task["paths"]]


def _run_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one (point, replication) on each path; runs in a worker (plain data in, plain out)."""
    rows = []
    for p in task["paths"]:
        start = time.perf_counter()
        error, metrics = None, _nan_metrics()
        try:
            # the summary only: no tables built, none written (a long full-records point
            # streams without writing Parquet)
            summary = run(Scenario.from_dict({**task["scenario"], "path": p}),
                          tables=False).summary
            metrics = {m: _scalar(summary[m]) for m in METRIC_COLUMNS}
        except Exception as e:  # noqa: BLE001  (record it; the sweep goes on)
            error = f"{type(e).__name__}: {e}"
        rows.append({"point": task["point"], "replication": task["replication"], "path": p,
                     "seed": task["seed"], **task["config"], **metrics,
                     "wall_s": time.perf_counter() - start, "error": error})
    return rows


def _point_scenario(base: Scenario, i: int, point: dict[str, Any], paths: list[str]) -> Scenario:
    """The point's scenario, or ``ValueError`` naming the point: an invalid value, or a run the
    model's clock cannot hold on one of ``paths``, is refused before anything runs."""
    try:
        sc = base.replace(**point)
        for path in paths:
            if sc.events:
                check_events(sc.replace(path=path))
            check_clock(sc.replace(path=path))
    except ValueError as e:
        shown = ", ".join(f"{k} = {v!r}" for k, v in point.items())
        raise ValueError(f"grid point {i} ({shown}): {e}") from None
    return sc


def _tasks(base: Scenario, points: list[dict[str, Any]], replications: int,
           paths: list[str]) -> list[dict[str, Any]]:
    from . import __version__

    scenarios = [_point_scenario(base, i, point, paths) for i, point in enumerate(points)]
    tasks = []
    for i, sc in enumerate(scenarios):
        for r in range(replications):
            seed = derive_seed(sc.seed, i, r)
            data = sc.replace(seed=seed).to_dict()
            data.pop("path", None)
            ident = {"format": CACHE_FORMAT, "lbsim": __version__, "point": i, "replication": r,
                     "paths": paths, "scenario": data}
            key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=repr).encode()).hexdigest()
            tasks.append({"point": i, "replication": r, "paths": paths, "seed": seed,
                          "scenario": data, "config": _flat(data), "key": key[:32]})
    return tasks


# -- where the runs go: lbsim.runner ---------------------------------------------------------

#: the sweep's message when a worker process of its pool dies
_DIED = ("a worker process of the sweep died ({error}); a script that sweeps with the process pool "
         "must call it under `if __name__ == \"__main__\":`")


def _task_failed(task: dict[str, Any], e: Exception) -> list[dict[str, Any]]:
    """The rows of a task whose run raised in the executor (a Dask worker died, say)."""
    return _error_rows(task, f"{type(e).__name__}: {e}")


def _execute(tasks: list[dict[str, Any]], executor: Any, jobs: int | None
             ) -> Iterator[list[dict[str, Any]]]:
    """The rows of every task, as they finish; a task that fails gives error rows."""
    return run_tasks(_run_task, tasks, executor, jobs, on_error=_task_failed, died=_DIED)


# -- cache ------------------------------------------------------------------------------------

def _cache_file(cache: Path, task: dict[str, Any]) -> Path:
    return cache / f"point{task['point']:06d}-rep{task['replication']:04d}-{task['key']}.parquet"


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write one task's rows at once: to a temporary file, then renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import __version__

    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({"lbsim_version": __version__,
                                           "cache_format": str(CACHE_FORMAT)})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def load_cache(cache: str | os.PathLike[str]) -> pd.DataFrame:
    """Every finished (point, replication) in a sweep cache directory, as one table (rows in
    point, replication order): what an interrupted sweep got done."""
    files = sorted(Path(cache).glob("point*-rep*-*.parquet"))
    return _frame([row for f in files for row in _read_rows(f)])


# -- the table --------------------------------------------------------------------------------

def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=list(_COLUMNS)) if rows else \
        pd.DataFrame({c: [] for c in _COLUMNS})
    for col in CONFIG_COLUMNS:  # one type per column: mixed ones (4 and "[1, 2]") as text
        kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[col] = [None if v is None else v if isinstance(v, str) else json.dumps(v)
                       for v in df[col]]
    df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    return df


def sweep(base: Scenario | None = None,
          grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
          replications: int = 1, paths: Sequence[str] = ("nodeport", "direct"),
          executor: Any = None, cache: str | os.PathLike[str] | None = None,
          progress: bool = True, jobs: int | None = None) -> pd.DataFrame:
    """Run ``base`` changed by each point of ``grid``, ``replications`` times, on each of ``paths``.

    Parameters
    ----------
    base : the scenario every point starts from (default ``lbsim.Scenario()``)
    grid : dotted field -> list of values (full factorial, first field slowest), or a list of
        dicts (explicit points), or None (the base alone); see :func:`expand_grid`
    replications : runs of each point, each on its own seed (:func:`derive_seed`)
    paths : data paths to run each (point, replication) on, on the same seed
    executor : ``None`` or ``"process"``: a local process pool of ``jobs`` workers (default: all
        CPUs); ``"inprocess"``; ``"dask"``: a Dask ``LocalCluster`` of ``jobs`` workers; a
        ``dask.distributed.Client`` (its cluster runs the tasks; workers must be able to import
        lbsim); or any ``concurrent.futures.Executor``
    cache : a directory; each finished (point, replication) is written there at once as one
        Parquet file, and a rerun reads finished ones instead of running them again (failed ones
        are not cached: they run again)
    progress : show a tqdm bar (points done, failed, ETA) on stderr
    jobs : workers of the process pool or the ``"dask"`` cluster

    Returns a DataFrame with one row per (point, replication, path) in that order; its ``error``
    column names the rows that failed (their metrics are NaN). ``df.attrs["sweep"]`` counts the
    runs: ``tasks``, ``cached``, ``computed``, ``failed`` and the sweep's ``wall_s``.
    """
    start = time.perf_counter()
    base = Scenario() if base is None else base
    if not isinstance(base, Scenario):
        raise TypeError(f"base must be an lbsim.Scenario, not {type(base).__name__}")
    if not (isinstance(replications, int) and not isinstance(replications, bool)
            and replications >= 1):
        raise ValueError(f"replications = {replications!r} is invalid: must be an integer >= 1")
    if isinstance(paths, str):
        paths = [paths]
    paths = [p.value if isinstance(p, DataPath) else p for p in paths]
    bad = [p for p in paths if p not in {d.value for d in DataPath}]
    if bad or not paths or len(set(paths)) != len(paths):
        raise ValueError(f"paths = {list(paths)!r} is invalid: must be distinct values of "
                         f"{[d.value for d in DataPath]}")
    if jobs is not None and not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs = {jobs!r} is invalid: must be an integer >= 1")
    check_executor(executor)
    if executor == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ImportError("executor='dask' needs dask.distributed: pip install 'lbsim[dask]'") from None
    tasks = _tasks(base, expand_grid(grid), replications, list(paths))

    results: dict[tuple[int, int], list[dict[str, Any]]] = {}
    cache_dir = Path(cache) if cache is not None else None
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create cache directory {cache_dir}: {e.strerror}") from None
        for t in tasks:
            f = _cache_file(cache_dir, t)
            if f.exists():
                try:
                    results[t["point"], t["replication"]] = _read_rows(f)
                except Exception:  # noqa: BLE001  (unreadable: run it again, overwrite it)
                    pass
    cached = len(results)
    pending = [t for t in tasks if (t["point"], t["replication"]) not in results]
    by_id = {(t["point"], t["replication"]): t for t in pending}

    from tqdm import tqdm

    failed = 0
    bar = tqdm(total=len(tasks), initial=cached, desc="sweep", unit="point", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    bar.set_postfix(failed=0, cached=cached)
    try:
        for rows in _execute(pending, executor, jobs):
            t0 = rows[0]
            results[t0["point"], t0["replication"]] = rows
            if any(r["error"] is not None for r in rows):
                failed += 1
            elif cache_dir is not None:
                _write_rows(_cache_file(cache_dir, by_id[t0["point"], t0["replication"]]), rows)
            bar.update(1)
            bar.set_postfix(failed=failed, cached=cached, refresh=False)
    finally:
        bar.close()
    df = _frame([row for t in tasks for row in results[t["point"], t["replication"]]])
    df.attrs["sweep"] = {"tasks": len(tasks), "cached": cached, "computed": len(pending),
                         "failed": failed, "wall_s": time.perf_counter() - start}
    return df


# -- command line -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lbsim.sweep",
                description="Run a grid of scenarios on both data paths into one table "
                            "(one row per point, replication and path).")
    from . import __version__
    p.add_argument("--version", action="version", version=f"lbsim {__version__}")
    p.add_argument("--config", metavar="FILE.toml",
                   help="base scenario (default: lbsim.Scenario(), the built-in defaults)")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="a dotted field and its values as TOML literals (10,50 / true,false / "
                        "\"Local\"; bare words are strings); repeat for a full factorial")
    p.add_argument("--replications", type=int, default=1, metavar="N",
                   help="runs of each point, each on its own seed (default 1)")
    p.add_argument("--paths", default="nodeport,direct", metavar="P1,P2",
                   help="data paths to run (default nodeport,direct)")
    p.add_argument("--out", required=True, metavar="FILE.parquet",
                   help="write the table here (.parquet, or .csv)")
    p.add_argument("--cache", metavar="DIR",
                   help="keep each finished point in DIR; a rerun skips them (resume)")
    p.add_argument("--executor", choices=["process", "inprocess", "dask"],
                   help="process: a local process pool (default); inprocess; dask: a Dask "
                        "cluster (--scheduler ADDRESS, or a local one)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help=f"workers of the process pool or local Dask cluster (default: the CPUs "
                        f"available, {default_jobs()} here)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running Dask scheduler (tcp://host:8786); implies --executor dask")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return p


def _parse_values(key: str, text: str) -> list[Any]:
    """``--grid`` values: a TOML array's items, or comma-separated TOML literals / bare words."""
    try:
        values = tomllib.loads(f"v = [{text}]")["v"]
    except tomllib.TOMLDecodeError:
        values = []
        for token in text.split(","):
            token = token.strip()
            if not token:
                raise ValueError(f"--grid {key}={text}: empty value") from None
            try:
                values.append(tomllib.loads(f"v = {token}")["v"])
            except tomllib.TOMLDecodeError:
                values.append(token)
    if not values:
        raise ValueError(f"--grid {key}={text}: no values")
    return values


def _grid(specs: list[str]) -> dict[str, list[Any]] | None:
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, eq, text = spec.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--grid {spec!r} is invalid: must be FIELD=V1,V2,... "
                             f"(e.g. cluster.nodes=10,50,100)")
        if key in grid:
            raise ValueError(f"--grid {key} is given twice")
        grid[_check_key(key)] = _parse_values(key, text)
    return grid or None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    client = None
    try:
        base = Scenario.from_toml(args.config) if args.config else Scenario()
        grid = _grid(args.grid)
        if args.replications < 1:
            raise ValueError(f"--replications = {args.replications} is invalid: must be >= 1")
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs = {args.jobs} is invalid: must be >= 1")
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
        out = Path(args.out)
        if out.suffix not in (".parquet", ".csv"):
            raise ValueError(f"--out {out} is invalid: must end in .parquet or .csv")
        if not out.parent.is_dir():
            raise ValueError(f"--out {out}: directory {out.parent} does not exist")
        executor: Any = args.executor or ("dask" if args.scheduler else "process")
        if args.scheduler and executor != "dask":
            raise ValueError(f"--scheduler needs --executor dask, not {executor}")
        if executor == "dask":
            try:
                from distributed import Client
            except ImportError:
                raise ValueError("--executor dask needs dask.distributed: "
                                 "pip install 'lbsim[dask]'") from None
            if args.scheduler:
                try:
                    client = Client(args.scheduler, timeout="10s")
                except (OSError, TimeoutError) as e:
                    raise ValueError(f"cannot reach the Dask scheduler {args.scheduler}: {e}") from None
                executor = client
        points = expand_grid(grid)
        known = [p for p in paths if p in {d.value for d in DataPath}]   # sweep() checks paths
        for i, point in enumerate(points):      # a bad value: its one error line, nothing else
            _point_scenario(base, i, point, known)
        n_points = len(points)
        say(f"sweep: {n_points} point{'s' * (n_points != 1)} x {args.replications} "
            f"replication{'s' * (args.replications != 1)} x {len(paths)} path"
            f"{'s' * (len(paths) != 1)} on "
            f"{'dask ' + args.scheduler if args.scheduler else executor}")
        df = sweep(base, grid, replications=args.replications, paths=paths, executor=executor,
                   cache=args.cache, progress=not args.quiet, jobs=args.jobs)
        try:
            if out.suffix == ".csv":
                df.to_csv(out, index=False)
            else:
                df.to_parquet(out, index=False)
        except OSError as e:
            raise ValueError(f"cannot write {out}: {e.strerror or e}") from None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    s = df.attrs["sweep"]
    failed = int(df["error"].notna().sum())
    say(f"wrote {out}: {len(df)} rows, {s['computed']} points run, {s['cached']} from the cache, "
        f"{failed} failed row{'s' * (failed != 1)} (see the error column), {s['wall_s']:.1f} s")
    if len(df) and failed == len(df):      # nothing ran: say so in the exit status too
        first = df["error"].dropna().iloc[0]
        print(f"error: every point of the sweep failed (the first: {first})", file=sys.stderr)
        return 1
    return 0


class _CallableModule(types.ModuleType):
    """``lbsim.sweep`` is this module and, called, the :func:`sweep` function: one name for both,
    whatever was imported first (``import lbsim.sweep``, ``from lbsim.sweep import load_cache``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        return sweep(*args, **kwargs)


_sig = inspect.signature(sweep)
_CallableModule.__call__.__signature__ = _sig.replace(  # type: ignore[attr-defined]
    parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *_sig.parameters.values()])

if __name__ == "__main__":
    # Run the importable copy, so the workers get lbsim.sweep's functions, not __main__'s.
    from lbsim.sweep import main as _main

    raise SystemExit(_main())
else:
    sys.modules[__name__].__class__ = _CallableModule
