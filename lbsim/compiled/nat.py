"""The SNAT port search, compiled: :func:`lbsim.reference.nat.select_port` on the compiled table.

The reference cites the kernel line by line (``get_unique_tuple``, ``nf_nat_l4proto_unique_tuple``);
this is the same search, probe for probe: it frees the expired entries its probes meet and evicts
what 6.5+ evicts, and tests/property requires both to choose the same port for every flow.
"""

from __future__ import annotations

import numpy as np

from ..kernel import (F_NAT_CLASH, F_SNAT, F_TCP, HARDER_THRESH, MAX_ATTEMPTS, MIN_ROUND,
                      PORTS_ABOVE, PORTS_BELOW_512, PORTS_BELOW_1024, ROUNDS)
from ..rng import bits_nb as bits, mix64_nb as mix64
from .index import idx_get, reply_key
from .layout import FLAGS, K_NAT, SEQ, T_CLOSE, T_EXPIRE, hot, inline
from .table import live_eid, release

__all__ = ["port_range", "select_port"]

_U = np.uint64


@inline
def port_range(P, sport):
    """(first port, size) of the range the rule maps ``sport`` into (``nat.default_range``)."""
    if P.has_range:
        return P.port_lo, P.port_hi - P.port_lo + 1
    if sport < 512:
        return PORTS_BELOW_512
    if sport < 1024:
        return PORTS_BELOW_1024
    return PORTS_ABOVE


@inline
def select_port(E, HD, S, free, IX, count, K, P, rover, t, node, pod, sport, flow, attempt,
                isn):
    """Returns (port, exhausted, found); frees expired entries met, evicts as the kernel does."""
    found = 0
    base = reply_key(node, pod, 0)
    mn, size = port_range(P, sport)
    if not P.random_all:                 # keep the client's port when it is allowed and free
        if P.has_range:
            if P.port_lo <= sport <= P.port_hi:
                if size == 1:
                    return sport, False, found
                if live_eid(E, HD, S, free, IX, count, base | sport, t) < 0:
                    return sport, False, found
                found += 1
        else:
            if live_eid(E, HD, S, free, IX, count, base | sport, t) < 0:
                return sport, False, found
            found += 1
    if P.rover_search:
        return _legacy_search(E, HD, S, free, IX, count, K, P, rover, t, node, base, mn, size,
                              flow, attempt, found)
    evict = P.evict_closing and P.tcp
    attempts = min(size, MAX_ATTEMPTS)
    port = mn
    for r in range(ROUNDS):
        off = np.int64(bits(K[K_NAT], flow, attempt, r) >> _U(48))
        for i in range(attempts):
            port = mn + off % size
            e = live_eid(E, HD, S, free, IX, count, base | port, t)
            if e < 0:
                return port, False, found
            harder = evict and attempts - i <= HARDER_THRESH
            if not harder:       # nf_conntrack_find_get (the harder path) counts no found
                found += 1
            if harder:
                fl = E[e][FLAGS]
                d = (isn + 1 - E[e][SEQ]) & 0xFFFFFFFF
                if ((fl & F_TCP) != 0 and t >= E[e][T_CLOSE] and (fl & F_SNAT) != 0
                        and (fl & F_NAT_CLASH) == 0 and 0 < d < (1 << 31)):
                    release(E, HD, S, free, IX, count, e)
                    return port, False, found
            off = (off + 1) & 0xFFFF
        if attempts >= size or attempts < MIN_ROUND:
            break
        attempts //= 2
    return port, True, found


@hot
def _legacy_search(E, HD, S, free, IX, count, K, P, rover, t, node, base, mn, size, flow,
                   attempt, found):
    """4.x (``nat._legacy_search``): rover, keyed hash or random start, the whole range."""
    if not P.random_all:
        off = rover[node]
    elif P.legacy_random:
        off = np.int64(mix64(_U(base) ^ K[K_NAT]) >> _U(32)) & 0xFFFF
    else:
        off = np.int64(bits(K[K_NAT], flow, attempt, 0) >> _U(48))
    i = 0
    while True:
        port = mn + off % size
        i += 1
        if i != size:
            if live_eid(E, HD, S, free, IX, count, base | port, t) >= 0:
                found += 1
                off = (off + 1) & 0xFFFF
                continue
        if not P.random_all:
            rover[node] = off
        exhausted = False
        if i == size:
            e = idx_get(IX, E, base | port)
            exhausted = e >= 0 and E[e][T_EXPIRE] > t
        return port, exhausted, found
