"""arrival = "trace": recorded flows replayed as they are (lbsim.trace)."""

import ipaddress
import numpy as np
import pandas as pd
import pytest

import lbsim
from lbsim.trace import read_trace

BASE = {"cluster.nodes": 2, "cluster.pods": 4, "pod.service_s": 0.001}


def _trace(tmp_path, n=500, name="t.csv", **cols):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"time_s": 50.0 + np.cumsum(rng.exponential(0.01, n)),
                       "client_ip": [f"203.0.113.{i}" for i in rng.integers(1, 40, n)],
                       "client_port": rng.integers(32768, 61000, n), "protocol": "tcp",
                       "duration_s": rng.exponential(0.2, n)})
    for k, v in cols.items():
        if v is None:
            del df[k]
        else:
            df[k] = v
    path = tmp_path / name
    (df.to_parquet if name.endswith(".parquet") else lambda p: df.to_csv(p, index=False))(path)
    return df, path


def sc(path, **kw):
    return lbsim.Scenario().replace(**{**BASE, "workload.arrival": "trace",
                                       "workload.trace": str(path), **kw})


def test_the_trace_is_replayed_in_time_order_with_its_clients_ports_and_durations(tmp_path):
    df, path = _trace(tmp_path)
    shuffled = tmp_path / "s.csv"
    df.sample(frac=1, random_state=2).to_csv(shuffled, index=False)
    r = lbsim.run(sc(shuffled))
    f, w = r.flows, r.scenario.workload
    order = df.sort_values("time_s", kind="stable")
    assert w.flows == len(df) and w.clients == df["client_ip"].nunique()
    assert w.rate_per_s == pytest.approx((len(df) - 1) / (order.time_s.iloc[-1] - order.time_s.iloc[0]))
    assert np.allclose(f["arrival_s"], order["time_s"] - order["time_s"].iloc[0], atol=1e-9)
    assert (f["client_port"].to_numpy() == order["client_port"].to_numpy()).all()
    # clients numbered by first appearance
    first = pd.unique(order["client_ip"])
    assert (f["client"].to_numpy() == pd.Index(first).get_indexer(order["client_ip"])).all()
    ok = f["outcome"] == "established"
    held = (f["closed_s"] - f["arrival_s"] - f["response_time_s"])[ok]
    assert np.allclose(held, order["duration_s"].to_numpy()[ok.to_numpy()], atol=1e-6)


def test_csv_and_parquet_give_the_same_run_and_a_streamed_run_the_same_summary(tmp_path):
    df, csv = _trace(tmp_path)
    pq = tmp_path / "t.parquet"
    df.to_parquet(pq)
    a, b = lbsim.run(sc(csv)), lbsim.run(sc(pq))
    assert a.flows.equals(b.flows)
    s = lbsim.run(sc(csv, records="summary"), stream_window=64).summary
    for k in ("established", "conntrack_found", "pod_load_cv", "connect_latency_p99_s"):
        assert s[k] == pytest.approx(a.summary[k], rel=0.02), k


def test_integer_addresses_in_a_csv_are_the_dotted_ones(tmp_path):
    df, dotted = _trace(tmp_path)
    as_int = tmp_path / "i.csv"
    df.assign(client_ip=[int(ipaddress.IPv4Address(a)) for a in df["client_ip"]]).to_csv(
        as_int, index=False)
    assert lbsim.run(sc(as_int)).flows.equals(lbsim.run(sc(dotted)).flows)


def test_without_durations_the_holds_come_from_hold_s(tmp_path):
    _, path = _trace(tmp_path, duration_s=None)
    r = lbsim.run(sc(path, **{"workload.hold_s": 0.5}))
    f = r.flows[r.flows["outcome"] == "established"]
    assert np.allclose(f["closed_s"] - f["arrival_s"] - f["response_time_s"], 0.5, atol=1e-6)


@pytest.mark.parametrize("change,match", [
    ({"client_ip": "999.1.1.1"}, "client_ip row 0"),
    ({"client_port": 0}, "client_port row 0"),
    ({"protocol": ["udp"] + ["tcp"] * 499}, "protocol"),
    ({"time_s": [float("nan")] + [1.0] * 499}, "time_s row 0"),
    ({"duration_s": -1.0}, "duration_s row 0 is negative"),
    ({"client_port": None}, "no column client_port"),
])
def test_a_bad_trace_is_refused_in_one_line_naming_the_file(tmp_path, change, match):
    _, path = _trace(tmp_path, **change)
    with pytest.raises(ValueError, match=match) as e:
        lbsim.run(sc(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_file_protocol_mismatch_and_inconsistent_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        lbsim.run(sc(tmp_path / "nope.csv"))
    _, path = _trace(tmp_path)
    with pytest.raises(ValueError, match="workload.protocol"):
        lbsim.run(sc(path, **{"workload.protocol": "udp"}))
    with pytest.raises(ValueError, match="workload.trace"):
        lbsim.Scenario().replace(**{"workload.trace": str(path)})
    with pytest.raises(ValueError, match="workload.trace"):
        lbsim.Scenario().replace(**{"workload.arrival": "trace"})
    with pytest.raises(ValueError, match="workload.queries_per_socket"):
        sc(path, **{"workload.queries_per_socket": 2})
    (tmp_path / "empty.csv").write_text("time_s,client_ip,client_port,protocol\n")
    with pytest.raises(ValueError, match="no rows"):
        lbsim.run(sc(tmp_path / "empty.csv"))


def test_a_trace_scenario_round_trips_through_toml(tmp_path):
    _, path = _trace(tmp_path)
    s = sc(path)
    assert lbsim.Scenario.from_toml_string(s.to_toml()) == s
    assert read_trace(str(path)).flows == 500
