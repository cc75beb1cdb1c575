"""The kernel's constants and the model's codes: one home that both engines import.

Plain ``int`` module constants, so that numba freezes them into the compiled engine as it does any
global, and the reference engine reads the very same names. Each value says where it comes from
(kernel-facts sections, kernel source files).
"""

from __future__ import annotations

__all__ = [
    "NS", "NEVER", "SAMPLE_INTERVAL", "TCP_RTO_MAX_S", "syn_gaps_ns",
    "IPVS_ACTIVE_WEIGHT", "IPVS_TCP_CLOSING_S", "IPVS_UDP_S",
    "CAUSE_NONE", "PORT_EXHAUSTION", "INSERT_RACE", "TABLE_FULL", "NO_LOCAL_ENDPOINT",
    "TUPLE_IN_USE", "CAUSE_NAMES",
    "CONFIRM", "NAT", "ARRIVE", "QUEUE", "SNAT", "OK", "FAILED",
    "F_TCP", "F_SNAT", "F_NAT_CLASH",
    "MAX_ATTEMPTS", "HARDER_THRESH", "ROUNDS", "MIN_ROUND", "PORTS_BELOW_512", "PORTS_BELOW_1024",
    "PORTS_ABOVE",
    "EVICTION_RANGE", "GC_INTERVAL_MIN", "GC_INTERVAL_MAX", "GC_INTERVAL_CLAMP",
    "GC_INTERVAL_INIT", "GC_INITIAL_COUNT", "GC_SCAN_INTERVAL_S", "GC_MAX_SCAN_S", "UDP_STREAM_AFTER", "NAT_CLASH_TIMEOUT",
    "COUNTERS", "C_FOUND", "C_INSERT", "C_INSERT_FAILED", "C_DROP", "C_EARLY_DROP",
    "C_CLASH_RESOLVE", "C_ENTRIES_INSERTED", "C_GC_EARLY_DROP", "REFUSED", "POD_GONE", "NO_TARGET",
    "NO_ENDPOINTS", "F_UNREPLIED", "TCP_SYN_SENT_TIMEOUT", "TCP_CLOSE_TIMEOUT",
    "NO_CLIENT_PORT", "CONNECT_STEP", "CONNECT_JITTER", "TCP_TIMEWAIT_LEN", "TCP_TW_REUSE_AFTER", "UDP_PORT_DRAWS",
]

# -- time -----------------------------------------------------------------------------------------
#: nanoseconds per second: every time inside the model is an int64 count of ns
NS = 1_000_000_000
#: "never" as a time (an entry that is never ASSURED, a worker that is never free)
NEVER = (1 << 63) - 1
#: conntrack and SNAT gauges are sampled every second, on whole seconds
SAMPLE_INTERVAL = NS

#: TCP_RTO_MAX (include/net/tcp.h, 120 * HZ): a SYN's retransmission timeout doubles after the
#: linear ones (tcp_retransmit_timer: icsk_rto = min(icsk_rto << 1, TCP_RTO_MAX)) up to this, s
TCP_RTO_MAX_S = 120.0


# -- IPVS (net/netfilter/ipvs) ----------------------------------------------------------------------
#: ip_vs_dest_conn_overhead (include/net/ip_vs.h): (activeconns << 8) + inactconns, the load
#: ip_vs_lc and ip_vs_wlc compare: an active connection weighs 256 inactive ones
IPVS_ACTIVE_WEIGHT = 256
#: ip_vs_proto_tcp.c tcp_timeouts: FIN_WAIT and TIME_WAIT 2 * 60 * HZ: a closed connection stays
#: in the table, counted inactive, this long after its last packet (kube-proxy's
#: --ipvs-tcpfin-timeout 0 keeps it), s
IPVS_TCP_CLOSING_S = 120
#: ip_vs_proto_udp.c udp_timeouts[IP_VS_UDP_S_NORMAL] = 5 * 60 * HZ: a UDP connection, always
#: inactive, lives this long after its last packet (--ipvs-udp-timeout 0 keeps it), s
IPVS_UDP_S = 300

