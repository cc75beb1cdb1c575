"""``python -m lbsim.sweep`` in a subprocess: a tiny sweep into Parquet, the table of the same sweep
in process."""

import subprocess
import sys

import pandas as pd

import lbsim
from tests.shared import BASE, GRID, ROOT
from tests.shared import untimed as _untimed


def test_cli_runs_a_tiny_sweep_into_parquet(tmp_path):
    config = tmp_path / "base.toml"
    config.write_text(BASE.to_toml())
    out = tmp_path / "results.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "lbsim.sweep", "--config", str(config), "--grid", "cluster.nodes=2,3",
         "--grid", "nat.random_fully=true,false", "--replications", "2", "--out", str(out),
         "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr and "16 rows" in proc.stderr and "on process" in proc.stderr
    assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr
    df = pd.read_parquet(out)
    ref = lbsim.sweep(BASE, GRID, replications=2, executor="inprocess", progress=False)
    pd.testing.assert_frame_equal(_untimed(df), _untimed(ref), check_dtype=False)


def test_a_sweep_whose_every_point_fails_exits_nonzero(tmp_path):
    config = tmp_path / "base.toml"
    # least connections: a run that cannot stream (it follows every open connection)
    config.write_text(BASE.replace(**{"lb.algorithm": "lc"}).to_toml())
    out = tmp_path / "results.parquet"
    # a billion flows: the value is valid and the clock holds the run, but no worker of this
    # machine has the memory, so the run fails (its memory check) on every path
    proc = subprocess.run(
        [sys.executable, "-m", "lbsim.sweep", "--config", str(config), "--grid",
         "workload.flows=1000000000", "--out", str(out), "--jobs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every point of the sweep failed") and "workload.flows" in last
    assert out.exists()                     # the table of errors is still written


def test_a_grid_value_the_validator_refuses_stops_the_sweep_before_it_runs(tmp_path):
    out = tmp_path / "results.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "lbsim.sweep", "--grid", "cluster.nodes=2,0", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: grid point 1 (cluster.nodes = 0): cluster.nodes = 0 is invalid: must be an "
        "integer in [1, 16383]"]
    assert not out.exists()
