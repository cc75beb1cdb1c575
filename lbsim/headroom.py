"""Headroom: how close a run came to the limits that make flows fail (SNAT ports, conntrack).

"Will I run out?" needs more than failure counters, which are 0 on a healthy cluster: the peak
SNAT ports in use on the busiest node -> pod pair against the pair's range, the busiest pair's
new-flow rate against what its ports sustain (ports / holding time, kernel-facts 7), and the peak
conntrack entries on the busiest node against ``nf_conntrack_max``. :func:`headroom` computes
them from a run's records; :func:`sizing_verdict` says them in one line.
"""

from __future__ import annotations

import math


from .flowstats import FlowStats
from .kernel import NS, PORTS_ABOVE, PORTS_BELOW_512, PORTS_BELOW_1024
from .records import Records

__all__ = ["HEADROOM_METRICS", "headroom", "pair_range_size", "sizing_verdict"]

HEADROOM_METRICS = {
    "snat_pair_ports_peak": "most SNAT ports in use at once on one node -> pod pair, sampled every "
                            "second (0 without SNAT; NaN with records = \"summary\": not counted)",
    "snat_pair_ports_peak_fraction": "snat_pair_ports_peak / the pair's port range",
    "snat_pair_rate_peak_per_s": "most established flows that arrived within one second on one "
                                 "node -> pod pair (SNAT flows only), flows/s",
    "snat_pair_capacity_per_s": "new flows per second one pair's ports sustain: the range / the "
                                "time a flow holds its port (mean connection time + TIME_WAIT, or "
                                "+ the UDP timeout), flows/s (NaN without SNAT)",
    "conntrack_entries_peak": "most entries one node's table held at a sample, expired-but-"
                              "uncollected included (what counts toward nf_conntrack_max)",
    "conntrack_peak_fraction": "conntrack_entries_peak / conntrack.max",
}


def pair_range_size(r: Records) -> int:
    """Ports one (node, pod) pair can use: the rule's ``--to-ports`` range, else the default
    range of the clients' source ports (nf_nat_l4proto_unique_tuple, kernel-facts 1.3)."""
    p = r.workload.params
    if p.has_range:
        return p.port_hi - p.port_lo + 1
    lo = r.workload.scenario.workload.client_port_range[0]
    return (PORTS_BELOW_512 if lo < 512 else PORTS_BELOW_1024 if lo < 1024 else PORTS_ABOVE)[1]


def headroom(r: Records, st: FlowStats) -> dict[str, float]:
    """The :data:`HEADROOM_METRICS` of one run (``st``: its per-flow statistics)."""
    w = r.workload
    p = w.params
    entries_peak = int(r.gauge_entries.max(initial=0))
    out = {"conntrack_entries_peak": entries_peak,
           "conntrack_peak_fraction": entries_peak / p.ct_max}
    if not (p.nodeport and p.snat):
        out.update(snat_pair_ports_peak=0, snat_pair_ports_peak_fraction=0.0,
                   snat_pair_rate_peak_per_s=0, snat_pair_capacity_per_s=math.nan)
        return out
    size = pair_range_size(r)
    g = r.gauge_snat_max
    peak = int(g.max(initial=0)) if g.size == 0 or g.min() >= 0 else math.nan   # -1: uncounted
    conn_s = st.mean_connection_s()
    linger = p.time_wait if p.tcp else p.udp
    out.update(
        snat_pair_ports_peak=peak, snat_pair_ports_peak_fraction=peak / size,
        snat_pair_rate_peak_per_s=st.busiest,
        snat_pair_capacity_per_s=size / (conn_s + linger / NS) if conn_s + linger > 0
        else math.inf)
    return out


def _pct(frac: float) -> str:
    return f"{100 * frac:.2g} %" if frac < 0.01 else f"{100 * frac:.0f} %"


def sizing_verdict(s: dict[str, float], nodeport: bool = True) -> str:
    """One line from a summary's headroom metrics: where the run stood against its limits."""
    if not nodeport:
        return "the direct path uses no SNAT port and no node's conntrack table"
    parts = []
    cap = s["snat_pair_capacity_per_s"]
    if not math.isnan(cap):
        frac = s["snat_pair_ports_peak_fraction"]
        ports = ("ports in use not sampled (records = \"summary\")" if math.isnan(frac)
                 else f"busiest pair at {_pct(frac)} of its ports")
        parts.append(f"{ports}; busiest pair {s['snat_pair_rate_peak_per_s']:,.0f} new flows/s, "
                     f"exhausts near {cap:,.0f} flows/s per pair")
    parts.append(f"busiest node's conntrack at {_pct(s['conntrack_peak_fraction'])} of "
                 f"nf_conntrack_max")
    return "; ".join(parts)
