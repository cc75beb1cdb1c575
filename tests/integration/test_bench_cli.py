"""``python -m lbsim.bench`` in a subprocess: bad input is one ``error:`` line and exit status 2."""

import subprocess
import sys

import pytest


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lbsim.bench", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_bad_jobs_is_one_error_line_and_exit_2(value, tmp_path):
    r = bench("--jobs", value, "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--jobs" in lines[0], r.stderr
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_is_an_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = bench("--quick", "--out", str(f))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot create")


@pytest.mark.parametrize("args,needle", [
    (["--config", "BAD"], "cluster.nodes"),
    (["--scenario", "no-such"], "scenario"),
    (["--batch-flows", "0"], "batch-flows"),
    (["--seed", "x"], "seed"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nnodes = 0\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "lbsim.bench", *args], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in r.stderr