def syn_gaps_ns(rto_ns: int, linear: int, retries: int) -> tuple[int, ...]:
    """The client's SYN schedule: ns from each SYN to the next, the last gap ending when
    connect() gives up; so ``len - 1`` retransmissions (measured on 6.18: with
    tcp_syn_retries = 1, 2, 3 and tcp_syn_linear_timeouts = 4, SYNs at 0, 1, 2 s / 0 .. 5 s /
    0 .. 5, 7, 11 s, giving up at 3, 7 and 19 s).

    net/ipv4/tcp_timer.c: tcp_retransmit_timer keeps the RTO while ``icsk_retransmits <=
    tcp_syn_linear_timeouts`` (counted after the increment, so the first ``linear + 1`` gaps are
    one RTO), then doubles it up to TCP_RTO_MAX. tcp_write_timeout gives up at the first timer
    that finds ``retransmits_timed_out``: at least one retransmission made and the time since the
    first SYN at least tcp_model_timeout(``retries``), the time ``retries`` exponential backoffs
    would take: ``(2^(retries+1) - 1) x RTO`` up to ``ilog2(TCP_RTO_MAX / RTO)`` backoffs, then
    TCP_RTO_MAX each. So ``retries`` sets a time budget, not a count. (6.5+ also gives up after
    ``retries + linear`` retransmissions; with this schedule the budget always runs out first
    or at the same timer.) ``retries = 0`` (not a kernel value: the sysctl's minimum is 1) means
    no retransmission: one gap of one RTO."""
    rto_max = int(TCP_RTO_MAX_S * 1_000_000_000)
    rto_ns = max(1, min(rto_ns, rto_max))
    if retries == 0:
        return (rto_ns,)
    thresh = (rto_max // rto_ns).bit_length() - 1          # ilog2
    if retries <= thresh:
        budget = ((2 << retries) - 1) * rto_ns
    else:
        budget = ((2 << thresh) - 1) * rto_ns + (retries - thresh) * rto_max
    gaps, t, rto, sent = [], 0, rto_ns, 0
    while True:
        t += rto
        gaps.append(rto)
        if sent > 0 and t >= budget:
            return tuple(gaps)
        sent += 1                                # retransmission number `sent`, at t
        if sent > linear:
            rto = min(2 * rto, rto_max)

# -- why an attempt was dropped (codes in the records) -------------------------------------------
CAUSE_NONE = 0
PORT_EXHAUSTION = 1    # the SNAT search found no free tuple; the confirm clashed
INSERT_RACE = 2        # the tuple was free at NAT time, confirmed by another flow before ours
TABLE_FULL = 3         # nf_conntrack_max reached
NO_LOCAL_ENDPOINT = 4  # externalTrafficPolicy: Local on a node without a ready local pod
TUPLE_IN_USE = 5       # the client's tuple matches a live, non-closing entry on the node
REFUSED = 6            # the pod's server was not accepting (starting, or after SIGTERM): an RST
POD_GONE = 7           # the pod no longer exists: the packet is lost (the LB keeps the flow's pod)
NO_TARGET = 8          # the LB had no target to send the flow to
NO_ENDPOINTS = 9       # the node's kube-proxy lists no endpoint at all: its REJECT rule answers
NO_CLIENT_PORT = 10    # the client's connect() found no free ephemeral port (EADDRNOTAVAIL)
CAUSE_NAMES = ("none", "port_exhaustion", "insert_race", "table_full", "no_local_endpoint",
               "tuple_in_use", "refused", "pod_gone", "no_target", "no_endpoints",
               "no_client_port")

# -- the clients' ephemeral ports (lbsim.reference.ports, lbsim.client_ports) ------------------
#: __inet_hash_connect (net/ipv4/inet_hashtables.c): connect() walks the range two ports at a
#: time, the ports of the range's low end's parity first, then the others
CONNECT_STEP = 2
#: ... and then advances its per-destination perturbation by max(ports walked past,
#: get_random_u32_below(CONNECT_JITTER) x CONNECT_STEP) + CONNECT_STEP (5.18+, "tcp: add small
#: random increments to the source port")
CONNECT_JITTER = 8
#: TCP_TIMEWAIT_LEN (include/net/tcp.h): the active closer (here the client) holds its port in
#: TIME_WAIT for 60 s, not tunable; connect() skips it (tcp_tw_reuse = 2, the default, reuses
#: TIME_WAIT only on loopback)
TCP_TIMEWAIT_LEN = 60 * NS
#: tcp_tw_reuse = 1: connect() takes over a TIME_WAIT port once the clock's second has moved past
#: the last timestamp it saw (tcp_twsk_unique, net/ipv4/tcp_ipv4.c): at most a second after it
TCP_TW_REUSE_AFTER = NS
#: udp_lib_get_port (net/ipv4/udp.c) starts at a random port and, when it is taken, tries the
#: other ports of its hash slot in a random order: lbsim draws up to this many random ports,
#: then takes the next free one upward
UDP_PORT_DRAWS = 64

# -- event kinds, in the order they are processed at equal times (GC ticks come first of all) ----
CONFIRM, NAT, ARRIVE = 1, 2, 3
#: a new packet reaching its CPU, cluster.packet_jitter_s after it reached its node (only then)
QUEUE = 4
#: a masqueraded packet's SNAT, cluster.snat_offset_s after its NAT step (only then)
SNAT = 5
#: a flow's outcome
OK, FAILED = 1, 2

# -- entry flags: the subset of ct->status bits the model needs -----------------------------------
F_TCP = 1        # a TCP entry (else UDP)
F_SNAT = 2       # IPS_SRC_NAT: the entry was masqueraded
F_NAT_CLASH = 4  # IPS_NAT_CLASH | IPS_FIXED_TIMEOUT: a reply-only clash entry (kernel-facts 2.4)
F_UNREPLIED = 8  # a TCP entry whose SYN got no answer (its pod was gone): still SYN_SENT, so a
                 # retransmission of the tuple follows it to the same pod
#: nf_conntrack_proto_tcp.c tcp_timeouts[]: SYN_SENT 2 min (an unanswered SYN's entry, each
#: retransmission renews it), CLOSE 10 s (after an RST)
TCP_SYN_SENT_TIMEOUT = 120 * NS
TCP_CLOSE_TIMEOUT = 10 * NS
#: how long a NAT_CLASH entry lives (nf_conntrack_core.c, __nf_ct_resolve_clash: 1 s, fixed)
NAT_CLASH_TIMEOUT = NS

# -- the SNAT port search (nf_nat_proto_common.c / nf_nat_core.c, kernel-facts 1.2-1.6) -----------
#: NF_NAT_MAX_ATTEMPTS: probes in the first round of the search
MAX_ATTEMPTS = 128
#: NF_NAT_HARDER_THRESH: with this many probes or fewer left in a round, a new TCP SYN may evict a
#: colliding TIME_WAIT/CLOSE entry (6.5+, "snat: evict closing tcp entries on reply tuple collision")
HARDER_THRESH = MAX_ATTEMPTS // 4
#: rounds of the search: 128, 64, 32, 16, 8 probes, each from a fresh random offset
ROUNDS = 5
#: the search stops halving after a round shorter than this (``attempts < 16``: 8 is the last)
MIN_ROUND = 16
#: (first port, size) of the range a rule without ``--to-ports`` maps a source port into, by
#: the source port: below 512, below 1024, else (nf_nat_l4proto_unique_tuple, kernel-facts 1.3)
PORTS_BELOW_512 = (1, 511)
PORTS_BELOW_1024 = (600, 1023 - 600 + 1)
PORTS_ABOVE = (1024, 65535 - 1024 + 1)

# -- conntrack allocation and GC (nf_conntrack_core.c, kernel-facts 3.4-3.6) ----------------------
#: NF_CT_EVICTION_RANGE: buckets early_drop scans from the new entry's own bucket
EVICTION_RANGE = 8
# gc_worker's autotuning (5.18+), in ns: the next pass comes after the mean remaining timeout of the
# entries seen, seeded with GC_INITIAL_COUNT entries of GC_SCAN_INTERVAL_INIT, each clamped to
# [GC_SCAN_INTERVAL_MIN, GC_SCAN_INTERVAL_CLAMP], the result to [GC_SCAN_INTERVAL_MIN, _MAX]
GC_INTERVAL_MIN = 1_000_000_000
GC_INTERVAL_MAX = 60_000_000_000
GC_INTERVAL_CLAMP = 300_000_000_000
GC_INTERVAL_INIT = GC_INTERVAL_MAX
GC_INITIAL_COUNT = 100
#: before the autotuning: GC_SCAN_INTERVAL (5.15-5.17, "collect all entries in one cycle"), a
#: whole-table pass every 120 s; and GC_MAX_SCAN_JIFFIES (before 5.15), 1/128 of the buckets a
#: run with the whole table scanned within 16 s (lbsim.kernel_versions), s
GC_SCAN_INTERVAL_S = 120
GC_MAX_SCAN_S = 16
#: a UDP flow with packets more than this after its first becomes a stream (nf_conntrack_proto_udp)
UDP_STREAM_AFTER = 2 * NS

# -- per-node counters, in the order both engines store them (``conntrack -S`` and the model's) --
COUNTERS = ("found", "insert", "insert_failed", "drop", "early_drop", "clash_resolve",
            "entries_inserted", "gc_early_drop")
#: each counter's row. ``insert`` stays 0: since 4.9 ("remove packet hotpath stats") only
#: entries made through ctnetlink (``conntrack -I``) count it, never a packet's confirm
(C_FOUND, C_INSERT, C_INSERT_FAILED, C_DROP, C_EARLY_DROP, C_CLASH_RESOLVE, C_ENTRIES_INSERTED,
 C_GC_EARLY_DROP) = range(len(COUNTERS))
