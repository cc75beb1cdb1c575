"""Which netfilter behaviours a kernel release has: ``nat.kernel = "5.4"``.

Each behaviour that changed between the releases lbsim covers is one :class:`Change`: the commit
that introduced it, the first release containing it, and how that was checked (the release's own
source read on both sides of the change). :func:`behaviour` turns a release, or one of the named
profiles (``modern``, ``5.x``, ``4.x``, aliases of releases), into the switches both engines read.

Stable backports are not modelled: ``"5.4"`` is what 5.4.0 does. Some of these changes did reach
later stable trees (docs/config.md lists the ones found); a late stable kernel is the mainline
release whose behaviour it has.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .kernel import (C_CLASH_RESOLVE, C_INSERT_FAILED, GC_MAX_SCAN_S, GC_SCAN_INTERVAL_S, NS,
                     UDP_STREAM_AFTER)

__all__ = ["Change", "CHANGES", "RELEASES", "OLDEST", "NEWEST", "PROFILES", "KernelBehaviour",
           "behaviour", "parse_release", "release_error", "markdown_table"]

#: every mainline release lbsim maps, oldest first (4.9 .. 4.20, 5.0 .. 5.19, 6.0 .. 6.18)
RELEASES: tuple[tuple[int, int], ...] = (
    tuple((4, m) for m in range(9, 21)) + tuple((5, m) for m in range(0, 20))
    + tuple((6, m) for m in range(0, 19)))
OLDEST, NEWEST = RELEASES[0], RELEASES[-1]

#: the named profiles (what ``nat.kernel`` accepted before releases) and the release each is
PROFILES = {"modern": (6, 18), "5.x": (5, 18), "4.x": (4, 19)}


@dataclass(frozen=True)
class Change:
    """One behaviour that a commit introduced, and the first release that has it."""

    #: a short name (tests and docs refer to it)
    key: str
    #: the :class:`KernelBehaviour` field it sets
    field: str
    #: the commit's 12-digit id ("" where no commit was identified) and subject
    commit: str
    subject: str
    #: first mainline release containing it
    release: tuple[int, int]
    #: what it changed, in lbsim's terms
    what: str
    #: the source read on either side: the release trees (x.y.z from their Makefile) and file
    evidence: str


CHANGES: tuple[Change, ...] = (
    Change("rover", "rover_search", "6ed5943f8735", "netfilter: nat: remove l4 protocol port rovers",
           (5, 0), "plain MASQUERADE no longer starts its search at a per-node rover (the last "
           "port chosen); every search starts at a random offset",
           "4.20.0 nf_nat_proto_common.c `off = *rover;`; 5.0.1 nf_nat_core.c "
           "`off = prandom_u32();`"),
    Change("capped-search", "rover_search", "a504b703bb1d",
           "netfilter: nat: limit port clash resolution attempts", (5, 0),
           "the search probes at most 128 ports, then rounds of 64, 32, 16, 8 from fresh "
           "random offsets (it walked the whole range before)",
           "4.20.0 `for (i = 0; ; ++off)`; 5.0.1 `max_attempts = 128`, "
           "`if (attempts >= range_size || attempts < 16)`"),
    Change("identical-clash", "clash_identical", "ed07d9a021df",
           "netfilter: nf_conntrack: resolve clash for matching conntracks", (4, 19),
           "a UDP entry losing the confirm race to an identical NATed entry (same reply tuple) "
           "adopts it; before, only un-NATed clashes were resolved (4.7-4.18), so every "
           "NodePort and Service one dropped",
           "4.18.0 nf_conntrack_core.c `((ct->status & IPS_NAT_DONE_MASK) == 0) &&`; 4.19.1 "
           "`nf_ct_match(ct, loser_ct)`"),
    Change("nat-clash", "nat_clash", "6a757c07e51f",
           "netfilter: conntrack: allow insertion of clashing entries", (5, 6),
           "a UDP entry clashing with a different one (another pod) is inserted reply-only with "
           "IPS_NAT_CLASH and a fixed 1 s timeout instead of being dropped, counting nothing; "
           "its first reply deletes it",
           "5.4.59 and 5.4.195: no IPS_NAT_CLASH (never backported to 5.4.y); 5.6.4 "
           "`loser_ct->status |= IPS_FIXED_TIMEOUT | IPS_NAT_CLASH;`; the series was posted "
           "after 5.5's release"),
    Change("nat-clash-kept", "nat_clash_deleted_on_reply", "c46172147ebb",
           "netfilter: conntrack: do not auto-delete clash entries on reply", (5, 9),
           "a NAT_CLASH entry is no longer deleted by its first reply: it stays its 1 s",
           "5.8.1 nf_conntrack_proto_udp.c `if (... ct->status & IPS_NAT_CLASH) nf_ct_kill(ct)`; "
           "5.9.1 `if (unlikely((ct->status & IPS_NAT_CLASH))) return NF_ACCEPT;`"),
    Change("clash-resolve-stat", "merged_counter", "bc92470413f3",
           "netfilter: conntrack: add clash resolution stat counter", (5, 10),
           "a resolved clash (adopted or NAT_CLASH) counts clash_resolve; before, an adopted one "
           "counted insert_failed and a NAT_CLASH one nothing",
           "5.9.1: no clash_resolve, /proc header `entries  searched found`; 5.10.7 "
           "`NF_CT_STAT_INC(net, clash_resolve);`, header `entries  clashres found`"),
    Change("evict-closing", "evict_closing", "458972550287",
           "netfilter: snat: evict closing tcp entries on reply tuple collision", (6, 5),
           "a TCP SYN whose last 32 probes of a round meet a TIME_WAIT/CLOSE entry evicts it",
           "6.4.4 nf_nat_core.c: no nf_nat_used_tuple_harder; 6.5.0 "
           "`if (!nf_nat_used_tuple_harder(tuple, ct, attempts - i))`"),
    Change("gc-one-cycle", "gc_period_ns", "4608fdfc07e1",
           "netfilter: conntrack: collect all entries in one cycle", (5, 15),
           "the GC scans the whole table every 120 s; before, each run scanned 1/128 of the "
           "buckets, the whole table within 16 s (within about 1 s while most entries it met "
           "were expired), which lbsim approximates by a pass every 16 s",
           "5.14-rc5 nf_conntrack_core.c `GC_MAX_BUCKETS_DIV`, `GC_MAX_SCAN_JIFFIES (16u * HZ)`; "
           "5.15.16 `GC_SCAN_INTERVAL (120u * HZ)`"),
    Change("gc-autotune", "gc_period_ns", "2cfadb761d3d",
           "netfilter: conntrack: revisit gc autotuning", (5, 18),
           "the GC's next pass comes after the mean remaining timeout of the entries it saw, "
           "1 to 60 s",
           "5.17-rc5 `GC_SCAN_INTERVAL (120u * HZ)`; 5.18.12 and 5.19.0 "
           "`GC_SCAN_INTERVAL_MAX (60ul * HZ)`, `next_run = gc_work->avg_timeout;` (applied to "
           "net-next in the 5.18 merge window)"),
    Change("udp-stream-2s", "udp_stream_after_ns", "d535c8a69c19",
           "netfilter: conntrack: udp: only extend timeout to stream mode after 2s", (5, 0),
           "a UDP entry takes the stream timeout only for packets more than 2 s after it "
           "began; before, any packet after the reply did",
           "4.20.0 nf_conntrack_proto_udp.c: no stream_ts; 5.0.1 "
           "`ct->proto.udp.stream_ts = 2 * HZ + jiffies;`"),
    Change("udp-stream-120s", "udp_stream_default_s", "", "(commit not identified)", (5, 0),
           "nf_conntrack_udp_timeout_stream defaults to 120 s (180 s before)",
           "4.20.0 `[UDP_CT_REPLIED] = 180*HZ`; 5.0.1 `[UDP_CT_REPLIED] = 120*HZ`"),
    Change("udp-assured-stream", "udp_assured_before_stream", "", "(commit not identified)",
           (5, 15), "a UDP entry turns ASSURED (safe from early_drop) only with the stream "
           "timeout; before, at its first packet after the reply",
           "5.14-rc5: ASSURED set whenever a reply was seen; 5.15.16 "
           "`if (stream && !test_and_set_bit(IPS_ASSURED_BIT, &ct->status))`"),
)
_BY_KEY = {c.key: c for c in CHANGES}


@dataclass(frozen=True)
class KernelBehaviour:
    """The switches both engines read for one release (:func:`behaviour`)."""

    release: tuple[int, int]
    #: the search before 5.0: rover / keyed hash / random start, the whole range
    rover_search: bool
    #: UDP confirm clashes with an identical NATed entry adopt it (4.19+)
    clash_identical: bool
    #: UDP confirm clashes with a different entry insert a NAT_CLASH one (5.6+)
    nat_clash: bool
    #: a NAT_CLASH entry is deleted by its first reply (5.6-5.8)
    nat_clash_deleted_on_reply: bool
    #: the counters an adopted clash and a NAT_CLASH insertion increment (-1: none):
    #: C_INSERT_FAILED and none before 5.10, C_CLASH_RESOLVE both from 5.10
    merged_counter: int
    nat_clash_counter: int
    #: TCP TIME_WAIT/CLOSE eviction in the search (6.5+)
    evict_closing: bool
    #: the GC with conntrack.gc_interval_s = "auto": a fixed full pass every ``gc_period_ns``, or
    #: 0 for 5.18+'s autotuning
    gc_period_ns: int
    #: a UDP entry takes the stream timeout only for packets this long after it began (ns; 0:
    #: any packet after the reply, before 5.0)
    udp_stream_after_ns: int
    #: a UDP entry turns ASSURED at its first packet after the reply, stream or not (before 5.15)
    udp_assured_before_stream: bool
    #: nf_conntrack_udp_timeout_stream's default, s (conntrack.udp_stream_s unset)
    udp_stream_default_s: float

    @property
    def gc_approximate(self) -> bool:
        """The GC's period stands for the incremental scan of 1/128 of the table (before 5.15)."""
        return self.gc_period_ns == GC_MAX_SCAN_S * NS


