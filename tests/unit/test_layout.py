"""The pipeline's import direction: every module imports only from its own stage or below, and no
module is in an import circle.

Every ``from .x import`` / ``from . import x`` of lbsim's modules is read from the source (imports
inside functions included), not from a running interpreter.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lbsim"

#: the pipeline's modules above the simulation, and the lbsim modules each may not import
PIPELINE = {
    "lbsim.formatting": None,  # none at all
    "lbsim.runner": {"lbsim.sweep", "lbsim.bench", "lbsim.report",
                     "lbsim.scenario_run", "lbsim.figures", "lbsim.scenarios"},
    "lbsim.figures": {"lbsim.report", "lbsim.scenario_run", "lbsim.bench", "lbsim.runner"},
    "lbsim.scenario_run": {"lbsim.report", "lbsim.bench", "lbsim.runner", "lbsim.sweep"},
    "lbsim.report": {"lbsim.figures", "lbsim.simulation", "lbsim.bench", "lbsim.runner",
                     "lbsim.sweep"},
    "lbsim.sweep": {"lbsim.bench", "lbsim.report", "lbsim.figures", "lbsim.scenario_run"},
    "lbsim.bench": {"lbsim.sweep"},
    "lbsim.plots": {"lbsim.sweep", "lbsim.bench", "lbsim.report", "lbsim.figures"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lbsim modules ``name`` imports with relative imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        target = f"{base}.{node.module}" if node.module else base
        out.add(target)
        out |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; a subpackage's module also imports its package (which
    Python runs first), but lbsim's own __init__ is left out of that: every module would."""
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    for m in mods:
        parent = m.rpartition(".")[0]
        if parent in mods and parent != "lbsim":
            graph[m].add(parent)
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in graph[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _of(module: str, package: str) -> bool:
    """``module`` is ``package`` or one of its submodules (lbsim.report.claims of lbsim.report)."""
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_the_known_edges():
    g = _graph()
    assert "lbsim.runner" in g["lbsim.bench"] and "lbsim.runner" in g["lbsim.sweep"]
    assert g["lbsim.runner"] == {"lbsim.simulation"}  # the engine's warm-up, imported when called
    assert "lbsim.figures" in g["lbsim.scenario_run"]  # imported when drawing
    assert "lbsim.formatting" in g["lbsim.figures"]
    assert "lbsim.formatting" in g["lbsim.report.claims"]
    assert "lbsim.report" in g["lbsim.report.claims"]  # its package's __init__ runs first


@pytest.mark.parametrize("package", sorted(PIPELINE))
def test_no_module_of_the_pipeline_imports_upward_or_in_a_circle(package):
    g = _graph()
    own = {m for m in g if _of(m, package)}
    assert own, package
    direct = set().union(*(g[m] for m in own)) - own
    forbidden = PIPELINE[package]
    upward = sorted(m for m in direct if forbidden is None or any(_of(m, f) for f in forbidden))
    assert not upward, f"{package} imports {upward}"
    back = sorted(m for m in direct if own & _reach(g, m))
    assert not back, f"{package} imports {back}, which import {package} back"


#: the pipeline's stages, bottom up: scenario -> workload -> engine -> records -> metrics ->
#: outputs (docs/design.md); a module may import from its own stage and the ones below only
STAGES = [
    ("lbsim.jit", "lbsim.kernel", "lbsim.kernel_versions", "lbsim.durations", "lbsim.tuples", "lbsim.formatting",
     "lbsim.shared_lists",
     "lbsim.analytic", "lbsim.histogram", "lbsim.progress"),
    ("lbsim.config", "lbsim.rng"),
    ("lbsim.sampling", "lbsim.balancing", "lbsim.trace", "lbsim.client_ports"),
    ("lbsim.lb", "lbsim.kube_proxy", "lbsim.scenarios"),
    ("lbsim.workload", "lbsim.budget"),
    ("lbsim.records",),
    ("lbsim.reference", "lbsim.compiled", "lbsim.control", "lbsim.metrics", "lbsim.headroom",
     "lbsim.rollout", "lbsim.flowstats", "lbsim.spill",
     "lbsim.caveats"),
    ("lbsim.simulation",),
    ("lbsim.figures", "lbsim.plots", "lbsim.runner", "lbsim.scenario_run"),
    ("lbsim.report",),
    ("lbsim.sweep", "lbsim.bench", "lbsim.testbed"),
]


def _stage(module: str) -> int:
    for i, stage in enumerate(STAGES):
        if any(_of(module, m) for m in stage):
            return i
    raise AssertionError(f"{module} is in no stage of the pipeline (add it to STAGES)")


def test_every_module_imports_only_its_stage_or_below():
    g = _graph()
    bad = sorted(f"{m} -> {t}" for m in g if m != "lbsim" for t in g[m]
                 if t != "lbsim" and _stage(t) > _stage(m))
    assert not bad, bad


def test_no_import_circle_anywhere():
    # a module's edge to its own package (whose __init__ Python runs first, and which may
    # re-export it) is not a circle; every other edge counts
    g = {m: {t for t in ts if t != "lbsim" and not m.startswith(t + ".")}
         for m, ts in _graph().items() if m != "lbsim"}
    circles = sorted(m for m in g if m in _reach(g, m))
    assert not circles, circles
    g["lbsim.kernel"] = g["lbsim.kernel"] | {"lbsim.reference.engine"}   # a planted circle
    assert "lbsim.kernel" in {m for m in g if m in _reach(g, m)}
