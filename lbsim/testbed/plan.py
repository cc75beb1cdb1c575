"""What the testbed builds for a scenario: its namespaces and addresses, each node's kube-proxy
rules, the sysctls, and the flows to replay; and what it refuses.

A pure function of the scenario (no root needed): :func:`refusal` says why a scenario cannot run
on a real kernel here, :func:`plan` lays it out. The addresses are lbsim's own
(:mod:`lbsim.tuples`): client ``c`` is 11.0.0.0 + c, node ``n`` 10.0.0.1 + n, pod ``p``
10.128.0.1 + p, each a /32 on a veth, so a source IP a pod sees maps back to the model's numbers.

The LB's choice of node (or pod, direct) is the one lbsim drew for each flow (the cloud LB is not a
kernel mechanism; every lbsim algorithm but ``lc``, whose choice depends on live connections, is a
function of the arrivals). Everything after the LB is the kernel's own: kube-proxy's rules as
kube-proxy writes them, conntrack, MASQUERADE, the clients' TCP stacks.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from ..config import (Arrival, DataPath, LBAlgorithm, Pairing, ProxyMode, Scenario,
                      SessionAffinity, Source,
                      TrafficPolicy)
from ..budget import flow_rate, horizon_s
from ..kernel_versions import RELEASES, behaviour
from ..tuples import client_ip, node_ip, pod_ip
from ..trace import with_trace
from ..workload import Workload, draw_workload, with_duration

__all__ = ["Limits", "LIMITS", "Plan", "plan", "refusal", "host_release", "NODE_PORT", "FABRIC_IP",
           "CLIENT_GW_IP", "ip_str", "kube_proxy_rules", "wall_estimate_s"]

#: the Service's NodePort on every node
NODE_PORT = 30080
#: the fabric's one address on every link (each node's and the clients' next hop)
FABRIC_IP = "10.255.255.254"
#: an extra address of the clients' namespace: the fabric's one next hop to every client
CLIENT_GW_IP = "11.255.255.254"


@dataclass(frozen=True)
class Limits:
    """What one machine's testbed runs (namespaces, processes, real time)."""

    nodes: int = 8
    pods: int = 64
    clients: int = 16384
    flows: int = 200_000
    rate_per_s: float = 2000.0
    #: the replay's length in real time, s (last arrival + a flow's longest life)
    wall_s: float = 900.0


LIMITS = Limits()


def ip_str(a: int) -> str:
    return str(ipaddress.IPv4Address(int(a)))


def wall_estimate_s(sc: Scenario, w: Workload) -> float:
    """The replay's real time: the latest of each flow's start plus the longest connect or
    answer wait, its service and its hold, s."""
    if not w.flows:
        return 0.0
    if w.params.closed_loop:     # its starts come as flows end: the expected span, then a tail
        return (horizon_s(sc, worst=False) + float(np.max(w.service + w.hold)) / 1e9
                + sum(w.params.gaps) / 1e9)
    end = int(np.max(w.t0 + w.service + w.hold))
    # gaps: each attempt's wait for the next (the last: connect()'s or the client's give-up)
    return end / 1e9 + sum(w.params.gaps) / 1e9


def host_release(uname_release: str | None = None) -> str | None:
    """This machine's kernel as a release lbsim maps ("6.18" from ``uname -r``), or None."""
    m = re.match(r"(\d+)\.(\d+)", uname_release or os.uname().release)
    r = (int(m[1]), int(m[2])) if m else None
    return f"{r[0]}.{r[1]}" if r in RELEASES else None


def _same_kernel(kernel: str, host: str | None) -> bool:
    """``kernel`` behaves as the host's release does in everything lbsim maps."""
    if host is None:
        return kernel == "modern"
    a, b = behaviour(kernel), behaviour(host)
    return dataclasses.replace(a, release=b.release) == b


