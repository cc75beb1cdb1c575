"""Runs that would not fit in memory are refused up front, the estimate in the message."""

import pytest

import lbsim
from lbsim.config import MAX_PODS
from lbsim.budget import check_memory, estimate_bytes


def test_a_flow_count_the_validator_accepts_but_no_machine_holds_is_refused_at_once(monkeypatch):
    import lbsim.simulation as simulation

    def never(*a, **k):
        raise AssertionError("the workload was drawn")
    monkeypatch.setattr(simulation, "draw_workload", never)   # refused before any allocation
    sc = lbsim.Scenario().replace(**{"workload.flows": 1 << 40, "workload.rate_per_s": 1e8})
    with pytest.raises(ValueError, match=r"would need about [\d,.]+ GiB .* GiB are available"):
        simulation.simulate(sc)


def test_a_run_too_big_for_full_records_is_refused_with_the_hint():
    # ~15 GiB with full records, ~8 with summary ones (6 M client ports held at once, 12 M
    # conntrack entries): 12 GiB available takes the one and refuses the other
    sc = lbsim.Scenario().replace(**{"workload.flows": 30_000_000, "workload.rate_per_s": 1e5})
    with pytest.raises(ValueError, match='records = "summary"'):
        check_memory(sc, available=12 << 30)
    check_memory(sc.replace(records="summary"), available=12 << 30)     # fits without them


def test_a_million_pods_get_a_load_table_of_bounded_size():
    """pods x 100 bins would be 10^8 rows for a million pods, whatever the flows: the table
    gets fewer bins (at least 1) and the estimate counts what it will hold."""
    from lbsim.budget import LOAD_ROWS_MAX, load_bins
    assert load_bins(100) == 100 and load_bins(10**6) == 2 and load_bins(MAX_PODS) == 1
    assert all(p * load_bins(p) <= max(LOAD_ROWS_MAX, p) for p in (1, 20_000, 20_001, 10**6))
    sc = lbsim.Scenario().replace(**{"workload.flows": 1000, "cluster.nodes": 16000,
                                     "cluster.pods": 1_000_000})
    assert estimate_bytes(sc) < 1 << 30


def test_the_estimate_grows_with_flows_records_and_engine():
    sc = lbsim.Scenario()
    small, big = estimate_bytes(sc), estimate_bytes(sc.replace(**{"workload.flows": 10**7}))
    assert big > 50 * small
    assert estimate_bytes(sc.replace(records="summary")) < small
    assert estimate_bytes(sc, "reference") > 5 * small
    assert check_memory(sc, available=64 << 30) == small   # fits: the estimate comes back


def test_tiny_gc_intervals_are_refused():
    with pytest.raises(ValueError, match=r"conntrack.gc_interval_s = 1e-06 is invalid: .*>= 0.001"):
        lbsim.Scenario().replace(**{"conntrack.gc_interval_s": 1e-6})
    lbsim.Scenario().replace(**{"conntrack.gc_interval_s": 0.001})


@pytest.mark.parametrize("changes, says", [
    ({"workload.rate_per_s": 1e-300}, "past the model's clock"),
    ({"conntrack.time_wait_s": 1e12}, "conntrack.time_wait_s reaches"),
    ({"workload.hold_s": {"dist": "exponential", "mean": 1e9}}, "workload.hold_s reaches"),
    ({"workload.flows": 1000, "workload.rate_per_s": 1e-5, "cluster.nodes": 16000,
      "cluster.pods": 16000}, "ticks"),
])
def test_runs_past_the_clock_or_ticking_for_hours_are_refused_up_front(changes, says):
    with pytest.raises(ValueError, match=says):
        lbsim.simulation.simulate(lbsim.Scenario().replace(**changes))


def test_the_default_and_the_perf_scenarios_pass_the_checks():
    from lbsim.budget import check_clock
    from lbsim.scenarios import SCENARIOS, get
    from lbsim.workload import streams
    for name in SCENARIOS:
        check_clock(get(name))
        check_memory(get(name), available=16 << 30, streamed=streams(get(name)))


def test_the_direct_paths_gauges_count_toward_memory():
    # 400 flows over 400,000 s on 2,455 nodes: an all-zero gauge row per node and second
    # (~1e9 node-seconds) would take ~70 GiB, whatever the few flows
    sc = lbsim.Scenario().replace(**{"path": "direct", "workload.flows": 400,
                                     "workload.rate_per_s": 0.001, "cluster.nodes": 2455,
                                     "cluster.pods": 5})
    with pytest.raises(ValueError, match=r"would need about [\d,.]+ GiB"):
        check_memory(sc, available=16 << 30)
    check_memory(sc.replace(**{"workload.rate_per_s": 100.0}), available=16 << 30)
