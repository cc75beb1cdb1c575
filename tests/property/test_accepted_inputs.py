"""Every value the validator accepts either runs or is refused up front with its own error.

Hypothesis draws scenarios across every field's accepted range, extremes included
(tests/property/accepted.py). Each one must either be refused by the validator or by the run's
up-front checks (a one-line ``ValueError`` naming a field, before anything is allocated), or run
to the end with outcomes that add up: no numpy error, no overflow, no other exception. A hang
is caught by faulthandler, which dumps every thread's stack and ends the process.
"""

from __future__ import annotations

import faulthandler
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings

import lbsim
from lbsim.budget import check_clock, check_memory, horizon_s
from lbsim.config import DataPath
from lbsim.config.dynamics import pods_ever
from lbsim.control.cluster import check_events

from tests.property.accepted import build, planted, scenarios

#: a run that takes longer than this is a hang, not a slow run (the slowest drawn ones take
#: seconds): faulthandler then prints where it is stuck and exits
HANG_S = 300

FIELDS = ("workload", "lb", "cluster", "pod", "kube_proxy", "nat", "conntrack", "network",
          "lifecycle", "deployment", "endpoints", "cloud", "events", "path", "seed", "records",
          "this run would need", "the run spans")


def _refused(e: ValueError) -> bool:
    """The validator's own error: one line naming a field (or the run's budget)."""
    msg = str(e)
    return "\n" not in msg and any(f in msg for f in FIELDS)


def _run(data: dict) -> lbsim.Result | None:
    try:
        sc = build(data)
        if sc.events:
            check_events(sc)
        check_clock(sc)
        check_memory(sc)
    except ValueError as e:
        assert _refused(e), f"not a validator's error: {e!r}"
        return None
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise"):
            warnings.simplefilter("ignore", RuntimeWarning)    # the run's own caveats
            return lbsim.run(sc)
    finally:
        faulthandler.cancel_dump_traceback_later()


def _check(res: lbsim.Result) -> None:
    s, sc = res.summary, res.scenario
    assert s["flows"] == sc.workload.flows
    assert s["established"] + s["failed"] == s["flows"]
    assert 0 <= s["failed_fraction"] <= 1
    assert s["syn_retransmits"] >= 0
    for k in ("connect_latency_p50_s", "connect_latency_p99_s", "response_time_p99_s"):
        assert np.isnan(s[k]) or 0 <= s[k] < 2 * horizon_s(sc) + 1e9, (k, s[k])
    if sc.records == "full":
        assert len(res.flows) == sc.workload.flows
        pods = pods_ever(sc.cluster.pods, sc.events)      # rollouts and scale outs add pods
        assert res.flows["pod"].between(-1, pods - 1).all()
    if sc.path is DataPath.DIRECT:
        assert s["conntrack_insert"] == 0


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.filter_too_much])
@given(planted())
def test_accepted_scenarios_run_or_are_refused(data: dict) -> None:
    res = _run(data)
    if res is not None:
        _check(res)


@settings(max_examples=100, suppress_health_check=[HealthCheck.filter_too_much])
@given(scenarios())
def test_accepted_values_build_and_round_trip(data: dict) -> None:
    """Every drawn scenario is accepted and survives TOML unchanged (or is refused in one line)."""
    try:
        sc = build(data)
    except ValueError as e:
        assert _refused(e), repr(e)
        return
    assert lbsim.Scenario.from_toml_string(sc.to_toml()) == sc
