"""SNAT source-port selection of MASQUERADE, as ``net/netfilter/nf_nat_core.c`` does it.

``select_port`` is the scalar reference, one flow at a time, a line-by-line reading of
``get_unique_tuple()`` and ``nf_nat_l4proto_unique_tuple()`` (kernel-facts 1.2-1.6, 1.8);
``select_ports`` is the vectorized version for many flows of distinct (node, pod) pairs, which
cannot affect each other's choice. Both ask the node's conntrack table, the only record of used
tuples; both free the expired entries their probes meet and evict what the kernel would evict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .conntrack import NAT_CLASH, SNAT, TCP
from .tuples import reply_key

__all__ = ["NatRule", "PortChoice", "default_range", "select_port", "select_ports",
           "MAX_ATTEMPTS", "HARDER_THRESH", "ROUNDS"]

#: NF_NAT_MAX_ATTEMPTS: probes in the first round of the search
MAX_ATTEMPTS = 128
#: NF_NAT_HARDER_THRESH: with this many probes or fewer left in a round, a new TCP SYN may evict a
#: colliding TIME_WAIT/CLOSE entry (6.5+, "snat: evict closing tcp entries on reply tuple collision")
HARDER_THRESH = MAX_ATTEMPTS // 4
#: rounds of the search: 128, 64, 32, 16, 8 probes, each from a fresh random offset
ROUNDS = 5


@dataclass(frozen=True)
class NatRule:
    """The MASQUERADE rule and the kernel behaviour that apply to a flow."""

    #: ``--random`` or ``--random-fully`` (NF_NAT_RANGE_PROTO_RANDOM_ALL): never keep the port
    random_all: bool = False
    #: ``--to-ports low-high`` (NF_NAT_RANGE_PROTO_SPECIFIED), or None
    port_range: tuple[int, int] | None = None
    #: 6.5+: evict colliding closing TCP entries in the last 32 probes of a round
    evict_closing: bool = True
    #: the new flow is TCP (its conntrack is in SYN_SENT)
    tcp: bool = True
    #: 4.x search (nf_nat_proto_common.c): rover / keyed-hash / random start, whole range
    legacy: bool = False
    #: with ``legacy``: ``--random`` (keyed hash start) rather than ``--random-fully``
    legacy_random: bool = False


@dataclass
class PortChoice:
    """Outcome of one port selection."""

    port: int
    #: no free tuple was found: ``port`` is the last, taken candidate (the flow fails at confirm)
    exhausted: bool
    #: probes that met a live entry (``conntrack -S`` ``found``)
    found: int
    #: entry evicted to reuse its port, or -1
    evicted: int


def default_range(sport: int) -> tuple[int, int]:
    """(min, range_size) the kernel uses when the rule gives no ports (kernel-facts 1.3)."""
    if sport < 1024:
        return (1, 511) if sport < 512 else (600, 1023 - 600 + 1)
    return 1024, 65535 - 1024 + 1


def _seq_has_advanced(new_isn: int, old_seq) -> bool:
    """``nf_seq_has_advanced``: (s32)(new.td_end - old.td_end) > 0, new.td_end = isn + 1."""
    d = (int(new_isn) + 1 - int(old_seq)) & 0xFFFFFFFF
    return 0 < d < (1 << 31)


def select_port(table, t: int, node: int, pod: int, sport: int, offsets, isn: int,
                rule: NatRule, rover=None, secure_off: int = 0) -> PortChoice:
    """Choose the NAT source port for one new flow (scalar reference).

    ``offsets`` are the kernel's ``get_random_u16()`` draws, one per search round; ``isn`` is the new
    SYN's initial sequence number (u32). With ``rule.legacy`` (4.x), ``rover`` is the node's
    ``[rover]`` (updated in place) and ``secure_off`` the ``--random`` keyed-hash start.
    """
    found = 0

    base = (node << 36) | (pod << 16)           # tuples.reply_key(node, pod, 0)

    def entry_at(port: int) -> int:
        nonlocal found
        eid = table.get(base | port)
        if eid < 0:
            return -1
        if table.t_expire[eid] <= t:          # expired entries met are freed (nf_ct_gc_expired)
            table.release1(eid)
            return -1
        found += 1
        return eid

    def evictable(eid: int, attempts_left: int) -> bool:
        # nf_nat_used_tuple_harder / nf_nat_may_kill / nf_seq_has_advanced
        if not rule.evict_closing or not rule.tcp or attempts_left > HARDER_THRESH:
            return False
        flags = int(table.flags[eid])
        return (bool(flags & TCP) and t >= table.t_close[eid] and bool(flags & SNAT)
                and not flags & NAT_CLASH and _seq_has_advanced(isn, table.seq[eid]))

    if rule.port_range is not None:
        lo, hi = rule.port_range
        mn, size = lo, hi - lo + 1
    else:
        mn, size = default_range(sport)
    # get_unique_tuple(): keep the original source port when allowed and free.
    if not rule.random_all:
        if rule.port_range is not None:
            if lo <= sport <= hi and (size == 1 or entry_at(sport) < 0):
                return PortChoice(sport, False, found, -1)
        elif entry_at(sport) < 0:
            return PortChoice(sport, False, found, -1)
    if rule.legacy:
        return _legacy_search(entry_at, table, t, node, pod, mn, size, offsets, rule, rover,
                              secure_off, lambda: found)
    # nf_nat_l4proto_unique_tuple(): runs of consecutive ports from random u16 offsets.
    attempts = min(size, MAX_ATTEMPTS)
    for r in range(ROUNDS):
        off = int(offsets[r])
        for i in range(attempts):
            port = mn + off % size
            eid = entry_at(port)
            if eid < 0:
                return PortChoice(port, False, found, -1)
            if evictable(eid, attempts - i):
                table.release1(eid)              # nf_ct_kill
                return PortChoice(port, False, found, eid)
            off = (off + 1) & 0xFFFF             # u16 off++
        if attempts >= size or attempts < 16:
            break
        attempts //= 2
    return PortChoice(port, True, found, -1)


def _legacy_search(entry_at, table, t, node, pod, mn, size, offsets, rule, rover, secure_off,
                   found) -> PortChoice:
    """4.x ``nf_nat_l4proto_unique_tuple`` (kernel-facts 1.9)::

        if (RANDOM) off = secure_port(...); else if (RANDOM_FULLY) off = prandom_u32();
        else off = *rover;
        for (i = 0; ; ++off) {
            *portptr = htons(min + off % range_size);
            if (++i != range_size && nf_nat_used_tuple(tuple, ct)) continue;
            if (!(range->flags & NF_NAT_RANGE_PROTO_RANDOM_ALL)) *rover = off;
            return;
        }

    ``off`` is a u16. The last candidate is returned unchecked; it may be taken (exhausted).
    """
    if not rule.random_all:
        off = int(rover[0])
    elif rule.legacy_random:
        off = secure_off & 0xFFFF
    else:
        off = int(offsets[0])
    i = 0
    while True:
        port = mn + off % size
        i += 1
        if i != size and entry_at(port) >= 0:
            off = (off + 1) & 0xFFFF
            continue
        if not rule.random_all:
            rover[0] = off
        exhausted = i == size and _taken(table, t, node, pod, port)
        return PortChoice(port, exhausted, found(), -1)


def _taken(table, t, node, pod, port) -> bool:
    eid = table.get(int(reply_key(node, pod, port)))
    return eid >= 0 and table.t_expire[eid] > t


# Probe columns are examined in chunks: most flows stop at their first probe.
_CHUNKS = (1, 8, 32, MAX_ATTEMPTS)


def select_ports(table, t: np.ndarray, node: np.ndarray, pod: np.ndarray, sport: np.ndarray,
                 offsets: np.ndarray, isn: np.ndarray, rule: NatRule):
    """Vectorized :func:`select_port` for flows of pairwise distinct (node, pod).

    Returns arrays ``(port, exhausted, found, evicted)``; frees met expired entries and evicts
    entries exactly as the scalar version does flow by flow.
    """
    m = len(node)
    t = np.asarray(t, dtype=np.int64)
    port = np.zeros(m, dtype=np.int64)
    exhausted = np.zeros(m, dtype=bool)
    found = np.zeros(m, dtype=np.int64)
    evicted = np.full(m, -1, dtype=np.int64)
    done = np.zeros(m, dtype=bool)
    to_release: list[np.ndarray] = []

    def probe(rows: np.ndarray, ports: np.ndarray, left: np.ndarray):
        """Candidate ``ports`` (rows x cols): the live entry (or -1), evictable, the expired entry
        met (or -1; the lookup frees it)."""
        eid = table.lookup(reply_key(node[rows, None], pod[rows, None], ports))
        tt = t[rows, None]
        present = eid >= 0
        e = np.where(present, eid, 0)
        held = present & table.alive[e]
        live = held & (table.t_expire[e] > tt)
        expired = held & ~live
        flags = table.flags[e]
        harder = live & (left <= HARDER_THRESH) if (rule.evict_closing and rule.tcp) else np.zeros_like(live)
        if harder.any():
            d = (isn[rows, None] + 1 - table.seq[e]) & 0xFFFFFFFF
            harder &= (((flags & TCP) != 0) & (tt >= table.t_close[e]) & ((flags & SNAT) != 0)
                       & ((flags & NAT_CLASH) == 0) & (d > 0) & (d < (1 << 31)))
        return np.where(live, eid, -1), harder, np.where(expired, eid, -1)

    def settle(rows, ports, live_eid, evict, expired):
        """Apply one block of probes; returns the rows still searching and their last port."""
        free = (live_eid < 0) | evict
        anyfree = free.any(axis=1)
        j = np.where(anyfree, free.argmax(axis=1), ports.shape[1] - 1)
        seen = np.arange(ports.shape[1])[None, :] <= j[:, None]
        found[rows] += np.count_nonzero(seen & (live_eid >= 0), axis=1)
        to_release.append(expired[seen & (expired >= 0)])
        ok = rows[anyfree]
        jj = j[anyfree]
        port[ok] = ports[anyfree, jj]
        ev = evict[anyfree, jj]
        evicted[ok[ev]] = live_eid[anyfree, jj][ev]
        done[ok] = True
        return ~anyfree

    if rule.port_range is not None:
        lo, hi = rule.port_range
        mn = np.full(m, lo, dtype=np.int64)
        size = np.full(m, hi - lo + 1, dtype=np.int64)
    else:
        mn = np.where(sport < 512, 1, np.where(sport < 1024, 600, 1024)).astype(np.int64)
        size = np.where(sport < 512, 511, np.where(sport < 1024, 424, 64512)).astype(np.int64)

    # Keep the original port when allowed and free.
    if not rule.random_all:
        if rule.port_range is not None:
            in_range = (sport >= lo) & (sport <= hi)
            single = in_range & (size == 1)
            port[single] = sport[single]
            done[single] = True
            rows = np.flatnonzero(in_range & ~single)
        else:
            rows = np.arange(m)
        if rows.size:
            ports = sport[rows, None].astype(np.int64)
            live_eid, _, expired = probe(rows, ports, np.full((1, 1), 1 << 30))
            free = live_eid[:, 0] < 0
            found[rows] += ~free
            to_release.append(expired[expired >= 0])
            port[rows[free]] = sport[rows[free]]
            done[rows[free]] = True

    # The search, group by group of equal (min, size): one group with --to-ports, else up to three.
    for g_mn, g_size in ([(lo, hi - lo + 1)] if rule.port_range is not None
                         else [(1024, 64512), (600, 424), (1, 511)]):
        rows = np.flatnonzero(~done & (mn == g_mn) & (size == g_size))
        attempts = min(g_size, MAX_ATTEMPTS)
        for r in range(ROUNDS):
            if rows.size == 0:
                break
            off0 = offsets[rows, r].astype(np.int64)
            start = 0
            last_ports = None
            for stop in _CHUNKS:
                stop = min(stop, attempts)
                if stop <= start:
                    continue
                cols = np.arange(start, stop)
                ports = g_mn + ((off0[:, None] + cols[None, :]) & 0xFFFF) % g_size
                live_eid, evict, expired = probe(rows, ports, attempts - cols[None, :])
                more = settle(rows, ports, live_eid, evict, expired)
                rows, off0, last_ports = rows[more], off0[more], ports[more, -1]
                start = stop
                if rows.size == 0:
                    break
            if rows.size and (attempts >= g_size or attempts < 16 or r == ROUNDS - 1):
                port[rows] = last_ports
                exhausted[rows] = True
                done[rows] = True
                rows = rows[:0]
            attempts //= 2
    if to_release:
        table.release(np.concatenate([x.ravel() for x in to_release]))
    evicted_ok = evicted[evicted >= 0]
    if evicted_ok.size:
        table.release(evicted_ok)
    return port, exhausted, found, evicted
