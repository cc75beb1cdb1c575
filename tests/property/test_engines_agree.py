"""The batched engine and the per-flow reference engine agree flow for flow, at any batch size."""

import numpy as np
from hypothesis import given, settings, strategies as st

from lbsim import Scenario
from lbsim.batch import run_batched
from lbsim.compiled import run_compiled
from lbsim.conntrack import ConntrackTable, DictConntrackTable
from lbsim.model import Model, run_reference

RECORDS = ["out", "cause", "attempts", "rec_pod", "rec_port", "connect", "response", "src_ip",
           "cause_count"]


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
        "nat.kernel": draw(st.sampled_from(["modern", "5.x", "4.x"])),
        "nat.random": draw(st.booleans()),
        "conntrack.max": draw(st.sampled_from([3, 40, 262144])),
        "conntrack.time_wait_s": draw(st.sampled_from([0.0, 0.05, 2.0, 120.0, 300.0])),
        "conntrack.udp_s": draw(st.sampled_from([0.02, 30.0])),
        "conntrack.gc_interval_s": draw(st.sampled_from([0.01, 1.0, "auto"])),
    }
    if width is not None:
        d["nat.port_range"] = [10000, 10000 + width]
    return Scenario().replace(**d)


def assert_same(a: Model, b: Model):
    for f in RECORDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    for k in a.counters:
        assert np.array_equal(a.counters[k], b.counters[k]), k
    assert len(a.gauges) == len(b.gauges)
    for ga, gb in zip(a.gauges, b.gauges):
        assert ga[0] == gb[0] and np.array_equal(ga[1], gb[1]) and np.array_equal(ga[2], gb[2])
    assert np.array_equal(a.table.count, b.table.count)
    assert len(a.snat_gauges) == len(b.snat_gauges)
    for ga, gb in zip(a.snat_gauges, b.snat_gauges):
        assert ga[0] == gb[0] and np.array_equal(ga[1], gb[1]) and np.array_equal(ga[2], gb[2])
    from lbsim.metrics import drops_frame
    assert drops_frame(a).equals(drops_frame(b))


@settings(max_examples=60)
@given(scenarios(), st.sampled_from([1, 2, 7, 64, 4096]))
def test_batched_equals_reference(sc, batch):
    ref = run_reference(Model(sc, DictConntrackTable))
    bat = run_batched(Model(sc, ConntrackTable), batch)
    assert ref.resolved == sc.workload.flows
    assert_same(ref, bat)
    # invariants: the table never held more than nf_conntrack_max; live reply tuples are unique
    assert all(g[1].max() <= sc.conntrack.max for g in ref.gauges)
    n = bat.table.size
    alive = bat.table.alive[:n]
    assert np.unique(bat.table.reply[:n][alive]).size == alive.sum()


@settings(max_examples=150)
@given(scenarios(), st.sampled_from([1, 2, 7, 64, 4096]))
def test_compiled_equals_reference(sc, batch):
    """The compiled engine (the default) takes the reference's every decision, at any window size."""
    ref = run_reference(Model(sc, DictConntrackTable))
    assert_same(ref, run_compiled(Model(sc, ConntrackTable), batch))


def test_batch_size_independent_deep_in_exhaustion():
    """16 SNAT ports, 2 pods, far more demand than ports: earlier flows win in arrival order."""
    sc = Scenario().replace(**{
        "workload.flows": 1500, "workload.rate_per_s": 400.0, "workload.syn_retries": 2,
        "cluster.nodes": 2, "cluster.pods": 2, "nat.port_range": [10000, 10015],
        "conntrack.time_wait_s": 0.5})
    ref = run_reference(Model(sc, DictConntrackTable))
    assert ref.cause_count[1] > 100          # port exhaustion really happened
    for batch in (1, 1000, 100_000):
        assert_same(ref, run_batched(Model(sc, ConntrackTable), batch))
        assert_same(ref, run_compiled(Model(sc, ConntrackTable), batch))


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
        ref = run_reference(Model(sc, DictConntrackTable))
        assert_same(ref, run_compiled(Model(sc, ConntrackTable), 64))
        if extra:
            assert ref.cause_count[3] > 100 and sum(ref.counters["gc_early_drop"]) > 0
