"""lbsim.jit: the disk cache of a compiled function notices edits of *other* modules of the package.

A throwaway package named ``lbsim`` (the real jit.py plus three small modules) in a tmp dir, run
in fresh interpreters: ``engine.f`` (through lbsim.jit) and ``engine.g`` (plain
``numba.njit(cache=True)``, the control) read ``consts.K`` and call a jitted helper of
``helpers.py``. After an edit of consts.py alone, numba's own cache still serves g's old machine
code; f recompiles once and is then cached again.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

JIT_PY = Path(__file__).resolve().parents[2] / "lbsim" / "jit.py"

ENGINE = """\
import numba as nb

from . import consts
from .helpers import bump
from .jit import jit


@jit
def f(x):
    return bump(consts.K * x)


@nb.njit(cache=True)
def g(x):
    return bump(consts.K * x)
"""

HELPERS = """\
from .jit import jit


@jit(inline="always")
def _twice(y):
    return 2 * y


@jit
def bump(y):
    return _twice(y) - y + 1
"""

# outside the package: the runner is not part of the stamp
RUNNER = """\
import json
import multiprocessing
import sys

import lbsim
from lbsim import engine, jit


def report(fn):
    value = fn(7)
    st = fn.stats
    return {"value": value, "hits": sum(st.cache_hits.values()),
            "misses": sum(st.cache_misses.values()), "cache_path": st.cache_path}


def in_worker(_):
    return report(engine.f)


if __name__ == "__main__":
    out = {}
    if "--workers" in sys.argv:   # a forked worker before the parent compiles anything
        with multiprocessing.get_context("fork").Pool(1) as pool:
            out["forked"] = pool.map(in_worker, [0])[0]
    out.update(file=lbsim.__file__, stamp=jit.source_stamp(),
               f=report(engine.f), g=report(engine.g))
    if "--workers" in sys.argv:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            out["spawned"] = pool.map(in_worker, [0])[0]
    print(json.dumps(out))
