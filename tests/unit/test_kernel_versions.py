"""``nat.kernel`` as a release: each behaviour lbsim maps switches at the release its commit first
shipped in, and not one release before (lbsim.kernel_versions, docs/config.md's table), in the
mapping and in what a run does."""

import dataclasses
import warnings

import numpy as np
import pytest

import lbsim
from lbsim import kernel_versions as kv
from lbsim.kernel import NS
from lbsim.workload import Params

ONE_PAIR = {"cluster.nodes": 1, "cluster.pods": 1, "pod.service_s": 0.001}
DNS = {  # resolvers sending A and AAAA back to back on one socket to 4 DNS pods (dns-race, quick)
    "workload.protocol": "udp", "workload.source": "pod", "workload.queries_per_socket": 2,
    "workload.query_gap_s": 1e-6, "workload.rate_per_s": 2000.0, "workload.flows": 2000,
    "workload.clients": 400, "cluster.nodes": 4, "cluster.pods": 4, "pod.service_s": 0.001,
}


def _name(r: tuple[int, int]) -> str:
    return f"{r[0]}.{r[1]}"


def _sides(key: str) -> tuple[str, str]:
    """The release before change ``key`` and the release that has it."""
    r = kv._BY_KEY[key].release
    return _name(kv.RELEASES[kv.RELEASES.index(r) - 1]), _name(r)


def _run(kernel: str, **settings):
    sc = lbsim.Scenario().replace(**{"nat.kernel": kernel, **settings})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lbsim.run(sc)


@pytest.mark.parametrize("change", kv.CHANGES, ids=lambda c: c.key)
def test_each_change_switches_its_field_at_its_release_and_not_before(change):
    before, at = (kv.behaviour(k) for k in _sides(change.key))
    assert getattr(before, change.field) != getattr(at, change.field)
    assert change.release in kv.RELEASES and change.subject and change.evidence
    assert change.commit == "" or len(change.commit) == 12


def test_releases_are_every_mainline_release_from_4_9_to_6_18():
    assert kv.RELEASES[0] == (4, 9) and kv.RELEASES[-1] == (6, 18)
    assert (4, 20) in kv.RELEASES and (4, 21) not in kv.RELEASES and (5, 19) in kv.RELEASES
    assert len(kv.RELEASES) == 12 + 20 + 19


def test_the_profiles_are_releases():
    assert kv.behaviour("modern") == kv.behaviour("6.18")
    assert dataclasses.replace(kv.behaviour("6.5"), release=(6, 18)) == kv.behaviour("modern")
    assert kv.behaviour("5.x") == kv.behaviour("5.18")
    assert kv.behaviour("4.x") == kv.behaviour("4.19")
    assert set(kv.PROFILES) == {m.value for m in lbsim.NatKernel}
    assert kv.behaviour("6.4") != kv.behaviour("6.5")


@pytest.mark.parametrize("value", ["5.21", "7.0", "4.8", "3.10", "5", "5.4.0", "05.4", "v5.4",
                                   5.4, 5, None, ""])
def test_a_release_lbsim_does_not_map_is_refused_in_one_line(value):
    with pytest.raises(ValueError, match=r"^nat\.kernel = .* is invalid: must be .*4\.9 to 6\.18"):
        lbsim.Scenario().replace(**{"nat.kernel": value})


def test_a_release_round_trips_through_toml():
    sc = lbsim.Scenario().replace(**{"nat.kernel": "5.4"})
    assert "kernel = \"5.4\"" in sc.to_toml()
    assert lbsim.Scenario.from_toml_string(sc.to_toml()) == sc
    assert lbsim.Scenario.from_toml_string("[nat]\nkernel = '4.x'\n").nat.kernel is lbsim.NatKernel.V4


# -- what each change does to a run, at the releases either side --------------------------------
def test_rover_plain_masquerade_walks_on_from_the_last_port_before_5_0():
    """One pair, a 64-port range apart from the clients' ports, 60 connections each holding its
    port in TIME_WAIT: the rover's first probe is the last port chosen (taken), so each gets the
    next one; 5.0's random start lands on the next port with probability about 1/64 (4 standard
    errors over 59 steps: under 0.08)."""
    before, at = _sides("rover")
    s = {**ONE_PAIR, "nat.port_range": [10000, 10063], "workload.flows": 60,
         "workload.rate_per_s": 5.0}
    steps = {k: np.diff(_run(k, **s).flows["snat_port"].to_numpy()) % 64 for k in (before, at)}
    assert (steps[before] == 1).all()
    assert (steps[at] == 1).mean() < 1 / 64 + 4 * np.sqrt(1 / 64 * 63 / 64 / 59)


