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
    config.write_text(BASE.to_toml())
    out = tmp_path / "results.parquet"
    # every point asks for more pods than tuples can address: each run fails, none raises
    proc = subprocess.run(
        [sys.executable, "-m", "lbsim.sweep", "--config", str(config), "--grid",
         "workload.flows=1099511627776", "--out", str(out), "--jobs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every point of the sweep failed") and "workload.flows" in last
    assert out.exists()                     # the table of errors is still written