def refusal(sc: Scenario, limits: Limits = LIMITS, host: str | None = "uname") -> str | None:
    """Why ``sc`` cannot run on this machine's kernel in namespaces (one line naming the field,
    its value and what the testbed runs), or None. ``host``: the machine's release ("6.18"; by
    default from ``uname -r``): nat.kernel must be one that behaves as it does."""
    w, c, kp, ct = sc.workload, sc.cluster, sc.kube_proxy, sc.conntrack
    host = host_release() if host == "uname" else host
    rate, one = flow_rate(sc), "one client process replays every flow"
    if w.arrival is Arrival.CLOSED_LOOP:
        rate_field, rate_value = "workload.concurrency", w.concurrency
        rate_allowed = (f"at most {limits.rate_per_s:g} flows/s on the testbed ({one}; this "
                        f"closed loop's would be ~{rate:.0f})")
    else:
        rate_field, rate_value = "workload.rate_per_s", w.rate_per_s
        rate_allowed = f"at most {limits.rate_per_s:g} on the testbed ({one})"
    checks = [
        (bool(sc.events), "events", f"{len(sc.events)} events",
         "none: the testbed runs the steady state (no rollouts, drains or scaling)"),
        (w.source is Source.POD, "workload.source", w.source.value,
         '"external" (clients outside the cluster)'),
        (w.queries_per_socket > 1, "workload.queries_per_socket", w.queries_per_socket, "1"),
        (w.pairs is not Pairing.NONE, "workload.pairs", Pairing(w.pairs).value,
         '"none": one sender replays every flow, so no two race on two CPUs (the race window '
         "is measured by python -m lbsim.testbed --race)"),
        (c.nodes > limits.nodes, "cluster.nodes", c.nodes, f"at most {limits.nodes} on the testbed"),
        (c.pods > limits.pods, "cluster.pods", c.pods, f"at most {limits.pods} on the testbed"),
        (w.clients > limits.clients, "workload.clients", w.clients,
         f"at most {limits.clients} on the testbed"),
        (w.flows > limits.flows, "workload.flows", w.flows, f"at most {limits.flows} on the testbed"),
        (rate > limits.rate_per_s, rate_field, rate_value, rate_allowed),
        (sc.lb.algorithm is LBAlgorithm.LC, "lb.algorithm", sc.lb.algorithm.value,
         '"rr", "wrr", "source_hash" or "maglev" (lc chooses by live connections, which the '
         "testbed's flows would count differently)"),
        (kp.mode in (ProxyMode.IPVS, ProxyMode.CILIUM), "kube_proxy.mode", kp.mode.value,
         '"iptables" or "nftables" on the testbed'),
        (kp.session_affinity is SessionAffinity.CLIENT_IP, "kube_proxy.session_affinity",
         kp.session_affinity.value, '"None" on the testbed'),
        (not _same_kernel(str(sc.nat.kernel), host), "nat.kernel", str(sc.nat.kernel),
         f"one that behaves as this machine's {host or 'kernel (not a release lbsim maps)'} "
         "does (\"modern\", or a release with the same behaviours: lbsim.kernel_versions)"),
        (ct.gc_interval_s != "auto", "conntrack.gc_interval_s", ct.gc_interval_s,
         '"auto": the kernel\'s GC autotunes its own period (5.18 and later), no sysctl sets it'),
        (w.syn_retries == 0, "workload.syn_retries", 0,
         "1 to 127 (the kernel's tcp_syn_retries range; lbsim's 0 means no retransmission)"),
        (not math.isclose(w.syn_rto_s, 1.0), "workload.syn_rto_s", w.syn_rto_s,
         "1.0 (the kernel's initial RTO, TCP_TIMEOUT_INIT; no sysctl sets it)"),
        (ct.udp_s < 1 or ct.time_wait_s < 1 or sc.udp_stream_s < 1, "conntrack",
         f"udp_s = {ct.udp_s:g}, time_wait_s = {ct.time_wait_s:g}, "
         f"udp_stream_s = {sc.udp_stream_s:g}", "whole seconds >= 1 (the sysctls' unit)"),
    ]
    for bad, field, value, allowed in checks:
        if bad:
            return f"{field} = {value!r} cannot run on the testbed: allowed {allowed}"
    for name in ("udp_s", "time_wait_s", "udp_stream_s"):
        v = getattr(sc if name == "udp_stream_s" else ct, name)
        if v != int(v):
            return (f"conntrack.{name} = {v!r} cannot run on the testbed: allowed whole seconds "
                    "(the sysctl's unit)")
    return None


