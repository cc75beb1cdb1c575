"""lbsim.sweep (grid x replications x paths -> one table), its executors, cache, CLI, and lbsim.plots.

The sweep on a Dask cluster, its command line in a subprocess and the notebooks are in
tests/integration.
"""

import importlib
import inspect
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

import lbsim
from lbsim.metrics import SUMMARY_METRICS
from lbsim.sweep import (CONFIG_COLUMNS, METRIC_COLUMNS, TIMING_COLUMNS, derive_seed, expand_grid,
                         load_cache, main)
from tests.shared import BASE, GRID, small_sweep
from tests.shared import untimed as _untimed

matplotlib.use("Agg")

sweep_module = importlib.import_module("lbsim.sweep")  # lbsim.sweep is the function


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """The small sweep, in process, no cache: what every other way must reproduce."""
    return small_sweep()


def test_lbsim_sweep_is_the_module_and_the_function():
    assert lbsim.sweep is sweep_module and callable(lbsim.sweep)
    assert "sweep" in lbsim.__all__
    assert list(inspect.signature(lbsim.sweep).parameters)[:3] == ["base", "grid", "replications"]
    df = lbsim.sweep(BASE, progress=False, executor="inprocess")
    assert list(df["path"]) == ["nodeport", "direct"] and list(df["point"]) == [0, 0]


# -- grid and seeds ---------------------------------------------------------------------------

def test_grid_is_a_full_factorial_first_field_slowest_or_explicit_points():
    assert expand_grid({"cluster.nodes": [2, 3], "nat.random_fully": [True, False]}) == [
        {"cluster.nodes": 2, "nat.random_fully": True}, {"cluster.nodes": 2, "nat.random_fully": False},
        {"cluster.nodes": 3, "nat.random_fully": True}, {"cluster.nodes": 3, "nat.random_fully": False}]
    assert expand_grid([{"seed": 1}, {"cluster.nodes": 5}]) == [{"seed": 1}, {"cluster.nodes": 5}]
    assert expand_grid(None) == [{}]
    assert expand_grid({"cluster.nodes": np.array([2, 3])}) == [{"cluster.nodes": 2}, {"cluster.nodes": 3}]
    assert type(expand_grid({"cluster.nodes": np.array([2])})[0]["cluster.nodes"]) is int


@pytest.mark.parametrize("grid, message", [
    ({"cluster.node": [1]}, "did you mean 'cluster.nodes'"),
    ({"path": ["direct"]}, "paths="),
    ({"cluster.nodes": 3}, "must be a list"),
    ({"cluster.nodes": "3"}, "must be a list"),
    ({"cluster.nodes": []}, "is empty"),
    ([], "no points"),
    ([{"cluster.nodes": 2}, 3], "grid point 1"),
])
def test_bad_grids_are_refused_before_anything_runs(grid, message):
    with pytest.raises(ValueError, match=message):
        lbsim.sweep(BASE, grid, executor="inprocess", progress=False)


def test_seeds_come_from_base_seed_point_and_replication():
    s = derive_seed(7, 3, 1)
    assert s == derive_seed(7, 3, 1) and 0 <= s < 2**63 and isinstance(s, int)
    assert len({derive_seed(b, p, r) for b in (1, 2) for p in range(5) for r in range(5)}) == 50


# -- the table --------------------------------------------------------------------------------

