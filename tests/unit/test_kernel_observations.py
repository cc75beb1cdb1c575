"""What a real 6.18 kernel was seen to do (kernel-facts section 8), reproduced by lbsim."""

import json
from pathlib import Path

import numpy as np
import pytest

import lbsim
from lbsim.kernel import NS, syn_gaps_ns

ONE_PAIR = {"cluster.nodes": 1, "cluster.pods": 1, "pod.service_s": 0.001}


def test_time_wait_eviction_lifts_the_range_over_time_wait_bound():
    """64-port range, short TCP connections at ~19x (range / time_wait): all succeed on modern and
    the node ends with exactly 64 TIME_WAIT entries; the 5.x search (no eviction) fails most."""
    sc = lbsim.Scenario().replace(**ONE_PAIR, **{
        "nat.port_range": [10000, 10063], "workload.rate_per_s": 10.0, "workload.flows": 1500,
        "workload.syn_retries": 0})
    modern = lbsim.run(sc)
    assert modern.summary["failed"] == 0
    assert modern.gauges["entries"].max() == 64
    assert modern.gauges["entries"].iloc[-1] == 64
    old = lbsim.run(sc.replace(**{"nat.kernel": "5.x"}))
    # each port serves one connection per 120 s of TIME_WAIT: over ~150 s at most 2 x 64 get through
    duration = old.flows["arrival_s"].iloc[-1]
    assert old.summary["established"] <= 64 * np.ceil(duration / 120.0)
    assert old.summary["fail_cause_port_exhaustion"] == old.summary["failed"]


def test_the_65th_concurrent_connection_through_64_ports_is_dropped_at_confirm():
    """Every SYN (and retransmission) of the 65th connection is dropped when the node confirms it:
    insert_failed and drop count each packet; clash_resolve and early_drop stay 0; the client gets
    nothing back and sends SYNs at 0, 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s, giving up at 131 s
    (tcp_syn_retries = 6, tcp_syn_linear_timeouts = 4; 6.18 sent them at 0, 1.02, 2.04, 3.07, 4.09,
    5.11, 7.13, 11.39, 19.58, 35.71, 69.24 s and gave up at 134.78 s, its timer wheel firing the
    long timers late)."""
    sc = lbsim.Scenario().replace(**ONE_PAIR, **{
        "nat.port_range": [10000, 10063], "workload.rate_per_s": 100.0, "workload.flows": 65,
        "workload.hold_s": 1000.0})
    r = lbsim.run(sc)
    s = r.summary
    assert s["established"] == 64 and s["failed"] == 1
    assert s["conntrack_insert_failed"] == s["conntrack_drop"] == 11
    assert s["conntrack_clash_resolve"] == 0 and s["conntrack_early_drop"] == 0
    (lost,) = r.flows.index[r.flows["outcome"] == "failed"]
    d = r.drops[r.drops["flow"] == lost]
    sent = r.flows.loc[lost, "arrival_s"]
    assert np.allclose(d["t_s"] - sent, [0, 1, 2, 3, 4, 5, 7, 11, 19, 35, 67],
                       atol=1e-3)


def test_plain_masquerade_keeps_the_client_port_when_free():
    r = lbsim.run(lbsim.Scenario().replace(**{"workload.flows": 2000}))
    f = r.flows
    kept = (f["snat_port"] == f["client_port"]).mean()
    assert kept > 0.99 and (f["source_ip_preserved"] == False).all()  # noqa: E712


def test_with_an_explicit_range_plain_and_random_fully_search_the_same_way():
    sc = lbsim.Scenario().replace(**{"workload.flows": 2000, "nat.port_range": [20000, 29999]})
    plain = lbsim.run(sc).flows["snat_port"]
    fully = lbsim.run(sc.replace(**{"nat.random_fully": True})).flows["snat_port"]
    assert plain.equals(fully)


SYN_SCHEDULE = [json.loads(line) for line in
                (Path(__file__).parent.parent / "data" / "kernel_syn_schedule_6.18.jsonl").open()]


@pytest.mark.parametrize("row", SYN_SCHEDULE, ids=lambda r: f"linear{r['linear']}-retries{r['retries']}")
def test_the_syn_schedule_is_the_kernels(row):
    """benchmarks/kernel_syn_schedule.py on 6.18: when the SYNs left and when connect() gave up.
    The kernel's timers fire late by up to their wheel level's granularity (4 s for a 32 s
    timer), so each time may be later than the model's by 4 % + 20 ms, never earlier."""
    gaps = syn_gaps_ns(NS, row["linear"], row["retries"])
    times = np.cumsum((0,) + gaps) / NS
    model_syns, model_give_up = times[:-1], times[-1]
    assert len(model_syns) == len(row["syns_s"])
    for model, seen in zip([*model_syns, model_give_up], [*row["syns_s"], row["gave_up_s"]]):
        assert model - 0.005 <= seen <= model * 1.04 + 0.02
