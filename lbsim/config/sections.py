"""The steady-state sections of a scenario: workload, LB, cluster, pods, kube-proxy, NAT, conntrack
and network, with the enums of their choices."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from ..durations import Duration, Fixed, duration_to_toml, parse_duration
from ..kernel import TCP_RTO_MAX_S, syn_gaps_ns
from ..kernel_versions import KernelBehaviour, behaviour, release_error
from .fields import (MAX_CLIENTS, MAX_NODES, MAX_PODS, _check_enum, _check_float, _check_int,
                     _check_port_range, _Choice, _fail, _is_int, _is_prime, _Section)

__all__ = [
    "DataPath", "Protocol", "Source", "Arrival", "Pairing", "LBAlgorithm", "ProxyMode", "IpvsScheduler",
    "CiliumAlgorithm", "SessionAffinity", "TrafficPolicy", "NatKernel",
    "WorkloadConfig", "LBConfig", "ClusterConfig", "PodConfig", "KubeProxyConfig", "NatConfig",
    "ConntrackConfig", "NetworkConfig",
]


class DataPath(_Choice):
    """How the LB reaches pods: through every node's NodePort, or bound to pod IP:port."""

    NODEPORT = "nodeport"
    DIRECT = "direct"


class Protocol(_Choice):
    TCP = "tcp"
    UDP = "udp"


class Arrival(_Choice):
    """When new flows (sockets) start.

    ``poisson``: a Poisson process of rate ``rate_per_s`` (exponential gaps: many independent
    clients). ``periodic``: socket ``i`` at exactly ``i / rate_per_s`` s (a load generator at a
    fixed rate; near capacity it loses fewer flows than Poisson at the same rate, whose bursts
    outrun a port range that a steady sender does not). ``closed_loop``: ``concurrency`` flows
    in flight (a load generator's connections, wrk's or ab's ``-c``): the first ``concurrency``
    open at ``rate_per_s`` (flow ``i`` at ``i / rate_per_s`` s), then each new flow starts
    ``think_s`` after one ends (the client has its response and closed, or gave up, or was
    refused), so the rate is what the path lets through. ``trace``: the flows of
    ``workload.trace`` as recorded (:mod:`lbsim.trace`).
    """

    POISSON = "poisson"
    PERIODIC = "periodic"
    CLOSED_LOOP = "closed_loop"
    TRACE = "trace"


class Source(_Choice):
    """Where the clients are.

    ``external``: outside the cluster, through the cloud LB; a node's NIC steers a flow's packets to
    a CPU by an RSS hash of its tuple. ``pod``: pods on the nodes calling the Service's ClusterIP
    (as resolvers call kube-dns): client ``c`` runs on node ``c % nodes``, no LB and no SNAT, and
    each packet is processed on the CPU of the thread that sent it (drawn per packet).
    """

    EXTERNAL = "external"
    POD = "pod"


class Pairing(_Choice):
    """Flows sent in pairs that may race in one node's conntrack (``workload.pairs``).

    ``none``: every flow on its own. ``same_port``: the flows come in pairs, the second from
    another client with the first's source port, ``pair_offset_s`` after it (two clients whose
    ports coincide: under MASQUERADE both want the same reply tuple, and the later confirm loses
    if neither saw the other). ``same_tuple``: the second from the same client and port (the
    identical 5-tuple of two sockets sharing a port, e.g. a resolver's A and AAAA from two
    threads). Pairs start at ``rate_per_s / 2`` as ``arrival`` says; the LB sends both flows of
    a pair where it sends the first, so that they meet on one node (pod clients have no LB: a
    same-port pair's two pods send from their own nodes).
    """

    NONE = "none"
    SAME_PORT = "same_port"
    SAME_TUPLE = "same_tuple"


class LBAlgorithm(_Choice):
    """Cloud LB backend choice, made by each LB instance on its own state.

    ``rr`` round robin; ``wrr`` smooth weighted round robin (``lb.weights``); ``lc`` least
    connections (the instance's own open connections per backend); ``source_hash`` a hash of the
    client IP; ``maglev`` a Maglev table (``lb.maglev_table_size``) looked up by a hash of the
    client tuple, the same table on every instance.
    """

    RR = "rr"
    WRR = "wrr"
    LC = "lc"
    SOURCE_HASH = "source_hash"
    MAGLEV = "maglev"