"""


def _write_package(root: Path) -> Path:
    pkg = root / "lbsim"
    pkg.mkdir()
    shutil.copy(JIT_PY, pkg / "jit.py")
    (pkg / "__init__.py").write_text("")
    (pkg / "consts.py").write_text("K = 3\n")
    (pkg / "helpers.py").write_text(HELPERS)
    (pkg / "engine.py").write_text(ENGINE)
    (root / "runner.py").write_text(RUNNER)
    return pkg


def _run(root: Path, *args: str, cache_dir: Path | None = None, prefix: tuple = (),
         user_cache: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1",
               XDG_CACHE_HOME=str(user_cache or root / "user-cache"))   # numba's user-wide cache
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run([*prefix, sys.executable, str(root / "runner.py"), *args], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).parent == root / "lbsim"   # the throwaway package, not the real one
    return out


def _edit(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))   # a visibly newer mtime


def test_edit_of_another_module_recompiles_once(tmp_path):
    pkg = _write_package(tmp_path)

    first = _run(tmp_path)
    assert first["f"]["value"] == first["g"]["value"] == 3 * 7 + 1
    assert (first["f"]["hits"], first["f"]["misses"]) == (0, 1)
    assert Path(first["f"]["cache_path"]) == pkg / "__pycache__"   # numba's in-tree locator

    second = _run(tmp_path, "--workers")
    assert second["f"] == {**first["f"], "hits": 1, "misses": 0}
    assert second["forked"] == second["spawned"] == second["f"]   # so do worker processes
    assert second["g"]["hits"] == 1

    _edit(pkg / "consts.py", "K = 5\n")

    third = _run(tmp_path)
    assert third["f"]["value"] == 5 * 7 + 1
    assert (third["f"]["hits"], third["f"]["misses"]) == (0, 1)
    assert third["stamp"] != second["stamp"]
    # the problem lbsim.jit solves: numba's own cache still runs the code compiled with K = 3
    assert (third["g"]["value"], third["g"]["hits"]) == (3 * 7 + 1, 1)

    fourth = _run(tmp_path)
    assert fourth["f"] == {**third["f"], "hits": 1, "misses": 0}


def test_numba_cache_dir_is_respected(tmp_path):
    pkg = _write_package(tmp_path)
    cache_dir = tmp_path / "numba-cache"

    first = _run(tmp_path, cache_dir=cache_dir)
    second = _run(tmp_path, cache_dir=cache_dir)
    assert first["f"]["value"] == second["f"]["value"] == 22
    assert (first["f"]["misses"], second["f"]["hits"]) == (1, 1)
    assert Path(second["f"]["cache_path"]).parent == cache_dir
    assert list(cache_dir.glob("*/engine.f-*.nbi"))
    assert not (pkg / "__pycache__").exists()


def test_read_only_install_uses_the_user_wide_cache(tmp_path):
    """As in a read-only site-packages: numba's fallback to its user-wide cache dir still works.
    Mounting the package read-only needs root and unshare(1): a precondition of the machine, not
    a missing feature (CI runs as root, so it runs there)."""
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount the package read-only")
    site = tmp_path / "site"
    site.mkdir()
    pkg = _write_package(site)
    # a private mount namespace per run, with the package bind-mounted read-only
    ro = ("unshare", "-m", "sh", "-c",
          f'mount --bind "{site}" "{site}" && mount -o remount,ro,bind "{site}" "{site}" '
          f'&& exec "$0" "$@"')
    probe = subprocess.run([*ro, "sh", "-c", f'! touch "{pkg}/probe"'], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount read-only here: {probe.stderr.decode().strip()}")

    user_cache = tmp_path / "user-cache"
    first = _run(site, prefix=ro, user_cache=user_cache)
    second = _run(site, prefix=ro, user_cache=user_cache)
    assert (first["f"]["misses"], second["f"]["hits"]) == (1, 1)
    assert second["f"]["value"] == 22
    assert Path(second["f"]["cache_path"]).parent == user_cache / "numba"
    assert not (pkg / "__pycache__").exists()


def _load_jit_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stamp_covers_every_py_file(tmp_path):
    pkg = _write_package(tmp_path)
    (pkg / "sub").mkdir()
    (pkg / "sub" / "deep.py").write_text("X = 1\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "ignored.py").write_text("")
    mod = _load_jit_module(pkg / "jit.py", "_lbsim_jit_stamp_test")
    assert [rel for rel, _ in mod._source_files(str(pkg))] == [
        "__init__.py", "consts.py", "engine.py", "helpers.py", "jit.py", "sub/deep.py"]
    stamp = mod.source_stamp()
    assert mod.source_stamp() is stamp                    # once per process
    (pkg / "sub" / "deep.py").write_text("X = 2\n")
    assert mod._hash_sources(str(pkg)) != stamp
    (pkg / "sub" / "deep.py").write_text("X = 1\n")
    assert mod._hash_sources(str(pkg)) == stamp           # content, not mtime


def test_unexpected_numba_internals_disable_the_cache(tmp_path, monkeypatch):
    from numba.core import caching

    mod = _load_jit_module(JIT_PY, "_lbsim_jit_fallback_test")
    monkeypatch.setattr(caching.CacheImpl, "__init__", lambda self, py_func: None)  # no _locator

    def add_one(x):
        return x + 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn = mod.jit(add_one)
        mod.jit(nogil=False)(lambda x: x)               # warned once per process only
    assert [w.category for w in caught] == [mod.CacheFallbackWarning]
    assert fn(1) == 2
    assert isinstance(fn._cache, caching.NullCache)     # compiled, not cached


def test_options_pass_through(tmp_path):
    mod = _load_jit_module(JIT_PY, "_lbsim_jit_options_test")

    def h(x):
        return x * 2

    fn = mod.jit(inline="always", _nrt=False, cache=False)(h)
    assert fn.targetoptions["inline"] == "always" and fn.targetoptions["_nrt"] is False
    assert fn.targetoptions["nogil"] is True
    assert fn(4) == 8
    with pytest.raises(TypeError):
        mod.jit("int64(int64)")