def test_capped_search_misses_free_ports_from_5_0():
    """2048 ports, 2048 connections held open: the whole-range walk of 4.20 always finds the
    last free port; 5.0's 248 probes miss some (each search with k free ports misses all of them
    with probability about 0.88^k, so a run misses about 7)."""
    before, at = _sides("capped-search")
    s = {**ONE_PAIR, "nat.port_range": [10000, 12047], "workload.flows": 2048,
         "workload.rate_per_s": 400.0, "workload.hold_s": 3600.0, "pod.workers": 64}
    # (two SYNs on two CPUs may still pick one free port and race at confirm: insert_race)
    assert _run(before, **s).summary["fail_cause_port_exhaustion"] == 0
    assert _run(at, **s).summary["fail_cause_port_exhaustion"] > 0


def test_identical_clash_resolved_from_4_19():
    """A and AAAA on one socket: before 4.19 every clash drops (each NATed); from 4.19 those
    DNATed to the same pod adopt the winner, so fewer drop than insert_failed counts."""
    before, at = _sides("identical-clash")
    b, a = _run(before, **DNS).summary, _run(at, **DNS).summary
    assert b["conntrack_drop"] == b["conntrack_insert_failed"] > 0
    assert 0 < a["conntrack_drop"] < a["conntrack_insert_failed"]


def test_nat_clash_inserts_instead_of_dropping_from_5_6():
    before, at = _sides("nat-clash")
    assert _run(before, **DNS).summary["conntrack_drop"] > 0
    a = _run(at, **DNS).summary
    assert a["conntrack_drop"] == 0 and a["failed"] == 0


def test_what_a_resolved_clash_counts_before_and_from_5_10():
    """Before 5.10 an adopted clash counted insert_failed and a NAT_CLASH insertion nothing;
    from 5.10 both count clash_resolve. 5.9's DNS race: insert_failed = drops + adopted ones,
    clash_resolve 0; 5.10's: insert_failed = drops (0: none dropped), clash_resolve all."""
    before, at = _sides("clash-resolve-stat")
    b, a = _run(before, **DNS).summary, _run(at, **DNS).summary
    assert b["conntrack_insert_failed"] > b["conntrack_drop"] == 0
    assert b["conntrack_clash_resolve"] == 0
    assert a["conntrack_insert_failed"] == a["conntrack_drop"] == 0
    # the same draws: every clash 5.9 adopted or inserted counts once at 5.10
    assert a["conntrack_clash_resolve"] > b["conntrack_insert_failed"]


def test_nat_clash_entries_are_deleted_by_their_reply_until_5_9():
    """5.6-5.8 kill a NAT_CLASH entry at its first reply (a millisecond here), 5.9 keeps it its
    1 s: the table's peak holds the extra second's clash entries at 5.9."""
    before, at = _sides("nat-clash-kept")
    s = {**DNS, "workload.flows": 20000, "workload.clients": 4000}
    b, a = _run(before, **s), _run(at, **s)
    assert b.summary["conntrack_clash_resolve"] == a.summary["conntrack_clash_resolve"] == 0
    assert b.summary["conntrack_entries_inserted"] == a.summary["conntrack_entries_inserted"]
    assert a.gauges["entries"].max() > b.gauges["entries"].max()


def test_insert_is_never_counted_by_a_confirm():
    """Since 4.9 (the oldest release lbsim maps) only ctnetlink counts insert."""
    for kernel in ("4.9", "4.x", "modern"):
        s = _run(kernel, **ONE_PAIR, **{"workload.flows": 300}).summary
        assert s["conntrack_insert"] == 0 and s["conntrack_entries_inserted"] == 300


def test_time_wait_eviction_from_6_5():
    """64 ports at ~5x the TIME_WAIT bound: 6.4 fails most connections, 6.5 evicts and fails none."""
    before, at = _sides("evict-closing")
    s = {**ONE_PAIR, "nat.port_range": [10000, 10063], "workload.rate_per_s": 10.0,
         "workload.flows": 600, "workload.syn_retries": 0, "conntrack.time_wait_s": 30.0}
    assert _run(before, **s).summary["failed_fraction"] > 0.5
    assert _run(at, **s).summary["failed"] == 0


def test_gc_schemes_by_release():
    """Before 5.15 a pass every 16 s (the old incremental scan's full sweep), 5.15-5.17 every
    120 s, from 5.18 autotuned; whichever, the first pass 1 s after start, as the kernel queues
    it; a fixed conntrack.gc_interval_s overrides the release."""
    def params(kernel, gc="auto"):
        return Params.of(lbsim.Scenario().replace(**{"nat.kernel": kernel,
                                                      "conntrack.gc_interval_s": gc}))
    assert (params("5.14").gc_fixed, params("5.15").gc_fixed, params("5.17").gc_fixed,
            params("5.18").gc_fixed) == (16 * NS, 120 * NS, 120 * NS, 0)
    assert {params(k).gc_first for k in ("5.14", "5.15", "5.18")} == {NS}
    assert params("5.4", 5.0).gc_fixed == params("5.4", 5.0).gc_first == 5 * NS