class ProxyMode(_Choice):
    """kube-proxy mode (kernel-facts 4, 5). ``iptables``: the statistic-match probability cascade,
    a new draw per new conntrack entry; ``nftables``: ``numgen random mod n``; ``ipvs``: the
    IPVS scheduler ``kube_proxy.ipvs_scheduler`` with its own state on every node; ``cilium``:
    Cilium's kube-proxy replacement, ``kube_proxy.cilium_algorithm`` (endpoint choice only: the
    NAT and conntrack of the node stay the netfilter ones in lbsim)."""

    IPTABLES = "iptables"
    NFTABLES = "nftables"
    IPVS = "ipvs"
    CILIUM = "cilium"


class IpvsScheduler(_Choice):
    """IPVS schedulers lbsim models: ``rr``, ``lc`` and ``wlc`` (least connections: active x 256
    + inactive, counted until each connection closes and for IPVS's closing timeouts after;
    kube-proxy gives every endpoint weight 1, so wlc chooses as lc), ``sh`` (source hash),
    ``mh`` (Maglev)."""

    RR = "rr"
    LC = "lc"
    WLC = "wlc"
    SH = "sh"
    MH = "mh"


class CiliumAlgorithm(_Choice):
    RANDOM = "random"
    MAGLEV = "maglev"


class SessionAffinity(_Choice):
    NONE = "None"
    CLIENT_IP = "ClientIP"


class TrafficPolicy(_Choice):
    CLUSTER = "Cluster"
    LOCAL = "Local"


