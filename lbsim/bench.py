"""``python -m lbsim.bench``: run scenarios on both data paths and print them side by side.

Exit status: 0 on success, 2 on bad input (one ``error: ...`` line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from . import __version__, scenarios
from .config import Scenario
from .simulation import compare

__all__ = ["main"]

# Rows of the terminal table: (metric, format)
_TABLE = [
    ("flows", "{:.0f}"), ("established", "{:.0f}"), ("failed", "{:.0f}"),
    ("failed_fraction", "{:.4f}"), ("syn_retransmits", "{:.0f}"),
    ("conntrack_insert_failed", "{:.0f}"), ("conntrack_drop", "{:.0f}"),
    ("conntrack_early_drop", "{:.0f}"), ("conntrack_clash_resolve", "{:.0f}"),
    ("fail_cause_port_exhaustion", "{:.0f}"), ("fail_cause_insert_race", "{:.0f}"),
    ("fail_cause_table_full", "{:.0f}"), ("fail_cause_no_local_endpoint", "{:.0f}"),
    ("connect_latency_p50_s", "{:.6f}"), ("connect_latency_p99_s", "{:.6f}"),
    ("response_time_p50_s", "{:.4f}"), ("response_time_p99_s", "{:.4f}"),
    ("pod_load_max_over_mean", "{:.3f}"), ("pod_load_cv", "{:.3f}"),
    ("source_ip_preserved_fraction", "{:.3f}"), ("second_hop_fraction", "{:.3f}"),
    ("wall_s", "{:.2f}"), ("flows_per_wall_s", "{:,.0f}"),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lbsim.bench", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="named scenario to run (repeatable; default: 'default'); see --list")
    p.add_argument("--list", action="store_true", help="list the named scenarios and exit")
    p.add_argument("--config", metavar="FILE.toml", help="run this scenario file instead")
    p.add_argument("--seed", type=int, help="override every scenario's seed")
    p.add_argument("--quick", action="store_true",
                   help="scaled-down scenarios (10x fewer flows; see --list for how each keeps its effect)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--engine", choices=["batched", "reference"], default="batched",
                   help="simulation engine (both give identical results)")
    p.add_argument("--batch-flows", type=int, default=4096, metavar="N",
                   help="new flows per batch of the batched engine (default 4096)")
    return p


def _fmt(v: float, f: str) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f.format(v)


def _table(name: str, summary: dict[str, dict[str, float]]) -> str:
    w = max(len(m) for m, _ in _TABLE)
    lines = [f"== {name} ==", f"{'metric':<{w}}  {'nodeport':>14}  {'direct':>14}"]
    for metric, f in _TABLE:
        lines.append(f"{metric:<{w}}  {_fmt(summary['nodeport'][metric], f):>14}  "
                     f"{_fmt(summary['direct'][metric], f):>14}")
    return "\n".join(lines)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _runs(args: argparse.Namespace) -> list[tuple[str, Scenario]]:
    if args.config and args.scenario:
        raise ValueError("--config and --scenario cannot be combined")
    if args.config:
        runs = [(Path(args.config).stem, Scenario.from_toml(args.config))]
        if args.quick:
            runs = [(n, scenarios.quick(s)) for n, s in runs]
    else:
        runs = [(n, scenarios.get(n, args.quick)) for n in (args.scenario or ["default"])]
    if args.seed is not None:
        runs = [(n, s.replace(seed=args.seed)) for n, s in runs]
    if args.batch_flows < 1:
        raise ValueError(f"--batch-flows = {args.batch_flows} is invalid: must be >= 1")
    return runs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for s in scenarios.SCENARIOS.values():
            print(f"{s.name}\n    {s.description}")
        return 0
    try:
        runs = _runs(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {"lbsim_version": __version__,
                           "command": " ".join(["python -m lbsim.bench", *(argv if argv is not None else sys.argv[1:])]),
                           "scenarios": []}
    for name, sc in runs:
        c = compare(sc, engine=args.engine, batch_flows=args.batch_flows)
        summary = {"nodeport": c.nodeport.summary, "direct": c.direct.summary}
        print(_table(name, summary), flush=True)
        doc["scenarios"].append({
            "name": name, "config": sc.to_dict(),
            "paths": {p: {k: _jsonable(v) for k, v in s.items()} for p, s in summary.items()},
        })
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(doc, indent=2))
        except OSError as e:
            print(f"error: cannot write {args.json}: {e.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
