"""The control-plane hook: a change of a node's endpoints at an instant applies to every event from
that instant on, in both engines identically and at any window size."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lbsim import Scenario
from lbsim.kernel import NS, OK
from lbsim.simulation import simulate
from tests.property.test_engines_agree import assert_same

BASE = {"workload.flows": 400, "workload.rate_per_s": 200.0, "cluster.nodes": 2,
        "cluster.pods": 4, "workload.syn_retries": 1}


def _plan(changes):
    """A control plane that applies ``changes`` [(t_s, node, pods)] one after the other."""
    def control(env, plane):
        def run():
            for t, node, pods in changes:
                yield env.timeout(plane.ns(t) - env.now)
                plane.set_endpoints(node, pods)
        env.process(run())
    return control


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 2.5), st.integers(0, 1),
                          st.lists(st.integers(0, 3), max_size=4, unique=True)),
                min_size=1, max_size=4),
       st.sampled_from([1, 3, 64, 4096]), st.sampled_from(["iptables", "nftables"]),
       st.sampled_from(["Cluster", "Local"]), st.integers(0, 2**32))
def test_engines_agree_with_endpoint_changes(changes, batch, mode, policy, seed):
    changes = sorted(changes)
    sc = Scenario().replace(**BASE, seed=seed, **{"kube_proxy.mode": mode,
                                                  "kube_proxy.external_traffic_policy": policy})
    ref = simulate(sc, engine="reference", control=_plan(changes))
    got = simulate(sc, batch_flows=batch, control=_plan(changes))
    assert_same(ref, got)


def test_flows_after_the_change_reach_only_the_new_endpoints():
    sc = Scenario().replace(**BASE)
    r = simulate(sc, batch_flows=7, control=_plan([(1.0, 0, [3])]))
    w = r.workload
    arrive = w.t0 + w.params.d_in
    on0 = (w.backend == 0) & (r.outcome == OK)
    after = on0 & (arrive >= NS + NS // 100)        # well after the change: its CPU is done
    before = on0 & (arrive < NS)
    assert after.sum() > 50 and before.sum() > 50
    assert set(r.pod[after]) == {3}
    assert len(set(r.pod[before])) == 4                # before it: all four pods
    # node 1 keeps all four
    assert len(set(r.pod[(w.backend == 1) & (arrive >= NS) & (r.outcome == OK)])) == 4
    # no endpoint at all: its new flows are dropped as no_local_endpoint
    r2 = simulate(sc, control=_plan([(1.0, 0, [])]))
    assert (r2.outcome[(w.backend == 0) & (arrive >= 2 * NS)] != OK).all()
    assert np.array_equal(r2.outcome[arrive < NS], r.outcome[arrive < NS])


def test_set_endpoints_refuses_what_it_cannot_change():
    sc = Scenario().replace(**BASE)
    for bad, match in (((5, [0]), "node = 5 is invalid"), ((0, [9]), r"pods = \[9\] is invalid")):
        with pytest.raises(ValueError, match=match):
            simulate(sc, control=_plan([(0.5, *bad)]))
    ipvs = sc.replace(**{"kube_proxy.mode": "ipvs"})
    with pytest.raises(ValueError, match="fixes each flow's pod"):
        simulate(ipvs, control=_plan([(0.5, 0, [1])]))
