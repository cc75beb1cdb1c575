"""What the testbed builds and refuses, without root: lbsim.testbed.plan."""

import pytest

import lbsim
from lbsim.testbed import refusal, verdict
from lbsim.testbed.plan import kube_proxy_rules, plan, table_refusal
import numpy as np

SMALL = {"cluster.nodes": 2, "cluster.pods": 3, "workload.flows": 50}


def sc(**kw):
    return lbsim.Scenario().replace(**{**SMALL, **kw})


@pytest.mark.parametrize("field,value", [
    ("kube_proxy.mode", "ipvs"), ("lb.algorithm", "lc"), ("nat.kernel", "5.x"),
    ("conntrack.gc_interval_s", 5.0), ("workload.syn_rto_s", 3.0), ("workload.source", "pod"),
    ("workload.queries_per_socket", 2), ("cluster.nodes", 9), ("workload.syn_retries", 0),
    ("conntrack.udp_s", 2.5), ("kube_proxy.session_affinity", "ClientIP"),
    ("workload.pairs", "same_port"),
])
def test_what_the_kernel_cannot_run_is_refused_naming_the_field(field, value):
    extra = {"cluster.pods": 9} if field == "cluster.nodes" else {}
    why = refusal(sc(**{field: value, **extra}))
    assert why is not None and why.startswith(f"{field.split('.')[0]}") and "\n" not in why
    assert str(value) in why or repr(value) in why
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        plan(sc(**{field: value, **extra}))


def test_the_default_scenario_shape_is_accepted_and_its_replay_time_bounded():
    assert refusal(sc()) is None
    with pytest.raises(ValueError, match="real time"):
        plan(sc(**{"workload.flows": 100_000, "workload.rate_per_s": 10.0}))


def test_a_table_the_run_could_fill_is_refused_unless_it_is_the_hosts():
    s = sc(**{"conntrack.max": 10})
    assert "conntrack.max = 10" in table_refusal(s, 262144)
    assert table_refusal(sc(**{"conntrack.max": 262144}), 262144) is None
    assert table_refusal(sc(**{"conntrack.max": 50 * 11}), 262144) is None   # flows x attempts
    # a host table smaller than the scenario's, which the run could fill: refused
    big = sc(**{"workload.flows": 5000})
    assert table_refusal(big, 1000) is not None and table_refusal(big, 262144) is None


def test_iptables_rules_are_kube_proxys_cascade_and_masquerade():
    s = sc(**{"nat.random_fully": True, "nat.port_range": [20000, 20063]})
    text = kube_proxy_rules(s, 0, np.arange(3))
    assert "--probability 0.33333333333" in text and "--probability 0.50000000000" in text
    assert text.count("-j DNAT") == 3 and "KUBE-MARK-MASQ" in text
    assert "MASQUERADE --to-ports 20000-20063 --random-fully" in text
    local = kube_proxy_rules(s.replace(**{"kube_proxy.external_traffic_policy": "Local"}), 0,
                             np.arange(0))
    assert "--dport 30080 -j DROP" in local and "-A KUBE-EXT -j KUBE-MARK-MASQ" not in local
    assert local.index("*filter") > local.index("*nat")


def test_nftables_rules_use_numgen_and_masquerade_fully_random():
    s = sc(**{"kube_proxy.mode": "nftables", "nat.random_fully": True})
    text = kube_proxy_rules(s, 1, np.arange(3))
    assert "numgen random mod 3 vmap" in text and "masquerade fully-random" in text
    ranged = kube_proxy_rules(s.replace(**{"nat.port_range": [20000, 20063]}), 1, np.arange(3))
    assert "meta l4proto tcp masquerade to :20000-20063 fully-random" in ranged


def test_the_plan_replays_lbsims_own_draws():
    p = plan(sc())
    r = lbsim.run(sc())
    assert np.array_equal(p.workload.t0 / 1e9, r.flows["arrival_s"].to_numpy())
    assert np.array_equal(p.workload.backend, r.flows["node"].to_numpy())


def test_verdict_is_a_prediction_interval_and_exact_for_a_constant():
    assert verdict(5.0, [5.0] * 10) == ("agree", 0.0)
    assert verdict(5.0, [4.0] * 10)[0] == "differ"
    vals = [10.0, 12.0] * 10                     # sd 1.026, interval +- 4.2
    assert verdict(15.0, vals)[0] == "agree" and verdict(16.0, vals)[0] == "differ"
    assert verdict(float("nan"), [float("nan")] * 3)[0] == "agree"
    assert verdict(1.0, [float("nan")] * 3)[0] == "differ"
