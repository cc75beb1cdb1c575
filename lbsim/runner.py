"""Where runs go: the one executor of ``python -m lbsim.bench`` and :func:`lbsim.sweep`.

:func:`run_tasks` calls a picklable, module-level function on each task of a list and yields the
results, as they finish or in task order. ``executor`` says where:

* ``None`` or ``"process"``: a local process pool of ``jobs`` workers (default: the CPUs this
  process may run on, :func:`default_jobs`; one task or one job: in this process), started by
  ``forkserver`` (which imports lbsim once and forks the workers from it, safe from a parent with
  threads; ``spawn`` where there is no forkserver);
* ``"inprocess"``: one task after the other, here;
* ``"dask"``: a Dask ``LocalCluster`` of ``jobs`` single-threaded workers, started and closed here;
* a ``dask.distributed.Client``: its cluster (the workers must be able to import lbsim);
* any ``concurrent.futures.Executor``: that executor (``submit``; it is not shut down).

Before it starts a local pool or cluster, the parent warms the simulation engine up
(:func:`warm_up`: compile it, or load it from numba's on-disk cache, once), so that the workers load
the cache instead of each compiling it; the workers of a local process pool warm up too as they
start, so that no run's wall time includes loading the engine.

This module knows nothing of scenarios, sweeps or reports; it imports no other lbsim module but
the engine's warm-up, and that only when it is called.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["run_tasks", "default_jobs", "warm_up", "check_executor", "is_dask_client",
           "process_pool", "EXECUTORS"]

T = TypeVar("T")
R = TypeVar("R")

#: the executors named by a string
EXECUTORS = ("process", "inprocess", "dask")


def default_jobs() -> int:
    """The CPUs this process may run on: the size of a local pool or cluster by default."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the simulation engine in this process, once."""
    from .simulation import warm_up as engine_warm_up

    engine_warm_up()


def is_dask_client(x: Any) -> bool:
    """``x`` is a ``dask.distributed.Client`` (checked without importing distributed)."""
    return type(x).__module__.split(".")[0] == "distributed" and hasattr(x, "map") \
        and hasattr(x, "submit")


def check_executor(executor: Any) -> None:
    """Raise ``ValueError`` (saying what is valid) unless :func:`run_tasks` takes ``executor``."""
    if executor is None or isinstance(executor, str) and executor in EXECUTORS \
            or is_dask_client(executor) or isinstance(executor, cf.Executor):
        return
    raise ValueError(f"executor = {executor!r} is invalid: must be None or 'process' (local "
                     f"process pool), 'inprocess', 'dask' (a local Dask cluster), a "
                     f"dask.distributed.Client or a concurrent.futures.Executor")


def process_pool(jobs: int, preload: Sequence[str] = ("lbsim",),
                 initializer: Callable[[], Any] | None = None) -> cf.ProcessPoolExecutor:
    """A local pool of ``jobs`` worker processes, forked from a forkserver that has imported the
    modules ``preload`` (``spawn`` where there is no forkserver); ``initializer`` runs in each
    worker as it starts."""
    # forkserver: safe from a parent with threads (tqdm's monitor, a Dask client); the server
    # imports lbsim once and forks the workers from it.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
    else:
        ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=initializer)


class _Failed:
    """A task's exception, in place of its result."""

    def __init__(self, error: Exception) -> None:
        self.error = error


#: (task index, result or _Failed), as tasks finish
_Done = Iterator[tuple[int, Any]]


def _serial(fn: Callable[[T], R], tasks: Sequence[T]) -> _Done:
    for i, t in enumerate(tasks):
        try:
            r = fn(t)
        except Exception as e:  # noqa: BLE001  (handed to on_error, or raised by run_tasks)
            yield i, _Failed(e)
        else:
            yield i, r


def _futures(ex: cf.Executor, fn: Callable[[T], R], tasks: Sequence[T], own: bool,
             died: str) -> _Done:
    futures = {ex.submit(fn, t): i for i, t in enumerate(tasks)}
    try:
        for f in cf.as_completed(futures):
            try:
                r = f.result()
            except BrokenProcessPool as e:
                raise RuntimeError(died.format(error=e)) from e
            except Exception as e:  # noqa: BLE001
                r = _Failed(e)
            yield futures[f], r
    except BaseException:
        for f in futures:
            f.cancel()
        if own:
            ex.shutdown(wait=False, cancel_futures=True)
        raise
    if own:
        ex.shutdown()