def table_refusal(sc: Scenario, host_max: int) -> str | None:
    """The testbed cannot set ``nf_conntrack_max`` in a namespace (a write there is refused on
    6.18: the limit is the host's), so a run must not be able to fill a smaller table."""
    attempts = sc.workload.retries + 1
    reach = sc.workload.flows * attempts        # the most entries a node's table can hold
    if (sc.conntrack.max == host_max or reach <= min(sc.conntrack.max, host_max)
            or sc.path is DataPath.DIRECT):
        return None
    return (f"conntrack.max = {sc.conntrack.max} cannot run on the testbed: allowed "
            f"{host_max} (this machine's nf_conntrack_max, which a namespace cannot change), or "
            f"a run that fills neither table (flows x attempts = {reach} <= both)")


@dataclass(frozen=True)
class Plan:
    """The namespaces, addresses, rules and flows of one testbed run."""

    scenario: Scenario
    workload: Workload
    #: per-node ruleset text (iptables-restore or nft -f input), by node
    rules: tuple[str, ...]
    #: the command that loads ``rules``: "iptables-restore" or "nft"
    loader: str
    #: each flow's destination (a node's IP with the NodePort, or a pod's IP and port)
    dst_ip: np.ndarray
    dst_port: np.ndarray
    wall_s: float

    @property
    def nodes(self) -> int:
        return self.scenario.cluster.nodes

    @property
    def pods(self) -> int:
        return self.scenario.cluster.pods


def _masquerade_args(sc: Scenario) -> tuple[str, str]:
    """The MASQUERADE options, in iptables and in nft syntax."""
    nat = sc.nat
    ipt, nft = [], []
    if nat.port_range is not None:
        lo, hi = nat.port_range
        ipt.append(f"--to-ports {lo}-{hi}")
        nft.append(f"to :{lo}-{hi}")
    if nat.random_fully:
        ipt.append("--random-fully")
        nft.append("fully-random")
    elif nat.random:
        ipt.append("--random")
        nft.append("random")
    return " ".join(ipt), " ".join(nft)