_RELEASE = re.compile(r"^([1-9][0-9]*)\.(0|[1-9][0-9]*)$")


def release_error(value: object) -> str | None:
    """Why ``value`` is not a ``nat.kernel`` lbsim maps, or None."""
    if isinstance(value, str) and value in PROFILES:
        return None
    allowed = (f"{sorted(PROFILES)} or a mainline release as a quoted string 'MAJOR.MINOR' from "
               f"{OLDEST[0]}.{OLDEST[1]} to {NEWEST[0]}.{NEWEST[1]} (the newest whose netfilter "
               "source lbsim's rules were read against)")
    m = _RELEASE.match(value) if isinstance(value, str) else None
    if m is None or (int(m[1]), int(m[2])) not in RELEASES:
        return allowed
    return None


def parse_release(value: str) -> tuple[int, int]:
    """``"5.4"`` -> (5, 4); a profile -> its release. Raises ValueError for anything else."""
    if value in PROFILES:
        return PROFILES[value]
    why = release_error(value)
    if why is not None:
        raise ValueError(f"nat.kernel = {value!r} is invalid: must be {why}")
    major, minor = value.split(".")
    return int(major), int(minor)


def _since(key: str, release: tuple[int, int]) -> bool:
    """Whether ``release`` has change ``key``."""
    return release >= _BY_KEY[key].release


