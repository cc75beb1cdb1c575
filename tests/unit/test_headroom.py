"""Headroom metrics: their definitions against the run's own tables, and the closed form of the
port capacity."""

import math

import numpy as np
import pytest

import lbsim
from lbsim.analytic import time_wait_rate_bound

SC = lbsim.Scenario().replace(**{
    "workload.flows": 6000, "workload.rate_per_s": 300.0, "cluster.nodes": 2, "cluster.pods": 3,
    "conntrack.time_wait_s": 5.0, "workload.hold_s": 0.5, "pod.service_s": 0.01,
    "nat.port_range": [10000, 10511]})


@pytest.fixture(scope="module")
def both():
    return lbsim.compare(SC)


def test_snat_and_conntrack_peaks_are_the_tables_maxima(both):
    r = both.nodeport
    s = r.summary
    assert s["snat_pair_ports_peak"] == r.snat["ports"].max() > 0
    assert s["snat_pair_ports_peak_fraction"] == s["snat_pair_ports_peak"] / 512
    assert s["conntrack_entries_peak"] == r.gauges["entries"].max() > 0
    assert s["conntrack_peak_fraction"] == s["conntrack_entries_peak"] / SC.conntrack.max


def test_busiest_pair_rate_is_the_flows_tables_busiest_second(both):
    f = both.nodeport.flows
    ok = f[f.outcome == "established"]
    per = ok.groupby([ok.node, ok.pod, np.floor(ok.arrival_s)]).size()
    assert both.nodeport.summary["snat_pair_rate_peak_per_s"] == per.max()


def test_capacity_is_ports_over_the_holding_time(both):
    f = both.nodeport.flows
    ok = f[f.outcome == "established"]
    holding = (ok.closed_s - ok.arrival_s).mean() + SC.conntrack.time_wait_s
    assert both.nodeport.summary["snat_pair_capacity_per_s"] == pytest.approx(
        time_wait_rate_bound(512, holding), rel=1e-9)


def test_direct_path_and_summary_records():
    d = lbsim.run(SC.replace(path="direct")).summary
    assert d["snat_pair_ports_peak"] == 0 and d["conntrack_entries_peak"] == 0
    assert math.isnan(d["snat_pair_capacity_per_s"])
    full = lbsim.run(SC).summary
    lean = lbsim.run(SC.replace(records="summary")).summary
    assert math.isnan(lean["snat_pair_ports_peak"])
    for k in ("snat_pair_rate_peak_per_s", "snat_pair_capacity_per_s", "conntrack_entries_peak"):
        assert lean[k] == full[k], k


def test_snat_gauges_and_change_points_match_the_dense_counts_and_past_the_pair_limit(
        monkeypatch):
    """The SNAT change points expand to the per-sample counts whose per-node maximum is the
    gauges' snat_ports_max. With more pairs than SNAT_PAIRS_MAX (set to 1 here) full records
    count the gauges by walking the entries and keep no per-pair table; summary records never
    count them (-1, peak NaN); both engines agree throughout."""
    from lbsim.metrics import snat_dense
    from lbsim.simulation import simulate
    from tests.property.test_engines_agree import assert_same
    r = lbsim.run(SC)
    dense = snat_dense(r.snat, r.gauges)
    busiest = dense.groupby(["t_s", "node"])["ports"].max()
    g = r.gauges.set_index(["t_s", "node"])
    assert (g.loc[busiest.index, "snat_ports_max"] == busiest).all()
    assert (g["snat_ports_max"] > 0).sum() == len(busiest)
    assert (g.loc[busiest.index, "snat_pairs"]
            == dense.groupby(["t_s", "node"]).size()).all()
    import lbsim.compiled.driver as driver
    import lbsim.reference.engine as reference
    monkeypatch.setattr(driver, "SNAT_PAIRS_MAX", 1)
    monkeypatch.setattr(reference, "SNAT_PAIRS_MAX", 1)
    walked = lbsim.run(SC)
    assert walked.snat.empty
    assert walked.gauges["snat_ports_max"].equals(r.gauges["snat_ports_max"])
    assert walked.summary["snat_pair_ports_peak"] == r.summary["snat_pair_ports_peak"]
    lean = lbsim.run(SC.replace(records="summary"))
    assert (lean.gauges["snat_ports_max"] == -1).all()
    assert math.isnan(lean.summary["snat_pair_ports_peak"])
    for sc in (SC, SC.replace(records="summary")):
        assert_same(simulate(sc, engine="reference"), simulate(sc, batch_flows=64))


def test_many_pairs_few_changed_per_sample_agree_with_the_reference():
    """8 nodes x 200 pods = 1,600 pairs, ~30 new flows a second: most pairs are idle at a sample,
    a few change (up to 3 ports on one pair); both engines give the same gauges and change
    points."""
    from lbsim.simulation import simulate
    from tests.property.test_engines_agree import assert_same
    sc = SC.replace(**{"cluster.nodes": 8, "cluster.pods": 200, "workload.rate_per_s": 30.0,
                       "workload.flows": 3000, "nat.port_range": [10000, 10003]})
    ref = simulate(sc, engine="reference")
    assert ref.snat_ports.size > 0 and ref.gauge_snat_max.max() > 1
    assert_same(ref, simulate(sc, batch_flows=64))


def test_sizing_verdict_names_the_limits(both):
    from lbsim.headroom import sizing_verdict
    line = sizing_verdict(both.nodeport.summary)
    assert "of its ports" in line and "exhausts near" in line and "nf_conntrack_max" in line
    assert "no SNAT" in sizing_verdict(both.direct.summary, nodeport=False)


def test_exhaustion_shows_a_full_range_and_a_rate_above_capacity():
    from lbsim.scenarios import get
    s = lbsim.run(get("snat-exhaustion", quick=True)).summary
    assert s["fail_cause_port_exhaustion"] > 0
    assert s["snat_pair_ports_peak_fraction"] == 1.0
    assert s["snat_pair_rate_peak_per_s"] > s["snat_pair_capacity_per_s"]
    h = lbsim.run(get("snat-exhaustion", quick=True).replace(
        **{"workload.rate_per_s": 10.0, "workload.flows": 3000})).summary
    assert h["failed"] == 0 and h["snat_pair_ports_peak_fraction"] < 1.0