class NatKernel(_Choice):
    """The named kernel profiles; ``nat.kernel`` also takes a release ("5.4"), and each profile
    is one (lbsim.kernel_versions: which behaviour came in which release, and the commit).

    ``modern`` (6.18; any 6.5+): random offset, runs of 128/64/32/16/8 probes, and a new TCP SYN
    may evict a colliding TIME_WAIT/CLOSE entry during the last 32 probes of a round.
    ``5.x`` (5.18): the same search without the eviction.
    ``4.x`` (4.19): plain MASQUERADE starts from a per-node rover (the last port chosen, shared by
    all CPUs), ``--random`` from a keyed hash of (NAT IP, destination IP, port), ``--random-fully``
    from a random number; the search may walk the whole range; UDP clashes are resolved only for
    identical tuples (no NAT_CLASH entries) and ``insert_failed`` counts resolved clashes too.
    """

    MODERN = "modern"
    V5 = "5.x"
    V4 = "4.x"


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig(_Section):
    """Clients and their connections (``[workload]``)."""

    _prefix: typing.ClassVar[str] = "workload"

    protocol: Protocol = Protocol.TCP
    source: Source = Source.EXTERNAL
    #: mean rate of new flows, flows per second (sockets start as ``arrival`` says)
    rate_per_s: float = 1000.0
    #: "poisson" (exponential gaps) | "periodic" (socket i at i / rate_per_s s) |
    #: "closed_loop" (``concurrency`` flows in flight, opened at rate_per_s) | "trace"
    arrival: Arrival = Arrival.POISSON
    #: with arrival = "closed_loop": the flows in flight (1 .. flows); 0 otherwise
    concurrency: int = 0
    #: with arrival = "closed_loop": a client's pause between one flow's end and its next
    #: flow's start, seconds
    think_s: float = 0.0
    #: with arrival = "trace": a CSV or Parquet file of time_s, client_ip, client_port,
    #: protocol[, duration_s] (lbsim.trace); its flows, clients and mean rate replace
    #: flows, clients and rate_per_s
    trace: str = ""
    #: number of flows (connections or UDP requests) to simulate
    flows: int = 100_000
    #: > 0: simulate the flows that start within this many seconds instead (``flows`` is then
    #: the count the run found: lbsim.workload.with_duration); 0: ``flows`` flows
    duration_s: float = 0.0
    #: number of client IP addresses; each flow picks one uniformly
    clients: int = 4096
    #: clients' ephemeral port range (``ip_local_port_range``), inclusive
    client_port_range: tuple[int, int] = (32768, 60999)
    #: the clients' ``net.ipv4.tcp_tw_reuse``: 0, or 2 (the kernel's default: loopback only),
    #: keeps a closed connection's port in TIME_WAIT for 60 s, where connect() skips it; 1 lets
    #: connect() take it over a second after the close (TCP timestamps)
    tcp_tw_reuse: int = 2
    #: how long the client keeps the connection open after the response, seconds (TCP)
    hold_s: Duration = Fixed(value=0.0)
    #: ``tcp_syn_retries``: the time connect() tries for, as that many exponential backoffs
    #: would take (127 s for 6); with ``syn_linear_timeouts`` more SYNs fit in it (11 for 6):
    #: lbsim.kernel.syn_gaps_ns. 0 (not a kernel value; its minimum is 1): no retransmission
    syn_retries: int = 6
    #: retransmissions at a fixed interval before exponential backoff (``tcp_syn_linear_timeouts``)
    syn_linear_timeouts: int = 4
    #: initial SYN retransmission timeout, seconds
    syn_rto_s: float = 1.0
    #: UDP application's wait for an answer before it resends, seconds (glibc resolver: 5)
    udp_timeout_s: float = 5.0
    #: UDP resends after the first request (glibc ``attempts:2`` -> 1)
    udp_retries: int = 1
    #: requests each client socket sends back to back from the same port (2: a resolver's A and
    #: AAAA queries); each request is a flow
    queries_per_socket: int = 1
    #: time between a socket's requests, seconds
    query_gap_s: float = 1e-6
    #: "none" | "same_port" | "same_tuple": flows in racing pairs (:class:`Pairing`)
    pairs: Pairing = Pairing.NONE
    #: with pairs: the second flow's start after the first's (a duration: fixed, or drawn per
    #: pair), seconds
    pair_offset_s: Duration = Fixed(value=0.0)
    #: with pairs (or queries_per_socket > 1): the i-th flow of a pair (query of a socket) is
    #: processed on CPU i mod cpus_per_node of its node, as two senders pinned to two CPUs
    #: make it; false: the CPU an RSS hash of the tuple gives (pod clients: the sending
    #: thread's, at random)
    pin_pairs: bool = False

    def __post_init__(self) -> None:
        n = self._name
        _check_enum(n("protocol"), self.protocol, Protocol)
        _check_float(n("rate_per_s"), self.rate_per_s, positive=True)
        _check_int(n("flows"), self.flows, 1, 1 << 40)
        _check_float(n("duration_s"), self.duration_s)
        if self.duration_s * self.rate_per_s > 1 << 40:
            _fail(n("duration_s"), self.duration_s,
                  f"at most {(1 << 40) / self.rate_per_s:.6g} s at rate_per_s = "
                  f"{self.rate_per_s:g} (about 2^40 flows, as workload.flows), or 0")
        _check_int(n("clients"), self.clients, 1, MAX_CLIENTS)
        _check_port_range(n("client_port_range"), self.client_port_range)
        _check_int(n("tcp_tw_reuse"), self.tcp_tw_reuse, 0, 2)
        _check_int(n("syn_retries"), self.syn_retries, 0, 127)
        _check_int(n("syn_linear_timeouts"), self.syn_linear_timeouts, 0, 127)
        _check_float(n("syn_rto_s"), self.syn_rto_s, positive=True)
        if self.syn_rto_s > TCP_RTO_MAX_S:   # the kernel clamps every RTO to TCP_RTO_MAX
            _fail(n("syn_rto_s"), self.syn_rto_s,
                  f"a number of seconds in (0, {TCP_RTO_MAX_S:g}] (TCP_RTO_MAX)")
        _check_float(n("udp_timeout_s"), self.udp_timeout_s, positive=True)
        _check_int(n("udp_retries"), self.udp_retries, 0, 127)
        _check_enum(n("source"), self.source, Source)
        _check_enum(n("arrival"), self.arrival, Arrival)
        if not isinstance(self.trace, str):
            _fail(n("trace"), self.trace, "a file path (a string)")
        if (self.arrival is Arrival.TRACE) != bool(self.trace):
            _fail(n("trace"), self.trace, 'a CSV or Parquet file with arrival = "trace", and "" '
                  f'otherwise (arrival = "{Arrival(self.arrival).value}")')
        if self.arrival is Arrival.TRACE and self.queries_per_socket > 1:
            _fail(n("queries_per_socket"), self.queries_per_socket, '1 with arrival = "trace" '
                  "(each row is a flow from its own socket)")
        if self.arrival is Arrival.TRACE and self.duration_s > 0:
            _fail(n("duration_s"), self.duration_s, '0 with arrival = "trace" (the trace says '
                  "when its flows start)")
        _check_int(n("queries_per_socket"), self.queries_per_socket, 1, 1 << 16)
        _check_float(n("query_gap_s"), self.query_gap_s)
        self._check_closed_loop()
        object.__setattr__(self, "hold_s", parse_duration(n("hold_s"), self.hold_s))
        self._check_pairs()

    def _check_pairs(self) -> None:
        n = self._name
        _check_enum(n("pairs"), self.pairs, Pairing)
        object.__setattr__(self, "pair_offset_s",
                           parse_duration(n("pair_offset_s"), self.pair_offset_s))
        if self.pair_offset_s.mean > 1.0:
            _fail(n("pair_offset_s"), duration_to_toml(self.pair_offset_s),
                  "a duration of mean at most 1 s (a pair races within microseconds)")
        if not isinstance(self.pin_pairs, bool):
            _fail(n("pin_pairs"), self.pin_pairs, "true or false")
        paired = self.pairs is not Pairing.NONE
        if self.pin_pairs and not paired and self.queries_per_socket == 1:
            _fail(n("pin_pairs"), self.pin_pairs, 'false unless workload.pairs is not "none" '
                  "or workload.queries_per_socket > 1 (it places a pair's flows on two CPUs)")
        if not paired:
            return
        if self.queries_per_socket > 1:
            _fail(n("queries_per_socket"), self.queries_per_socket,
                  f'1 with pairs = "{Pairing(self.pairs).value}" (a pair is two sockets\' flows)')
        if self.arrival in (Arrival.TRACE, Arrival.CLOSED_LOOP):
            _fail(n("pairs"), Pairing(self.pairs).value, '"none" with arrival = '
                  f'"{Arrival(self.arrival).value}" (pairs start as a Poisson or periodic '
                  "process)")
        if self.pairs is Pairing.SAME_PORT and self.clients < 2:
            _fail(n("clients"), self.clients, 'at least 2 with pairs = "same_port" (a pair '
                  "is two clients)")

    @property
    def flows_per_socket(self) -> int:
        """Flows that start together as one unit: a socket's queries, or a pair."""
        return 2 if self.pairs is not Pairing.NONE else self.queries_per_socket

    def _check_closed_loop(self) -> None:
        n = self._name
        _check_float(n("think_s"), self.think_s)
        if self.arrival is not Arrival.CLOSED_LOOP:
            _check_int(n("concurrency"), self.concurrency, 0, 1 << 40)
            return
        c = self.concurrency
        if not isinstance(c, int) or isinstance(c, bool) or not 1 <= c <= self.flows:
            _fail(n("concurrency"), c, f'an integer in [1, workload.flows = {self.flows}] with '
                  'arrival = "closed_loop" (the flows in flight)')
        if self.duration_s > 0:
            _fail(n("duration_s"), self.duration_s, '0 with arrival = "closed_loop" (when its '
                  "flows start is what the run finds; give workload.flows)")
        if self.queries_per_socket > 1:
            _fail(n("queries_per_socket"), self.queries_per_socket, '1 with arrival = '
                  '"closed_loop" (each of its flows starts when an earlier one ends)')

    @property
    def retries(self) -> int:
        """Retransmissions (TCP: as many as the kernel's schedule fits in the time
        ``syn_retries`` allows, :func:`lbsim.kernel.syn_gaps_ns`) or resends (UDP) after the
        first attempt."""
        return len(self.retry_gaps_ns) - 1

    @property
    def retry_gaps_ns(self) -> tuple[int, ...]:
        """From each attempt to the next, ns, the last gap ending when the client gives up."""
        if self.protocol is Protocol.TCP:
            return syn_gaps_ns(int(round(self.syn_rto_s * 1e9)), self.syn_linear_timeouts,
                               self.syn_retries)
        return (int(round(self.udp_timeout_s * 1e9)),) * (self.udp_retries + 1)


