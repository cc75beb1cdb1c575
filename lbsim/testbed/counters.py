"""The kernel's own counters, as a namespace sees them.

``/proc/net/stat/nf_conntrack`` is what ``conntrack -S`` prints: one row of hexadecimal per-CPU
counters under a header of their names (net/netfilter/nf_conntrack_standalone.c,
ct_cpu_seq_show), per network namespace. ``/proc/net/netstat``'s TcpExt rows hold the clients'
``TCPSynRetrans``.
"""

from __future__ import annotations

__all__ = ["conntrack_stats", "tcp_ext", "KERNEL_COUNTERS"]

#: lbsim's summary counter -> the kernel's column (``clashres`` is ``conntrack -S``'s
#: ``clash_resolve``)
KERNEL_COUNTERS = {
    "conntrack_insert": "insert",
    "conntrack_insert_failed": "insert_failed",
    "conntrack_drop": "drop",
    "conntrack_early_drop": "early_drop",
    "conntrack_clash_resolve": "clashres",
    "conntrack_found": "found",
}


def conntrack_stats(text: str) -> dict[str, int]:
    """``/proc/net/stat/nf_conntrack`` summed over CPUs (``entries`` is a gauge, the same in
    every row: taken once)."""
    lines = [ln.split() for ln in text.strip().splitlines()]
    names, rows = lines[0], lines[1:]
    out = {k: 0 for k in names}
    for row in rows:
        for k, v in zip(names, row):
            out[k] += int(v, 16)
    if rows:
        out["entries"] = int(rows[0][0], 16)
    return out


def tcp_ext(text: str) -> dict[str, int]:
    """The TcpExt counters of ``/proc/net/netstat``."""
    lines = text.splitlines()
    for a, b in zip(lines, lines[1:]):
        if a.startswith("TcpExt:") and b.startswith("TcpExt:"):
            return {k: int(v) for k, v in zip(a.split()[1:], b.split()[1:])}
    return {}
