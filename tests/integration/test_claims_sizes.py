"""Every claim's verdict is the same at --quick and at full size: a verdict rule that flips with
the run's size judges noise, not the claim."""

import json
import subprocess
import sys

import pytest

from lbsim.report import CLAIMS, RunRecord, evaluate_claims
from lbsim.scenarios import SCENARIOS

NAMES = sorted({n for c in CLAIMS for n in (*c.scenarios, *c.contrasts, *c.related)
                if n in SCENARIOS})


def _verdicts(tmp_path, *flags):
    out = tmp_path / f"out{len(flags)}.json"
    args = [a for n in NAMES for a in ("--scenario", n)]
    r = subprocess.run([sys.executable, "-m", "lbsim.bench", *args, *flags, "--jobs", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr
    runs = {s["name"]: RunRecord(s["name"], s["config"], s["paths"])
            for s in json.loads(out.read_text())["scenarios"]}
    return [row.verdict.split(":")[0] for row in evaluate_claims(runs, SCENARIOS)]


@pytest.mark.slow
def test_each_claim_gets_the_same_verdict_quick_and_full(tmp_path):
    quick, full = _verdicts(tmp_path, "--quick"), _verdicts(tmp_path)
    assert quick == full
    assert quick.count("holds") >= 4        # the claims are measured, not skipped
