"""The compiled engine takes the reference engine's every decision, at any window size; and its
own state keeps the table's invariants after every window."""

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim import Scenario
from lbsim.compiled import compiled_engine
from lbsim.compiled.layout import NODE, REPLY, S_SIZE, T_EXPIRE
from lbsim.control import run_engine
from lbsim.metrics import drops_frame
from lbsim.simulation import simulate
from lbsim.workload import draw_workload

RECORDS = ["outcome", "cause", "attempts", "pod", "nat_port", "connect_ns", "response_ns",
           "pod_wait_ns",
           "src_ip", "cause_count", "table_count", "gauge_t_ns", "gauge_entries", "gauge_live",
           "gauge_snat_max", "gauge_snat_pairs", "snat_t_ns", "snat_pair", "snat_ports"]


@st.composite
def scenarios(draw):
    nodes = draw(st.integers(1, 4))
    pods = draw(st.integers(1, 6))
    width = draw(st.sampled_from([None, 0, 3, 20]))
    lo = draw(st.sampled_from([700, 20000, 32768]))
    cport = draw(st.sampled_from([0, 2, 50, 28000]))
    d = {
        "path": draw(st.sampled_from(["nodeport", "nodeport", "direct"])),
        "seed": draw(st.integers(0, 2**32)),
        "workload.protocol": draw(st.sampled_from(["tcp", "udp"])),
        "workload.source": draw(st.sampled_from(["external", "external", "pod"])),
        "workload.queries_per_socket": draw(st.sampled_from([1, 1, 2])),
        "workload.query_gap_s": draw(st.sampled_from([1e-6, 1e-3])),
        "workload.rate_per_s": draw(st.sampled_from([20.0, 300.0, 5000.0, 200000.0])),
        "workload.flows": draw(st.integers(1, 150)),
        "workload.clients": draw(st.sampled_from([1, 3, 50])),
        "workload.client_port_range": [lo, lo + cport],
        "workload.tcp_tw_reuse": draw(st.sampled_from([2, 1])),
        # long holds put entries past the compiled engine's 256 s calendar ring (its far list)
        "workload.hold_s": draw(st.sampled_from([0.0, 0.5, {"dist": "exponential", "mean": 1.0},
                                                 400.0, {"dist": "exponential", "mean": 200.0}])),
        "workload.syn_retries": draw(st.integers(0, 3)),
        "workload.syn_rto_s": draw(st.sampled_from([0.001, 1.0])),
        "workload.udp_timeout_s": draw(st.sampled_from([0.01, 5.0])),
        "cluster.nodes": nodes, "cluster.pods": pods,
        "cluster.cpus_per_node": draw(st.integers(1, 3)),
        "cluster.placement": draw(st.sampled_from(["spread", "packed"])),
        "cluster.packet_time_s": draw(st.sampled_from([5e-6, {"dist": "exponential", "mean": 1e-3}])),
        "pod.workers": draw(st.one_of(st.integers(1, 3),
                                      st.lists(st.integers(1, 3), min_size=pods, max_size=pods))),
        "lb.instances": draw(st.integers(1, 3)),
        "lb.algorithm": draw(st.sampled_from(["rr", "wrr", "lc", "source_hash", "maglev"])),
        "lb.weights": draw(st.sampled_from(["equal", "local_pods", "workers"])),
        "lb.maglev_table_size": 251,
        "lb.persistence_s": draw(st.sampled_from([0.0, 0.0, 0.05, 100.0])),
        "lb.health_check": draw(st.booleans()),
        "kube_proxy.mode": draw(st.sampled_from(["iptables", "iptables", "nftables", "ipvs",
                                                 "cilium"])),
        "kube_proxy.ipvs_scheduler": draw(st.sampled_from(["rr", "lc", "sh", "mh"])),
        "kube_proxy.cilium_algorithm": draw(st.sampled_from(["random", "maglev"])),
        "kube_proxy.cilium_maglev_table_size": 251,
        "kube_proxy.session_affinity": draw(st.sampled_from(["None", "None", "ClientIP"])),
        "kube_proxy.session_affinity_timeout_s": draw(st.sampled_from([0.01, 10800.0])),
        "pod.service_s": draw(st.sampled_from([0.0, 0.01, {"dist": "exponential", "mean": 0.2},
                                                {"dist": "lognormal", "mean": 0.05, "sigma": 1.5}])),
        "kube_proxy.external_traffic_policy": draw(st.sampled_from(["Cluster", "Local"])),
        "nat.random_fully": draw(st.booleans()),
        "nat.kernel": draw(st.sampled_from(["modern", "5.x", "4.x", "4.18", "5.4", "5.10", "5.15", "6.1"])),
        "nat.random": draw(st.booleans()),
        "conntrack.max": draw(st.sampled_from([3, 40, 262144])),
        "conntrack.time_wait_s": draw(st.sampled_from([0.0, 0.05, 2.0, 120.0, 300.0])),
        "conntrack.udp_s": draw(st.sampled_from([0.02, 30.0])),
        "conntrack.gc_interval_s": draw(st.sampled_from([0.01, 1.0, "auto"])),
    }
    if width is not None:
        d["nat.port_range"] = [10000, 10000 + width]
    d.update(draw(arrivals(d)))
    d.update(draw(race_pairs(d)))
    return Scenario().replace(**d)