@dataclass(frozen=True, kw_only=True)
class LBConfig(_Section):
    """The cloud load balancer (``[lb]``)."""

    _prefix: typing.ClassVar[str] = "lb"

    #: independent LB instances; a flow reaches one by a hash of its tuple (ECMP)
    instances: int = 1
    algorithm: LBAlgorithm = LBAlgorithm.RR
    #: backend weights for ``wrr`` and ``maglev``: "equal"; "local_pods" (a node weighs its
    #: number of pods, as Tencent's local-svc-weighted-balance; a pod weighs 1); "workers" (a
    #: pod weighs its workers, a node the workers of its pods)
    weights: str = "equal"
    #: Maglev lookup table size M (a prime, M > 100 x backends keeps disruption near 1 %)
    maglev_table_size: int = 65537
    #: session persistence by client IP: a client's new flow goes to the backend of its previous
    #: flow if that came less than this long ago, seconds (0: off)
    persistence_s: float = 0.0
    #: health checks: a node whose check fails (``Local`` with no pod on it answers 503) is out of
    #: the backend set; pods are ready all run long, so the set is the steady state
    health_check: bool = True

    def __post_init__(self) -> None:
        n = self._name
        _check_int(n("instances"), self.instances, 1, 4096)
        _check_enum(n("algorithm"), self.algorithm, LBAlgorithm)
        if self.weights not in ("equal", "local_pods", "workers"):
            _fail(n("weights"), self.weights, 'one of "equal", "local_pods", "workers"')
        if not _is_int(self.maglev_table_size) or not _is_prime(self.maglev_table_size) \
                or not 7 <= self.maglev_table_size <= 1_000_003:
            _fail(n("maglev_table_size"), self.maglev_table_size, "a prime in [7, 1000003]")
        _check_float(n("persistence_s"), self.persistence_s)
        if not isinstance(self.health_check, bool):
            _fail(n("health_check"), self.health_check, "true or false")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(_Section):
    """Nodes, their CPUs and where the pods run (``[cluster]``)."""

    _prefix: typing.ClassVar[str] = "cluster"

    nodes: int = 10
    #: CPUs per node; a flow's packets go to one CPU by a hash of its tuple (RSS)
    cpus_per_node: int = 2
    pods: int = 100
    #: "spread" (round robin over nodes), "packed" (on the first ``packed_nodes`` nodes) or a list
    #: of pod counts per node
    placement: str | tuple[int, ...] = "spread"
    #: with placement = "packed": how many nodes hold the pods
    packed_nodes: int = 1
    #: CPU time to process a new flow's first packet on a node, seconds: from its conntrack
    #: lookup and NAT to its confirm, the window in which two flows racing for one tuple do
    #: not see each other
    packet_time_s: Duration = Fixed(value=5e-6)
    #: each new packet's delay between reaching its node and its CPU taking it up (softirq
    #: scheduling, the sender's own path), drawn per packet, seconds; 0: none. What shapes a
    #: pair's race: the testbed measured about 10 us, exponential (docs/design.md)
    packet_jitter_s: Duration = Fixed(value=0.0)
    #: from the start of a new packet's processing (its conntrack lookup and DNAT, PREROUTING)
    #: to its SNAT (MASQUERADE at POSTROUTING), seconds, at the latest at its confirm; 0: both
    #: at the start. A same-port race's window is what follows the SNAT, an identical-tuple
    #: race's the whole packet_time_s: measured here about 1.8 us and 9.6 us (docs/design.md)
    snat_offset_s: float = 0.0

    def __post_init__(self) -> None:
        n = self._name
        _check_int(n("nodes"), self.nodes, 1, MAX_NODES)
        _check_int(n("cpus_per_node"), self.cpus_per_node, 1, 1024)
        _check_int(n("pods"), self.pods, 1, MAX_PODS)
        _check_int(n("packed_nodes"), self.packed_nodes, 1, self.nodes)
        p = self.placement
        if isinstance(p, list):
            p = tuple(p)
            object.__setattr__(self, "placement", p)
        if isinstance(p, tuple):
            if (len(p) != self.nodes or not all(_is_int(c) and c >= 0 for c in p)
                    or sum(p) != self.pods):
                _fail(n("placement"), list(p), f"a list of {self.nodes} counts >= 0 (one per node) "
                      f"summing to cluster.pods = {self.pods}")
        elif p not in ("spread", "packed"):
            _fail(n("placement"), p, '"spread", "packed" or a list of pod counts per node')
        object.__setattr__(self, "packet_time_s", parse_duration(n("packet_time_s"), self.packet_time_s))
        object.__setattr__(self, "packet_jitter_s",
                           parse_duration(n("packet_jitter_s"), self.packet_jitter_s))
        _check_float(n("snat_offset_s"), self.snat_offset_s)
        if self.snat_offset_s > 1.0:
            _fail(n("snat_offset_s"), self.snat_offset_s, "a number of seconds in [0, 1] (a "
                  "packet's path through a node takes microseconds)")
        if self.packet_jitter_s.mean > 1.0:
            _fail(n("packet_jitter_s"), duration_to_toml(self.packet_jitter_s),
                  "a duration of mean at most 1 s (a delay before a CPU, microseconds)")


