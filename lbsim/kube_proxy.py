"""kube-proxy's choice of pod on a node, per mode (kernel-facts 4 and 5).

Two kinds of choice:

* per attempt: iptables (the probability cascade) and nftables (``numgen random``) draw anew for
  every new conntrack entry, so a SYN retransmitted after an ``insert_failed`` may go elsewhere;
* per flow: IPVS keeps its own connection table (a retransmitted SYN finds its connection),
  Cilium its BPF connection tracking, and ``sessionAffinity: ClientIP`` a recent table keyed by the
  client IP, so the choice is made once, when the flow first reaches the node. Those choices are
  made up front, node by node in arrival order (:meth:`KubeProxy.flow_pods`).
"""

from __future__ import annotations

import numpy as np

from .balancing import (iptables_endpoint, iptables_endpoint_scalar, ipvs_sh_bucket,
                        ipvs_sh_table, least_connections_queued, maglev_lookup, maglev_table,
                        numgen_random)
from .config import CiliumAlgorithm, IpvsScheduler, Protocol, ProxyMode, Scenario, SessionAffinity
from .kernel import IPVS_ACTIVE_WEIGHT, IPVS_TCP_CLOSING_S, IPVS_UDP_S
from .lb import follow_sessions, session_starts
from .tuples import client_ip

__all__ = ["KubeProxy", "PER_ATTEMPT", "endpoint_scalar"]

#: ``flow_pods`` value: the flow's pod is drawn anew at each attempt
PER_ATTEMPT = -2
IPVS_MH_TABLE = 4093   # IP_VS_MH_TAB_SIZE for the default CONFIG_IP_VS_MH_TAB_INDEX = 12