def kube_proxy_rules(sc: Scenario, node: int, endpoints: np.ndarray) -> str:
    """Node ``node``'s NodePort rules as kube-proxy writes them (pkg/proxy/iptables/proxier.go,
    pkg/proxy/nftables/proxier.go): mark for masquerade (Cluster), then the endpoint choice
    (the statistic cascade, or numgen random mod n), DNAT to the pod, and masquerade in
    POSTROUTING what carries the mark. Local: local endpoints only, no mark; none: drop."""
    proto = sc.workload.protocol.value
    port = sc.pod.port
    cluster = sc.kube_proxy.external_traffic_policy is TrafficPolicy.CLUSTER
    ipt_masq, nft_masq = _masquerade_args(sc)
    eps = [ip_str(pod_ip(int(p))) for p in endpoints]
    if sc.kube_proxy.mode is ProxyMode.NFTABLES:
        lines = ["table ip kube-proxy {",
                 "  chain nat-prerouting { type nat hook prerouting priority dstnat; "
                 f"{proto} dport {NODE_PORT} jump external-svc; }}",
                 "  chain external-svc {"]
        if cluster:
            lines.append("    meta mark set meta mark or 0x4000")
        if eps:
            vmap = ", ".join(f"{i} : goto ep{i}" for i in range(len(eps)))
            lines.append(f"    numgen random mod {len(eps)} vmap {{ {vmap} }}")
        lines.append("  }")
        if not eps:    # kube-proxy's no-endpoint-nodeports: dropped in the filter hooks
            lines.append("  chain filter-input { type filter hook input priority -110; "
                         f"{proto} dport {NODE_PORT} drop; }}")
        for i, ip in enumerate(eps):
            lines.append(f"  chain ep{i} {{ meta l4proto {proto} dnat to {ip}:{port}; }}")
        lines += ["  chain nat-postrouting { type nat hook postrouting priority srcnat;",
                  "    meta mark & 0x4000 == 0 return",
                  "    meta mark set meta mark ^ 0x4000",
                  # a port range needs the protocol (kube-proxy's own rule has neither)
                  (f"    meta l4proto {proto} " if sc.nat.port_range is not None else "    ")
                  + f"masquerade {nft_masq}".rstrip(), "  }", "}"]
        return "\n".join(lines) + "\n"
    lines = ["*nat", ":KUBE-NODEPORTS - [0:0]", ":KUBE-EXT - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
             ":KUBE-POSTROUTING - [0:0]"]
    lines += [f":KUBE-SEP-{i} - [0:0]" for i in range(len(eps))]
    lines += ["-A PREROUTING -j KUBE-NODEPORTS",
              "-A POSTROUTING -j KUBE-POSTROUTING",
              "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
              "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
              "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
              # --to-ports needs the protocol (kube-proxy's own rule has no range, and no -p)
              f"-A KUBE-POSTROUTING -p {proto} -j MASQUERADE {ipt_masq}".rstrip(),
              f"-A KUBE-NODEPORTS -p {proto} -m {proto} --dport {NODE_PORT} -j KUBE-EXT"]
    if cluster:
        lines.append("-A KUBE-EXT -j KUBE-MARK-MASQ")
    n = len(eps)
    for i in range(n):    # endpoint i of n: probability 1 / (n - i), the last one unconditional
        stat = (f"-m statistic --mode random --probability {1.0 / (n - i):.11f} "
                if i < n - 1 else "")
        lines.append(f"-A KUBE-EXT {stat}-j KUBE-SEP-{i}")
        lines.append(f"-A KUBE-SEP-{i} -p {proto} -m {proto} -j DNAT --to-destination "
                     f"{eps[i]}:{port}")
    lines.append("COMMIT")
    if not n:     # KUBE-EXTERNAL-SERVICES: "has no local endpoints" is dropped in filter
        lines += ["*filter", ":KUBE-EXTERNAL-SERVICES - [0:0]",
                  "-A INPUT -j KUBE-EXTERNAL-SERVICES",
                  f"-A KUBE-EXTERNAL-SERVICES -p {proto} -m {proto} --dport {NODE_PORT} -j DROP",
                  "COMMIT"]
    return "\n".join(lines) + "\n"


def plan(sc: Scenario, limits: Limits = LIMITS) -> Plan:
    """Lay out ``sc`` for the testbed (:func:`refusal` must be None)."""
    sc = with_trace(with_duration(sc.replace(records="full")))    # the counts it will run
    why = refusal(sc, limits)
    if why is not None:
        raise ValueError(why)
    w = draw_workload(sc)
    wall = wall_estimate_s(sc, w)
    if wall > limits.wall_s:
        raise ValueError(f"workload.flows = {w.flows} cannot run on the testbed: its replay "
                         f"takes about {wall:.0f} s of real time, at most {limits.wall_s:g} s "
                         "(fewer flows, or a higher rate)")
    nodeport = sc.path is DataPath.NODEPORT
    if nodeport:
        rules = tuple(kube_proxy_rules(sc, n, w.endpoints[n]) for n in range(sc.cluster.nodes))
        dst_ip = node_ip(w.backend)
        dst_port = np.full(w.flows, NODE_PORT, np.int64)
    else:
        rules = ("",) * sc.cluster.nodes
        dst_ip = pod_ip(w.backend)
        dst_port = np.full(w.flows, sc.pod.port, np.int64)
    loader = "nft" if sc.kube_proxy.mode is ProxyMode.NFTABLES else "iptables-restore"
    return Plan(scenario=sc, workload=w, rules=rules, loader=loader,
                dst_ip=np.asarray(dst_ip, np.int64), dst_port=dst_port, wall_s=wall)


def client_addresses(clients: int) -> list[str]:
    return [ip_str(a) for a in client_ip(np.arange(clients))]