@st.composite
def race_pairs(draw, d):
    """Racing pairs (same port, same tuple) pinned or not, and a jitter before the CPU; a pair
    needs a Poisson or periodic arrival, one query per socket and, same-port, two clients."""
    out = {"cluster.packet_jitter_s": draw(st.sampled_from(
        [0.0, 0.0, 3e-6, {"dist": "exponential", "mean": 1e-5}])),
        "cluster.snat_offset_s": draw(st.sampled_from([0.0, 0.0, 3e-6, 1e-3]))}
    pairs = draw(st.sampled_from(["none", "none", "same_port", "same_tuple"]))
    if d.get("workload.arrival") == "closed_loop":
        pairs = "none"
    if pairs != "none":
        out.update({"workload.pairs": pairs, "workload.queries_per_socket": 1,
                    "workload.pair_offset_s": draw(st.sampled_from(
                        [0.0, 2e-6, {"dist": "exponential", "mean": 5e-6}])),
                    "workload.clients": max(2, d["workload.clients"])})
    if (pairs != "none" or d["workload.queries_per_socket"] > 1) and draw(st.booleans()):
        out.update({"workload.pin_pairs": True,
                    "cluster.cpus_per_node": max(2, d["cluster.cpus_per_node"])})
    return out


@st.composite
def arrivals(draw, d):
    """The arrival process: Poisson mostly, periodic, or a closed loop (without the choices made
    from every start up front, which it refuses: lbsim.config.scenario._check_closed_loop)."""
    arrival = draw(st.sampled_from(["poisson", "poisson", "periodic", "closed_loop"]))
    out = {"workload.arrival": arrival}
    if arrival == "closed_loop":
        out.update({"workload.concurrency": draw(st.integers(1, d["workload.flows"])),
                    "workload.think_s": draw(st.sampled_from([0.0, 0.0, 0.01, 0.5])),
                    "workload.rate_per_s": draw(st.sampled_from([20.0, 5000.0, 1e9])),
                    # a hold is inside a closed loop's cycle: the long ones (past the compiled
                    # calendar's ring, tested above) would tick the reference for hours
                    "workload.hold_s": draw(st.sampled_from(
                        [0.0, 0.5, {"dist": "exponential", "mean": 1.0}])),
                    "workload.queries_per_socket": 1, "lb.persistence_s": 0.0,
                    "kube_proxy.session_affinity": "None"})
        if d["lb.algorithm"] == "lc":
            out["lb.algorithm"] = "rr"
        if d.get("kube_proxy.ipvs_scheduler") in ("lc", "wlc"):
            out["kube_proxy.ipvs_scheduler"] = "sh"
    return out


