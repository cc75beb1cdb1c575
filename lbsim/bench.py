"""``python -m lbsim.bench``: run scenarios on both data paths and print them side by side.

With ``--out DIR`` it also writes the report (``report.md``: the claims of the direct-to-Pod design
judged from the numbers, then one section per scenario), ``results.json`` and ``figures/*.png``;
see docs/report.md. ``--jobs N`` runs scenarios in N processes (same results as one).

Exit status: 0 on success, 2 on bad input (one ``error: ...`` line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

from . import __version__, scenarios
from .budget import check_clock, check_memory
from .control.cluster import check_events
from .config import Scenario
from .formatting import slug
from .headroom import sizing_verdict
from .report import ReportRun, RunRecord, claims_text, evaluate_claims, render_markdown
from .runner import default_jobs, run_tasks, warm_up
from .scenario_run import Outcome, Task, run_scenario

__all__ = ["main", "default_jobs"]

#: ``--scenario all``: every named scenario
ALL = "all"

# The terminal table: groups of (metric, unit, format); every summary metric appears once
_N, _F3, _F4 = "{:,.0f}", "{:.3f}", "{:.4f}"
_GROUPS = [
    ("outcome", [
        ("flows", "", _N), ("established", "", _N), ("failed", "", _N),
        ("failed_fraction", "", _F4), ("last_arrival_s", "s", _F3),
        ("syn_retransmits", "", _N),
        ("conntrack_insert", "", _N), ("conntrack_insert_failed", "", _N),
        ("conntrack_drop", "pkts", _N), ("conntrack_early_drop", "", _N),
        ("conntrack_clash_resolve", "", _N), ("conntrack_found", "probes", _N),
        ("conntrack_entries_inserted", "", _N),
        ("fail_cause_port_exhaustion", "pkts", _N), ("fail_cause_insert_race", "pkts", _N),
        ("fail_cause_table_full", "pkts", _N), ("fail_cause_no_local_endpoint", "pkts", _N),
        ("fail_cause_tuple_in_use", "pkts", _N), ("fail_cause_refused", "", _N),
        ("fail_cause_pod_gone", "pkts", _N), ("fail_cause_no_target", "", _N),
        ("fail_cause_no_endpoints", "", _N), ("fail_cause_no_client_port", "", _N)]),
    ("latency", [
        ("connect_latency_p50_s", "s", "{:.6f}"), ("connect_latency_p99_s", "s", "{:.6f}"),
        ("response_time_p50_s", "s", _F4), ("response_time_p99_s", "s", _F4),
        ("pod_wait_p50_s", "s", _F4), ("pod_wait_p99_s", "s", _F4),
        ("datapath_delay_p50_s", "s", _F4), ("datapath_delay_p99_s", "s", _F4)]),
    ("balance", [
        ("pod_load_max_over_mean", "", _F3), ("pod_load_cv", "", _F3), ("pod_load_jain", "", _F3),
        ("pod_conn_max_over_mean", "", _F3), ("node_load_max_over_mean", "", _F3),
        ("session_persistence_fraction", "", _F3), ("source_ip_preserved_fraction", "", _F3),
        ("second_hop_fraction", "", _F3)]),
    ("headroom", [
        ("snat_pair_ports_peak", "ports", _N), ("snat_pair_ports_peak_fraction", "", _F4),
        ("snat_pair_rate_peak_per_s", "flows/s", _N),
        ("snat_pair_capacity_per_s", "flows/s", _N),
        ("conntrack_entries_peak", "entries", _N), ("conntrack_peak_fraction", "", _F4)]),
    ("rollout", [
        ("connections_reset", "", _N), ("rollout_duration_s", "s", "{:.1f}"),
        ("time_to_serve_p50_s", "s", "{:.1f}"), ("time_to_serve_p99_s", "s", "{:.1f}"),
        ("time_to_drain_p99_s", "s", "{:.1f}"), ("min_serving_pods", "pods", _N)]),
    ("run", [("wall_s", "s", "{:.2f}"), ("flows_per_wall_s", "flows/s", _N)]),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lbsim.bench", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="named scenario to run (repeatable; 'all': every named scenario; default: "
                        "'default', or all of them with --out); see --list")
    p.add_argument("--list", action="store_true", help="list the named scenarios and exit")
    p.add_argument("--show", metavar="NAME",
                   help="print the named scenario NAME as TOML (with --quick, --seed and --set "
                        "applied) and exit; a file to edit and pass to --config")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a dotted config field in every scenario run (repeatable), e.g. "
                        "--set cluster.nodes=3 --set nat.port_range=[10000,10063]")
    p.add_argument("--version", action="version", version=f"lbsim {__version__}")
    p.add_argument("--config", metavar="FILE.toml", help="run this scenario file instead")
    p.add_argument("--seed", type=int, help="override every scenario's seed")
    p.add_argument("--quick", action="store_true",
                   help="scaled-down scenarios (10x fewer flows; see --list for how each keeps its "
                        "effect)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--out", metavar="DIR",
                   help="write report.md, results.json and figures/*.png to DIR (created if missing)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help=f"run scenarios in N parallel processes (default: the CPUs available, "
                        f"{default_jobs()} here); results do not depend on it")
    p.add_argument("--engine", choices=["compiled", "reference"], default="compiled",
                   help="simulation engine (all give identical results; default compiled)")
    p.add_argument("--batch-flows", type=int, default=4096, metavar="N",
                   help="new flows per simpy window of the engines "
                        "(default 4096; results do not depend on it)")
    return p


def _fmt(v: float, f: str) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f.format(v)


def _table(name: str, summary: dict[str, dict[str, float]]) -> str:
    """One scenario's metrics on both paths, grouped, with units, and the sizing verdict."""
    w = max(len(m) for _, rows in _GROUPS for m, _, _ in rows)
    lines = [f"== {name} ==", f"{'metric':<{w}}  {'nodeport':>14}  {'direct':>14}  unit"]
    for group, rows in _GROUPS:
        lines.append(f"-- {group}")
        for metric, unit, f in rows:
            lines.append(f"{metric:<{w}}  {_fmt(summary['nodeport'][metric], f):>14}  "
                         f"{_fmt(summary['direct'][metric], f):>14}  {unit}".rstrip())
    lines.append(f"sizing (NodePort): {sizing_verdict(summary['nodeport'])}")
    return "\n".join(lines)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def parse_setting(spec: str) -> tuple[str, Any]:
    """``--set FIELD=VALUE`` -> (field, value): the value is a TOML literal or array (``3``,
    ``2.5``, ``true``, ``[10000, 10063]``, ``{ dist = "exponential", mean = 1.0 }``) or else a
    bare word (``ipvs``), as the sweep's ``--grid`` takes them."""
    key, eq, text = spec.partition("=")
    key, text = key.strip(), text.strip()
    if not eq or not key or not text:
        raise ValueError(f"--set {spec!r} is invalid: must be FIELD=VALUE "
                         f"(e.g. cluster.nodes=3 or nat.port_range=[10000,10063])")
    try:
        return key, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return key, text


