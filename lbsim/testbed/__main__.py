"""``python -m lbsim.testbed --config FILE.toml [--config ...] [--json OUT] [--replicas R]``:
each scenario on this machine's kernel and in lbsim, side by side, with a verdict per metric
(lbsim.testbed.verdict). ``--experiments`` runs lbsim.testbed.experiments instead and, with
``--markdown OUT``, writes their agreement table (docs/design.md's). ``--race same_port`` (or
``same_tuple``) ``[--pairs N]`` measures this kernel's insertion race window between two pinned
CPUs (lbsim.testbed.race) and prints the fit and the lbsim settings that follow it. Needs root."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import warnings
from pathlib import Path

from .. import __version__
from ..config import Scenario
from .kernel_run import TestbedUnavailable
from .experiments import EXPERIMENTS
from .verdict import KernelComparison, compare_kernel


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.6g}"


def render(name: str, c: KernelComparison) -> str:
    t = c.table()
    w = max(len(m) for m in t["metric"])
    head = f"{name} ({c.path}, kernel {c.kernel.kernel}, lbsim on {len(c.replicas)} seeds)"
    lines = [head, f"  {'metric':<{w}}  {'kernel':>12}  {'lbsim':>12}  {'lbsim sd':>10}  verdict"]
    for r in t.itertuples():
        lines.append(f"  {r.metric:<{w}}  {_fmt(r.kernel):>12}  {_fmt(r.lbsim):>12}  "
                     f"{_fmt(r.lbsim_sd):>10}  {r.verdict}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lbsim.testbed", description=__doc__.split("\n")[0])
    p.add_argument("--config", metavar="FILE.toml", action="append",
                   help="a scenario file (repeat for several)")
    p.add_argument("--experiments", nargs="?", const="ci", choices=("ci", "all"),
                   help="run the built-in experiments (lbsim.testbed.experiments): the test "
                   "suite's (ci, about 2 min) or all (also the long ones, about 6 min)")
    p.add_argument("--markdown", metavar="OUT", help="with --experiments: write the agreement "
                   "table here")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    p.add_argument("--replicas", type=int, default=30, help="lbsim seeds per scenario (30)")
    p.add_argument("--race", choices=("same_port", "same_tuple"),
                   help="measure the insertion race's window: pairs of UDP flows from two "
                   "pinned CPUs, two clients on one port or one client's identical tuples")
    p.add_argument("--pairs", type=int, default=10_000,
                   help="with --race: pairs to send, 1 .. 40000 (10000: about 17 s)")
    return p


def race(kind: str, pairs: int, out: str | None) -> int:
    """``--race``: measure, print the fit and the lbsim settings, write ``out`` (JSON)."""
    from .race import measure_race_window
    try:
        rw = measure_race_window(pairs, 40e-6, kind=kind)
    except TestbedUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ValueError as e:
        print(f"error: --pairs: {e}", file=sys.stderr)
        return 2
    f, p = rw.fit, rw.pairs
    near, ctl = p[~p["control"]], p[p["control"]]
    doc = {"lbsim_version": __version__, "kernel": rw.kernel, "race": {
        "kind": kind, "pairs": pairs, "window_s": f.window_s, "shift_s": f.shift_s,
        "jitter_s": f.jitter_s, "chi2": f.chi2, "dof": f.dof,
        "near_pairs": len(near), "near_clashed": int(near["clashed"].sum()),
        "controls": len(ctl), "controls_clashed": int(ctl["clashed"].sum()),
        "counters": rw.counters}}
    setting = "packet_time_s - snat_offset_s" if kind == "same_port" else "packet_time_s"
    print(f"{kind} race on kernel {rw.kernel}: {pairs} pairs, "
          f"{doc['race']['near_clashed']} of {len(near)} within 40 us clashed, "
          f"{doc['race']['controls_clashed']} of {len(ctl)} controls at 400 us\n"
          f"  window {f.window_s * 1e6:.2f} us, shift {f.shift_s * 1e6:.2f} us, jitter "
          f"{f.jitter_s * 1e6:.2f} us (chi-square {f.chi2:.1f} on {f.dof} degrees of freedom)\n"
          f"  in lbsim: [cluster] {setting} = {f.window_s:.3g}, packet_jitter_s = "
          f"{{dist = \"exponential\", mean = {f.jitter_s:.3g}}}", flush=True)
    return _write(out, lambda: json.dumps(doc, indent=2) + "\n") if out else 0


def _write(path: str, text) -> int:
    """Write ``text()`` to ``path`` (its folder made): 0, or 2 after a one-line error."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text())
    except OSError as e:
        print(f"error: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.race:
        if args.config or args.experiments or args.markdown:
            print("error: --race runs alone (no --config, --experiments or --markdown)",
                  file=sys.stderr)
            return 2
        return race(args.race, args.pairs, args.json)
    try:
        if bool(args.config) == bool(args.experiments):
            raise ValueError("give --config FILE.toml (one or more) or --experiments")
        if args.markdown and not args.experiments:
            raise ValueError("--markdown needs --experiments")
        tmp = tempfile.TemporaryDirectory(prefix="lbsim-experiments-")
        scenarios = ([(e.name, e.scenario_in(tmp.name)) for e in EXPERIMENTS.values()
                      if e.ci or args.experiments == "all"]
                     if args.experiments
                     else [(Path(f).stem, Scenario.from_toml(f)) for f in args.config])
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc = {"lbsim_version": __version__, "kernel": None, "scenarios": []}
    done: list[tuple[str, KernelComparison]] = []
    for name, sc in scenarios:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                c = compare_kernel(sc, replicas=args.replicas)
        except TestbedUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        except ValueError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        for text in dict.fromkeys(str(wmsg.message) for wmsg in caught):
            print(f"warning: {name}: {text}", file=sys.stderr)
        print(render(name, c), flush=True)
        done.append((name, c))
        doc["kernel"] = c.kernel.kernel
        doc["scenarios"].append({"name": name, "config": sc.to_dict(), "paths": c.to_json()})
    outputs = [(args.json, lambda: json.dumps(doc, indent=2) + "\n"),
               (args.markdown, lambda: agreement_table(done, args.replicas))]
    for path, text in outputs:
        if path and _write(path, text):
            return 2
    return 0


def agreement_table(done: list[tuple[str, KernelComparison]], replicas: int) -> str:
    """The experiments' agreement table (markdown): per experiment its required metrics, kernel
    against lbsim's mean and sd, and every compared metric that differs."""
    kernel = done[0][1].kernel.kernel if done else "?"
    lines = [f"Kernel {kernel}, lbsim {__version__} on {replicas} seeds; regenerate with "
             "`sudo python -m lbsim.testbed --experiments --markdown FILE`.", "",
             "| experiment | required metrics: kernel / lbsim mean (sd) | verdict | "
             "other compared metrics that differ (kernel / lbsim) |",
             "|---|---|---|---|"]
    for name, c in done:
        t = c.table().set_index("metric")
        req = EXPERIMENTS[name].required if name in EXPERIMENTS else ()
        cells = [f"{m} {_fmt(t.kernel[m])} / {_fmt(t.lbsim[m])} ({_fmt(t.lbsim_sd[m])})"
                 for m in req]
        ok = all(c.verdicts[m] == "agree" for m in req)
        other = [f"{m} {_fmt(t.kernel[m])} / {_fmt(t.lbsim[m])}" for m, v in c.verdicts.items()
                 if v == "differ" and m not in req]
        lines.append(f"| {name} | {'; '.join(cells)} | {'agree' if ok else 'DIFFER'} | "
                     f"{'; '.join(other) or '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
