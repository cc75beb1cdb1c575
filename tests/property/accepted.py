"""Hypothesis strategies for scenarios anywhere in the validator's accepted ranges.

Each field is drawn from its whole accepted range with the range's ends (and the values next to
them) weighted in, so that an extreme meets other extremes. The ranges are the ones
lbsim/config.py checks; a value the validator refuses is a failed draw, not a test failure
(tests/property/test_accepted_inputs.py tells the two apart).
"""

from __future__ import annotations

import sys

from hypothesis import strategies as st

from lbsim import Scenario
from lbsim.config import (MAX_CLIENTS, MAX_NODES, MAX_PODS, CiliumAlgorithm, DataPath,
                          IpvsScheduler, LBAlgorithm, NatKernel, Pairing, Protocol, ProxyMode,
                          SessionAffinity, Source, TrafficPolicy)
from lbsim.config import CLOUD_PROFILES
from lbsim.kernel import TCP_RTO_MAX_S
from lbsim.kernel_versions import RELEASES

TINY = sys.float_info.min          # the smallest normal float
HUGE = sys.float_info.max
PRIMES = (7, 11, 13, 101, 4099, 16381, 65537, 1_000_003)


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    """An integer in [lo, hi], its ends and their neighbours often."""
    ends = sorted({lo, min(lo + 1, hi), max(hi - 1, lo), hi})
    return st.one_of(st.sampled_from(ends), st.integers(lo, hi))


def seconds(*, positive: bool = False, hi: float = HUGE) -> st.SearchStrategy[float]:
    """A finite number of seconds >= 0 (> 0 if ``positive``), extremes often."""
    lo = TINY if positive else 0.0
    ends = [e for e in (0.0, 5e-324, TINY, 1e-9, 1e-3, 1.0, 120.0, 1e6, 1e12, hi) if lo <= e <= hi]
    return st.one_of(st.sampled_from(ends),
                     st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                               exclude_min=positive and lo == 0.0))


def durations(*, positive: bool = False) -> st.SearchStrategy[object]:
    """A duration as TOML writes it: a number, or an exponential or log-normal table."""
    mean = seconds(positive=True)
    return st.one_of(seconds(positive=positive),
                     st.builds(lambda m: {"dist": "exponential", "mean": m}, mean),
                     st.builds(lambda m, s: {"dist": "lognormal", "mean": m, "sigma": s},
                               mean, st.floats(0.0, 10.0)))


def port_ranges() -> st.SearchStrategy[list[int]]:
    return st.tuples(ints(1, 65535), ints(1, 65535)).map(lambda t: sorted(t))


def counts_or_percents() -> st.SearchStrategy[object]:
    return st.one_of(ints(0, 1 << 20), st.integers(0, 100).map(lambda p: f"{p}%"))


def events() -> st.SearchStrategy[list[dict]]:
    """[[events]] in time order: rollouts, scalings, crashes, node additions anywhere in range,
    and drains of node 0 (which always exists)."""
    one = st.one_of(st.builds(lambda t: {"at_s": t, "kind": "rollout"}, seconds()),
                    st.builds(lambda t: {"at_s": t, "kind": "add-node"}, seconds()),
                    st.builds(lambda t: {"at_s": t, "kind": "drain", "node": 0}, seconds()),
                    st.builds(lambda t, n: {"at_s": t, "kind": "scale", "replicas": n},
                              seconds(), ints(0, 64)),
                    st.builds(lambda t, n: {"at_s": t, "kind": "crash", "pod": n},
                              seconds(), ints(0, MAX_PODS - 1)))
    return st.lists(one, max_size=3).map(lambda es: sorted(es, key=lambda e: e["at_s"]))


def choice(kind: type) -> st.SearchStrategy[str]:
    return st.sampled_from([m.value for m in kind])