def test_one_row_per_point_replication_path_with_every_field_and_metric(reference):
    df = reference
    assert len(df) == 4 * 2 * 2
    assert list(df.columns[:4]) == ["point", "replication", "path", "seed"]
    assert set(CONFIG_COLUMNS) <= set(df.columns)
    assert {"cluster.nodes", "nat.random_fully", "workload.flows", "nat.port_range"} <= set(df.columns)
    assert set(SUMMARY_METRICS) <= set(df.columns)
    assert list(df.columns[-2:]) == ["wall_s", "error"]
    assert df["error"].isna().all() and (df["wall_s"] > 0).all()
    keys = list(zip(df["point"], df["replication"], df["path"]))
    assert keys == [(p, r, path) for p in range(4) for r in range(2) for path in ("nodeport", "direct")]
    # config columns: the point's values; lists as JSON text; unset fields None
    assert list(df["cluster.nodes"][::4]) == [2, 2, 3, 3]
    assert list(df["nat.random_fully"][::4]) == [True, False, True, False]
    assert (df["workload.client_port_range"] == "[32768, 60999]").all()
    assert df["nat.port_range"].isna().all()
    # both paths of a (point, replication) share its derived seed
    for (p, r), g in df.groupby(["point", "replication"]):
        assert list(g["seed"]) == [derive_seed(7, p, r)] * 2
    assert df["seed"].nunique() == 8
    # a row is the run of its scenario
    row = df.iloc[5]  # point 1, replication 0, direct
    sc = BASE.replace(**{"cluster.nodes": 2, "nat.random_fully": False, "seed": int(row["seed"]),
                         "path": "direct"})
    summary = lbsim.run(sc).summary
    for m in METRIC_COLUMNS:
        if m not in TIMING_COLUMNS:
            assert row[m] == summary[m] or (math.isnan(row[m]) and math.isnan(summary[m])), m
    assert df[df["path"] == "direct"]["source_ip_preserved_fraction"].eq(1.0).all()


def test_failed_points_are_recorded_and_the_sweep_goes_on(monkeypatch, capsys):
    real_run = sweep_module.run

    def flaky(scenario, **kw):
        if scenario.cluster.nodes == 3 and scenario.path.value == "direct":
            raise RuntimeError("boom")
        return real_run(scenario, **kw)

    monkeypatch.setattr(sweep_module, "run", flaky)
    df = lbsim.sweep(BASE, [{"cluster.nodes": 2}, {"cluster.nodes": 3}],
                     executor="inprocess", progress=True)
    assert "failed=1" in capsys.readouterr().err
    err = df.set_index(["point", "path"])["error"]
    assert err[0, "nodeport"] is None and err[0, "direct"] is None
    assert err[1, "nodeport"] is None and err[1, "direct"] == "RuntimeError: boom"
    failed = df["error"].notna()
    assert df.loc[failed, "failed_fraction"].isna().all()
    assert df.loc[~failed, "failed_fraction"].notna().all()
    assert df.attrs["sweep"]["failed"] == 1


@pytest.mark.parametrize("point, says", [
    ({"cluster.pods": 0}, "grid point 1 (cluster.pods = 0): cluster.pods = 0 is invalid"),
    ({"workload.rate_per_s": 1e-12}, "grid point 1 (workload.rate_per_s = 1e-12): "
                                     "workload.flows / workload.rate_per_s"),
])
def test_a_bad_grid_value_is_refused_before_anything_runs(monkeypatch, point, says):
    def never(*a, **k):
        raise AssertionError("a run started")

    monkeypatch.setattr(sweep_module, "run", never)
    with pytest.raises(ValueError) as e:
        lbsim.sweep(BASE, [{"cluster.nodes": 2}, point], executor="inprocess", progress=False)
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


def test_paths_and_replications_are_checked_and_one_path_can_run():
    df = lbsim.sweep(BASE, None, replications=3, paths=["direct"], executor="inprocess",
                     progress=False)
    assert list(df["path"]) == ["direct"] * 3 and list(df["replication"]) == [0, 1, 2]
    for bad in (["direct", "direct"], ["tunnel"], []):
        with pytest.raises(ValueError, match="paths"):
            lbsim.sweep(BASE, None, paths=bad, executor="inprocess", progress=False)
    with pytest.raises(ValueError, match="replications"):
        lbsim.sweep(BASE, None, replications=0, executor="inprocess", progress=False)
    with pytest.raises(ValueError, match="executor"):
        lbsim.sweep(BASE, None, executor="threads", progress=False)


def test_progress_false_is_silent(capsys):
    lbsim.sweep(BASE, None, executor="inprocess", progress=False)
    assert capsys.readouterr() == ("", "")
    lbsim.sweep(BASE, None, executor="inprocess", progress=True)
    err = capsys.readouterr().err
    assert "1/1" in err and "failed=0" in err


