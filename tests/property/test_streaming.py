"""A streamed run (per-flow inputs drawn and records handed out window by window) changes no
exact statistic: every count and exact metric equals the whole run's at any window size, and
each percentile is within the histogram's stated relative error of the exact one."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lbsim import Scenario
from lbsim.compiled.stream import StreamedRun
from lbsim.histogram import RELATIVE_ERROR, LogHistogram
from lbsim.metrics import counters_frame, gauges_frame, summarize
from lbsim.simulation import simulate
from lbsim.workload import FlowSource, draw_workload, streaming_refusal
from tests.property.test_engines_agree import scenarios as engine_scenarios

PERCENTILES = ("_p50_s", "_p99_s")


def _streamable(d):
    """An engines-agreement scenario made streamable: one query per socket and no pairs, an LB
    without per-connection state, a kube-proxy choosing per attempt, summary records."""
    sc = d.replace(**{"workload.queries_per_socket": 1, "records": "summary",
                      "workload.pairs": "none", "workload.pin_pairs": False,
                      "kube_proxy.mode": "iptables", "kube_proxy.session_affinity": "None",
                      "lb.persistence_s": 0.0})
    if sc.workload.arrival.value == "closed_loop":     # its starts come as flows end: whole
        sc = sc.replace(**{"workload.arrival": "poisson", "workload.concurrency": 0,
                           "workload.think_s": 0.0})
    if sc.lb.algorithm.value == "lc":
        sc = sc.replace(**{"lb.algorithm": "rr"})
    assert streaming_refusal(sc) is None
    return sc


def assert_same_summary(whole: dict, streamed: dict) -> None:
    for k, x in whole.items():
        y = streamed[k]
        if k in ("wall_s", "flows_per_wall_s"):
            continue
        if isinstance(x, float) and math.isnan(x):
            assert isinstance(y, float) and math.isnan(y), k
        elif k.endswith(PERCENTILES):
            # both order statistics around the quantile move by at most RELATIVE_ERROR of
            # themselves; 1e-15 s covers the ns -> s conversion
            assert abs(y - x) <= RELATIVE_ERROR * abs(x) + 1e-15, (k, x, y)
        else:
            assert y == x, (k, x, y)


@settings(max_examples=60, deadline=None)
@given(engine_scenarios(), st.integers(1, 300))
def test_streamed_run_keeps_every_exact_statistic(d, window):
    sc = _streamable(d)
    whole = simulate(sc)
    streamed = simulate(sc, stream_window=window)
    assert streamed.flow_stats is not None and streamed.outcome.size == 0
    assert_same_summary(summarize(whole, 1.0), summarize(streamed, 1.0))
    for frame in (counters_frame, gauges_frame):
        assert frame(whole).equals(frame(streamed))
    assert np.array_equal(whole.cause_count, streamed.cause_count)
    assert whole.resolved == streamed.resolved == sc.workload.flows


@settings(max_examples=40, deadline=None)
@given(engine_scenarios(), st.lists(st.integers(1, 60), min_size=1, max_size=8))
def test_windows_draw_the_whole_runs_inputs(d, sizes):
    sc = _streamable(d)
    w = draw_workload(sc)
    src = FlowSource(sc)
    got, lo, i = [], 0, 0
    while lo < sc.workload.flows:
        hi = min(lo + sizes[i % len(sizes)], sc.workload.flows)
        got.append(src.draw(lo, hi))
        lo, i = hi, i + 1
    for k in ("t0", "client", "sport", "service", "hold", "instance", "backend"):
        assert np.array_equal(np.concatenate([g[k] for g in got]), getattr(w, k)), k


def test_the_ring_grows_behind_a_flow_still_retransmitting():
    # 4-port SNAT range at 2,000 flows/s: flows retransmit for seconds while thousands start,
    # so the unresolved ones outgrow a ring of 2 windows of 8
    sc = Scenario().replace(**{"records": "summary", "workload.flows": 6000,
                               "workload.rate_per_s": 2000.0, "nat.port_range": [10000, 10003],
                               "cluster.nodes": 1, "cluster.pods": 1, "workload.syn_retries": 2})
    chunks = []
    run = StreamedRun(sc, 8, chunks.append)
    start = run.size
    assert run.advance(2**62)
    assert run.size > start
    firsts = [c.first for c in chunks]
    assert firsts == sorted(firsts) and sum(c.n for c in chunks) == 6000
    assert_same_summary(summarize(simulate(sc), 1.0), summarize(simulate(sc, stream_window=8), 1.0))


@pytest.mark.parametrize("change, why", [
    ({"events": [{"at_s": 1.0, "kind": "scale", "replicas": 3}]}, "events"),
    ({"lb.algorithm": "lc"}, "lc"),
    ({"workload.queries_per_socket": 2}, "queries_per_socket"),
    ({"workload.pairs": "same_port"}, "workload.pairs"),
    ({"kube_proxy.mode": "ipvs"}, "up front"),
])
def test_a_stream_window_where_a_run_cannot_stream_is_refused(change, why):
    sc = Scenario().replace(**{"workload.flows": 50, "records": "summary", **change})
    with pytest.raises(ValueError, match=f"stream_window = 8 is invalid.*{why}"):
        simulate(sc, stream_window=8)


@pytest.mark.parametrize("window", [0, -3, 2.5, True, "8"])
def test_a_bad_stream_window_is_refused(window):
    with pytest.raises(ValueError, match="stream_window = .* must be an int >= 1"):
        simulate(Scenario().replace(**{"workload.flows": 50}), stream_window=window)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2000), st.integers(0, 2**62)), min_size=1,
                max_size=300),
       st.sampled_from([0.0, 0.01, 0.5, 0.99, 1.0]))
def test_histogram_quantiles_are_within_the_stated_relative_error(values, q):
    x = np.array(values, np.int64)
    h = LogHistogram()
    h.add(x[: len(x) // 2])
    other = LogHistogram()
    other.add(x[len(x) // 2:])
    h.merge(other)
    exact = float(np.quantile(x.astype(np.float64), q))
    (got,) = h.quantiles([q])
    assert abs(got - exact) <= RELATIVE_ERROR * exact + 1e-6 * max(exact * 1e-9, 1.0)


def test_histogram_is_exact_below_512_and_empty_is_nan():
    h = LogHistogram()
    assert math.isnan(h.quantiles([0.5])[0])
    x = np.arange(512, dtype=np.int64)
    h.add(x)
    assert h.quantiles([0.0, 0.5, 0.99, 1.0]) == list(np.quantile(x, [0.0, 0.5, 0.99, 1.0]))