@pytest.mark.parametrize("key", ["gc-one-cycle", "gc-autotune"])
def test_expired_entries_linger_as_long_as_the_release_gc_leaves_them(key):
    """Short UDP entries (1 s) at 100/s for 120 s: the table holds what the GC has not yet
    collected: at most about 100 x (1 + 16) entries (+ 4 sd) with a pass every 16 s; with one
    every 120 s, nearly every entry made after the first pass at 1 s (but those whose reply
    tuple a later flow reused: that lookup frees them); autotuned, passes come every few
    seconds once the table's own entries outweigh the 60 s seed."""
    s = {**ONE_PAIR, "workload.protocol": "udp", "conntrack.udp_s": 1.0,
         "workload.rate_per_s": 100.0, "workload.flows": 12000}
    peak = {k: _run(k, **s).gauges["entries"].max() for k in _sides(key)}
    before, at = _sides(key)
    if key == "gc-one-cycle":
        assert peak[before] < 1700 + 4 * np.sqrt(1700) and peak[at] > 3 * peak[before]
    else:
        assert peak[at] < peak[before] / 2


def test_udp_stream_only_after_2_s_from_its_release():
    """UDP flows answered then held 1 s: before 5.0 the packets after the reply make a stream
    (udp_stream_s, here 60 s); from 5.0, 1 s is not past 2 s and the entry keeps udp_s (5 s):
    about 20 x 61 live entries against 20 x 6."""
    before, at = _sides("udp-stream-2s")
    s = {**ONE_PAIR, "workload.protocol": "udp", "workload.hold_s": 1.0, "conntrack.udp_s": 5.0,
         "conntrack.udp_stream_s": 60.0, "workload.rate_per_s": 20.0, "workload.flows": 2000}
    b = _run(before, **s).gauges["live_entries"].max()
    a = _run(at, **s).gauges["live_entries"].max()
    assert 20 * 55 < b < 20 * 70 and a < 20 * 10


def test_udp_stream_default_by_release():
    before, at = _sides("udp-stream-120s")
    assert lbsim.Scenario().replace(**{"nat.kernel": before}).udp_stream_s == 180.0
    assert lbsim.Scenario().replace(**{"nat.kernel": at}).udp_stream_s == 120.0
    assert lbsim.Scenario().replace(**{"nat.kernel": before,
                                       "conntrack.udp_stream_s": 90.0}).udp_stream_s == 90.0


def test_udp_assured_only_with_the_stream_timeout_from_5_15():
    """A UDP flow answered and held 1 s is ASSURED (safe from early_drop) at its packet after
    the reply before 5.15, only once a stream from 5.15: a full table (512 entries, 30 s UDP
    timeout) early-drops unassured entries to admit every new flow at 5.15; at 5.14 only the
    few caught in the millisecond before their reply can go, and new flows find it full."""
    before, at = _sides("udp-assured-stream")
    s = {**ONE_PAIR, "workload.protocol": "udp", "workload.hold_s": 1.0, "conntrack.max": 512,
         "conntrack.buckets": 64, "workload.rate_per_s": 100.0, "workload.flows": 3000}
    b, a = _run(before, **s).summary, _run(at, **s).summary
    assert b["fail_cause_table_full"] > 0 and b["conntrack_early_drop"] < b["fail_cause_table_full"]
    assert a["fail_cause_table_full"] == 0 and a["conntrack_early_drop"] > 0


def test_the_dns_race_on_5_4_and_5_10():
    """dns-race (quick): on 5.4 a clashing A/AAAA pair DNATed to the same one of the 4 pods is
    adopted and one DNATed to another pod is dropped, so drops / insert_failed is 3/4 (binomial,
    4 standard errors) and the resolver waits its 5 s; on 5.10 NAT_CLASH inserts the loser and
    nothing drops, every clash counted in clash_resolve."""
    sc = lbsim.scenarios.get("dns-race", quick=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = lbsim.run(sc.replace(**{"nat.kernel": "5.4"})).summary
        new = lbsim.run(sc.replace(**{"nat.kernel": "5.10"})).summary
    n, k = old["conntrack_insert_failed"], old["conntrack_drop"]
    assert n > 100 and abs(k / n - 0.75) <= 4 * np.sqrt(0.75 * 0.25 / n)
    assert old["conntrack_clash_resolve"] == 0 and old["fail_cause_insert_race"] == k
    assert new["conntrack_drop"] == new["conntrack_insert_failed"] == 0
    assert new["conntrack_clash_resolve"] > 0


def test_the_old_gc_is_flagged_where_the_table_fills():
    s = {**ONE_PAIR, "workload.protocol": "udp", "conntrack.max": 256, "conntrack.buckets": 64,
         "workload.rate_per_s": 100.0, "workload.flows": 2000}
    says = lambda k: any("scanned 1/128" in w for w in _run(k, **s).warnings)  # noqa: E731
    assert says("5.14") and not says("5.15")
    assert not any("scanned 1/128" in w for w in _run("5.14", **ONE_PAIR).warnings)


def test_docs_config_md_has_the_table_the_code_has():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    assert kv.markdown_table() in text
