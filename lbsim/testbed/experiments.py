"""The experiments the testbed runs to check lbsim against the kernel: each a small scenario (about
ten seconds of real time), with the metrics it must agree on.

``python -m lbsim.testbed --experiments`` runs them all and prints the agreement table of
docs/design.md; the test suite runs them as root (tests/statistical/test_testbed.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import Scenario
from ..tuples import client_ip
from ..workload import draw_workload

__all__ = ["Experiment", "EXPERIMENTS", "write_trace"]

#: 64 SNAT ports to the one pod, so ten seconds exhaust them
_SMALL = {"cluster.nodes": 1, "cluster.pods": 1, "pod.workers": 1024, "pod.service_s": 0.0,
          "workload.clients": 64, "nat.random_fully": True, "nat.port_range": [20000, 20063],
          "workload.syn_retries": 1}
_DROPS = ("failed_fraction", "conntrack_found", "conntrack_insert_failed", "conntrack_drop",
          "conntrack_early_drop", "conntrack_clash_resolve")
_BALANCE = ("failed", "pod_load_max_over_mean", "pod_load_cv", "node_load_max_over_mean",
            "second_hop_fraction", "source_ip_preserved_fraction")


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    settings: dict
    #: the metrics that must agree (the others are reported)
    required: tuple[str, ...]
    #: a trace experiment: its flows are those lbsim draws for ``settings`` with these changes,
    #: written as a trace file (lbsim.trace) and replayed with arrival = "trace"
    trace_of: dict | None = None
    #: short enough for the test suite (about 10 s); the others run with --experiments all
    ci: bool = True

    @property
    def scenario(self) -> Scenario:
        return Scenario().replace(**self.settings)

    def scenario_in(self, directory: str | Path) -> Scenario:
        """The experiment's scenario, its trace file (if any) written in ``directory``."""
        sc = self.scenario
        if self.trace_of is None:
            return sc
        path = Path(directory) / f"{self.name}.csv"
        write_trace(sc.replace(**self.trace_of), path)
        return sc.replace(**{"workload.arrival": "trace", "workload.trace": str(path)})


def write_trace(sc: Scenario, path: Path) -> None:
    """The flows lbsim draws for ``sc`` as a trace file: time_s, client_ip, client_port,
    protocol, duration_s (the hold)."""
    w = draw_workload(sc)
    pd.DataFrame({"time_s": w.t0 / 1e9, "client_ip": client_ip(w.client),
                  "client_port": w.sport, "protocol": sc.workload.protocol.value,
                  "duration_s": w.hold / 1e9}).to_csv(path, index=False)