# -- cache and resume -------------------------------------------------------------------------

def test_an_interrupted_sweep_resumes_from_its_cache(tmp_path, monkeypatch, reference):
    cache = tmp_path / "cache"
    real, calls = sweep_module._run_task, []

    def interrupted_after_3(task):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(task["point"])
        return real(task)

    monkeypatch.setattr(sweep_module, "_run_task", interrupted_after_3)
    with pytest.raises(KeyboardInterrupt):
        lbsim.sweep(BASE, GRID, replications=2, executor="inprocess", cache=cache, progress=False)
    monkeypatch.undo()
    files = sorted(cache.glob("*.parquet"))
    assert len(files) == 3 and not list(cache.glob(".*tmp"))
    partial = load_cache(cache)  # every finished point is readable
    assert len(partial) == 6
    pd.testing.assert_frame_equal(_untimed(partial), _untimed(reference.iloc[:6]))
    assert len(pd.read_parquet(files[0])) == 2  # one file per (point, replication), both paths

    resumed = lbsim.sweep(BASE, GRID, replications=2, executor=None, jobs=2, cache=cache,
                          progress=False)
    pd.testing.assert_frame_equal(_untimed(resumed), _untimed(reference))
    assert resumed.attrs["sweep"] == {**resumed.attrs["sweep"], "tasks": 8, "cached": 3,
                                      "computed": 5, "failed": 0}
    # the cached points were read, not run again: their wall times are the first run's
    assert resumed["wall_s"].iloc[:6].tolist() == partial["wall_s"].tolist()
    again = lbsim.sweep(BASE, GRID, replications=2, executor="inprocess", cache=cache,
                        progress=False)
    assert again.attrs["sweep"]["computed"] == 0
    pd.testing.assert_frame_equal(again, resumed)


def test_cache_keys_change_with_the_scenario_paths_and_replications(tmp_path, reference):
    cache = tmp_path / "c"
    lbsim.sweep(BASE, GRID, replications=2, executor="inprocess", cache=cache, progress=False)
    for kw in ({"paths": ["direct"]}, {"replications": 3},
               {"base": BASE.replace(**{"workload.flows": 301})}):
        args = {"base": BASE, "replications": 2, **kw}
        df = lbsim.sweep(args.pop("base"), GRID, executor="inprocess", cache=cache, progress=False,
                         **args)
        expected_cached = 8 if kw == {"replications": 3} else 0  # replications 0, 1 are reused
        assert df.attrs["sweep"]["cached"] == expected_cached, kw


def test_failed_points_are_not_cached(tmp_path):
    # a billion flows under least connections (a run that cannot stream): valid, but no worker
    # here has the memory (the run's own check refuses it)
    df = lbsim.sweep(BASE, [{"workload.flows": 10**9, "lb.algorithm": "lc"}, {}],
                     executor="inprocess", cache=tmp_path, progress=False)
    assert df["error"].dropna().str.startswith("ValueError: this run would need about").all()
    assert df["error"].notna().sum() == 2
    assert len(list(tmp_path.glob("*.parquet"))) == 1


# -- command line -----------------------------------------------------------------------------

