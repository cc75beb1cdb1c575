import math

import numpy as np
import pytest

import lbsim
from lbsim.metrics import SUMMARY_METRICS

SMALL = lbsim.Scenario().replace(**{"workload.flows": 3000})
WALL = {"wall_s", "flows_per_wall_s"}


def _no_wall(s):
    return {k: v for k, v in s.items() if k not in WALL}


def test_same_seed_same_numbers_other_seed_other_numbers():
    a, b = lbsim.run(SMALL), lbsim.run(SMALL)
    assert _no_wall(a.summary) == _no_wall(b.summary)
    assert a.flows.equals(b.flows)
    c = lbsim.run(SMALL.replace(seed=2))
    assert _no_wall(a.summary) != _no_wall(c.summary)


def test_engines_and_batch_sizes_give_the_same_tables():
    ref = lbsim.run(SMALL.replace(**{"workload.flows": 400}), engine="reference")
    for b in (1, 50, 4096):
        r = lbsim.run(SMALL.replace(**{"workload.flows": 400}), batch_flows=b)
        assert r.flows.equals(ref.flows)
        assert r.counters.equals(ref.counters)
        assert r.gauges.equals(ref.gauges)


def test_compare_sees_the_same_clients_and_arrivals():
    c = lbsim.compare(SMALL)
    for col in ("arrival_s", "client", "client_port"):
        assert np.array_equal(c.nodeport.flows[col], c.direct.flows[col])
    assert list(c.summary.columns) == ["nodeport", "direct"]


def test_source_ip_cluster_vs_direct_vs_local():
    c = lbsim.compare(SMALL)
    assert c.nodeport.summary["source_ip_preserved_fraction"] == 0.0
    assert c.direct.summary["source_ip_preserved_fraction"] == 1.0
    local = lbsim.run(SMALL.replace(**{"kube_proxy.external_traffic_policy": "Local"}))
    assert local.summary["source_ip_preserved_fraction"] == 1.0
    assert local.summary["second_hop_fraction"] == 0.0


def test_summary_has_every_documented_metric():
    s = lbsim.run(SMALL).summary
    assert set(s) == set(SUMMARY_METRICS)


def test_flows_frame_columns_are_documented():
    from lbsim.metrics import COUNTER_COLUMNS, DROP_COLUMNS, FLOW_COLUMNS, GAUGE_COLUMNS, SNAT_COLUMNS
    r = lbsim.run(SMALL.replace(**{"nat.port_range": [10000, 10010], "nat.kernel": "5.x",
                                    "cluster.nodes": 1, "cluster.pods": 2, "workload.syn_retries": 0}))
    assert len(r.drops) > 0 and len(r.snat) > 0
    assert list(r.drops.columns) == list(DROP_COLUMNS)
    assert list(r.snat.columns) == list(SNAT_COLUMNS)
    assert list(r.flows.columns) == list(FLOW_COLUMNS)
    assert list(r.counters.columns) == list(COUNTER_COLUMNS)
    assert list(r.gauges.columns) == list(GAUGE_COLUMNS)


def test_local_policy_drops_on_a_node_without_pods_unless_health_checked():
    sc = SMALL.replace(**{"cluster.nodes": 2, "cluster.pods": 2, "cluster.placement": "packed",
                          "kube_proxy.external_traffic_policy": "Local", "workload.syn_retries": 1,
                          "lb.health_check": False})
    r = lbsim.run(sc)
    # round robin sends every other flow to node 1, which has no pod: all its attempts drop (3:
    # tcp_syn_retries = 1 lets the kernel retransmit twice, lbsim.kernel.syn_gaps_ns)
    assert r.summary["failed_fraction"] == pytest.approx(0.5, abs=1 / 3000)
    assert sc.workload.retries == 2
    assert r.summary["fail_cause_no_local_endpoint"] == 3 * r.summary["failed"]
    # with health checks node 1 answers 503 and is out of the LB's set: nothing drops
    checked = lbsim.run(sc.replace(**{"lb.health_check": True}))
    assert checked.summary["failed"] == 0
    assert set(checked.flows["node"]) == {0}


def test_readme_glossary_lists_every_metric():
    from pathlib import Path
    text = (Path(__file__).parents[2] / "README.md").read_text()
    for k in SUMMARY_METRICS:
        assert f"`{k}`" in text, k


def test_the_bench_table_shows_every_metric_once():
    from lbsim.bench import _GROUPS
    shown = [m for _, rows in _GROUPS for m, _, _ in rows]
    assert sorted(shown) == sorted(set(shown)) and set(shown) == set(SUMMARY_METRICS)


def test_every_named_scenario_builds_full_and_quick():
    from lbsim.scenarios import SCENARIOS, get
    for name in SCENARIOS:
        full, quick = get(name), get(name, quick=True)
        assert quick.workload.flows <= full.workload.flows


def test_summary_records_give_the_same_summary_without_tables():
    sc = SMALL.replace(**{"nat.port_range": [10000, 10015], "workload.flows": 2000, "nat.kernel": "5.x",
                          "cluster.nodes": 1, "cluster.pods": 1, "workload.syn_retries": 0})
    full, lean = lbsim.run(sc), lbsim.run(sc.replace(records="summary"))
    # summary records do not count SNAT ports per pair (the headroom metrics say NaN)
    drop = {"wall_s", "flows_per_wall_s", "snat_pair_ports_peak", "snat_pair_ports_peak_fraction"}
    assert math.isnan(lean.summary["snat_pair_ports_peak"])
    assert (lean.gauges["snat_ports_max"] == -1).all() and (full.gauges["snat_ports_max"] >= 0).all()
    assert {k: v for k, v in full.summary.items() if k not in drop} == \
        pytest.approx({k: v for k, v in lean.summary.items() if k not in drop}, nan_ok=True)
    assert len(lean.flows) == 0 and len(lean.snat) == 0 and len(lean.drops) == 0
    assert list(lean.flows.columns) == list(full.flows.columns)
    assert full.summary["failed"] > 0 and lean.counters.equals(full.counters)


def test_overloaded_node_cpu_is_reported_not_returned_silently():
    """A SYN queued at a node CPU for longer than the RTO would be retransmitted by a real client,
    which the model does not do: the run warns instead of returning such numbers silently."""
    import warnings

    sc = lbsim.Scenario().replace(**{"workload.flows": 200, "cluster.nodes": 2, "cluster.pods": 2,
                                     "cluster.packet_time_s": 0.1, "conntrack.time_wait_s": 0.01,
                                     "pod.workers": 256})
    with pytest.warns(RuntimeWarning, match="retransmission timeout"):
        lbsim.run(sc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lbsim.run(sc.replace(**{"cluster.packet_time_s": 5e-6}))
        lbsim.run(sc.replace(path="direct", **{"cluster.packet_time_s": 0.1}))


def test_the_batched_engine_is_gone():
    with pytest.raises(ValueError, match="engine = 'batched' is invalid: must be 'compiled' or 'reference'"):
        lbsim.run(SMALL, engine="batched")


def test_readme_python_examples_run():
    """The README's Python blocks, in order, in one namespace (the second uses the first's
    scenario)."""
    import re
    from pathlib import Path
    text = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), ns)  # noqa: S102
    assert ns["r"].summary["flows"] == ns["scenario"].workload.flows
