"""The numba decorator of lbsim's compiled code: an on-disk cache keyed by all of lbsim's sources.

Why
---
``numba.njit(cache=True)`` saves a function's machine code on disk (an index file
``<module>.<function>-<line>.py311.nbi`` and data files ``*.nbc``) and loads it in later processes
while the *source stamp* saved in the index still matches. numba takes that stamp from the one
file that defines the function: a sha256 of its bytes in numba 0.68, its mtime and size in older
releases. The machine code depends on more than that file:

* jitted helpers from other modules are compiled into their callers (``rng.mix64_nb`` into the
  compiled engine's event loop: ``inline="always"`` ones at the IR level, the others linked in);
* module-level globals a function reads (int constants such as conntrack's GC constants) are
  frozen into the code as literals when it is compiled.

So after an edit of ``rng.py`` or ``conntrack.py`` numba still loads the old machine code of the
functions that use them, and an editable install (or a source checkout) runs stale code until
someone deletes the ``*.nbi`` files.

How
---
:func:`jit` is ``numba.njit`` with numba's own per-function cache and one change: the stamp saved
in (and compared with) the index is ``("lbsim-sources-v1", <sha256 of every .py file of the lbsim
package>, <numba's stamp of the defining file>)``. Editing any module of the package changes the
stamp, so the next process finds every index stale, compiles afresh and overwrites the index and
data files (one index per function: old versions do not pile up).

numba keeps a dispatcher's cache in ``dispatcher._cache``: ``enable_caching()`` (what
``cache=True`` calls) sets it to ``numba.core.caching.FunctionCache(py_func)``. :func:`jit`
builds the dispatcher without ``cache`` and sets a ``FunctionCache`` subclass instead, whose
``CacheImpl`` wraps the locator numba chose in a proxy that only changes ``get_source_stamp()``.
numba's choice of directory is untouched: ``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` next to
the source if writable, else the user-wide cache (``~/.cache/numba``), which is what a read-only
site-packages install gets; ``NUMBA_CACHE_LOCATOR_CLASSES`` still applies. Nothing global in numba
is patched: functions compiled elsewhere keep numba's behaviour.

The package hash is computed once per process, on the first decoration (1-2 ms for lbsim's 23
files, ~340 kB; up to ~4 ms on a cold start); a forked worker inherits it, a spawned one
recomputes it when it imports lbsim. It covers ``.py`` files only (``__pycache__`` and
dot-directories are skipped): data files that shaped compiled code would not be noticed. Any edit,
even of a comment in a module without compiled code, recompiles everything on the next run: the
price of never running stale code.

``FunctionCache``, ``CompileResultCacheImpl``, ``CacheImpl._locator`` and ``Dispatcher._cache``
are numba internals (the same in 0.59.1 and 0.68.1). :func:`jit` checks they behave as expected
(the index stamp must come out as the package stamp); if not, on another numba version, it
compiles without the on-disk cache and warns once (:class:`CacheFallbackWarning`): every process
compiles afresh, but never runs stale code and never fails. The same happens where numba finds no
writable cache directory at all (``cache=True`` raises there).

This module imports nothing from lbsim (stdlib and numba only): any module can use it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import warnings
from typing import Any, Callable

import numba as nb
from numba.extending import is_jitted

__all__ = ["jit", "source_stamp", "PACKAGE_DIR", "CacheFallbackWarning"]

#: The directory whose ``.py`` files make the stamp: the package this module lives in.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# The first element of every stamp: a change of the stamp's scheme invalidates old indexes too.
_STAMP_TAG = "lbsim-sources-v1"
_DEFAULTS = {"cache": True, "nogil": True}


class CacheFallbackWarning(RuntimeWarning):
    """A function compiles without a disk cache: numba's internals are not what :func:`jit`
    expects, or numba found no writable cache directory (where ``cache=True`` would raise)."""


def _source_files(root: str) -> list[tuple[str, str]]:
    """(path relative to root with ``/``, absolute path) of every .py file under root, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                found.append((os.path.relpath(path, root).replace(os.sep, "/"), path))
    found.sort()
    return found


