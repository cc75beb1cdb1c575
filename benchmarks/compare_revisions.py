"""Two checkouts of lbsim against each other, run by run, in one session.

    python benchmarks/compare_revisions.py OLD_DIR NEW_DIR [--scenario perf-nodeport] [--runs 5]

Runs ``python -m lbsim.bench --scenario S --jobs 1 --json`` in OLD_DIR and NEW_DIR in turn (old,
new, old, new, ...: each pair sees the same machine load), each with its own checkout first on
``sys.path``, and prints each path's ``flows_per_wall_s`` per run, the ratio new / old pair by
pair and its median. Both checkouts must have compiled their engine once before (a first run
compiles it, ~35 s; the bench excludes that from ``wall_s`` anyway). Make one checkout of an
older revision with ``git worktree add ../lbsim-old REV``. The other figures of the bench's JSON
(everything but the wall times that both revisions report) are compared too: they must be
identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WALL = ("wall_s", "flows_per_wall_s")


def _bench(checkout: Path, scenario: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        subprocess.run([sys.executable, "-m", "lbsim.bench", "--scenario", scenario, "--jobs", "1",
                        "--json", str(out)], cwd=checkout, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads(out.read_text())["scenarios"][0]["paths"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--scenario", default="perf-nodeport")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args(argv)
    ratios: dict[str, list[float]] = {}
    for i in range(a.runs):
        old, new = _bench(a.old.resolve(), a.scenario), _bench(a.new.resolve(), a.scenario)
        for path in old:
            o, n = old[path]["flows_per_wall_s"], new[path]["flows_per_wall_s"]
            ratios.setdefault(path, []).append(n / o)
            common = (set(old[path]) & set(new[path])) - set(WALL)   # metrics both report
            same = all(old[path][k] == new[path][k] for k in common)
            print(f"run {i + 1} {path}: old {o:,.0f} new {n:,.0f} flows/s, new/old {n / o:.3f}, "
                  f"other metrics {'identical' if same else 'DIFFER'}", flush=True)
    for path, r in ratios.items():
        print(f"{a.scenario} {path}: new/old median {statistics.median(r):.3f} "
              f"(min {min(r):.3f}, max {max(r):.3f}, {len(r)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
