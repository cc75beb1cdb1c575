"""Named scenarios, each runnable on both data paths by ``python -m lbsim.bench --scenario NAME``.

Every scenario has a full size and a ``--quick`` size. Quick keeps the pathology by scaling what
bounds it together with the number of flows (a SNAT range ten times smaller for ten times fewer
flows, say); each description says how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Scenario

__all__ = ["NamedScenario", "SCENARIOS", "get", "quick"]


@dataclass(frozen=True)
class NamedScenario:
    name: str
    description: str
    full: dict[str, Any]
    #: changes for --quick (default: 10x fewer flows)
    quick: dict[str, Any] | None = None

    def build(self, quick: bool = False) -> Scenario:
        s = Scenario().replace(**self.full)
        if quick:
            s = s.replace(**(self.quick if self.quick is not None
                             else {"workload.flows": max(1000, s.workload.flows // 10)}))
        return s


_GATEWAYS = {  # a gateway Deployment pinned to one node by a nodeSelector, LB over 2 nodes
    "cluster.nodes": 2, "cluster.pods": 1, "cluster.placement": "packed", "cluster.packed_nodes": 1,
    "pod.workers": 64, "pod.service_s": 0.005, "nat.random_fully": True,
}
_QUICK_SNAT = {"nat.port_range": [10000, 13225], "workload.rate_per_s": 120.0, "workload.flows": 18000}
_RACE = {  # one node, one pod, a busy softirq: 4 CPUs, 20 us per new flow
    "cluster.nodes": 1, "cluster.pods": 1, "cluster.cpus_per_node": 4, "cluster.packet_time_s": 20e-6,
    "workload.rate_per_s": 400.0, "workload.flows": 60_000, "pod.workers": 16, "pod.service_s": 0.01,
    "nat.kernel": "4.x",
}
_FULL = {  # a small table (nf_conntrack_max 16384); the GC autotunes its period as the kernel does
    "cluster.nodes": 2, "cluster.pods": 20, "workload.rate_per_s": 400.0, "workload.flows": 60_000,
    "conntrack.max": 16384, "conntrack.buckets": 4096,
}
_DNS = {  # resolvers in pods send A and AAAA back to back from one socket to the DNS Service
    "workload.protocol": "udp", "workload.source": "pod", "workload.queries_per_socket": 2,
    "workload.query_gap_s": 1e-6, "workload.rate_per_s": 2000.0, "workload.flows": 20_000,
    "workload.clients": 400, "cluster.nodes": 4, "cluster.pods": 4, "pod.service_s": 0.001,
    "nat.kernel": "4.x",
}

_LONG = {  # long-lived connections (websockets, gRPC streams): few per pod at any time
    "workload.hold_s": {"dist": "lognormal", "mean": 60.0, "sigma": 1.0},
    "pod.service_s": 0.01, "pod.workers": 64,
}
_SCATTERED = {  # 50 nodes behind 4 LB instances doing least connections, one pod per node
    **_LONG, "cluster.nodes": 50, "cluster.pods": 50, "lb.instances": 4, "lb.algorithm": "lc",
    "workload.rate_per_s": 50.0, "workload.flows": 10_000,
}
_STICKY = {  # 100 clients, each opening a connection every 2 s on average, 600 s LB persistence
    "workload.clients": 100, "workload.rate_per_s": 50.0, "workload.flows": 10_000,
    "cluster.nodes": 10, "cluster.pods": 20, "lb.persistence_s": 600.0, "pod.service_s": 0.02,
}

_PERF = {  # issue 7's benchmark: 100 nodes x 10 pods, 1,000 short TCP connections/s
    "cluster.nodes": 100, "cluster.pods": 1000, "cluster.cpus_per_node": 2, "pod.workers": 4,
    "pod.service_s": {"dist": "exponential", "mean": 0.2}, "workload.hold_s": 0.0,
    "workload.clients": 4096, "conntrack.time_wait_s": 120.0, "nat.random_fully": True,
    "workload.rate_per_s": 1000.0, "workload.flows": 2_000_000, "records": "summary",
}

# -- pods changing (docs/config.md "Dynamics"): each on both paths --------------------------------
_CHANGING = {  # 3 nodes, short requests, pods Ready ~3 s after creation
    "cluster.nodes": 3, "pod.workers": 32, "pod.service_s": 0.01,
    "lifecycle.startup_s": 3.0, "lifecycle.readiness_period_s": 1.0,
}
_ROLLOUT = {  # 4 replicas behind an AWS NLB (IP targets direct, instance targets NodePort)
    **_CHANGING, "cluster.pods": 4, "cloud.profile": "aws-nlb-ip",
    "deployment.max_surge": 1, "deployment.max_unavailable": 0,
    # a preStop sleep covering the NLB's 120 s of new connections after deregistration, so
    # that what the gate does stands alone
    "lifecycle.prestop_s": 150.0, "lifecycle.termination_grace_s": 180.0,
    "workload.rate_per_s": 50.0, "workload.flows": 100_000,
    # clients that give up connecting after 19 s (an application's connect timeout): with the
    # kernel's own 131 s (tcp_syn_retries = 6) the flows that meet no target wait, p99 35 s
    "workload.syn_retries": 3,
    "events": [{"at_s": 30.0, "kind": "rollout"}],
}
_ROLLOUT_QUICK = {"workload.rate_per_s": 10.0, "workload.flows": 20_000}
_SCALE_IN = {  # 6 -> 3 pods under 40 s connections (websockets), AWS NLB
    **_CHANGING, "cluster.pods": 6, "cloud.profile": "aws-nlb-ip", "workload.hold_s": 40.0,
    "workload.rate_per_s": 100.0, "workload.flows": 30_000,
    "events": [{"at_s": 30.0, "kind": "scale", "replicas": 3}],
}
_SCALE_IN_QUICK = {"workload.rate_per_s": 20.0, "workload.flows": 6000}
_LOCAL_LAST = {  # Local; 2 + 2 + 1 pods, the lone pod on node 2 removed; Tencent CLB
    **_CHANGING, "cluster.pods": 5, "cluster.placement": [2, 2, 1],
    "kube_proxy.external_traffic_policy": "Local", "cloud.profile": "tencent-clb-nodeport",
    "lifecycle.prestop_s": 25.0, "lifecycle.termination_grace_s": 60.0,
    "workload.rate_per_s": 300.0, "workload.flows": 36_000,
    "events": [{"at_s": 30.0, "kind": "scale", "replicas": 4}],
}
_LOCAL_LAST_QUICK = {"workload.rate_per_s": 100.0, "workload.flows": 12_000}
_UDP_STREAM = {  # UDP clients sending a datagram a second from one socket for a minute
    **_CHANGING, "cluster.pods": 4, "workload.protocol": "udp",
    "workload.queries_per_socket": 60, "workload.query_gap_s": 1.0,
    "workload.rate_per_s": 100.0, "workload.flows": 24_000, "cloud.profile": "tencent-clb-direct",
    "deployment.max_surge": 1, "deployment.max_unavailable": 0,
    "endpoints.udp_conntrack_cleanup": False,
    "events": [{"at_s": 30.0, "kind": "rollout"}],
}
_UDP_STREAM_QUICK = {"workload.flows": 9000}
_NODE_DRAIN = {  # a node replaced: node 3 joins at 30 s, node 0 (2 of the 6 pods) drained at 60 s
    **_CHANGING, "cluster.pods": 6, "cloud.profile": "aws-nlb-ip",
    "workload.rate_per_s": 50.0, "workload.flows": 24_000,
    "events": [{"at_s": 30.0, "kind": "add-node"}, {"at_s": 60.0, "kind": "drain", "node": 0}],
}
_NODE_DRAIN_QUICK = {"workload.rate_per_s": 10.0, "workload.flows": 4800}

SCENARIOS: dict[str, NamedScenario] = {s.name: s for s in [
    NamedScenario(
        "default",
        "10 nodes, 100 pods spread, 1,000 TCP flows/s for 300 s, iptables + Cluster: the everyday "
        "case, no pathology forced. 300 s is 2.5 x TIME_WAIT: conntrack and SNAT occupancy reach "
        "their steady state by 120 s, so the headroom metrics are the steady state's. Quick: 10x "
        "fewer flows (30 s: shorter than TIME_WAIT, and it says so).",
        {"workload.flows": 300_000}),
    NamedScenario(
        "snat-exhaustion",
        "a gateway pod pinned to one node, the LB over 2 nodes, 2,400 short TCP connections/s: each "
        "node->pod pair gets 1,200/s, 2.2x 64512 ports / 120 s TIME_WAIT = 537.6/s, on a 5.x kernel "
        "(no TIME_WAIT eviction), kube-proxy's --random-fully (at 1.1x the clients' SYNs, retried "
        "for 131 s, ride out a 150 s run: slow, but few fail). Quick: a 3,226-port range, 20x "
        "fewer flows and 20x lower rate (same load per port).",
        {**_GATEWAYS, "nat.kernel": "5.x", "workload.rate_per_s": 2400.0, "workload.flows": 360_000},
        _QUICK_SNAT),
    NamedScenario(
        "snat-exhaustion-modern",
        "snat-exhaustion on a 6.5+ kernel: a new SYN evicts a TIME_WAIT entry in its last 32 probes, "
        "so closing connections no longer bound the rate. Quick: as snat-exhaustion.",
        {**_GATEWAYS, "nat.kernel": "modern", "workload.rate_per_s": 2400.0, "workload.flows": 360_000},
        _QUICK_SNAT),
    NamedScenario(
        "conntrack-race",
        "400 new TCP flows/s through one node to one pod on a 4.x kernel with plain MASQUERADE: "
        "client ports held in TIME_WAIT force a search, every search starts at the shared rover, and "
        "two CPUs processing flows within 20 us pick the same port: one SYN is dropped at confirm. "
        "Quick: the same (the rover race needs 120 s of held ports; it runs in seconds).",
        _RACE, {}),
    NamedScenario(
        "conntrack-race-random-fully",
        "conntrack-race with --random-fully: searches start at random offsets, the race all but "
        "disappears. Quick: the same.",
        {**_RACE, "nat.random_fully": True}, {}),
    NamedScenario(
        "conntrack-race-modern",
        "conntrack-race on a current kernel: no rover, random offsets. Quick: the same.",
        {**_RACE, "nat.kernel": "modern"}, {}),
    NamedScenario(
        "conntrack-full",
        "200 TCP flows/s per node stay 120 s in TIME_WAIT against nf_conntrack_max = 16384: new flows "
        "find only ASSURED entries for early_drop and are dropped (table full) until the GC's next "
        "pass (autotuned from the entries' remaining timeouts: tens of seconds here) frees the "
        "expired ones and kills closing entries down to 95 %. Quick: max 1638, 10x fewer flows "
        "and 10x lower rate.",
        _FULL, {"conntrack.max": 1638, "conntrack.buckets": 512, "workload.rate_per_s": 40.0,
                "workload.flows": 6000}),
    NamedScenario(
        "dns-race",
        "resolvers in pods send A and AAAA queries back to back from one UDP socket to a 4-pod DNS "
        "Service on a 4.x kernel: processed on two CPUs, each query is DNAT-ed on its own; when they "
        "pick different pods the second confirm loses and the resolver waits 5 s. Quick: 10x fewer "
        "flows.",
        _DNS),
    NamedScenario(
        "dns-race-modern",
        "dns-race on a current kernel: the losing query is inserted reply-only (NAT_CLASH) and "
        "answered; clash_resolve counts it, nothing is lost. Quick: 10x fewer flows.",
        {**_DNS, "nat.kernel": "modern"}),
    NamedScenario(
        "imbalance-cluster",
        "20 nodes, 40 pods, 4,000 long-lived TCP connections (lognormal hold, mean 60 s) at 40/s: "
        "the LB round-robins nodes evenly, but each node's kube-proxy draws pods at random on its "
        "own, so per-pod load is balls-into-bins (direct: the LB round-robins the pods). Quick: "
        "1,000 connections at 10/s.",
        {**_LONG, "cluster.nodes": 20, "cluster.pods": 40, "workload.rate_per_s": 40.0,
         "workload.flows": 4000},
        {"workload.rate_per_s": 10.0, "workload.flows": 1000}),
    NamedScenario(
        "imbalance-local",
        "externalTrafficPolicy: Local with 2 pods on node A and 1 on node B: the LB splits evenly "
        "over the two nodes, so the lone pod gets 50 % and the others 25 % each "
        "(pod_load_max_over_mean 1.5); direct round-robins the three pods. Quick: 10x fewer flows.",
        {"cluster.nodes": 2, "cluster.pods": 3, "cluster.placement": [2, 1],
         "kube_proxy.external_traffic_policy": "Local", "workload.rate_per_s": 300.0,
         "workload.flows": 30_000, "pod.workers": 16, "pod.service_s": 0.01}),
    NamedScenario(
        "lb-state-scattered",
        "50 nodes (one pod each) behind 4 LB instances doing least connections, long-lived "
        "connections: every instance balances the nodes on its own counts, then each node's "
        "kube-proxy spreads at random over all 50 pods, so open connections per pod are uneven "
        "(pod_conn_max_over_mean); direct: the same 4 instances do lc over the pods themselves. "
        "Quick: 2,500 connections.",
        _SCATTERED, {"workload.flows": 2500}),
    NamedScenario(
        "session-persistence",
        "100 clients each open a new connection every 2 s on average; the LB keeps a client on its "
        "backend for 600 s. Direct: the backend is the pod, so a client's flows stay on its first "
        "pod. NodePort: the LB keeps the node, but kube-proxy draws a pod for every new "
        "connection (no sessionAffinity), so about 1 in 20 stays. Quick: 10x fewer flows.",
        _STICKY),
    NamedScenario(
        "session-persistence-affinity",
        "session-persistence with sessionAffinity: ClientIP on the Service: each node's recent "
        "table pins a client to its pod, so NodePort keeps it too. Quick: 10x fewer flows.",
        {**_STICKY, "kube_proxy.session_affinity": "ClientIP"}),
    NamedScenario(
        "source-ip",
        "the default cluster (externalTrafficPolicy: Cluster): MASQUERADE replaces every client IP "
        "with the node's (source_ip_preserved_fraction 0 on NodePort, 1 direct). Quick: 10x fewer "
        "flows.",
        {"workload.flows": 20_000, "workload.rate_per_s": 500.0}),
    NamedScenario(
        "source-ip-local",
        "source-ip with externalTrafficPolicy: Local: no SNAT, the client IP arrives (1 on both "
        "paths), at the price of imbalance-local's skew. Quick: 10x fewer flows.",
        {"workload.flows": 20_000, "workload.rate_per_s": 500.0,
         "kube_proxy.external_traffic_policy": "Local"}),
    NamedScenario(
        "rollout",
        "a rolling update of 4 pods (maxSurge 1, maxUnavailable 0) at 30 s behind an AWS NLB, "
        "no readiness gate: direct, Kubernetes replaces every pod in seconds while the NLB takes "
        "180 s to register each new target and 5 x 30 s to find it healthy, so the old targets "
        "drain and then the LB has none (no_target); NodePort: each node's kube-proxy swaps the "
        "endpoints ~0.8 s after each change and the nodes stay the LB's targets. A 150 s preStop "
        "sleep covers the NLB's 120 s of new connections after deregistration on both. Clients "
        "give up connecting after 19 s (tcp_syn_retries = 3). Quick: 5x lower rate, as long.",
        _ROLLOUT, _ROLLOUT_QUICK),
    NamedScenario(
        "rollout-readiness-gate",
        "rollout with the readiness gate (elbv2.k8s.aws/pod-readiness-gate-inject): a new pod is "
        "Ready only once the NLB reports its target healthy, so the Deployment waits ~5 min per "
        "pod and no flow lacks a target; the rollout takes that long. NodePort has no pod "
        "targets to gate (a warning says the gate is ignored there). Quick: 5x lower rate.",
        {**_ROLLOUT, "deployment.readiness_gate": True}, _ROLLOUT_QUICK),
    NamedScenario(
        "scale-in-draining",
        "6 -> 3 pods at 30 s, 40 s connections, no preStop sleep: SIGTERM comes with the "
        "deletion, so the server refuses new connections while the LB (direct: the NLB, which "
        "keeps sending new ones ~120 s after deregistration; NodePort: each kube-proxy, ~0.8 s) "
        "still sends them, and the 30 s grace period's SIGKILL resets the connections still "
        "open. Quick: 5x lower rate.",
        _SCALE_IN, _SCALE_IN_QUICK),
    NamedScenario(
        "scale-in-draining-prestop",
        "scale-in-draining with a 130 s preStop sleep (covering the NLB's 120 s of new "
        "connections) and a 200 s grace period (covering connections opened until then): nothing "
        "refused, nothing reset, on both paths. Quick: 5x lower rate.",
        {**_SCALE_IN, "lifecycle.prestop_s": 130.0, "lifecycle.termination_grace_s": 200.0},
        _SCALE_IN_QUICK),
    NamedScenario(
        "local-terminating",
        "externalTrafficPolicy: Local, pods 2 + 2 + 1, and the lone pod on node 2 removed at "
        "30 s, on a kube-proxy without KEP-1669's fallback: node 2's rules have no local "
        "endpoint, so it drops the LB's flows (no_local_endpoint), and the LB keeps sending them "
        "until its health check of the node's health-check node port (Tencent CLB: every 5 s, 3 "
        "failures) finds it down; the flows it took are lost with every retransmission. Direct: "
        "the CLB stops sending to the pod at once. Quick: 3x lower rate.",
        {**_LOCAL_LAST, "endpoints.terminating_fallback": False}, _LOCAL_LAST_QUICK),
    NamedScenario(
        "local-terminating-fallback",
        "local-terminating on kube-proxy 1.26+ (KEP-1669): with no ready local endpoint node 2 "
        "proxies to its serving terminating pod (its 25 s preStop sleep outlasts the health "
        "check's detection), while the health-check node port already fails; nothing is lost. "
        "Quick: 3x lower rate.",
        _LOCAL_LAST, _LOCAL_LAST_QUICK),
    NamedScenario(
        "udp-stale-conntrack",
        "UDP clients each sending a datagram a second from one socket for 60 s, a rollout at "
        "30 s, on a kube-proxy that does not delete the UDP conntrack entries of removed "
        "endpoints: a socket whose entry points at an old pod keeps following it (each datagram "
        "renews the 30 s timeout), refused after the pod's SIGTERM and lost once it is gone, "
        "until the socket ends. Direct: the CLB moves a socket whose target it removed. Quick: "
        "90 s of arrivals.",
        _UDP_STREAM, _UDP_STREAM_QUICK),
    NamedScenario(
        "udp-stale-conntrack-cleanup",
        "udp-stale-conntrack with kube-proxy deleting a removed endpoint's UDP entries after "
        "its sync (conntrack -D): a socket's next datagram is DNATed afresh to a live pod; only "
        "what came in the ~0.8 s before the sync is lost. Quick: 90 s of arrivals.",
        {**_UDP_STREAM, "endpoints.udp_conntrack_cleanup": True}, _UDP_STREAM_QUICK),
    NamedScenario(
        "node-drain",
        "a node replaced behind an AWS NLB: node 3 joins at 30 s and node 0 is drained at 60 s "
        "(kubectl drain: cordon, then its 2 of the 6 pods evicted at once, no preStop sleep). "
        "Direct: the evicted pods exit with their last request while the NLB keeps sending "
        "them new connections ~120 s after deregistration (lost: pod_gone), and their "
        "replacements, bound to the empty new node, wait 180 s for registration and 5 x 30 s "
        "of checks; NodePort: each kube-proxy drops the evicted pods ~0.8 s later, the cordoned "
        "node stays the NLB's target (cordoning changes no LB target since Kubernetes 1.19), "
        "and the new node takes flows once registered (180 s) and healthy (3 x 10 s). Quick: "
        "5x lower rate.",
        _NODE_DRAIN, _NODE_DRAIN_QUICK),
    NamedScenario(
        "perf-nodeport",
        "the performance benchmark (benchmarks/): 100 nodes with 10 pods each, 1,000 TCP flows/s, "
        "2,000,000 flows, exponential service (mean 0.2 s), TIME_WAIT 120 s, iptables + Cluster, "
        "--random-fully, summary records only. Quick: 50,000 flows.",
        {**_PERF, "path": "nodeport"}, {"workload.flows": 50_000}),
    NamedScenario(
        "perf-direct",
        "perf-nodeport's workload (the bench runs both paths of every scenario; the name says which "
        "one benchmarks/ times). Quick: 50,000 flows.",
        {**_PERF, "path": "direct"}, {"workload.flows": 50_000}),
    NamedScenario(
        "perf-scale",
        "perf-nodeport at 10,000 flows/s with 10,000,000 flows (summary records): the memory "
        "benchmark, ~1.2 M live conntrack entries. Quick: 100,000 flows.",
        {**_PERF, "path": "nodeport", "workload.rate_per_s": 10_000.0,
         "workload.flows": 10_000_000}, {"workload.flows": 100_000}),
    NamedScenario(
        "perf-scale-xl",
        "perf-nodeport's workload at 20,000 flows/s over 1,000 nodes with 10 pods each, "
        "100,000,000 flows (83 minutes of traffic; summary records, so the run streams: memory "
        "follows the ~2.4 M live conntrack entries, not the flows). Quick: 200,000 flows.",
        {**_PERF, "path": "nodeport", "cluster.nodes": 1000, "cluster.pods": 10_000,
         "workload.rate_per_s": 20_000.0, "workload.flows": 100_000_000},
        {"workload.flows": 200_000}),
    NamedScenario(
        "perf-cluster-xl",
        "perf-nodeport's workload at 20,000 flows/s over 10,000 nodes with 10 pods each "
        "(100,000 pods), 10,000,000 flows, summary records: the cluster's size, not the flows. "
        "Quick: 200,000 flows.",
        {**_PERF, "path": "nodeport", "cluster.nodes": 10_000, "cluster.pods": 100_000,
         "workload.rate_per_s": 20_000.0,
         "workload.flows": 10_000_000}, {"workload.flows": 200_000}),
]}


def get(name: str, quick: bool = False) -> Scenario:
    """The scenario called ``name``; ``ValueError`` lists the known names."""
    try:
        return SCENARIOS[name].build(quick)
    except KeyError:
        raise ValueError(f"scenario = {name!r} is invalid: must be one of {sorted(SCENARIOS)}") from None


def quick(s: Scenario, factor: int = 10) -> Scenario:
    """A scaled-down copy of a scenario file: ``factor`` times fewer flows (at least 1,000)."""
    return s.replace(**{"workload.flows": max(min(1000, s.workload.flows), s.workload.flows // factor)})
