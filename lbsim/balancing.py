"""Load-balancing decisions: the cloud LB's round robin and kube-proxy's endpoint choice.

Vectorized functions and their scalar references share a name (``_scalar`` suffix) and agree
decision for decision; tests/property checks that.
"""

from __future__ import annotations

import bisect
from functools import lru_cache

import numpy as np

__all__ = [
    "iptables_probability_threshold", "iptables_cascade_cdf", "iptables_endpoint",
    "iptables_endpoint_scalar", "round_robin", "round_robin_scalar",
]


def iptables_probability_threshold(n: int) -> int:
    """The 31-bit threshold the kernel compares for ``--probability`` of 1/n.

    kube-proxy writes ``fmt.Sprintf("%0.10f", 1.0/float64(n))`` (``computeProbability`` in
    ``pkg/proxy/iptables/proxier.go``); iptables stores ``lround(0x80000000 * p)``
    (``libxt_statistic.c``); ``xt_statistic.c`` matches when
    ``(get_random_u32() & 0x7FFFFFFF) < threshold``.
    """
    p = float(f"{1.0 / n:0.10f}")
    return int(np.round(0x80000000 * p))  # lround: halves away from zero; p*2**31 never ties here


@lru_cache(maxsize=4096)
def iptables_cascade_cdf(n: int) -> np.ndarray:
    """Cumulative probability of choosing endpoints 0..n-1 through the rule cascade.

    Rule i (i < n-1) matches with probability ``threshold(n - i) / 2**31`` given that rules before
    it did not; the last rule is unconditional (``writeServiceToEndpointRules``). The distribution
    is exact for the kernel's fixed-point probabilities; one uniform per flow then picks the same
    endpoint distribution as the kernel's n-1 independent draws.
    """
    if n < 1:
        raise ValueError(f"endpoints = {n} is invalid: must be >= 1")
    p = np.array([iptables_probability_threshold(n - i) / 2**31 for i in range(n - 1)] + [1.0])
    survive = np.concatenate(([1.0], np.cumprod(1.0 - p[:-1])))
    cdf = np.cumsum(survive * p)
    cdf[-1] = 1.0
    cdf.flags.writeable = False
    return cdf


def iptables_endpoint(u: np.ndarray, n: int) -> np.ndarray:
    """Endpoint index in [0, n) for uniforms ``u`` through the cascade of ``n`` endpoints."""
    idx = np.searchsorted(iptables_cascade_cdf(n), u, side="right")
    return np.minimum(idx, n - 1)


def iptables_endpoint_scalar(u: float, n: int) -> int:
    """Scalar reference of :func:`iptables_endpoint`."""
    return min(bisect.bisect_right(_cdf_list(n), u), n - 1)


@lru_cache(maxsize=4096)
def _cdf_list(n: int) -> list[float]:
    return [float(x) for x in iptables_cascade_cdf(n)]


def round_robin(instance: np.ndarray, backends: int, instances: int) -> np.ndarray:
    """Backend index for each flow (in arrival order) when every LB instance round-robins.

    Each instance keeps its own counter, starting at backend 0 (as IPVS's rr does with fresh
    state); the k-th flow that reaches an instance goes to backend ``k % backends``.
    """
    instance = np.asarray(instance, dtype=np.int64)
    order = np.argsort(instance, kind="stable")
    counts = np.bincount(instance, minlength=instances)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(instance.size, dtype=np.int64)
    rank[order] = np.arange(instance.size) - np.repeat(starts, counts)
    return rank % backends


def round_robin_scalar(instance: list[int], backends: int, instances: int) -> list[int]:
    """Scalar reference of :func:`round_robin`: one counter per instance."""
    counter = [0] * instances
    out = []
    for i in instance:
        out.append(counter[i] % backends)
        counter[i] += 1
    return out
