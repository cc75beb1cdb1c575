"""Profile the compiled engine's loop with Linux ``perf``, by function.

    perf record -e cpu-clock -o perf.data python benchmarks/profile_jit.py [--flows N] [--scenario S]
    perf report -i perf.data --sort sym

numba's machine code has no symbols ``perf`` can read, so this script compiles the engine afresh
(into a temporary cache directory: numba keeps no symbol table for code it loads from its cache)
and writes ``/tmp/perf-<pid>.map``, the map of JIT code that ``perf report`` reads, before it runs
the scenario. Functions numba or LLVM inlined are counted in their caller. The compile takes
~15-40 s and is in the profile too: look at the lbsim functions only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_perf_map() -> int:
    """Map every function in the compiled loop's code library; returns how many."""
    from lbsim.compiled.loop import advance
    names = {}
    for cres in advance.overloads.values():
        lib = cres.library
        for fn in lib._final_module.functions:
            if not fn.is_declaration:
                addr = lib.get_pointer_to_function(fn.name)
                if addr:
                    names[addr] = fn.name
    items = sorted(names.items())
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
        for i, (addr, name) in enumerate(items):
            size = items[i + 1][0] - addr if i + 1 < len(items) else 0x10000
            short = name.split("compiled", 1)[-1][:60]
            f.write(f"{addr:x} {size:x} {short}\n")
    return len(items)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="perf-nodeport")
    ap.add_argument("--flows", type=int, default=2_000_000)
    a = ap.parse_args(argv)
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="lbsim-profile-")
    import lbsim
    from lbsim import scenarios
    from lbsim.simulation import warm_up
    warm_up()
    print(f"mapped {write_perf_map()} functions", file=sys.stderr)
    sc = scenarios.get(a.scenario).replace(**{"workload.flows": a.flows, "path": "nodeport"})
    start = time.perf_counter()
    r = lbsim.run(sc)
    print(f"{a.scenario}: {a.flows:,} flows, wall_s {r.summary['wall_s']:.2f} "
          f"(call {time.perf_counter() - start:.2f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
