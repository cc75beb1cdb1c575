"""Benchmark runner: lbsim against the simpy peer, in one run, each in its own process.

    python benchmarks/run.py [--scenario perf-nodeport perf-direct] [--flows N] [--peer-flows N]
    python benchmarks/run.py --records [--scenario perf-nodeport] [--flows N]
    python benchmarks/run.py --xl [--flows N]

For each scenario it runs lbsim (``--flows`` flows; default the scenario's own) and the simpy
peer (``--peer-flows``, default 100,000: the peer is slow), each in a fresh process so that its
peak RSS is its own, and prints flows per wall second, lbsim / peer, and peak RSS. lbsim's
``wall_s`` is its run's own (the per-flow inputs and the simulation, as ``python -m lbsim.bench``
reports it; ``call_s`` adds the summary and result tables built after it); the peer's is its
whole call. Ratios in one run are what to compare across machines; absolute rates vary with
load. lbsim's time excludes the one-off compilation of its engine (``jit_s``: ~20-40 s the first time on a machine, then loaded
from numba's cache in well under a second), as ``python -m lbsim.bench`` does.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _job(kind: str, name: str, flows: int | None, out, nodes: int | None = None,
         records: str | None = None) -> None:
    import lbsim
    from lbsim import scenarios
    sc = scenarios.get(name)
    if flows:
        sc = sc.replace(**{"workload.flows": flows})
    if records:
        sc = sc.replace(records=records)
    if nodes:   # same pods per node, same total rate
        per = sc.cluster.pods // sc.cluster.nodes
        sc = sc.replace(**{"cluster.nodes": nodes, "cluster.pods": nodes * per})
    jit = 0.0
    if kind == "lbsim":
        # compile (first run on a machine) or load from numba's cache: once per process
        start = time.perf_counter()
        from lbsim.simulation import warm_up
        warm_up()
        jit = time.perf_counter() - start
    start = time.perf_counter()
    if kind == "lbsim":
        # the run's own wall_s, as `python -m lbsim.bench` reports it: the per-flow inputs and the
        # event loop, in this fresh process (page faults included), not the summary's percentiles
        # and result tables built after it (call_s includes them)
        wall = lbsim.run(sc).summary["wall_s"]
        call = time.perf_counter() - start
    else:
        import simpy_peer
        simpy_peer.run(sc)
        wall = call = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB -> MiB on Linux
    out.put({"flows": sc.workload.flows, "wall_s": wall, "call_s": call, "peak_rss_mib": rss,
             "jit_s": jit})


def measure(kind: str, name: str, flows: int | None, nodes: int | None = None,
            records: str | None = None) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_job, args=(kind, name, flows, q, nodes, records))
    p.start()
    res = q.get()
    p.join()
    res["flows_per_wall_s"] = res["flows"] / res["wall_s"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", nargs="+", default=["perf-nodeport", "perf-direct", "perf-scale"])
    ap.add_argument("--flows", type=int, default=None, help="lbsim flows (default: the scenario's)")
    ap.add_argument("--peer-flows", type=int, default=100_000)
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--scaling", action="store_true",
                    help="instead: lbsim's cost against flows (1e5, 1e6, 1e7) and nodes (10, 100, "
                         "1000 at the same rate) on the first scenario")
    ap.add_argument("--xl", action="store_true",
                    help="instead: perf-nodeport, perf-scale-xl and perf-cluster-xl (their own "
                         "flows, or --flows for the two xl ones), flows/s against perf-nodeport's "
                         "and peak RSS, with issue 18's targets")
    ap.add_argument("--records", action="store_true",
                    help='instead: lbsim with records = "full" against "summary" on each scenario '
                         '(the target: full at least 0.5x the summary rate)')
    a = ap.parse_args(argv)
    rows = []
    if a.xl:
        return _xl(a.flows, a.json)
    if a.records:
        print(f"{'scenario':<16} {'records':<8} {'flows':>10} {'wall_s':>8} {'call_s':>7} "
              f"{'flows/s':>12} {'peak MiB':>9} {'full/summary':>12}")
        for name in a.scenario:
            lean = measure("lbsim", name, a.flows, records="summary")
            full = measure("lbsim", name, a.flows, records="full")
            ratio = full["flows_per_wall_s"] / lean["flows_per_wall_s"]
            for rec, r in (("summary", lean), ("full", full)):
                print(f"{name:<16} {rec:<8} {r['flows']:>10,} {r['wall_s']:>8.2f} "
                      f"{r['call_s']:>7.2f} {r['flows_per_wall_s']:>12,.0f} "
                      f"{r['peak_rss_mib']:>9.0f} {(ratio if rec == 'full' else 1.0):>12.3f}",
                      flush=True)
            rows.append({"scenario": name, "summary": lean, "full": full, "ratio": ratio})
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2))
        return 0
    if a.scaling:
        name = a.scenario[0]
        print(f"{'scenario':<16} {'flows':>10} {'nodes':>6} {'wall_s':>8} {'call_s':>7} {'flows/s':>12} "
              f"{'peak MiB':>9}")
        for flows, nodes in [(100_000, None), (1_000_000, None), (10_000_000, None),
                             (1_000_000, 10), (1_000_000, 100), (1_000_000, 1000)]:
            r = measure("lbsim", name, flows, nodes)
            print(f"{name:<16} {flows:>10,} {nodes or '':>6} {r['wall_s']:>8.2f} {r['call_s']:>7.2f} "
                  f"{r['flows_per_wall_s']:>12,.0f} {r['peak_rss_mib']:>9.0f}", flush=True)
            rows.append({"scenario": name, "flows": flows, "nodes": nodes, **r})
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2))
        return 0
    print(f"{'scenario':<16} {'engine':<7} {'flows':>10} {'wall_s':>8} {'call_s':>7} {'flows/s':>12} "
          f"{'peak MiB':>9} {'ratio':>7} {'jit_s':>6}")
    for name in a.scenario:
        peer = measure("peer", name, a.peer_flows)
        ours = measure("lbsim", name, a.flows)
        ratio = ours["flows_per_wall_s"] / peer["flows_per_wall_s"]
        for kind, r in (("simpy", peer), ("lbsim", ours)):
            print(f"{name:<16} {kind:<7} {r['flows']:>10,} {r['wall_s']:>8.2f} {r['call_s']:>7.2f} "
                  f"{r['flows_per_wall_s']:>12,.0f} {r['peak_rss_mib']:>9.0f} "
                  f"{(ratio if kind == 'lbsim' else 1.0):>7.1f} {r['jit_s']:>6.1f}", flush=True)
        rows.append({"scenario": name, "simpy": peer, "lbsim": ours, "ratio": ratio})
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


#: issue 18's targets: (flows/s at least this fraction of perf-nodeport's, peak RSS under MiB)
XL_TARGETS = {"perf-scale-xl": (0.8, 1024), "perf-cluster-xl": (0.5, 2048)}


def _xl(flows: int | None, json_path: str | None) -> int:
    """perf-nodeport and the two xl scenarios in one run, each in a fresh process."""
    print(f"{'scenario':<16} {'flows':>12} {'wall_s':>8} {'flows/s':>12} {'vs nodeport':>11} "
          f"{'peak MiB':>9}  targets (rate, RSS)")
    base = measure("lbsim", "perf-nodeport", None)
    rows = [{"scenario": "perf-nodeport", **base}]
    print(f"{'perf-nodeport':<16} {base['flows']:>12,} {base['wall_s']:>8.2f} "
          f"{base['flows_per_wall_s']:>12,.0f} {1.0:>11.3f} {base['peak_rss_mib']:>9.0f}",
          flush=True)
    for name, (rate, rss) in XL_TARGETS.items():
        r = measure("lbsim", name, flows)
        ratio = r["flows_per_wall_s"] / base["flows_per_wall_s"]
        verdict = (f">= {rate}: {'met' if ratio >= rate else 'not met'}, < {rss} MiB: "
                   f"{'met' if r['peak_rss_mib'] < rss else 'not met'}")
        print(f"{name:<16} {r['flows']:>12,} {r['wall_s']:>8.2f} {r['flows_per_wall_s']:>12,.0f} "
              f"{ratio:>11.3f} {r['peak_rss_mib']:>9.0f}  {verdict}", flush=True)
        rows.append({"scenario": name, **r, "vs_nodeport": ratio})
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
