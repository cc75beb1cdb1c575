"""Text helpers shared by the bench's report and its figures: file-safe names, numbers and config
values as the report prints them, markdown table cells.

It imports nothing of lbsim, so that :mod:`lbsim.figures` and :mod:`lbsim.report` both use it
without importing each other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["slug", "fmt_value", "is_finite", "pct", "fmt_dt", "show", "md_cell"]


def slug(name: str) -> str:
    """A file-name-safe version of a scenario name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "scenario"


def is_finite(v: Any) -> bool:
    """``v`` is a finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_value(metric: str, v: Any) -> str:
    """A summary value as the report prints it (NaN and missing values as ``nan``)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if float(v).is_integer() and not metric.endswith(("_s", "_fraction")) and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def pct(v: float) -> str:
    """A fraction as a percentage."""
    return f"{100 * v:.3g} %"


def fmt_dt(v: float) -> str:
    """A time difference in seconds, in a readable unit."""
    a = abs(v)
    if a >= 1:
        return f"{v:.3g} s"
    if a >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} µs"


def show(v: Any) -> str:
    """A config value as TOML writes it (``true``, ``[1, 2]``, ``{a = 1}``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {show(x)}" for k, x in v.items()) + "}"
    return str(v)


def md_cell(text: str) -> str:
    """``text`` made safe for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