def _runs(args: argparse.Namespace) -> list[tuple[str, Scenario, str]]:
    """(name, scenario, source) of every run; source is "named scenario" or "config file PATH"."""
    if args.config and args.scenario:
        raise ValueError("--config and --scenario cannot be combined")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs = {args.jobs} is invalid: must be >= 1")
    if args.config:
        runs = [(Path(args.config).stem, Scenario.from_toml(args.config), f"config file {args.config}")]
        if args.quick:
            runs = [(n, scenarios.quick(s), src) for n, s, src in runs]
    else:
        # without --scenario: today's single 'default' run, or every named scenario for a report
        names = args.scenario or ([ALL] if args.out else ["default"])
        names = [m for n in names for m in (list(scenarios.SCENARIOS) if n == ALL else [n])]
        runs = [(n, scenarios.get(n, args.quick), "named scenario") for n in names]
    if args.seed is not None:
        runs = [(n, s.replace(seed=args.seed), src) for n, s, src in runs]
    changes = dict(parse_setting(spec) for spec in args.set)
    if changes:
        runs = [(n, s.replace(**changes), src) for n, s, src in runs]
    if args.batch_flows < 1:
        raise ValueError(f"--batch-flows = {args.batch_flows} is invalid: must be >= 1")
    for name, sc, _ in runs:                 # refuse, before anything runs, what cannot run
        for path in ("nodeport", "direct"):
            try:
                if sc.events:
                    check_events(sc.replace(path=path))
                check_clock(sc.replace(path=path))
                check_memory(sc.replace(path=path), args.engine)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
    return runs