@functools.lru_cache(maxsize=None)
def behaviour(kernel: str) -> KernelBehaviour:
    """The behaviour of release ``kernel`` ("5.4") or of a profile ("modern" = 6.18)."""
    r = parse_release(str(kernel))
    if _since("gc-autotune", r):
        period = 0
    elif _since("gc-one-cycle", r):
        period = GC_SCAN_INTERVAL_S * NS
    else:
        period = GC_MAX_SCAN_S * NS
    stat = _since("clash-resolve-stat", r)
    return KernelBehaviour(
        release=r,
        rover_search=not (_since("rover", r) and _since("capped-search", r)),
        clash_identical=_since("identical-clash", r),
        nat_clash=_since("nat-clash", r),
        nat_clash_deleted_on_reply=_since("nat-clash", r) and not _since("nat-clash-kept", r),
        merged_counter=C_CLASH_RESOLVE if stat else C_INSERT_FAILED,
        nat_clash_counter=C_CLASH_RESOLVE if stat else -1,
        evict_closing=_since("evict-closing", r),
        gc_period_ns=period,
        udp_stream_after_ns=UDP_STREAM_AFTER if _since("udp-stream-2s", r) else 0,
        udp_assured_before_stream=not _since("udp-assured-stream", r),
        udp_stream_default_s=120.0 if _since("udp-stream-120s", r) else 180.0)


def markdown_table() -> str:
    """docs/config.md's table of the changes (a test keeps the two the same)."""
    rows = ["| behaviour | first release | commit | what changed | source read on either side |",
            "|---|---|---|---|---|"]
    for c in CHANGES:
        commit = f"{c.commit} \"{c.subject}\"" if c.commit else c.subject
        rows.append(f"| `{c.key}` | {c.release[0]}.{c.release[1]} | {commit} | {c.what} | "
                    f"{c.evidence} |")
    return "\n".join(rows) + "\n"
