"""Compiled samplers that turn uniforms into integer nanoseconds, shared by every engine.

Both engines, and the per-flow inputs drawn up front, call these same functions, so that a duration
is the same int64 everywhere: numpy's and libm's ``log1p`` may differ in the last bit, and a
different last bit can round to a different nanosecond.
"""

from __future__ import annotations

import math

import numpy as np

from .jit import jit
from .durations import Exponential, Fixed, LogNormal

__all__ = ["PT_FIXED", "PT_EXP", "PT_LOGNORMAL", "duration_params", "duration_ns", "delays_ns",
           "durations_ns", "arrivals_from", "periodic_ns", "exponential_ns", "scaled", "log1p_neg"]

# duration kinds
PT_FIXED, PT_EXP, PT_LOGNORMAL = 0, 1, 2

@jit
def duration_ns(kind, a, b, u1, u2):
    """A duration in ns from two uniforms: fixed ``a``, exponential (mean ``a``), log-normal
    (mean ``a``, sigma ``b``), as :mod:`lbsim.durations` defines them; at least 1 ns."""
    if kind == PT_FIXED:
        x = a
    elif kind == PT_EXP:
        x = -a * math.log1p(-u1)
    else:
        mu = math.log(a) - b * b / 2.0
        z = math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)
        x = math.exp(mu + b * z)
    return max(np.int64(np.rint(x * 1e9)), np.int64(1))


@jit
def durations_ns(kind, a, b, u1, u2):
    """:func:`duration_ns` element by element."""
    out = np.empty(u1.size, np.int64)
    for i in range(u1.size):
        out[i] = duration_ns(kind, a, b, u1[i], u2[i])
    return out


def duration_params(d) -> tuple[int, float, float]:
    """(kind, a, b) of a :mod:`lbsim.durations` distribution for :func:`duration_ns`."""
    if isinstance(d, Fixed):
        return PT_FIXED, float(d.value), 0.0
    if isinstance(d, Exponential):
        return PT_EXP, float(d.mean), 0.0
    if isinstance(d, LogNormal):
        return PT_LOGNORMAL, float(d.mean), float(d.sigma)
    raise TypeError(f"unknown duration {d!r}")


def delays_ns(d, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """One delay of distribution ``d`` per pair of uniforms, ns; a fixed one exact (0 stays 0,
    where :func:`duration_ns` keeps at least 1 ns)."""
    if isinstance(d, Fixed):
        return np.full(u1.size, int(np.rint(float(d.value) * 1e9)), np.int64)
    return durations_ns(*duration_params(d), u1, u2)


def log1p_neg(u: np.ndarray) -> np.ndarray:
    """``np.log1p(-u)``, computed in ``u``'s own memory (no new arrays to fault in)."""
    np.negative(u, out=u)
    return np.log1p(u, out=u)


@jit
def arrivals_from(log1p_neg_u, rate, acc, out):
    """Poisson socket start times in ns into ``out``: the running sum of exponential gaps
    ``-log1p(-u) / rate`` (added in order, as np.cumsum does) going on from ``acc`` (s, the
    sockets before), times 1e9, rounded half to even; returns the sum after the last (a run
    drawn window by window adds the same floats in the same order as one drawn whole)."""
    for i in range(log1p_neg_u.size):
        acc += -log1p_neg_u[i] / rate
        out[i] = np.int64(np.rint(acc * 1e9))
    return acc


def periodic_ns(lo: int, hi: int, rate: float) -> np.ndarray:
    """Socket ``i``'s start for ``i`` in ``lo .. hi - 1`` at a fixed rate: ``rint(i / rate *
    1e9)`` ns (a pure function of ``i``: any window gives the same values)."""
    return np.rint(np.arange(lo, hi, dtype=np.float64) / rate * 1e9).astype(np.int64)


@jit
def exponential_ns(log1p_neg_u, mean):
    """``rint(-mean * log1p(-u) * 1e9)`` as int64 (Exponential.sample, then ns)."""
    out = np.empty(log1p_neg_u.size, np.int64)
    m = -mean
    for i in range(log1p_neg_u.size):
        out[i] = np.int64(np.rint(m * log1p_neg_u[i] * 1e9))
    return out


@jit
def scaled(u, n, lo):
    """``lo + floor(u * n)`` as int64, element by element (numpy's float ops, one pass)."""
    out = np.empty(u.size, np.int64)
    for i in range(u.size):
        out[i] = lo + np.int64(math.floor(u[i] * np.float64(n)))
    return out