def _dask(client: Any, fn: Callable[[T], R], tasks: Sequence[T]) -> _Done:
    from distributed import as_completed

    futures = client.map(fn, tasks, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for f in as_completed(futures):
            try:
                r = f.result()
            except Exception as e:  # noqa: BLE001  (a worker died, say)
                r = _Failed(e)
            yield index[f.key], r
    finally:
        client.cancel(futures)


def _completed(fn: Callable[[T], R], tasks: Sequence[T], executor: Any, jobs: int | None,
               warm: bool, preload: Sequence[str], died: str) -> _Done:
    """(index, result or _Failed) of every task, as they finish, wherever ``executor`` says."""
    if isinstance(executor, str) and executor == "inprocess":
        yield from _serial(fn, tasks)
    elif executor is None or isinstance(executor, str) and executor == "process":
        n = min(jobs or default_jobs(), len(tasks))
        if n == 1:
            yield from _serial(fn, tasks)
            return
        if warm:
            warm_up()        # compile (or load) once here: the workers then load numba's cache
        pool = process_pool(n, preload, warm_up if warm else None)
        yield from _futures(pool, fn, tasks, own=True, died=died)
    elif isinstance(executor, str) and executor == "dask":
        from distributed import Client, LocalCluster

        if warm:
            warm_up()        # the local workers then load numba's on-disk cache, not compile
        with LocalCluster(n_workers=jobs or default_jobs(), threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield from _dask(client, fn, tasks)
    elif is_dask_client(executor):
        yield from _dask(executor, fn, tasks)
    else:
        yield from _futures(executor, fn, tasks, own=False, died=died)


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], executor: Any = None,
              jobs: int | None = None, *, ordered: bool = False,
              on_done: Callable[[R], Any] | None = None,
              on_error: Callable[[T, Exception], R] | None = None, warm: bool = True,
              preload: Sequence[str] = ("lbsim",),
              died: str = "a worker process died ({error})") -> Iterator[R]:
    """Yield ``fn(task)`` for every task of ``tasks``, run where ``executor`` says (module doc).

    ``fn`` and the tasks must pickle (``fn`` a module-level function) for every executor but
    ``"inprocess"``. Results come as tasks finish, or in task order with ``ordered=True`` (each as
    soon as it and every task before it are done). ``on_done(result)`` is called as each task
    finishes, whatever the order results are yielded in.

    A task that raises an ``Exception``: ``on_error(task, exception)`` gives the result in its
    place (and the other tasks go on); without ``on_error`` the exception is raised here (in its
    task's turn when ``ordered``). A process pool whose worker died raises ``RuntimeError`` with
    the message ``died`` (``{error}``: the pool's own message). Stopping early (an exception, or
    closing the generator) cancels the tasks not started and shuts down a pool started here.

    ``warm``: warm the simulation engine up in this process before a local pool or cluster starts,
    and in each worker of a local process pool as it starts (:func:`warm_up`). ``preload``: the
    modules the process pool's forkserver imports once for all its workers.
    """
    check_executor(executor)
    tasks = list(tasks)
    if not tasks:
        return
    waiting: dict[int, Any] = {}  # finished, not yielded yet (ordered: a task before is running)
    turn = 0                      # the number of results yielded
    with contextlib.closing(_completed(fn, tasks, executor, jobs, warm, preload, died)) as done:
        for i, r in done:
            if isinstance(r, _Failed) and on_error is not None:
                r = on_error(tasks[i], r.error)
            if not isinstance(r, _Failed) and on_done is not None:
                on_done(r)
            waiting[i if ordered else turn] = r  # unordered: next in turn, whichever it is
            while turn in waiting:
                r = waiting.pop(turn)
                turn += 1
                if isinstance(r, _Failed):
                    raise r.error
                yield r
