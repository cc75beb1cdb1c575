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