class KubeProxy:
    """The endpoint choice of every node's kube-proxy."""

    def __init__(self, sc: Scenario, local_pods: list[np.ndarray], n_pods: int, local: bool,
                 salt: int, pod_node: np.ndarray | None = None,
                 workers: np.ndarray | None = None) -> None:
        kp = sc.kube_proxy
        self.sc, self.pod_node, self.workers = sc, pod_node, workers
        self.mode, self.local, self.salt = kp.mode, local, int(salt)
        # the endpoints each node's rules list: its own pods with Local, else all of them
        self.endpoints = (local_pods if local
                          else [np.arange(n_pods)] * len(local_pods))
        self.all_pods = np.arange(n_pods)
        self.affinity_ns = (int(round(kp.session_affinity_timeout_s * 1e9))
                            if kp.session_affinity is SessionAffinity.CLIENT_IP else 0)
        self.cfg = kp

    @property
    def per_attempt(self) -> bool:
        """True when a retransmitted SYN draws its pod anew (and no affinity pins it)."""
        return self.mode in (ProxyMode.IPTABLES, ProxyMode.NFTABLES) and not self.affinity_ns

    @staticmethod
    def per_attempt_mode(sc: Scenario) -> bool:
        """:attr:`per_attempt` of ``sc``'s kube-proxy."""
        kp = sc.kube_proxy
        affinity_ns = (int(round(kp.session_affinity_timeout_s * 1e9))
                       if kp.session_affinity is SessionAffinity.CLIENT_IP else 0)
        return kp.mode in (ProxyMode.IPTABLES, ProxyMode.NFTABLES) and not affinity_ns

    # -- per-attempt draws ------------------------------------------------------------------------
    def _draw(self, u: np.ndarray, n: int) -> np.ndarray:
        if self.mode is ProxyMode.NFTABLES:
            return numgen_random(u, n)
        return iptables_endpoint(u, n)

    def endpoint(self, node: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Pod for attempts on ``node`` from their uniforms (-1: no endpoint on that node)."""
        node = np.asarray(node)
        if not self.local:
            return self.all_pods[self._draw(u, self.all_pods.size)]
        pod = np.full(node.shape, -1, dtype=np.int64)
        for n in np.unique(node):
            sel = node == n
            ep = self.endpoints[n]
            if ep.size:
                pod[sel] = ep[self._draw(u[sel], ep.size)]
        return pod

    def endpoint1(self, node: int, u: float) -> int:
        """Scalar reference of :meth:`endpoint`."""
        return endpoint_scalar(self.mode is ProxyMode.NFTABLES, self.endpoints[node], u)

    # -- per-flow choices -------------------------------------------------------------------------
    def flow_pods(self, node: np.ndarray, client: np.ndarray, sport: np.ndarray, t: np.ndarray,
                  life: np.ndarray, u: np.ndarray, service: np.ndarray | None = None,
                  hold: np.ndarray | None = None) -> np.ndarray:
        """Pod of each flow (flows in arrival order at their node), or :data:`PER_ATTEMPT`.

        ``u`` is each flow's first-attempt uniform, used by random choices so that a flow whose
        pod is pinned picks what its first attempt would have picked. IPVS ``lc``/``wlc`` read
        ``service`` and ``hold`` (ns) to run the pods' queues."""
        F = node.size
        if self.per_attempt:
            return np.full(F, PER_ATTEMPT, np.int64)
        if self.affinity_ns and self.mode in (ProxyMode.IPTABLES, ProxyMode.NFTABLES):
            return self._affinity(node, client, t, u)
        if self.mode is ProxyMode.IPVS and self.cfg.ipvs_scheduler in (IpvsScheduler.LC,
                                                                       IpvsScheduler.WLC):
            return self._ipvs_lc(node, t, service, hold)
        out = np.full(F, -1, np.int64)
        ip = client_ip(client)
        for n in np.unique(node):
            sel = np.flatnonzero(node == n)
            ep = self.endpoints[n]
            if ep.size:
                out[sel] = ep[self._node_choice(ep.size, ip[sel], sport[sel], t[sel], life[sel],
                                                u[sel])]
        return out

    def _node_choice(self, n, ip, sport, t, life, u) -> np.ndarray:
        if self.mode is ProxyMode.IPVS:
            s = self.cfg.ipvs_scheduler
            if s is IpvsScheduler.RR:
                # ip_vs_rr_schedule: the list head's next, so every node's first flow goes to the
                # first destination, then on in list order
                return np.arange(ip.size) % n
            if s is IpvsScheduler.SH:
                return ipvs_sh_table([1] * n)[ipvs_sh_bucket(ip)]
            table = maglev_table(tuple(range(n)), IPVS_MH_TABLE, self.salt)   # mh: source IP
            return maglev_lookup(table, ip, self.salt)
        # cilium
        if self.cfg.cilium_algorithm is CiliumAlgorithm.MAGLEV:
            table = maglev_table(tuple(range(n)), self.cfg.cilium_maglev_table_size, self.salt)
            return maglev_lookup(table, (ip << np.int64(16)) | sport, self.salt)
        return np.minimum((u * n).astype(np.int64), n - 1)     # random, once per connection

    def _ipvs_lc(self, node, t, service, hold) -> np.ndarray:
        """ip_vs_lc on every node at once (the pods' queues are shared by the nodes): each
        node's own active and inactive connection counts (balancing.least_connections_queued)."""
        sc = self.sc
        net = sc.network
        d_in = int(round((net.client_to_lb_s + net.lb_to_backend_s) * 1e9))
        hop = int(round(net.node_to_pod_s * 1e9))
        tcp = sc.workload.protocol is Protocol.TCP
        nodes = len(self.endpoints)
        cand = np.concatenate([np.asarray(e, np.int64) for e in self.endpoints] +
                              [np.zeros(0, np.int64)])
        off = np.zeros(nodes + 1, np.int64)
        off[1:] = np.cumsum([len(e) for e in self.endpoints])
        closing = (IPVS_TCP_CLOSING_S if tcp else IPVS_UDP_S) * 1_000_000_000
        return least_connections_queued(
            np.ascontiguousarray(node, np.int64), np.ascontiguousarray(t + d_in, np.int64), cand,
            off, np.arange(nodes, dtype=np.int64), np.asarray(self.pod_node, np.int64), 0, hop,
            d_in, np.asarray(self.workers, np.int64), np.ascontiguousarray(service, np.int64),
            np.ascontiguousarray(hold, np.int64), tcp, IPVS_ACTIVE_WEIGHT, closing)

    def _affinity(self, node, client, t, u) -> np.ndarray:
        """``sessionAffinity: ClientIP``: per node, a client's flow within the timeout of its
        previous one (``--rcheck --seconds T``, refreshed by ``--set``) follows it; the first
        flow of a session draws as usual."""
        key = node * (1 << 24) + client
        start = session_starts(key, t, self.affinity_ns)
        pick = np.full(node.size, -1, np.int64)
        pick[start] = self.endpoint(node[start], u[start])
        return follow_sessions(key, start, pick)


def endpoint_scalar(nftables: bool, endpoints: np.ndarray, u: float) -> int:
    """One per-attempt choice among ``endpoints`` from the uniform ``u`` (-1 if there are none):
    nftables ``numgen random mod n`` or the iptables probability cascade."""
    n = endpoints.size
    if n == 0:
        return -1
    if nftables:
        return int(endpoints[(int(u * 2**32) * n) >> 32])
    return int(endpoints[iptables_endpoint_scalar(u, n)])
