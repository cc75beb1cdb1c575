"""``report.md``, the bench's report (``python -m lbsim.bench --out DIR``): a header (version,
command, mode, seeds, engine, wall time), the claims table (:mod:`lbsim.report.claims`), a table of
the runs, then one section per scenario with its TOML config, metrics and figures.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import Scenario
from ..formatting import fmt_value, md_cell, show
from ..headroom import sizing_verdict
from ..metrics import SUMMARY_METRICS
from ..scenario_run import Outcome
from .claims import PATHS, ClaimRow, claims_markdown

__all__ = ["ReportRun", "render_markdown", "describe_version"]


@dataclass(frozen=True)
class ReportRun:
    """One scenario section of report.md."""

    name: str
    scenario: Scenario
    #: where it came from: "named scenario" or "config file PATH"
    source: str
    description: str
    outcome: Outcome


def describe_version(version: str) -> str:
    """``version``, or for an uninstalled source tree the version in its pyproject.toml; plus the
    git commit of the source tree (and whether it has uncommitted changes) when there is one."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = version
    if version.endswith("+unknown"):
        try:
            import tomllib
            meta = tomllib.loads((root / "pyproject.toml").read_text())
            text = f"{meta['project']['version']} (source tree)"
        except (OSError, KeyError, ValueError):
            pass
    if (root / ".git").exists():
        try:
            def git(*a: str) -> str:
                return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True,
                                      timeout=10, check=True).stdout.strip()
            commit = git("rev-parse", "--short=12", "HEAD")
            dirty = git("status", "--porcelain", "--untracked-files=no")
            text += f", git {commit}" + (" with uncommitted changes" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return text


def _versions() -> str:
    import matplotlib
    import numpy
    import pandas
    return (f"Python {platform.python_version()}, numpy {numpy.__version__}, "
            f"pandas {pandas.__version__}, matplotlib {matplotlib.__version__}")


def _metric_rows(paths: Mapping[str, Mapping[str, Any]]) -> list[str]:
    keys = list(paths["nodeport"]) + [k for k in paths["direct"] if k not in paths["nodeport"]]
    out = ["| metric | NodePort | direct | meaning |", "|---|---:|---:|---|"]
    for k in keys:
        out.append(f"| `{k}` | {fmt_value(k, paths['nodeport'].get(k))} | "
                   f"{fmt_value(k, paths['direct'].get(k))} | {md_cell(SUMMARY_METRICS.get(k, ''))} |")
    return out


def _warning_lines(warnings: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The runs' warnings (lbsim.caveats), path by path; none: nothing."""
    lines = [f"* {path}: {md_cell(w)}" for path, ws in warnings.items() for w in ws]
    return ["Warnings:", "", *lines, ""] if lines else []


def render_markdown(*, version: str, command: str, quick: bool, seed_override: int | None,
                    engine: str, batch_flows: int, jobs: int, wall_s: float,
                    runs: list[ReportRun], claims: list[ClaimRow]) -> str:
    """The whole report.md."""
    seeds = sorted({r.scenario.seed for r in runs})
    sizes = ", ".join(f"{r.name} {r.scenario.workload.flows:,}" for r in runs)
    lines = [
        "# lbsim bench report: NodePort vs direct-to-Pod",
        "",
        f"- lbsim version: {describe_version(version)}",
        f"- software: {_versions()}",
        f"- command: `{command}`",
        f"- mode: {'quick (scaled-down scenarios, --quick)' if quick else 'full size'}",
        f"- seed{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}"
        + (" (set by --seed)" if seed_override is not None else " (each scenario's own seed)"),
        f"- flows per scenario and path: {sizes}",
        f"- engine: {engine}, {batch_flows:,} new flows per batch; "
        f"{jobs} process{'es' if jobs > 1 else ''}; wall time {wall_s:.1f} s",
        "",
        "A run is a pure function of its config (seed included): the TOML block of each scenario "
        "below, saved to a file and run with `python -m lbsim.bench --config FILE` (no `--quick`: "
        "the block is already the size that ran), gives the same numbers but the wall times. Both "
        "paths of a scenario see the same clients, arrivals and service times.",
        "",
        "## Claims",
        "",
        claims_markdown(claims),
        "",
        "## Runs",
        "",
        "| scenario | flows | rate (flows/s) | protocol | nodes | pods | nat.kernel "
        "| wall NodePort (s) | wall direct (s) |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in runs:
        s, p, cfg = r.scenario, r.outcome.paths, r.scenario.to_dict()
        wall = [p[path].get("wall_s", float("nan")) for path in PATHS]
        lines.append(f"| [{r.name}](#{_anchor(r.name)}) | {s.workload.flows:,} | "
                     f"{s.workload.rate_per_s:g} | {show(cfg['workload']['protocol'])} | "
                     f"{s.cluster.nodes} | {s.cluster.pods} | {show(cfg['nat']['kernel'])} | "
                     f"{wall[0]:.2f} | {wall[1]:.2f} |")
    lines += ["", "## Scenarios", ""]
    for r in runs:
        lines += [f"### {r.name}", "", f"*{r.source}.* {md_cell(r.description)}" if r.description
                  else f"*{r.source}.*", "",
                  "<details><summary>Full config (TOML; <code>path</code> is set per run: both paths "
                  "are run)</summary>", "", "```toml", r.scenario.to_toml().rstrip(), "```", "",
                  "</details>",
                  "", "Metrics:", "", *_metric_rows(r.outcome.paths), "",
                  f"Sizing (NodePort): {sizing_verdict(r.outcome.paths['nodeport'])}.", "",
                  *_warning_lines(r.outcome.warnings),
                  "Figures:", ""]
        drawn = [f for f in r.outcome.figures if f.file]
        for f in r.outcome.figures:
            if f.file:
                lines += [f"**{f.title}** ([{f.file}]({f.file})): {f.note}.", "",
                          f"![{r.name}: {f.title}]({f.file})", ""]
        for f in r.outcome.figures:
            if not f.file:
                lines.append(f"- {f.title}: not drawn, {f.note}.")
        if not drawn and not r.outcome.figures:
            lines.append("- none")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _anchor(name: str) -> str:
    """GitHub's heading anchor for a scenario name."""
    return "".join(c for c in name.lower().replace(" ", "-") if c.isalnum() or c in "-_")
