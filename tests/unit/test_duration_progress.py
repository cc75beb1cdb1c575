"""``workload.duration_s`` (the flows that start within a simulated duration) and the progress
bar of a long run."""

import io
import warnings

import numpy as np
import pytest

import lbsim
from lbsim import Scenario
from lbsim.kernel import NS
from lbsim.progress import RunProgress, wanted
from lbsim.simulation import simulate
from lbsim.workload import draw_workload, with_duration


@pytest.mark.parametrize("q", [1, 3])
def test_duration_counts_the_flows_that_start_within_it(q):
    sc = Scenario().replace(**{"workload.duration_s": 2.5, "workload.rate_per_s": 3000.0,
                               "workload.queries_per_socket": q, "records": "summary"})
    ran = with_duration(sc)
    n = ran.workload.flows
    # the same draws one flow further: that flow's socket starts at or after the duration
    more = draw_workload(ran.replace(**{"workload.flows": n + q}))
    t_sock = more.t0 if q == 1 else np.sort(more.t0)
    assert int(t_sock[n - q if q > 1 else n - 1]) < 2.5 * NS
    assert int(more.t0[-1] if q == 1 else more.t0.max()) - (q - 1) * 1000 >= 2.5 * NS
    # Poisson(rate x duration) sockets: within 4 standard deviations
    sockets, mean = n // q, 3000.0 / q * 2.5
    assert n % q == 0 and abs(sockets - mean) <= 4 * mean ** 0.5
    assert with_duration(ran).workload.flows == n    # counting again finds the same


def test_a_run_by_duration_reports_its_flows_and_warns_about_an_ignored_count():
    sc = Scenario().replace(**{"workload.duration_s": 1.0, "workload.rate_per_s": 500.0,
                               "records": "summary", "workload.flows": 77})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = lbsim.run(sc)
    assert r.summary["flows"] == r.scenario.workload.flows != 77
    assert r.scenario.workload.duration_s == 1.0
    ignored = [str(w.message) for w in caught if "is ignored" in str(w.message)]
    assert ignored == [f"workload.flows = 77 is ignored: workload.duration_s = 1 s sets the "
                       f"run's flows (the {r.summary['flows']:,} that start within it)"]
    again = lbsim.run(r.scenario)                    # the resolved scenario runs the same
    assert again.summary["flows"] == r.summary["flows"]
    assert not [w for w in again.warnings if "is ignored" in w]


@pytest.mark.parametrize("value, message", [
    (-1.0, "must be a finite number >= 0"),
    (float("inf"), "must be a finite number >= 0"),
    (1e30, "must be at most 1.09951e\\+09 s at rate_per_s = 1000"),
])
def test_a_bad_duration_is_refused_by_the_config(value, message):
    with pytest.raises(ValueError, match=f"workload.duration_s = .* is invalid: {message}"):
        Scenario().replace(**{"workload.duration_s": value})


def test_a_duration_no_flow_starts_within_is_refused():
    with pytest.raises(ValueError, match="workload.duration_s = 1e-09 is invalid: no flow "
                                         "starts within it"):
        simulate(Scenario().replace(**{"workload.duration_s": 1e-9}))


def test_a_duration_past_the_ticks_budget_is_refused_before_counting():
    sc = Scenario().replace(**{"workload.duration_s": 1e8, "workload.rate_per_s": 10.0,
                               "cluster.nodes": 100})
    with pytest.raises(ValueError, match="ticks, more than"):
        simulate(sc)


def test_the_progress_bar_shows_flows_and_simulated_time_and_is_silent_when_asked(monkeypatch):
    out = io.StringIO()
    bar = RunProgress(1000, 10.0, file=out)
    bar.bar.delay = 0                 # show at once (a run shows it after 2 s)
    bar(5 * NS, 500)
    bar.bar.refresh()
    bar.close()
    assert "500/1.00k" in out.getvalue() and "5 / ~10 s simulated" in out.getvalue()
    assert wanted(True) and not wanted(False)
    monkeypatch.setenv("LBSIM_PROGRESS", "0")
    assert not wanted(None)


def test_a_run_draws_its_bar_on_stderr_when_asked(capsys, monkeypatch):
    monkeypatch.setattr("lbsim.progress.AFTER_S", 0.0)
    for window in (None, 64):
        lbsim.run(Scenario().replace(**{"workload.flows": 3000, "records": "summary"}),
                  progress=True, stream_window=window)
        err = capsys.readouterr().err
        assert "lbsim:" in err and "/3.00k" in err, err   # the postfix: the test above
    lbsim.run(Scenario().replace(**{"workload.flows": 3000, "records": "summary"}),
              progress=False)
    assert capsys.readouterr().err == ""