def _progress(total: int) -> Callable[[Outcome], None]:
    """A callback run as each scenario finishes: a tqdm bar (scenarios done, elapsed, ETA) when
    stderr is a terminal, and one stderr line per finished scenario always, so that CI logs,
    where a redrawn bar would garble, still show progress (thread-safe)."""
    from tqdm import tqdm
    lock, done, start = threading.Lock(), [0], time.perf_counter()
    bar = tqdm(total=total, unit="scenario", file=sys.stderr, disable=None, leave=False,
               dynamic_ncols=True)

    def report(o: Outcome) -> None:
        with lock:
            done[0] += 1
            figs = f", figures {o.fig_s:.1f} s" if o.figures else ""
            bar.write(f"[{done[0]}/{total}] {o.name}: simulated in {o.sim_s:.1f} s{figs} "
                      f"({time.perf_counter() - start:.0f} s elapsed)", file=sys.stderr)
            bar.update(1)
            if done[0] == total:
                bar.close()
    return report


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.list:
        for s in scenarios.SCENARIOS.values():
            print(f"{s.name}\n    {s.description}")
        return 0
    try:
        if args.show is not None:
            if args.config or args.scenario:
                raise ValueError("--show cannot be combined with --config or --scenario")
            args.scenario = [args.show]
            print(_runs(args)[0][1].to_toml(), end="")
            return 0
        runs = _runs(args)
        out = Path(args.out) if args.out else None
        if out is not None:
            try:
                (out / "figures").mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"cannot create {out / 'figures'}: {e.strerror}") from None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = args.jobs if args.jobs is not None else default_jobs()
    command = " ".join(["python -m lbsim.bench", *([shlex.join(argv)] if argv else [])])
    doc: dict[str, Any] = {"lbsim_version": __version__, "command": command, "scenarios": []}
    width = len(str(len(runs)))
    tasks = [Task(i, name, sc, args.engine, args.batch_flows, str(out) if out else None,
                  f"{i + 1:0{width}d}-{slug(name)}") for i, (name, sc, _) in enumerate(runs)]
    workers = min(jobs, len(tasks))
    # modules the pool's forkserver imports once for its workers (matplotlib only when drawing)
    preload = ("lbsim", "lbsim.figures") if out is not None else ("lbsim",)
    if out is not None:
        from . import figures  # noqa: F401  (import matplotlib here too, for --jobs 1)
    print(f"running {len(tasks)} scenario{'s' if len(tasks) > 1 else ''} "
          f"({'quick' if args.quick else 'full size'}) on both paths in {workers} "
          f"process{'es' if workers > 1 else ''}", file=sys.stderr, flush=True)
    compiled = args.engine == "compiled"
    if compiled:
        warm_up()            # compile once here, before the worker processes start
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    results = run_tasks(run_scenario, tasks, "process", jobs, ordered=True,
                        on_done=_progress(len(tasks)), warm=compiled, preload=preload)
    for o, (name, sc, _) in zip(results, runs):  # results first: the pool is shut down at the end
        outcomes.append(o)
        print(_table(name, o.paths), flush=True)
        doc["scenarios"].append({
            "name": name, "config": sc.to_dict(),
            "paths": {p: {k: _jsonable(v) for k, v in s.items()} for p, s in o.paths.items()},
        })
    wall = time.perf_counter() - start
    named = {name: RunRecord(name, sc.to_dict(), o.paths)
             for (name, sc, src), o in zip(runs, outcomes) if src == "named scenario"}
    claims = evaluate_claims(named, scenarios.SCENARIOS)
    if named:                # a --config run measures none of the claims
        print(claims_text(claims), flush=True)
    try:
        if args.json:
            _write(Path(args.json), json.dumps(doc, indent=2))
        if out is not None:
            _write(out / "results.json", json.dumps(doc, indent=2))
            report_runs = [ReportRun(name, sc, src, scenarios.SCENARIOS[name].description
                                     if src == "named scenario" else "", o)
                           for (name, sc, src), o in zip(runs, outcomes)]
            _write(out / "report.md", render_markdown(
                version=__version__, command=command, quick=args.quick, seed_override=args.seed,
                engine=args.engine, batch_flows=args.batch_flows, jobs=workers, wall_s=wall,
                runs=report_runs, claims=claims))
            n_fig = sum(1 for o in outcomes for f in o.figures if f.file)
            print(f"wrote {out / 'report.md'}, {out / 'results.json'} and {n_fig} figures in "
                  f"{out / 'figures'} ({wall:.1f} s)", file=sys.stderr)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