EXPERIMENTS = {e.name: e for e in [
    Experiment("udp-exhaustion", "UDP through 64 SNAT ports held 2 s by nf_conntrack_udp_timeout, "
               "Poisson arrivals at 1.2 x capacity",
               {**_SMALL, "workload.protocol": "udp", "workload.udp_retries": 0,
                "workload.udp_timeout_s": 1.0, "conntrack.udp_s": 2.0,
                "workload.rate_per_s": 38.4, "workload.flows": 400}, _DROPS),
    Experiment("udp-periodic-bound", "UDP at 0.9 x ports / udp_timeout from a periodic sender: at "
               "most 58 entries hold ports at once, so none fails (Poisson at that rate loses "
               "some)",
               {**_SMALL, "workload.protocol": "udp", "workload.udp_retries": 0,
                "workload.udp_timeout_s": 1.0, "conntrack.udp_s": 2.0, "workload.arrival": "periodic",
                "workload.rate_per_s": 28.8, "workload.flows": 300}, _DROPS),
    Experiment("tcp-held-exhaustion", "TCP held open 2 s through 64 SNAT ports at 40 new "
               "connections/s (80 wanted at once): SYNs dropped at confirm, retransmitted",
               {**_SMALL, "workload.rate_per_s": 40.0, "workload.flows": 400,
                "workload.hold_s": 2.0}, (*_DROPS, "syn_retransmits")),
    Experiment("tcp-time-wait-eviction", "short TCP connections at 40/s through 64 SNAT ports "
               "with a 5 s TIME_WAIT (8 x the range / TIME_WAIT bound): a new SYN evicts a "
               "colliding TIME_WAIT entry, so none fails",
               {**_SMALL, "workload.rate_per_s": 40.0, "workload.flows": 400,
                "conntrack.time_wait_s": 5.0}, (*_DROPS, "syn_retransmits")),
    Experiment("tcp-trace", "a recorded trace replayed as it is: 400 TCP connections from 64 "
               "clients with their own ports and durations (exponential, mean 1.5 s) through 64 "
               "SNAT ports at 40/s",
               {**_SMALL}, (*_DROPS, "syn_retransmits"),
               trace_of={"workload.rate_per_s": 40.0, "workload.flows": 400,
                         "workload.hold_s": {"dist": "exponential", "mean": 1.5}, "seed": 11}),
    Experiment("tcp-closed-loop", "a load generator's 80 connections in flight (a closed loop "
               "opening them at 200/s), each held ~2 s (exponential), through 64 SNAT ports: "
               "those beyond the ports retransmit or give up after 3 s, and the loop's pace "
               "follows",
               {**_SMALL, "workload.arrival": "closed_loop", "workload.concurrency": 80,
                "workload.rate_per_s": 200.0, "workload.flows": 400,
                "workload.hold_s": {"dist": "exponential", "mean": 2.0}},
               (*_DROPS, "syn_retransmits", "last_arrival_s")),
    Experiment("iptables-imbalance", "4 nodes, 8 pods, kube-proxy's iptables statistic cascade "
               "behind a round-robin LB",
               {"cluster.nodes": 4, "cluster.pods": 8, "pod.service_s": 0.0,
                "workload.clients": 1024, "workload.rate_per_s": 100.0, "workload.flows": 800},
               _BALANCE),
    Experiment("nftables-imbalance", "the same under kube-proxy's nftables mode (numgen random "
               "mod n), masquerade fully-random",
               {"cluster.nodes": 4, "cluster.pods": 8, "pod.service_s": 0.0,
                "kube_proxy.mode": "nftables", "nat.random_fully": True,
                "workload.clients": 1024, "workload.rate_per_s": 100.0, "workload.flows": 800},
               _BALANCE),
    Experiment("local-policy", "externalTrafficPolicy: Local, 6 pods packed on 2 of 4 nodes: "
               "no SNAT, no second hop, the client's IP kept",
               {"cluster.nodes": 4, "cluster.pods": 6, "cluster.placement": "packed",
                "cluster.packed_nodes": 2, "pod.service_s": 0.0,
                "kube_proxy.external_traffic_policy": "Local",
                "workload.clients": 1024, "workload.rate_per_s": 100.0, "workload.flows": 800},
               _BALANCE),
    Experiment("direct", "the direct path: the LB sends to pod IPs, nodes only route",
               {"path": "direct", "cluster.nodes": 4, "cluster.pods": 8, "pod.service_s": 0.0,
                "workload.clients": 1024, "workload.rate_per_s": 100.0, "workload.flows": 800},
               _BALANCE),
    # the capped search (248 probes) below capacity, as benchmarks/kernel_capped_search.py
    # measured it: UDP through 2048 SNAT ports held 10 s, 120 s of Poisson arrivals
    *[Experiment(f"capped-search-{load:g}", f"UDP at {load:g} x 2048 ports / 10 s through "
                 "masquerade fully-random: the 248-probe cap fails flows while ports are free",
                 {**_SMALL, "workload.protocol": "udp", "workload.udp_retries": 0,
                  "workload.udp_timeout_s": 1.0, "conntrack.udp_s": 10.0,
                  "workload.clients": 16384, "nat.port_range": [20000, 22047],
                  "workload.rate_per_s": load * 204.8, "workload.flows": int(load * 204.8 * 120)},
                 _DROPS, ci=False)
      for load in (0.95, 1.1)],
]}
