"""Closed forms that lbsim is checked against (tests/statistical).

Each function states the model it assumes; the tests choose scenarios where those assumptions hold.
"""

from __future__ import annotations

import math

__all__ = ["erlang_b", "time_wait_rate_bound", "same_port_probability_random",
           "insert_race_rate", "local_pod_shares", "capped_search_overload_failed_fraction",
           "CAPPED_SEARCH_PROBES"]

#: Ports one SNAT search probes at most when the range is larger than 128: runs of 128, 64, 32,
#: 16 and 8 consecutive ports, each from a fresh random start (nf_nat_l4proto_unique_tuple).
CAPPED_SEARCH_PROBES = 128 + 64 + 32 + 16 + 8


def erlang_b(servers: int, offered: float) -> float:
    """Erlang-B blocking of an M/G/c/c loss system: ``c = servers`` ports, ``offered = rate x mean
    holding time`` (insensitive to the holding-time distribution). Stable recursion
    ``B(k) = A B(k-1) / (k + A B(k-1))``."""
    if servers < 0 or offered < 0:
        raise ValueError("servers and offered load must be >= 0")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return b


def time_wait_rate_bound(ports: int = 64512, holding_s: float = 120.0) -> float:
    """New connections per second one (node, pod) pair sustains when every connection holds its
    SNAT port for ``holding_s`` (kernel-facts 7: 64512 / 120 = 537.6 per second)."""
    return ports / holding_s


def same_port_probability_random(range_size: int = 64512) -> float:
    """Probability that two independent searches start at the same port.

    The start is ``min + get_random_u16() % range_size``: with 65536 offsets over ``range_size``
    ports, ``65536 % range_size`` ports are twice as likely as the others.
    """
    q, r = divmod(65536, range_size)
    p_hi, p_lo = (q + 1) / 65536, q / 65536
    return r * p_hi**2 + (range_size - r) * p_lo**2


def insert_race_rate(rate_per_s: float, cpus: int, packet_time_s: float, same_tuple: float) -> float:
    """Expected rate of confirm clashes (``insert_failed``) on one node, per second.

    Flows arrive as a Poisson process at ``rate_per_s``; RSS spreads them uniformly over ``cpus``;
    each CPU processes one new flow at a time for a fixed ``packet_time_s``, choosing the NAT tuple
    at the start and confirming at the end. Two flows race when they are processed at overlapping
    times on different CPUs: the start-time processes of two CPUs are independent and stationary
    (independent thinnings of a Poisson process, each then queued on its own CPU), so overlapping
    pairs occur at rate ``rate^2 * packet_time * (cpus - 1) / cpus`` whatever the queueing. A race
    drops the later confirm when both flows chose the same tuple, with probability ``same_tuple``
    (e.g. plain MASQUERADE keeping the client port: same pod x same client port x port free).
    """
    return rate_per_s**2 * packet_time_s * (cpus - 1) / cpus * same_tuple


def local_pod_shares(pods_per_node: list[int]) -> list[float]:
    """Share of new flows each pod gets with ``externalTrafficPolicy: Local`` when the LB splits
    evenly over the nodes that have pods: ``1 / (ready nodes x pods on that node)``."""
    ready = [n for n in pods_per_node if n > 0]
    return [1.0 / (len(ready) * n) for n in pods_per_node for _ in range(n)]


def capped_search_overload_failed_fraction(load: float, probes: int = CAPPED_SEARCH_PROBES) -> float:
    """Failed fraction of new flows through one node->pod pair whose SNAT search is capped at
    ``probes`` ports, for an offered load ``load = rate x holding time / ports`` above 1.

    A fluid model of the overloaded range: free ports are few and scattered at a density ``f``, so
    a search misses them all with probability ``p = exp(-probes f)``; Little's law ties the held
    ports to the accepted flows, ``1 - f = load (1 - p)``. The fixed point ``p = exp(-probes (1 -
    load (1 - p)))`` is solved by bisection. It ignores the fluctuations that Erlang-B keeps (so
    near ``load = 1`` it is too low) and the clumping of free ports below capacity (so below 1 it
    says ~0 where the kernel fails flows; docs/design.md, "capped search"). Erlang-B tends to
    ``1 - 1/load``; the cap adds about ``f / load``, with ``f = ln(1/p) / probes``.
    """
    if load <= 0 or probes < 1:
        raise ValueError("load must be > 0 and probes >= 1")
    lo, hi = 0.0, 1.0
    for _ in range(100):
        p = (lo + hi) / 2
        if p - math.exp(-probes * max(0.0, 1.0 - load * (1.0 - p))) > 0:
            hi = p
        else:
            lo = p
    return (lo + hi) / 2