@dataclass(frozen=True, kw_only=True)
class PodConfig(_Section):
    """Each pod's server (``[pod]``): a FIFO queue with ``workers`` servers."""

    _prefix: typing.ClassVar[str] = "pod"

    #: servers per pod: one count for every pod, or a list with one count per pod
    workers: int | tuple[int, ...] = 4
    #: time a worker spends on one request, seconds
    service_s: Duration = Fixed(value=0.2)
    #: the pod's target port
    port: int = 8080

    def __post_init__(self) -> None:
        w = self.workers
        if isinstance(w, list):
            w = tuple(w)
            object.__setattr__(self, "workers", w)
        if isinstance(w, tuple):
            if not w or not all(_is_int(x) and 1 <= x <= 1 << 20 for x in w):
                _fail(self._name("workers"), list(w), f"a list of integers in [1, {1 << 20}]")
        else:
            _check_int(self._name("workers"), w, 1, 1 << 20)
        _check_int(self._name("port"), self.port, 1, 65535)
        object.__setattr__(self, "service_s", parse_duration(self._name("service_s"), self.service_s))


@dataclass(frozen=True, kw_only=True)
class KubeProxyConfig(_Section):
    """kube-proxy on every node (``[kube_proxy]``)."""

    _prefix: typing.ClassVar[str] = "kube_proxy"

    mode: ProxyMode = ProxyMode.IPTABLES
    external_traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    #: with mode = "ipvs": the scheduler (kube-proxy's default is rr)
    ipvs_scheduler: IpvsScheduler = IpvsScheduler.RR
    #: with mode = "cilium": loadBalancer.algorithm (Cilium's default is random)
    cilium_algorithm: CiliumAlgorithm = CiliumAlgorithm.RANDOM
    #: with cilium_algorithm = "maglev": table size M (Cilium's default 16381)
    cilium_maglev_table_size: int = 16381
    #: the Service's sessionAffinity (iptables, nftables: a per-node recent table of client IPs)
    session_affinity: SessionAffinity = SessionAffinity.NONE
    #: sessionAffinityConfig.clientIP.timeoutSeconds, seconds (default 10800, at most 86400)
    session_affinity_timeout_s: float = 10800.0

    def __post_init__(self) -> None:
        n = self._name
        _check_enum(n("mode"), self.mode, ProxyMode)
        _check_enum(n("external_traffic_policy"), self.external_traffic_policy, TrafficPolicy)
        _check_enum(n("ipvs_scheduler"), self.ipvs_scheduler, IpvsScheduler)
        _check_enum(n("cilium_algorithm"), self.cilium_algorithm, CiliumAlgorithm)
        if (not _is_int(self.cilium_maglev_table_size) or not _is_prime(self.cilium_maglev_table_size)
                or not 7 <= self.cilium_maglev_table_size <= 1_000_003):
            _fail(n("cilium_maglev_table_size"), self.cilium_maglev_table_size,
                  "a prime in [7, 1000003]")
        _check_enum(n("session_affinity"), self.session_affinity, SessionAffinity)
        t = self.session_affinity_timeout_s
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 86400):
            _fail(n("session_affinity_timeout_s"), t, "a number in (0, 86400]")


