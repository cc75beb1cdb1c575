"""lbsim against this machine's own kernel (lbsim.testbed): every experiment of
lbsim.testbed.experiments must agree on its required metrics within 4 standard deviations of lbsim's
replicas (exactly where lbsim is deterministic), and leave nothing behind.

Root only. They skip where the machine cannot run the testbed, except where
LBSIM_TESTBED_REQUIRED=1 (.ci/run sets it): then they fail.
"""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lbsim
from lbsim.testbed import compare_kernel, netns_list, unavailable
from lbsim.testbed.experiments import EXPERIMENTS
from lbsim.testbed.netns import PREFIX, sweep_stale

pytestmark = pytest.mark.slow


def _require_testbed():
    # The skip is the machine's, not a missing feature: the testbed needs root, iproute2,
    # iptables and nft to build namespaces and load rules. Where they are missing the kernel
    # cannot be asked; .ci/run sets LBSIM_TESTBED_REQUIRED=1, which makes that a failure.
    why = unavailable("iptables-restore") or unavailable("nft")
    if why:
        if os.environ.get("LBSIM_TESTBED_REQUIRED") == "1":
            pytest.fail(f"LBSIM_TESTBED_REQUIRED=1 but {why}")
        pytest.skip(why)


@pytest.fixture(autouse=True)
def _testbed():
    _require_testbed()
    yield
    assert not [n for n in netns_list() if n.startswith(f"{PREFIX}{os.getpid()}-")]


@pytest.mark.parametrize("name", [n for n, e in EXPERIMENTS.items() if e.ci])
def test_kernel_and_lbsim_agree(name, tmp_path):
    e = EXPERIMENTS[name]
    c = compare_kernel(e.scenario_in(tmp_path), replicas=40)
    mean = c.lbsim_mean()
    bad = {m: (c.kernel.summary[m], round(mean[m], 4), round(c.z[m], 2))
           for m in e.required if c.verdicts[m] != "agree"}
    assert not bad, f"{name}: metric: (kernel, lbsim mean, z) {bad}"
    assert c.kernel.summary["flows"] == c.scenario.workload.flows