def assert_same(a, b):
    for f in RECORDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    for k in a.counters:
        assert np.array_equal(a.counters[k], b.counters[k]), k
    assert a.max_cpu_wait_ns == b.max_cpu_wait_ns and a.resolved == b.resolved
    assert drops_frame(a).equals(drops_frame(b))


class _Checked:
    """The compiled engine, its table's invariants asserted after every window: entries never
    exceed nf_conntrack_max on any node, and no reply tuple is held twice."""

    def __init__(self, engine, ct_max):
        self.engine, self.ct_max, self.windows = engine, ct_max, 0

    def advance(self, t1):
        done = self.engine.advance(t1)
        self.windows += 1
        X = getattr(self.engine, "X", None)
        if X is not None:
            held = np.flatnonzero(X.E[T_EXPIRE][: X.S[S_SIZE]] >= 0)
            assert (X.count <= self.ct_max).all()
            assert np.array_equal(np.bincount(X.E[NODE][held], minlength=X.count.size), X.count)
            assert np.unique(X.E[REPLY][held]).size == held.size
        return done

    def set_endpoints(self, node, pods, rejects=False):
        self.engine.set_endpoints(node, pods, rejects)


def run_checked(sc, batch, span_ns=0):
    """The compiled engine's records, its invariants checked after every window: ``batch`` new
    flows a window, or with a closed loop (whose starts are not known up front) a window every
    ``batch`` ms of simulated time, at most ~200 of them over ``span_ns``."""
    w = draw_workload(sc)
    eng = _Checked(compiled_engine(w), sc.conntrack.max)
    if w.params.closed_loop:
        t, step = 0, max(batch * 1_000_000, span_ns // 200 + 1)
        while not eng.advance(t):
            t += step
    else:
        run_engine(eng, w.t0, w.params, batch)
    return eng.engine.records()


@settings(max_examples=150)
@given(scenarios(), st.sampled_from([1, 2, 7, 64, 4096]))
def test_compiled_equals_reference(sc, batch):
    """The compiled engine (the default) takes the reference's every decision, at any window size,
    and keeps the table's invariants after every window."""
    ref = simulate(sc, engine="reference")
    assert ref.resolved == sc.workload.flows
    got = run_checked(sc, batch, int(ref.workload.t0[-1]))
    assert np.array_equal(ref.workload.t0, got.workload.t0)   # a closed loop's starts too
    assert all(g.max(initial=0) <= sc.conntrack.max for g in ref.gauge_entries)
    assert_same(ref, got)


def test_batch_size_independent_deep_in_exhaustion():
    """16 SNAT ports, 2 pods, far more demand than ports: earlier flows win in arrival order."""
    sc = Scenario().replace(**{
        "workload.flows": 1500, "workload.rate_per_s": 400.0, "workload.syn_retries": 2,
        "cluster.nodes": 2, "cluster.pods": 2, "nat.port_range": [10000, 10015],
        "conntrack.time_wait_s": 0.5})
    ref = simulate(sc, engine="reference")
    assert ref.cause_count[1] > 100          # port exhaustion really happened
    for batch in (1, 1000, 100_000):
        assert_same(ref, run_checked(sc, batch))


def test_compiled_calendar_long_lived_entries():
    """Entries outliving the compiled engine's 256 s calendar ring (its far list, moved into the
    ring as GC passes advance it) and a full table whose early-drop passes keep the calendar
    from advancing for longer than the ring: the compiled engine still takes the reference's
    every decision."""
    base = {"workload.flows": 2500, "workload.rate_per_s": 4.0,
            "workload.hold_s": {"dist": "exponential", "mean": 300.0},
            "workload.clients": 50, "cluster.nodes": 2, "cluster.pods": 3}
    for extra in ({}, {"conntrack.max": 300, "conntrack.time_wait_s": 60.0}):
        sc = Scenario().replace(**base, **extra)
        ref = simulate(sc, engine="reference")
        assert_same(ref, run_checked(sc, 64))
        if extra:
            assert ref.cause_count[3] > 100 and sum(ref.counters["gc_early_drop"]) > 0
