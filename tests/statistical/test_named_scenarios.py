"""The named scenarios show the pathology they are named after, on the NodePort path only."""

import pytest

import lbsim
from lbsim import scenarios

pytestmark = pytest.mark.slow


def both(name):
    c = lbsim.compare(scenarios.get(name, quick=True))
    return c.nodeport.summary, c.direct.summary


def test_snat_exhaustion():
    n, d = both("snat-exhaustion")
    assert n["failed_fraction"] > 0.01 and d["failed_fraction"] == 0
    assert n["fail_cause_port_exhaustion"] == n["conntrack_insert_failed"] > 0
    m, _ = both("snat-exhaustion-modern")      # TIME_WAIT eviction: closing connections don't count
    assert m["failed_fraction"] == 0 and m["conntrack_insert_failed"] == 0


def test_conntrack_race_and_what_random_fully_does():
    n, d = both("conntrack-race")
    assert n["conntrack_insert_failed"] > 0 and d["conntrack_insert_failed"] == 0
    assert n["fail_cause_insert_race"] == n["conntrack_insert_failed"]
    assert n["syn_retransmits"] >= n["conntrack_insert_failed"]   # each drop costs a 1 s RTO
    rf, _ = both("conntrack-race-random-fully")
    modern, _ = both("conntrack-race-modern")
    assert rf["conntrack_insert_failed"] < n["conntrack_insert_failed"] / 10
    assert modern["conntrack_insert_failed"] < n["conntrack_insert_failed"] / 10


def test_conntrack_full():
    n, d = both("conntrack-full")
    assert n["fail_cause_table_full"] > 0 and d["fail_cause_table_full"] == 0
    assert n["conntrack_drop"] >= n["fail_cause_table_full"]


def test_dns_race_five_second_delay_on_4x_and_none_on_modern():
    n, d = both("dns-race")
    assert 4.9 < n["response_time_p99_s"] < 5.1 and d["response_time_p99_s"] < 0.1
    assert n["conntrack_insert_failed"] > 0 and n["conntrack_clash_resolve"] == 0
    m, _ = both("dns-race-modern")
    assert m["conntrack_clash_resolve"] > 0 and m["conntrack_drop"] == 0
    assert m["response_time_p99_s"] < 0.1


def full(name):
    c = lbsim.compare(scenarios.get(name))
    return c.nodeport.summary, c.direct.summary


def test_imbalance_local_is_one_and_a_half():
    n, d = full("imbalance-local")
    assert n["pod_load_max_over_mean"] == pytest.approx(1.5, abs=0.05)
    assert d["pod_load_max_over_mean"] == pytest.approx(1.0, abs=0.05)


def test_imbalance_cluster_and_scattered_lb_state():
    n, d = both("imbalance-cluster")
    assert n["pod_load_max_over_mean"] > 1.2 and d["pod_load_max_over_mean"] == 1.0
    n, d = both("lb-state-scattered")
    assert n["pod_conn_max_over_mean"] > d["pod_conn_max_over_mean"]


def test_session_persistence_needs_only_the_lb_on_direct():
    n, d = full("session-persistence")
    assert d["session_persistence_fraction"] >= 0.99
    assert n["session_persistence_fraction"] < 0.5     # kube-proxy draws again: ~1 / 20 pods
    a, _ = full("session-persistence-affinity")
    assert a["session_persistence_fraction"] >= 0.99


def test_source_ip():
    n, d = full("source-ip")
    assert n["source_ip_preserved_fraction"] == 0.0 and d["source_ip_preserved_fraction"] == 1.0
    n, d = full("source-ip-local")
    assert n["source_ip_preserved_fraction"] == 1.0 and d["source_ip_preserved_fraction"] == 1.0
