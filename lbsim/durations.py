"""Duration distributions for config fields such as ``hold_s`` and ``service_s``.

A duration is given in TOML as a plain number (fixed, in seconds) or as a table::

    service_s = 0.2                                   # fixed 0.2 s
    service_s = { dist = "exponential", mean = 0.2 }
    service_s = { dist = "lognormal", mean = 0.2, sigma = 1.0 }

Samples are computed from uniforms that the caller draws (see :mod:`lbsim.rng`), so the same
uniforms give the same durations in every engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

__all__ = ["Fixed", "Exponential", "LogNormal", "Duration", "parse_duration", "duration_to_toml"]


@dataclass(frozen=True, kw_only=True)
class Fixed:
    """Always ``value`` seconds."""

    value: float

    @property
    def mean(self) -> float:
        return self.value

    def sample(self, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
        return np.full(np.shape(u1), float(self.value))


@dataclass(frozen=True, kw_only=True)
class Exponential:
    """Exponential with the given ``mean`` (seconds), by inversion: ``-mean * log(1 - u)``."""

    mean: float

    def sample(self, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
        return -self.mean * np.log1p(-np.asarray(u1, dtype=np.float64))


@dataclass(frozen=True, kw_only=True)
class LogNormal:
    """Log-normal with the given ``mean`` (seconds) and log-space standard deviation ``sigma``.

    ``mu = log(mean) - sigma**2 / 2`` so that the distribution's mean is ``mean``; normals come
    from the Box-Muller transform of two uniforms.
    """

    mean: float
    sigma: float

    def sample(self, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
        mu = math.log(self.mean) - self.sigma**2 / 2.0
        u1 = np.asarray(u1, dtype=np.float64)
        z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * math.pi * np.asarray(u2))
        return np.exp(mu + self.sigma * z)


Duration = Union[Fixed, Exponential, LogNormal]

_KINDS = {"fixed": Fixed, "exponential": Exponential, "lognormal": LogNormal}


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} = {value!r} is invalid: must be a number of seconds")
    if not math.isfinite(value):
        raise ValueError(f"{field} = {value!r} is invalid: must be finite")
    return float(value)


def parse_duration(field: str, value: Any, *, allow_zero: bool = True) -> Duration:
    """Build a :data:`Duration` from a number or a ``{dist = ...}`` mapping, validating it.

    Raises ``ValueError`` naming ``field`` when the value is malformed or out of range.
    """
    if isinstance(value, (Fixed, Exponential, LogNormal)):
        value = duration_to_toml(value)
    low = "0" if allow_zero else "> 0"
    if not isinstance(value, dict):
        v = _number(field, value)
        if v < 0 or (not allow_zero and v == 0):
            raise ValueError(f"{field} = {value!r} is invalid: must be {'>= 0' if allow_zero else '> 0'} seconds")
        return Fixed(value=v)
    kind = value.get("dist")
    if kind not in _KINDS:
        raise ValueError(f"{field}.dist = {kind!r} is invalid: must be one of {sorted(_KINDS)}")
    allowed = {"fixed": {"dist", "value"}, "exponential": {"dist", "mean"},
               "lognormal": {"dist", "mean", "sigma"}}[kind]
    unknown = set(value) - allowed
    missing = allowed - set(value)
    if unknown or missing:
        raise ValueError(f"{field} = {value!r} is invalid: a {kind} duration takes exactly the keys "
                         f"{sorted(allowed)}")
    if kind == "fixed":
        return parse_duration(field, value["value"], allow_zero=allow_zero)
    mean = _number(f"{field}.mean", value["mean"])
    if mean <= 0:
        raise ValueError(f"{field}.mean = {mean!r} is invalid: must be > 0 seconds (min {low})")
    if kind == "exponential":
        return Exponential(mean=mean)
    sigma = _number(f"{field}.sigma", value["sigma"])
    if sigma < 0 or sigma > 10:
        raise ValueError(f"{field}.sigma = {sigma!r} is invalid: must be in [0, 10]")
    return LogNormal(mean=mean, sigma=sigma)


def duration_to_toml(d: Duration) -> float | dict[str, Any]:
    """The plain form of a duration: a number when fixed, else a ``{dist = ...}`` dict."""
    if isinstance(d, Fixed):
        return d.value
    if isinstance(d, Exponential):
        return {"dist": "exponential", "mean": d.mean}
    return {"dist": "lognormal", "mean": d.mean, "sigma": d.sigma}
