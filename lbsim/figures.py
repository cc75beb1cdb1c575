"""PNG figures of one scenario's two runs, for the bench report (``python -m lbsim.bench --out DIR``).

Every figure is drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot, no GUI, no
global backend state), so it works headless and in worker processes. A figure whose data is empty
(the direct path has no conntrack table and no SNAT, a UDP run has no connect latency) is not drawn:
:func:`scenario_figures` returns a :class:`FigureInfo` with ``file=None`` and the reason instead.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .config.dynamics import nodes_ever
from .formatting import slug
from .simulation import Comparison, Result

__all__ = ["FigureInfo", "KINDS", "scenario_figures", "slug"]

#: path colours, the same in every figure
COLORS = {"nodeport": "tab:orange", "direct": "tab:blue"}
LABELS = {"nodeport": "NodePort", "direct": "direct"}
CAUSE_COLORS = {"port_exhaustion": "tab:red", "insert_race": "tab:purple", "table_full": "tab:brown",
                "no_local_endpoint": "tab:gray", "tuple_in_use": "tab:olive"}
#: figure kinds, in report order: (kind, title)
KINDS = [
    ("pod-load", "established flows per pod"),
    ("conntrack", "conntrack occupancy over time"),
    ("snat", "SNAT source ports in use over time"),
    ("drops", "dropped packets over time"),
    ("connect-cdf", "connect latency CDF"),
    ("response-cdf", "response time CDF"),
    ("pods", "pods and failures over time ([[events]])"),
]
#: at most this many per-node lines; more nodes are summarised (max, mean, min over nodes)
MAX_NODE_LINES = 8
LINESTYLES = ["-", "--", ":", "-."]
DPI = 110
FIG_WIDTH = 9.0


@dataclass(frozen=True)
class FigureInfo:
    """One figure of a scenario: drawn (``file`` relative to the output directory) or not."""

    kind: str
    title: str
    #: path of the PNG relative to the report's directory; None: not drawn
    file: str | None
    #: what the figure shows beyond its title, or why it was not drawn
    note: str = ""

    def to_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "title": self.title, "file": self.file, "note": self.note}


def _new(rows: int = 1, height: float = 4.2, sharey: bool = False) -> tuple[Figure, list]:
    """A figure of ``rows`` stacked axes sharing x, ``height`` inches each.

    Margins are fixed in inches (room for tick labels up to "100,000", an axis label, each axes'
    title and the figure's title) rather than computed by a layout engine: a constrained layout
    costs about as much as drawing the figure again.
    """
    total = height * rows + (0.9 if rows > 1 else 0.0)  # + the gaps, figure and axes titles
    fig = Figure(figsize=(FIG_WIDTH, total), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, sharey=sharey, squeeze=False)[:, 0]
    gap, avail = 0.55, total - 0.6 - 0.65  # inches between stacked axes; height of the axes area
    fig.subplots_adjust(left=0.95 / FIG_WIDTH, right=1 - 0.25 / FIG_WIDTH, bottom=0.6 / total,
                        top=1 - 0.65 / total, hspace=gap * rows / (avail - gap * (rows - 1)))
    return fig, list(axes)


def _save(fig: Figure, out_dir: Path, rel: str) -> None:
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _int_fmt(ax) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


# -- the figures ----------------------------------------------------------------------------------

def _pod_load(name: str, c: Comparison) -> tuple[Figure | None, str]:
    n_pods = c.nodeport.scenario.cluster.pods
    served = {}
    for p, r in (("nodeport", c.nodeport), ("direct", c.direct)):
        pod = r.flows["pod"].to_numpy()
        served[p] = pod[pod >= 0].astype(np.int64)
        n_pods = max([n_pods, int(served[p].max()) + 1 if served[p].size else 0]
                     + ([len(r.timeline.pods)] if r.timeline is not None else []))
    loads = {p: np.bincount(pod, minlength=n_pods).astype(float) for p, pod in served.items()}
    if not any(v.sum() for v in loads.values()):
        return None, "no established flow on either path"
    fig, axes = _new(2, 2.6, sharey=True)  # one scale: bar heights compare across paths
    x = np.arange(n_pods)
    for ax, (p, load) in zip(axes, loads.items()):
        mean = load.mean()
        ax.bar(x, load, width=0.85 if n_pods <= 200 else 1.0, color=COLORS[p], linewidth=0)
        ax.axhline(mean, color="black", linestyle="--", linewidth=1)
        stats = (f"mean {mean:,.1f} (dashed), max/mean {load.max() / mean:.2f}, "
                 f"CV {load.std() / mean:.3f}" if mean > 0 else "no established flow")
        ax.set_title(f"{LABELS[p]} path: {stats}", fontsize=10, loc="left")
        ax.set_ylabel("established flows")
        _int_fmt(ax)
        ax.set_xlim(-0.6, n_pods - 0.4)
    axes[-1].set_xlabel("pod number")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{name}: established flows per pod (both paths, same clients and arrivals)")
    return fig, "one bar per pod; dashed: the mean over pods"


def _time_axis(ax) -> None:
    ax.set_xlabel("simulated time (s)")
    ax.grid(alpha=0.3)


def _node_lines(ax, wide: pd.DataFrame, what: str) -> None:
    """Plot a time x node table: one line per node, or max/mean/min over nodes."""
    t = wide.index.to_numpy()
    if wide.shape[1] <= MAX_NODE_LINES:
        for i, node in enumerate(wide.columns):  # line styles keep coinciding nodes visible
            ax.plot(t, wide[node].to_numpy(), linewidth=1.6, linestyle=LINESTYLES[i % len(LINESTYLES)],
                    label=f"node {node}")
    else:
        v = wide.to_numpy()
        ax.fill_between(t, v.min(axis=1), v.max(axis=1), color="tab:orange", alpha=0.3, linewidth=0,
                        label=f"min to max over {wide.shape[1]} nodes")
        ax.plot(t, v.mean(axis=1), color="tab:red", linewidth=1.5, label="mean over nodes")
    ax.set_ylabel(what)
    _int_fmt(ax)
    ax.set_ylim(bottom=0)


def _legend(ax) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, ncol=2 if len(handles) > 4 else 1, loc="best")


def _conntrack(name: str, c: Comparison) -> tuple[Figure | None, str]:
    g = c.nodeport.gauges
    if g.empty:
        return None, ("no gauge sample on the NodePort path (the run is shorter than a "
                      "second); the direct path has no conntrack")
    if not g["entries"].any():
        return None, "the NodePort path's conntrack tables stayed empty; the direct path has none"
    direct_has = not c.direct.gauges.empty and bool(c.direct.gauges["entries"].any())
    fig, axes = _new(2 if direct_has else 1)
    cap = c.nodeport.scenario.conntrack.max
    for ax, (p, r) in zip(axes, [("nodeport", c.nodeport), ("direct", c.direct)][:len(axes)]):
        wide = r.gauges.pivot_table(index="t_s", columns="node", values="entries", aggfunc="sum")
        _node_lines(ax, wide, "conntrack entries")
        if wide.to_numpy().max() >= 0.5 * cap:
            ax.axhline(cap, color="black", linestyle="--", linewidth=1, label=f"nf_conntrack_max {cap:,}")
            ax.set_ylim(0, cap * 1.06)
        ax.set_title(f"{LABELS[p]} path", fontsize=10, loc="left")
        _legend(ax)
        _time_axis(ax)
    fig.suptitle(f"{name}: conntrack entries per node (nf_conntrack_count, sampled every second)")
    note = "entries held per node, expired-but-uncollected ones included"
    if not direct_has:
        note += "; direct path not drawn: no conntrack on that path (every sample is 0)"
    return fig, note


def _port_range_size(r: Result) -> int:
    pr = r.scenario.nat.port_range
    return (pr[1] - pr[0] + 1) if pr is not None else 65535 - 1024 + 1


def _nodes(sc) -> int:
    """The nodes of a run: cluster.nodes and those add-node events add."""
    return nodes_ever(sc.cluster.nodes, sc.events)


def _snat(name: str, c: Comparison) -> tuple[Figure | None, str]:
    g = c.nodeport.gauges
    if not g.empty and (g["snat_ports_max"] < 0).any():
        return None, 'SNAT ports not counted with records = "summary"'
    if g.empty or not (g["snat_ports_max"] > 0).any():
        return None, "no SNAT port in use on the NodePort path at any sample; the direct path has no SNAT"
    wide = (g.pivot(index="t_s", columns="node", values="snat_ports_max")
            .reindex(columns=range(_nodes(c.nodeport.scenario))).fillna(0).clip(lower=0))
    fig, (ax,) = _new(1)
    _node_lines(ax, wide, "SNAT ports held (busiest pod)")
    size = _port_range_size(c.nodeport)
    if wide.to_numpy().max() >= 0.5 * size:
        ax.axhline(size, color="black", linestyle="--", linewidth=1, label=f"port range: {size:,} ports")
        ax.set_ylim(0, size * 1.06)
    _legend(ax)
    _time_axis(ax)
    ax.set_title("NodePort path (the direct path has no SNAT)", fontsize=10, loc="left")
    fig.suptitle(f"{name}: SNAT source ports held per node, toward its busiest pod")
    return fig, ("per node, the source ports held by live entries toward its busiest destination pod "
                 "(a node→pod pair exhausts when this reaches the port range); direct path not drawn: "
                 "no SNAT")


def _drops(name: str, c: Comparison) -> tuple[Figure | None, str]:
    paths = [(p, r) for p, r in (("nodeport", c.nodeport), ("direct", c.direct)) if not r.drops.empty]
    if not paths:
        return None, "no dropped packet on either path"
    end = max([float(r.flows["arrival_s"].max()) for r in (c.nodeport, c.direct) if len(r.flows)]
              + [float(r.drops["t_s"].max()) for _, r in paths])
    width = _nice_bin(end / 60)
    edges = np.arange(0.0, end + width, width)
    fig, axes = _new(len(paths))
    for ax, (p, r) in zip(axes, paths):
        bottom = np.zeros(len(edges) - 1)
        for cause, group in r.drops.groupby("cause", observed=True):
            counts, _ = np.histogram(group["t_s"].to_numpy(), edges)
            rate = counts / width
            ax.bar(edges[:-1], rate, width=width, align="edge", bottom=bottom, linewidth=0,
                   color=CAUSE_COLORS.get(str(cause), "tab:gray"), label=f"{cause} ({len(group):,})")
            bottom += rate
        ax.set_ylabel("dropped packets / s")
        failed = int(r.summary.get("failed", (r.flows["outcome"] == "failed").sum()))
        ax.set_title(f"{LABELS[p]} path: {len(r.drops):,} dropped packets, {failed:,} failed flows",
                     fontsize=10, loc="left")
        _legend(ax)
        _time_axis(ax)
    fig.suptitle(f"{name}: dropped packets by cause ({width:g} s bins)")
    note = "dropped packets (first SYNs and retransmissions) per second, stacked by cause"
    if len(paths) == 1:
        other = "direct" if paths[0][0] == "nodeport" else "nodeport"
        note += f"; {LABELS[other]} path not drawn: no dropped packet"
    return fig, note


def _nice_bin(x: float) -> float:
    if x <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(x))
    return next(m * e for m in (1, 2, 5, 10) if m * e >= x)


def _minor_label(v: float, _: object = None) -> str:
    """Label the 2x and 5x minor ticks of a log axis (2, 5, 20, 50, ...), leave the others blank."""
    if v <= 0:
        return ""
    lead = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if min(abs(lead - 2), abs(lead - 5)) < 1e-6 else ""


def _ms(v: float) -> str:
    return f"{v / 1e3:.4g} s" if v >= 1000 else f"{v:.4g} ms"


def _cdf(name: str, c: Comparison, column: str, what: str) -> tuple[Figure | None, str]:
    data = {}
    for p, r in (("nodeport", c.nodeport), ("direct", c.direct)):
        v = r.flows[column].to_numpy()
        v = np.sort(v[~np.isnan(v)])
        if v.size:
            data[p] = v * 1e3
    if not data:
        proto = c.nodeport.scenario.workload.protocol.value
        return None, (f"no {what} on either path" + (" (UDP has no handshake)" if column ==
                                                        "connect_latency_s" and proto == "udp" else ""))
    fig, (ax,) = _new(1)
    for p, v in data.items():
        y = np.arange(1, v.size + 1) / v.size
        p50, p99 = np.quantile(v, 0.5), np.quantile(v, 0.99)
        ax.step(v, y, where="post", color=COLORS[p], linewidth=1.8,
                linestyle="-" if p == "nodeport" else "--",
                label=f"{LABELS[p]}: p50 {_ms(p50)}, p99 {_ms(p99)} ({v.size:,} flows)")
    lo = min(v[0] for v in data.values())
    hi = max(v[-1] for v in data.values())
    log = lo > 0 and hi / lo > 20
    if log:  # retransmissions and resends put seconds next to milliseconds
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.3, hi * 1.3)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
    else:
        pad = max((hi - lo) * 0.05, hi * 0.02)
        ax.set_xlim(max(0.0, lo - pad), hi + pad)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{what} (ms{', log scale' if log else ''})")
    ax.set_ylabel("fraction of established flows ≤ x")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="best")
    fig.suptitle(f"{name}: {what} of established flows, both paths")
    note = f"empirical CDF of the {what} of established flows"
    missing = [LABELS[p] for p in ("nodeport", "direct") if p not in data]
    if missing:
        note += f"; {missing[0]} path has none"
    return fig, note


#: points of the time grid the pod counts are drawn on
_GRID = 2000


def _counting(start: np.ndarray, end: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How many of the spans [start, end) (s, NaN start: never, NaN end: open; end >= start)
    hold each instant of ``grid``: those begun by then less those ended by then."""
    has = ~np.isnan(start)
    s = np.sort(start[has])
    e = np.sort(end[has][~np.isnan(end[has])])
    return np.searchsorted(s, grid, side="right") - np.searchsorted(e, grid, side="right")


def _pods(name: str, c: Comparison) -> tuple[Figure | None, str]:
    runs = [(p, r) for p, r in (("nodeport", c.nodeport), ("direct", c.direct))
            if r.timeline is not None]
    if not runs:
        return None, "no [[events]]: every pod ready and serving for the whole run"
    end = max(float(r.flows["arrival_s"].max()) if len(r.flows) else 0.0 for _, r in runs)
    end = max(end, max(float(r.timeline.receiving["t_s"].max()) for _, r in runs), 1.0)
    grid = np.linspace(0.0, end, _GRID + 1)
    fig, (top, bottom) = _new(2)
    for p, r in runs:
        pods, rec, style = r.timeline.pods, r.timeline.receiving, "-" if p == "nodeport" else "--"
        ready = _counting(pods["ready_s"].to_numpy(), pods["deleted_s"].to_numpy(), grid)
        top.plot(grid, ready, color=COLORS[p], linestyle=style, linewidth=1.0, alpha=0.6,
                 label=f"{LABELS[p]}: Ready (not terminating)")
        top.step(rec["t_s"], rec["pods"], where="post", color=COLORS[p], linestyle=style,
                 linewidth=2.0, label=f"{LABELS[p]}: serving (new flows go to it)")
        if p == "direct":
            reg = _counting(pods["registered_s"].to_numpy(), pods["deregistered_s"].to_numpy(),
                            grid)
            top.plot(grid, reg, color="tab:green", linestyle=":", linewidth=1.4,
                     label="direct: registered LB targets")
        failed = r.flows[r.flows["outcome"] == "failed"]["arrival_s"].to_numpy()
        width = _nice_bin(end / 100)
        edges = np.arange(0.0, end + width, width)
        counts, _ = np.histogram(failed, edges)
        bottom.step(edges[:-1], counts / width, where="post", color=COLORS[p], linestyle=style,
                    linewidth=1.6, label=f"{LABELS[p]}: {failed.size:,} failed flows")
    top.set_ylabel("pods")
    _int_fmt(top)
    _legend(top)
    _time_axis(top)
    bottom.set_ylabel("failed flows / s (by arrival)")
    _legend(bottom)
    _time_axis(bottom)
    fig.suptitle(f"{name}: pods and failures over time, both paths")
    return fig, ("pods Ready in Kubernetes and not terminating, pods new flows go to (direct: the "
                 "LB's targets; NodePort: listed by the rules of a node the LB sends to), "
                 "registered targets (direct), and failed flows per second by arrival time")


_DRAW = {
    "pod-load": _pod_load,
    "conntrack": _conntrack,
    "snat": _snat,
    "drops": _drops,
    "connect-cdf": lambda n, c: _cdf(n, c, "connect_latency_s", "connect latency"),
    "response-cdf": lambda n, c: _cdf(n, c, "response_time_s", "response time"),
    "pods": _pods,
}


#: kinds drawn from the per-flow, drop or SNAT records, which ``records = "summary"`` does not keep
_NEED_RECORDS = {"pod-load", "snat", "drops", "connect-cdf", "response-cdf", "pods"}


def scenario_figures(name: str, comparison: Comparison, out_dir: str | Path,
                     prefix: str | None = None) -> list[FigureInfo]:
    """Draw every figure of one scenario under ``out_dir/figures/``; one :class:`FigureInfo` per kind.

    ``prefix`` (default: the scenario's name made file-safe) starts every file name.
    """
    out_dir = Path(out_dir)
    prefix = prefix or slug(name)
    records = str(getattr(comparison.nodeport.scenario, "records", "full"))
    infos = []
    for kind, title in KINDS:
        if records != "full" and kind in _NEED_RECORDS:
            infos.append(FigureInfo(kind, title, None, f'not recorded: the scenario keeps summary records '
                                                       f'only (records = "{records}")'))
            continue
        try:
            fig, note = _DRAW[kind](name, comparison)
        except Exception as e:  # one broken figure should not cost the whole report
            msg = f"figure failed: {type(e).__name__}: {e}"
            print(f"warning: {name}: {kind}: {msg}", file=sys.stderr, flush=True)
            fig, note = None, msg
        if fig is None:
            infos.append(FigureInfo(kind, title, None, note))
            continue
        rel = f"figures/{prefix}-{kind}.png"
        _save(fig, out_dir, rel)
        infos.append(FigureInfo(kind, title, rel, note))
    return infos
