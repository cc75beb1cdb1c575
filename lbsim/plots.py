"""Plots of a sweep table (``lbsim.sweep``): a metric against a parameter, and a heatmap.

Both take the tidy table ``lbsim.sweep`` returns (one row per point, replication and path), skip
failed rows (``error`` set, metrics NaN) and return the matplotlib ``Axes`` they drew on. They
average over every row that shares the plotted coordinates: filter the table first when other
fields of the grid vary too.

>>> import matplotlib; matplotlib.use("Agg")
>>> from lbsim import plots
>>> ax = plots.metric_vs_param(df, "cluster.nodes", "failed_fraction")      # doctest: +SKIP
>>> ax = plots.heatmap(df, "cluster.nodes", "nat.port_range", "failed_fraction")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["metric_vs_param", "heatmap", "label", "t_quantile_975"]

# Student t 0.975 quantiles for 1..30 degrees of freedom (95 % two-sided intervals).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

#: colours of the two data paths (the bench's figures use the same pair)
_COLOURS = {"nodeport": "tab:red", "direct": "tab:blue"}


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (NaN for dof < 1).

    Exact to three decimals up to 30; above, the Cornish-Fisher expansion around 1.95996.
    """
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def label(name: str) -> str:
    """An axis label with the unit its suffix says: ``rate_per_s`` -> ``rate (1/s)``,
    ``flows_per_wall_s`` -> ``flows_per_wall (1/s)``, ``response_time_p99_s`` ->
    ``response_time_p99 (s)``."""
    if name.endswith("_per_s"):
        return f"{name[:-len('_per_s')]} (1/s)"
    if name.endswith("_s") and "_per_" in name:  # flows_per_wall_s: flows per wall-clock second
        return f"{name[:-2]} (1/s)"
    if name.endswith("_s"):
        return f"{name[:-2]} (s)"
    return name


def _ok(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"column {missing[0]!r} is not in the table")
    rows = df if "error" not in df.columns else df[df["error"].isna()]
    return rows.dropna(subset=[cols[-1]])


def _ordered(values: pd.Series) -> list[Any]:
    """The distinct values of a column, sorted (numbers numerically, others as text)."""
    u = list(pd.unique(values.dropna()))
    try:
        return sorted(u)
    except TypeError:
        return sorted(u, key=str)


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def _axes(ax: Any) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    return ax


def metric_vs_param(df: pd.DataFrame, param: str, metric: str, ax: Any = None) -> Any:
    """``metric`` against ``param``: the mean over replications of each path as a line, with its
    95 % confidence band (Student t over the replications; no band where there is one).

    A numeric ``param`` is plotted on its own scale; any other (booleans, strings) as categories
    in sorted order. Returns the Axes; its lines are labelled with the path names.
    """
    rows = _ok(df, param, "path", metric)
    ax = _axes(ax)
    xs = _ordered(rows[param])
    numeric = _numeric(xs)
    pos = {x: (x if numeric else i) for i, x in enumerate(xs)}
    for path in _ordered(rows["path"]):
        g = rows[rows["path"] == path].groupby(param, sort=False)[metric].agg(["mean", "std", "count"])
        g = g.loc[[x for x in xs if x in g.index]]
        x = np.array([pos[v] for v in g.index], dtype=float)
        mean = g["mean"].to_numpy(float)
        half = np.array([t_quantile_975(int(n) - 1) * s / math.sqrt(n) if n > 1 else math.nan
                         for s, n in zip(g["std"].to_numpy(float), g["count"].to_numpy())])
        colour = _COLOURS.get(str(path))
        (line,) = ax.plot(x, mean, marker="o", label=str(path), color=colour)
        band = ~np.isnan(half)
        lo, hi = mean - half, mean + half
        if (rows[metric] >= 0).all():          # a count or fraction: the band stops at 0
            lo = np.maximum(lo, 0.0)
        if band.any():
            ax.fill_between(x[band], lo[band], hi[band], alpha=0.2,
                            color=line.get_color(), linewidth=0, label=f"{path} 95 % CI")
    if not numeric:
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_xlabel(label(param))
    ax.set_ylabel(label(metric))
    n_rep = int(rows.groupby(["path", param]).size().max()) if len(rows) else 0
    ax.set_title(f"{metric} vs {param} (mean of {n_rep} run{'s' * (n_rep != 1)}, 95 % CI)",
                 fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def heatmap(df: pd.DataFrame, x: str, y: str, metric: str, path: str = "nodeport",
            ax: Any = None) -> Any:
    """The mean of ``metric`` over replications on one ``path``, for each (``x``, ``y``) of the
    grid, as coloured cells with their values written in; missing cells stay blank.

    Returns the Axes (the colour bar is drawn beside it, labelled with the metric).
    """
    rows = _ok(df, x, y, "path", metric)
    rows = rows[rows["path"] == path]
    if rows.empty:
        raise ValueError(f"no finished rows for path {path!r} with {metric!r}")
    xs, ys = _ordered(rows[x]), _ordered(rows[y])
    mean = rows.groupby([y, x])[metric].mean()
    grid = np.full((len(ys), len(xs)), np.nan)
    for (yv, xv), v in mean.items():
        grid[ys.index(yv), xs.index(xv)] = v
    ax = _axes(ax)
    finite = grid[np.isfinite(grid)]
    # a constant grid gets a scale from 0 to its value (0 to 1 if it is 0), not matplotlib's
    # value +- 0.1, which reads as a spread that is not there
    span = {}
    if finite.size and finite.min() == finite.max():
        v = float(finite[0])
        span = dict(vmin=min(0.0, v), vmax=max(0.0, v) if v != 0 else 1.0)
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis",
                      **span)
    ax.figure.colorbar(image, ax=ax, label=label(metric))
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.set_title(f"{metric}, {path} path (mean over replications)", fontsize="medium")
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize="small",
                        color="black" if grid[i, j] > mid else "white")
    return ax