def _fields(nodes: int, pods: int) -> dict[str, st.SearchStrategy]:
    """Each dotted field's strategy (the cluster's size given: placement and workers lists
    depend on it)."""
    counts = (st.lists(st.integers(0, pods), min_size=nodes, max_size=nodes).filter(
        lambda c: sum(c) == pods) if nodes <= 4 else st.just("spread"))
    return {
        "path": choice(DataPath), "seed": ints(0, (1 << 63) - 1),
        "records": st.sampled_from(["full", "summary"]),
        "workload.protocol": choice(Protocol), "workload.source": choice(Source),
        "workload.rate_per_s": seconds(positive=True), "workload.clients": ints(1, MAX_CLIENTS),
        "workload.client_port_range": port_ranges(), "workload.hold_s": durations(),
        "workload.tcp_tw_reuse": ints(0, 2),
        "workload.syn_retries": ints(0, 127), "workload.syn_linear_timeouts": ints(0, 127),
        "workload.syn_rto_s": seconds(positive=True, hi=TCP_RTO_MAX_S),
        "workload.udp_timeout_s": seconds(positive=True), "workload.udp_retries": ints(0, 127),
        "workload.queries_per_socket": ints(1, 1 << 16), "workload.query_gap_s": seconds(),
        "workload.pairs": choice(Pairing), "workload.pair_offset_s": durations(),
        "workload.pin_pairs": st.booleans(), "cluster.packet_jitter_s": durations(),
        "cluster.snat_offset_s": seconds(hi=1.0),
        "lb.instances": ints(1, 4096), "lb.algorithm": choice(LBAlgorithm),
        "lb.weights": st.sampled_from(["equal", "local_pods", "workers"]),
        "lb.maglev_table_size": st.sampled_from(PRIMES), "lb.persistence_s": seconds(),
        "lb.health_check": st.booleans(),
        "cluster.cpus_per_node": ints(1, 1024),
        "cluster.placement": st.one_of(st.sampled_from(["spread", "packed"]), counts),
        "cluster.packed_nodes": ints(1, nodes), "cluster.packet_time_s": durations(),
        "pod.workers": st.one_of(ints(1, 1 << 20),
                                 st.lists(ints(1, 1 << 20), min_size=pods, max_size=pods)
                                 if pods <= 4 else ints(1, 64)),
        "pod.service_s": durations(), "pod.port": ints(1, 65535),
        "kube_proxy.mode": choice(ProxyMode),
        "kube_proxy.external_traffic_policy": choice(TrafficPolicy),
        "kube_proxy.ipvs_scheduler": choice(IpvsScheduler),
        "kube_proxy.cilium_algorithm": choice(CiliumAlgorithm),
        "kube_proxy.cilium_maglev_table_size": st.sampled_from(PRIMES),
        "kube_proxy.session_affinity": choice(SessionAffinity),
        "kube_proxy.session_affinity_timeout_s": st.one_of(
            st.sampled_from([TINY, 1.0, 86400.0]), st.floats(TINY, 86400.0)),
        "nat.kernel": st.one_of(choice(NatKernel), st.sampled_from(
            [f"{a}.{b}" for a, b in RELEASES])), "nat.random_fully": st.booleans(),
        "nat.random": st.booleans(), "nat.port_range": port_ranges(),
        "conntrack.max": ints(1, 1 << 31), "conntrack.buckets": ints(1, 1 << 31),
        "conntrack.time_wait_s": seconds(), "conntrack.udp_s": seconds(),
        "conntrack.udp_stream_s": seconds(),
        "conntrack.gc_interval_s": st.one_of(st.just("auto"), seconds().filter(
            lambda s: s >= 0.001)),
        **{f"network.{k}": seconds() for k in ("client_to_lb_s", "lb_to_backend_s",
                                               "node_to_pod_s")},
        "lifecycle.startup_s": durations(),
        "lifecycle.readiness_initial_delay_s": seconds(),
        "lifecycle.readiness_period_s": seconds().filter(lambda s: s >= 0.001),
        "lifecycle.readiness_success_threshold": ints(1, 1000),
        "lifecycle.readiness_failure_threshold": ints(1, 1000),
        "endpoints.propagation_s": durations(), "endpoints.min_sync_period_s": seconds(),
        "endpoints.sync_s": durations(), "endpoints.terminating_fallback": st.booleans(),
        "lifecycle.prestop_s": seconds(), "lifecycle.termination_grace_s": seconds(),
        "lifecycle.restart_backoff_s": seconds(),
        "deployment.max_surge": counts_or_percents(),
        "deployment.max_unavailable": counts_or_percents(),
        "deployment.min_ready_s": seconds(), "deployment.readiness_gate": st.booleans(),
        "cloud.profile": st.sampled_from(sorted(CLOUD_PROFILES)),
        "cloud.registration_s": durations(),
        "cloud.hc_interval_s": seconds().filter(lambda s: s >= 0.001),
        "cloud.hc_timeout_s": seconds(),
        "cloud.hc_healthy_threshold": ints(1, 100), "cloud.hc_unhealthy_threshold": ints(1, 100),
        "cloud.deregistration_lag_s": durations(), "cloud.deregistration_delay_s": seconds(),
        "cloud.draining_new_flows_s": seconds(),
        "events": events(),
    }


def _nest(flat: dict[str, object]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[name] = value
    return out


@st.composite
def scenarios(draw: st.DrawFn, max_flows: int = 1 << 40) -> dict:
    """A scenario as plain data (what a TOML file holds), every field anywhere in its range."""
    nodes, pods = draw(ints(1, MAX_NODES)), draw(ints(1, MAX_PODS))
    flat = {"cluster.nodes": nodes, "cluster.pods": pods,
            "workload.flows": draw(ints(1, max_flows))}
    flat.update({k: draw(s, label=k) for k, s in _fields(nodes, pods).items()})
    return _nest(flat)


#: a small sound run that the extremes are planted in (the pods keep up, the run outlasts its
#: timeouts)
BASE = {"seed": 7, "workload.flows": 400, "cluster.nodes": 3, "cluster.pods": 5,
        "pod.workers": 64, "conntrack.time_wait_s": 0.05}


@st.composite
def planted(draw: st.DrawFn, max_flows: int = 3000, most: int = 4) -> dict:
    """A small sound scenario with up to ``most`` fields set anywhere in their ranges (extremes
    often): the extremes meet each other and the defaults, in runs small enough to finish."""
    flat = dict(BASE)
    sizes = {"cluster.nodes": ints(1, MAX_NODES), "cluster.pods": ints(1, MAX_PODS),
             "workload.flows": ints(1, max_flows)}
    for key in draw(st.lists(st.sampled_from(sorted(sizes)), max_size=2, unique=True)):
        flat[key] = draw(sizes[key], label=key)
    fields = _fields(flat["cluster.nodes"], flat["cluster.pods"])
    keys = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=most,
                         unique=True))
    if draw(st.booleans()):                  # half the runs go through events, on either path
        keys = ["events"] + [k for k in keys if k != "events"]
        flat["path"] = draw(st.sampled_from(["direct", "nodeport"]))
    for key in keys:
        flat[key] = draw(fields[key], label=key)
    if isinstance(flat["pod.workers"], list) and len(flat["pod.workers"]) != flat["cluster.pods"]:
        flat["pod.workers"] = 64
    return _nest(flat)


def build(data: dict) -> Scenario:
    return Scenario.from_dict(data)