@dataclass(frozen=True, kw_only=True)
class NatConfig(_Section):
    """MASQUERADE to the node IP (``[nat]``), as in kernel-facts section 1."""

    _prefix: typing.ClassVar[str] = "nat"

    #: a profile (NatKernel: "modern", "5.x", "4.x") or a mainline release "MAJOR.MINOR" from
    #: 4.9 to 6.18 (lbsim.kernel_versions.behaviour says what it does)
    kernel: NatKernel | str = NatKernel.MODERN
    #: ``--random-fully``: skip keeping the original port, random offset (kube-proxy default when
    #: iptables >= 1.6.2)
    random_fully: bool = False
    #: ``--random``: in modern kernels behaves like ``random_fully`` (both skip keeping the port)
    random: bool = False
    #: ``--to-ports low-high``; unset: the kernel's default range rule (1024-65535 for ports >= 1024)
    port_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        k = self.kernel
        if not isinstance(k, NatKernel) and k in {m.value for m in NatKernel}:
            object.__setattr__(self, "kernel", NatKernel(k))
        elif not isinstance(k, NatKernel):
            why = release_error(k)
            if why is not None:
                _fail(self._name("kernel"), k, why)
        for f in ("random_fully", "random"):
            if not isinstance(getattr(self, f), bool):
                _fail(self._name(f), getattr(self, f), "true or false")
        if isinstance(self.port_range, list):
            object.__setattr__(self, "port_range", tuple(self.port_range))
        if self.port_range is not None:
            _check_port_range(self._name("port_range"), self.port_range)

    @property
    def behaviour(self) -> KernelBehaviour:
        """What the kernel release does (lbsim.kernel_versions.behaviour)."""
        return behaviour(str(self.kernel))


