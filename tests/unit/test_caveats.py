"""Warnings that keep a run honest: each fires where its condition holds and not elsewhere."""

import warnings

import pytest

import lbsim

OK = lbsim.Scenario().replace(**{
    "workload.flows": 3000, "workload.rate_per_s": 100.0, "cluster.nodes": 2, "cluster.pods": 10,
    "conntrack.time_wait_s": 1.0})


def _warnings(sc):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = lbsim.run(sc)
    issued = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert issued == list(r.warnings)
    return r.warnings


def test_a_sound_run_has_none():
    assert _warnings(OK) == ()
    assert _warnings(OK.replace(path="direct")) == ()


@pytest.mark.parametrize("changes, says", [
    ({"conntrack.time_wait_s": 120.0}, "shorter than the 120 s a conntrack entry"),
    ({"workload.protocol": "udp", "conntrack.udp_s": 60.0}, "hold + the UDP timeout"),
    ({"pod.service_s": 1.0, "pod.workers": 2}, "the pods are overloaded"),
    ({"lb.algorithm": "maglev", "lb.maglev_table_size": 7, "cluster.nodes": 9, "cluster.pods": 18},
     "at most 7 of them get traffic"),
    ({"lb.weights": "local_pods"}, "lb.weights = 'local_pods' is ignored"),
    ({"kube_proxy.mode": "ipvs", "kube_proxy.session_affinity": "ClientIP"}, "not modelled"),
    ({"kube_proxy.mode": "cilium", "kube_proxy.cilium_algorithm": "maglev",
      "kube_proxy.cilium_maglev_table_size": 7}, "smaller than the 10 pods"),
])
def test_each_caveat_fires_on_its_condition(changes, says):
    got = _warnings(OK.replace(**changes))
    assert any(says in w for w in got), got


def test_weights_that_are_read_do_not_warn():
    assert _warnings(OK.replace(**{"lb.algorithm": "wrr", "lb.weights": "local_pods"})) == ()


def test_the_direct_path_has_no_table_to_fill():
    assert _warnings(OK.replace(path="direct", **{"conntrack.time_wait_s": 120.0})) == ()


def test_events_the_flows_never_see_and_an_unfinished_rollout_warn():
    """OK spans ~30 s: an event at 100 s changes nothing measured; a rollout whose steps take
    longer than the run leaves rollout_duration_s NaN; one that ends within it says nothing."""
    direct = OK.replace(path="direct")
    late = _warnings(direct.replace(events=[{"at_s": 100.0, "kind": "rollout"}]))
    assert any("events[0] (rollout at 100 s) comes after the last arrival" in w for w in late)
    slow = _warnings(direct.replace(**{"cloud.registration_s": 60.0,
                                       "deployment.readiness_gate": True},
                                    events=[{"at_s": 1.0, "kind": "rollout"}]))
    assert any("the rollout had not ended" in w for w in slow), slow
    fast = direct.replace(**{"lifecycle.startup_s": 0.1, "lifecycle.readiness_period_s": 0.1,
                             "deployment.max_surge": "100%"},
                          events=[{"at_s": 1.0, "kind": "rollout"}])
    assert _warnings(fast) == ()
    assert lbsim.run(fast).summary["rollout_duration_s"] < 1.0