def _hash_sources(root: str) -> str:
    h = hashlib.sha256()
    for rel, path in _source_files(root):
        with open(path, "rb") as f:
            data = f.read()
        # name and length before the bytes: moving code between files changes the hash too
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@functools.cache
def source_stamp() -> str:
    """sha256 (hex) of the package's sources, computed once per process on the first call."""
    return _hash_sources(PACKAGE_DIR)


class _StampedLocator:
    """numba's chosen cache locator, with the package stamp added to its source stamp."""

    def __init__(self, inner: Any, stamp: str):
        self._inner = inner
        self._stamp = stamp

    def get_source_stamp(self) -> tuple:
        return (_STAMP_TAG, self._stamp, self._inner.get_source_stamp())

    def __getattr__(self, name: str) -> Any:   # get_cache_path, ensure_cache_path, _py_file, ...
        return getattr(self._inner, name)


@functools.cache
def _cache_class() -> type:
    """The FunctionCache subclass whose index stamp includes :func:`source_stamp`."""
    from numba.core import caching

    base = caching.FunctionCache
    if base._impl_class is not caching.CompileResultCacheImpl:
        raise TypeError(f"FunctionCache._impl_class is {base._impl_class!r}")

    class _Impl(caching.CompileResultCacheImpl):
        def __init__(self, py_func):
            super().__init__(py_func)
            self._locator = _StampedLocator(self._locator, source_stamp())

    class PackageStampedFunctionCache(base):
        _impl_class = _Impl

    return PackageStampedFunctionCache


_warn_lock = threading.Lock()
_warned = False


def _fallback(fn: Callable, exc: BaseException) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"lbsim.jit: cannot cache {fn.__qualname__} on disk ({exc!r}; numba {nb.__version__}): "
        f"it compiles afresh in every process (warned once; other functions may be affected too)",
        CacheFallbackWarning, stacklevel=5)


def _attach_cache(disp: Any) -> None:
    """Give the dispatcher the package-stamped disk cache, or (numba internals differ) none."""
    try:
        from numba.core import caching

        if not isinstance(disp._cache, caching.NullCache):
            raise TypeError(f"a fresh dispatcher's cache is {disp._cache!r}")
        cache = _cache_class()(disp.py_func)
        # the stamp numba will write to and compare with the index must be the package stamp
        stamp = cache._cache_file._source_stamp
        if not (isinstance(stamp, tuple) and stamp[:2] == (_STAMP_TAG, source_stamp())):
            raise TypeError(f"the index stamp came out as {stamp!r}")
    except Exception as exc:   # never fail a decoration because of the cache
        _fallback(disp.py_func, exc)
        return
    disp._cache = cache


def _decorate(fn: Callable, options: dict) -> Any:
    opts = {**_DEFAULTS, **options}
    cache = opts.pop("cache")
    disp = nb.njit(**opts)(fn)
    if cache and is_jitted(disp):   # NUMBA_DISABLE_JIT=1 returns fn itself
        _attach_cache(disp)
    return disp


def jit(fn: Callable | None = None, /, **options: Any) -> Any:
    """``numba.njit(cache=True, nogil=True, **options)``, its disk cache keyed by lbsim's sources.

    ``@jit`` or ``jit(fn)`` compiles with the defaults; ``@jit(**options)`` passes any other
    ``numba.njit`` option: ``@jit(inline="always")``, ``hot = jit(_nrt=False)``, ``nogil=False``,
    ``cache=False`` (no disk cache at all). Compilation is lazy (on the first call of each type
    signature); eager signatures are not supported.
    """
    if fn is None:
        return lambda f: _decorate(f, options)
    if not callable(fn) or isinstance(fn, type):
        raise TypeError(f"lbsim.jit decorates a function (got {fn!r}); "
                        f"eager signatures are not supported, pass options as keywords")
    return _decorate(fn, options)