@dataclass(frozen=True, kw_only=True)
class ConntrackConfig(_Section):
    """Each node's conntrack table (``[conntrack]``), timeouts as in kernel-facts 3.6."""

    _prefix: typing.ClassVar[str] = "conntrack"

    #: ``nf_conntrack_max``: entries (expired but not yet collected ones count too)
    max: int = 262144
    #: ``nf_conntrack_buckets`` (hash size); early_drop scans 8 of them from the new tuple's
    buckets: int = 262144
    #: ``nf_conntrack_tcp_timeout_time_wait``, seconds
    time_wait_s: float = 120.0
    #: ``nf_conntrack_udp_timeout``: UDP entry after its last packet, seconds
    udp_s: float = 30.0
    #: ``nf_conntrack_udp_timeout_stream``: UDP entry with packets after its reply more than 2 s
    #: after it began (an ASSURED "stream"; needs ``workload.hold_s`` > 0); unset: the
    #: kernel's default (``Scenario.udp_stream_s``: 120 s, 180 s before 5.0)
    udp_stream_s: float | None = None
    #: when the garbage collector runs: "auto" (the kernel's autotuning, 5.18+: the next pass
    #: after the mean remaining timeout of the entries it saw, 1 to 60 s) or a fixed period, s
    gc_interval_s: float | str = "auto"

    def __post_init__(self) -> None:
        n = self._name
        _check_int(n("max"), self.max, 1, 1 << 31)
        _check_int(n("buckets"), self.buckets, 1, 1 << 31)
        _check_float(n("time_wait_s"), self.time_wait_s)
        _check_float(n("udp_s"), self.udp_s)
        if self.udp_stream_s is not None:
            _check_float(n("udp_stream_s"), self.udp_stream_s)
        if self.gc_interval_s != "auto":
            # the kernel's GC worker is delayed work: it runs at most once a jiffy (1 ms at
            # HZ = 1000); a shorter period is no kernel's, and would make a run tick forever
            try:
                _check_float(n("gc_interval_s"), self.gc_interval_s, positive=True)
                ok = self.gc_interval_s >= 0.001
            except ValueError:
                ok = False
            if not ok:
                _fail(n("gc_interval_s"), self.gc_interval_s,
                      '"auto" or a number of seconds >= 0.001 (the GC runs at most once a jiffy)')


@dataclass(frozen=True, kw_only=True)
class NetworkConfig(_Section):
    """One-way network latencies (``[network]``), seconds."""

    _prefix: typing.ClassVar[str] = "network"

    #: client to LB
    client_to_lb_s: float = 0.0005
    #: LB to its backend (a node on the NodePort path, a pod on the direct path)
    lb_to_backend_s: float = 0.0001
    #: the NodePort path's second hop, node to a pod on another node (0 for a local pod)
    node_to_pod_s: float = 0.0001

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_float(self._name(f.name), getattr(self, f.name))