def test_cli_quiet_csv_and_values_as_toml_literals(tmp_path, capsys):
    config = tmp_path / "base.toml"
    config.write_text(BASE.to_toml())
    out = tmp_path / "r.csv"
    assert main(["--config", str(config), "--grid", 'kube_proxy.external_traffic_policy="Local",Cluster',
                 "--grid", "nat.port_range=[10000, 10063]", "--grid", "workload.rate_per_s=5e2",
                 "--out", str(out), "--executor", "inprocess", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    df = pd.read_csv(out)
    assert list(df["kube_proxy.external_traffic_policy"]) == ["Local"] * 2 + ["Cluster"] * 2
    assert (df["nat.port_range"] == "[10000, 10063]").all()
    assert (df["workload.rate_per_s"] == 500.0).all()
    assert df["error"].isna().all()


@pytest.mark.parametrize("argv, message", [
    (["--grid", "cluster.nodes"], "must be FIELD=V1,V2"),
    (["--grid", "cluster.node=1"], "unknown grid key 'cluster.node'"),
    (["--grid", "cluster.nodes=1,,2"], "empty value"),
    (["--grid", "cluster.nodes="], "no values"),
    (["--grid", "cluster.nodes=1", "--grid", "cluster.nodes=2"], "given twice"),
    (["--config", "/nonexistent.toml"], "cannot read config"),
    (["--replications", "0"], "--replications"),
    (["--jobs", "0"], "--jobs"),
    (["--replications", "x"], "invalid int value"),
    (["--executor", "threads"], "invalid choice"),
    (["--paths", "nodeport,tunnel"], "paths"),
    (["--scheduler", "tcp://x:1", "--executor", "process"], "--scheduler needs --executor dask"),
])
def test_cli_bad_input_is_one_error_line_and_status_2(argv, message, tmp_path, capsys):
    out = ["--out", str(tmp_path / "r.parquet")] if "--out" not in argv else []
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main([*argv, *out, "--executor", "inprocess", "--quiet"]
                              if "--executor" not in argv else [*argv, *out, "--quiet"]))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_bad_out_is_refused_before_running(tmp_path, capsys):
    for out, message in ((tmp_path / "r.json", "must end in .parquet or .csv"),
                         (tmp_path / "no" / "r.parquet", "does not exist")):
        assert main(["--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err


# -- plots ------------------------------------------------------------------------------------

def test_metric_vs_param_draws_both_paths_with_bands_and_units(reference):
    from matplotlib.axes import Axes

    from lbsim import plots

    ax = plots.metric_vs_param(reference, "cluster.nodes", "response_time_p99_s")
    assert isinstance(ax, Axes)
    assert sorted(line.get_label() for line in ax.get_lines()) == ["direct", "nodeport"]
    assert ax.get_xlabel() == "cluster.nodes" and ax.get_ylabel() == "response_time_p99 (s)"
    assert len(ax.collections) == 2  # one 95 % band per path (2 replications)
    nodeport = next(line for line in ax.get_lines() if line.get_label() == "nodeport")
    assert list(nodeport.get_xdata()) == [2, 3]
    expected = reference[reference["path"] == "nodeport"].groupby("cluster.nodes")[
        "response_time_p99_s"].mean()
    assert np.allclose(nodeport.get_ydata(), expected.to_numpy())
    # a non-numeric parameter is categorical
    ax = plots.metric_vs_param(reference, "nat.random_fully", "flows_per_wall_s")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["False", "True"]
    assert ax.get_ylabel() == "flows_per_wall (1/s)"
    matplotlib.pyplot.close("all")


def test_heatmap_returns_axes_with_one_cell_per_point(reference):
    from matplotlib.axes import Axes

    from lbsim import plots

    ax = plots.heatmap(reference, "cluster.nodes", "nat.random_fully", "pod_load_cv", path="direct")
    assert isinstance(ax, Axes)
    assert ax.images[0].get_array().shape == (2, 2)
    assert len(ax.texts) == 4
    assert ax.get_xlabel() == "cluster.nodes" and ax.get_ylabel() == "nat.random_fully"
    with pytest.raises(ValueError, match="no finished rows"):
        plots.heatmap(reference, "cluster.nodes", "nat.random_fully", "pod_load_cv", path="tunnel")
    with pytest.raises(KeyError):
        plots.heatmap(reference, "cluster.nodes", "nat.random_fully", "no_such_metric")
    matplotlib.pyplot.close("all")


def test_plots_label_units_and_t_quantiles():
    from lbsim.plots import label, t_quantile_975

    assert label("workload.rate_per_s") == "workload.rate (1/s)"
    assert label("wall_s") == "wall (s)"
    assert label("failed_fraction") == "failed_fraction"
    assert t_quantile_975(1) == 12.706 and t_quantile_975(4) == 2.776
    assert abs(t_quantile_975(60) - 2.000) < 1e-3 and abs(t_quantile_975(10**6) - 1.960) < 1e-3
    assert math.isnan(t_quantile_975(0))
