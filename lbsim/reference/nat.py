"""SNAT source-port selection of MASQUERADE, as ``net/netfilter/nf_nat_core.c`` does it.

``select_port`` is the readable reference, one flow at a time, a line-by-line reading of
``get_unique_tuple()`` and ``nf_nat_l4proto_unique_tuple()`` (kernel-facts 1.2-1.6, 1.8), with the
4.x search (``nf_nat_proto_common.c``, kernel-facts 1.9) beside it. It asks the node's conntrack
table, the only record of used tuples; it frees the expired entries its probes meet and evicts
what the kernel would evict. :mod:`lbsim.compiled.nat` is its compiled twin.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel import (F_NAT_CLASH, F_SNAT, F_TCP, HARDER_THRESH, MAX_ATTEMPTS, MIN_ROUND,
                      PORTS_ABOVE, PORTS_BELOW_512, PORTS_BELOW_1024, ROUNDS)
from ..tuples import reply_key

__all__ = ["NatRule", "PortChoice", "default_range", "select_port"]


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
    #: before 5.0 (nf_nat_proto_common.c): rover / keyed-hash / random start, whole range
    rover_search: bool = False
    #: with ``rover_search``: ``--random`` (keyed hash start) rather than ``--random-fully``
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
        return PORTS_BELOW_512 if sport < 512 else PORTS_BELOW_1024
    return PORTS_ABOVE


def _seq_has_advanced(new_isn: int, old_seq) -> bool:
    """``nf_seq_has_advanced``: (s32)(new.td_end - old.td_end) > 0, new.td_end = isn + 1."""
    d = (int(new_isn) + 1 - int(old_seq)) & 0xFFFFFFFF
    return 0 < d < (1 << 31)


def select_port(table, t: int, node: int, pod: int, sport: int, offsets, isn: int,
                rule: NatRule, rover=None, secure_off: int = 0) -> PortChoice:
    """Choose the NAT source port for one new flow (scalar reference).

    ``offsets`` are the kernel's ``get_random_u16()`` draws, one per search round; ``isn`` is the new
    SYN's initial sequence number (u32). With ``rule.rover_search`` (before 5.0), ``rover`` is the node's
    ``[rover]`` (updated in place) and ``secure_off`` the ``--random`` keyed-hash start.
    """
    found = 0

    base = reply_key(node, pod, 0)

    def entry_at(port: int, counted: bool = True) -> int:
        # counted: nf_conntrack_tuple_taken increments `found` on a hit; the harder path's
        # nf_conntrack_find_get (nf_nat_used_tuple_harder) does not
        nonlocal found
        eid = table.get(base | port)
        if eid < 0:
            return -1
        if table.t_expire[eid] <= t:          # expired entries met are freed (nf_ct_gc_expired)
            table.release1(eid)
            return -1
        found += counted
        return eid

    def harder(attempts_left: int) -> bool:
        # nf_nat_used_tuple_harder takes its own path for the last HARDER_THRESH attempts of a
        # round of a new TCP SYN (SYN_SENT) on 6.5+
        return rule.evict_closing and rule.tcp and attempts_left <= HARDER_THRESH

    def evictable(eid: int, attempts_left: int) -> bool:
        # nf_nat_used_tuple_harder / nf_nat_may_kill / nf_seq_has_advanced
        if not harder(attempts_left):
            return False
        flags = int(table.flags[eid])
        return (bool(flags & F_TCP) and t >= table.t_close[eid] and bool(flags & F_SNAT)
                and not flags & F_NAT_CLASH and _seq_has_advanced(isn, table.seq[eid]))

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
    if rule.rover_search:
        return _legacy_search(entry_at, table, t, node, pod, mn, size, offsets, rule, rover,
                              secure_off, lambda: found)
    # nf_nat_l4proto_unique_tuple(): runs of consecutive ports from random u16 offsets.
    attempts = min(size, MAX_ATTEMPTS)
    for r in range(ROUNDS):
        off = int(offsets[r])
        for i in range(attempts):
            port = mn + off % size
            eid = entry_at(port, counted=not harder(attempts - i))
            if eid < 0:
                return PortChoice(port, False, found, -1)
            if evictable(eid, attempts - i):
                table.release1(eid)              # nf_ct_kill
                return PortChoice(port, False, found, eid)
            off = (off + 1) & 0xFFFF             # u16 off++
        if attempts >= size or attempts < MIN_ROUND:
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