def _cli(tmp_path, **extra):
    sc = EXPERIMENTS["udp-exhaustion"].scenario.replace(**extra)
    cfg = tmp_path / "x.toml"
    cfg.write_text(sc.to_toml())
    return subprocess.Popen([sys.executable, "-m", "lbsim.testbed", "--config", str(cfg),
                             "--json", str(tmp_path / "out.json"), "--replicas", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ours(pid):
    return [n for n in netns_list() if n.startswith(f"{PREFIX}{pid}-")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_namespace_or_process(tmp_path, sig):
    p = _cli(tmp_path, **{"workload.flows": 2000})
    deadline = time.monotonic() + 60
    while not _ours(p.pid) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert _ours(p.pid), "the run never built its namespaces"
    children = []
    while not children and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)      # the replay process (ip netns exec replaced by python)
        children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                  text=True).stdout.split()
    assert children, "the run never started its replay"
    time.sleep(0.5)
    p.send_signal(sig)
    p.communicate(timeout=30)
    assert p.returncode != 0
    assert not _ours(p.pid)
    time.sleep(0.2)
    assert not [c for c in children if Path(f"/proc/{c}").exists()]


def test_namespaces_of_a_killed_run_are_swept_by_the_next(tmp_path):
    p = _cli(tmp_path, **{"workload.flows": 2000})
    deadline = time.monotonic() + 60
    while not _ours(p.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    p.kill()                   # SIGKILL: nothing runs in the process
    p.wait()
    assert _ours(p.pid)
    swept = sweep_stale()
    assert set(_ours(p.pid)) == set() and swept


def test_the_cli_prints_both_columns_and_writes_the_json(tmp_path):
    p = _cli(tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "kernel" in out and "lbsim" in out and "conntrack_insert_failed" in out
    import json
    doc = json.loads(Path(tmp_path / "out.json").read_text())
    assert doc["lbsim_version"] == lbsim.__version__ and doc["kernel"] == os.uname().release
    (s,) = doc["scenarios"]
    assert s["name"] == "x" and set(s["paths"]) == {"nodeport"}
    path = s["paths"]["nodeport"]
    assert set(path) >= {"kernel", "lbsim", "verdicts"}
    assert set(path["verdicts"].values()) <= {"agree", "differ", "not comparable"}
    assert path["verdicts"]["connect_latency_p99_s"] == "not comparable"
    assert path["kernel"]["flows"] == 400


def _measure(kind, pairs, seed):
    # a module fixture is made before the autouse one runs: it asks for the testbed itself
    _require_testbed()
    from lbsim.testbed.race import measure_race_window
    return measure_race_window(pairs, 40e-6, kind=kind, seed=seed)


@pytest.fixture(scope="module")
def race():
    # two clients, one source port, two pinned CPUs (lbsim.testbed.race): 3000 pairs, ~16 s
    return _measure("same_port", 3000, 1)


def near_beat_controls(p):
    # pairs within 10 us of each other clash far more often than controls 400 us apart, which
    # cannot overlap (4 binomial standard errors)
    near = p[~p["control"] & (p["offset_s"].abs() < 10e-6)]["clashed"]
    far = p[p["control"]]["clashed"]
    q = far.mean()
    se = (max(q, 1 / len(far)) * (1 - q) / len(near)) ** 0.5
    assert near.mean() - q > 4 * se, (near.mean(), q)


def test_same_port_pairs_race_only_within_microseconds(race):
    # The kernel's own accounting is exact: a clash drops one datagram and counts it once in
    # insert_failed and drop; never both of a pair.
    rw = race
    p = rw.pairs
    lost = int(p["first_lost"].sum() + p["second_lost"].sum())
    assert not (p["first_lost"] & p["second_lost"]).any()
    assert rw.counters["insert_failed"] == rw.counters["drop"] == lost
    near_beat_controls(p)


def predicts(rw):
    # Out of sample: the race model is fitted to the even pairs (window, jitter, the senders'
    # shift); lbsim runs it (pinned pairs, the window as packet_time_s, the jitter as
    # packet_jitter_s) at each odd pair's offset and must predict the odd pairs' clashes within
    # 4 standard errors: the odd pairs' binomial variance, lbsim's own estimate's (m pairs per
    # 1 us offset bin) and the fit's (its rate is known to 1 / sqrt(the clashes it saw)).
    from lbsim.testbed.race import fit_window, lbsim_clashes
    near = rw.pairs[~rw.pairs["control"]]
    even, odd = near.iloc[0::2], near.iloc[1::2]
    fit = fit_window(even["offset_s"].to_numpy(), even["clashed"].to_numpy())
    m, fitted = 2000, max(int(even["clashed"].sum()), 1)
    offset, clashed = odd["offset_s"].to_numpy(), odd["clashed"].to_numpy()
    p = lbsim_clashes(fit, offset, pairs=m, kind=rw.kind)
    lag = np.round(np.abs(offset + fit.shift_s) / 1e-6)

    def check(keep):
        e, seen = p[keep].sum(), int(clashed[keep].sum())
        _, first, n = np.unique(lag[keep], return_index=True, return_counts=True)
        pb = p[keep][first]
        var = (p[keep] * (1 - p[keep])).sum() + (n ** 2 * pb * (1 - pb) / m).sum() \
            + e ** 2 / fitted
        assert abs(seen - e) <= 4 * var ** 0.5, (seen, e, var ** 0.5, fit)

    check(np.ones(offset.size, bool))
    check(lag < 5)                       # where the race lives: within 5 us of the centre


def test_lbsim_predicts_the_kernels_same_port_race(race):
    predicts(race)


@pytest.fixture(scope="module")
def twins():
    # identical tuples: two sockets of one client on one port (SO_REUSEPORT), 2000 pairs, ~12 s
    return _measure("same_tuple", 2000, 2)


def test_lbsim_predicts_the_kernels_identical_tuple_race(twins):
    predicts(twins)


def test_identical_tuples_are_merged_within_the_lookup_to_confirm_window(twins):
    # Two sockets of one client on one port (SO_REUSEPORT), two pinned CPUs: the later confirm
    # finds its twin's entry, with the same NAT, and 6.x merges it (clash_resolve): nothing is
    # lost, nothing counts as insert_failed, and the clashes the node counted between pairs add
    # up to its total.
    rw = twins
    p = rw.pairs
    assert not (p["first_lost"] | p["second_lost"]).any()
    assert rw.counters["insert_failed"] == rw.counters["drop"] == 0
    assert rw.counters["clashres"] >= int(p["clashed"].sum()) > 0
    near_beat_controls(p)


def test_the_cli_measures_a_race_window_and_refuses_bad_pairs(tmp_path):
    out = tmp_path / "race.json"
    r = subprocess.run([sys.executable, "-m", "lbsim.testbed", "--race", "same_port", "--pairs",
                        "600", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "window" in r.stdout and "packet_jitter_s" in r.stdout
    import json
    race = json.loads(out.read_text())["race"]
    assert race["kind"] == "same_port" and race["near_pairs"] + race["controls"] == 600
    assert race["counters"]["insert_failed"] == race["counters"]["drop"]
    bad = subprocess.run([sys.executable, "-m", "lbsim.testbed", "--race", "same_tuple",
                          "--pairs", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "pairs = 0" in bad.stderr


# chi-square critical value at alpha = 0.001 (upper tail), 7 degrees of freedom
_CHI2_999_7 = 24.322


def test_this_kernels_connect_walks_ports_as_lbsims_clients_do():
    from lbsim.client_ports import PortWalk
    from lbsim.kernel import CONNECT_JITTER
    from lbsim.testbed.connect import measure_connect_ports
    # connections reset at once (nothing held): every step 2..16 ports, uniformly, all ports of
    # the range's low parity
    lo, hi = 32768, 60999
    ports = measure_connect_ports(2001)
    assert (ports >= lo).all() and ((ports - lo) % 2 == 0).all()
    steps = np.bincount(np.diff(ports) % (hi + 1 - lo) // 2 - 1, minlength=CONNECT_JITTER)
    assert steps.size == CONNECT_JITTER and steps.sum() == 2000
    e = 2000 / CONNECT_JITTER
    assert ((steps - e) ** 2 / e).sum() < _CHI2_999_7, steps
    # every connection held, ten ports: the five even ones first, then the odd, then
    # EADDRNOTAVAIL; and lbsim's walk the same, for any perturbation
    kernel = measure_connect_ports(12, (40000, 40009), keep_open=True)
    for key in range(20):
        walk = PortWalk((40000, 40009), True, 1, np.uint64(key))
        t = np.arange(12, dtype=np.int64)
        ours = walk.open(np.zeros(12, np.int64), t, np.full(12, 10**15), t)
        for got in (kernel, ours):
            assert sorted(got[:5]) == [40000, 40002, 40004, 40006, 40008], got
            assert sorted(got[5:10]) == [40001, 40003, 40005, 40007, 40009], got
            assert (got[10:] < 0).all(), got
    assert (kernel[10:] == -errno.EADDRNOTAVAIL).all()
