"""lbsim.runner, the one executor of the bench and the sweep: order, callbacks, failures, dead pools.

The task functions are the standard library's (math.sqrt, os._exit), so that worker processes
import them without finding this test module.
"""

import concurrent.futures as cf
import math
import os
import threading
import time

import pytest

from lbsim.runner import check_executor, default_jobs, run_tasks


def _sleep_then_return(x):
    time.sleep(x)
    return x


def test_in_process_and_single_job_run_here_in_order():
    seen = []
    out = list(run_tasks(math.sqrt, [4, 9, 16], "inprocess", on_done=seen.append))
    assert out == seen == [2.0, 3.0, 4.0]
    here = threading.get_ident()
    assert list(run_tasks(lambda _: threading.get_ident(), [0, 1], None, jobs=1)) == [here] * 2
    assert list(run_tasks(lambda _: threading.get_ident(), [0], "process", jobs=4)) == [here]
    assert list(run_tasks(math.sqrt, [], "process")) == []


def test_ordered_yields_in_task_order_and_on_done_as_each_finishes():
    tasks = [0.4, 0.0, 0.2]
    with cf.ThreadPoolExecutor(3) as ex:
        done = []
        ordered = run_tasks(_sleep_then_return, tasks, ex, ordered=True, on_done=done.append)
        assert list(ordered) == tasks
        assert done == [0.0, 0.2, 0.4]
        assert list(run_tasks(_sleep_then_return, tasks, ex)) == [0.0, 0.2, 0.4]


def test_a_failing_task_is_handed_to_on_error_and_the_others_go_on():
    def on_error(task, e):
        return f"{task}: {type(e).__name__}"

    out = list(run_tasks(math.sqrt, [4, -1, 9], "inprocess", on_error=on_error))
    assert out == [2.0, "-1: ValueError", 3.0]
    with cf.ThreadPoolExecutor(2) as ex:
        assert sorted(map(str, run_tasks(math.sqrt, [4, -1, 9], ex, on_error=on_error))) == [
            "-1: ValueError", "2.0", "3.0"]


def test_without_on_error_a_failure_raises_in_its_turn():
    got = []
    with cf.ThreadPoolExecutor(2) as ex, pytest.raises(ValueError, match="math domain error"):
        for r in run_tasks(math.sqrt, [4, -1, 9], ex, ordered=True):
            got.append(r)
    assert got == [2.0]


def test_process_pool_gives_the_same_results_and_a_dead_worker_is_named():
    tasks = [float(i) for i in range(8)]
    assert list(run_tasks(math.sqrt, tasks, "process", jobs=2, ordered=True, warm=False)) == \
        [math.sqrt(t) for t in tasks]
    with pytest.raises(RuntimeError, match=r"^worker of the test died \(A process in the"):
        list(run_tasks(os._exit, [3, 3], "process", jobs=2, warm=False,
                       died="worker of the test died ({error})"))


@pytest.mark.parametrize("bad", ["threads", 3, object()])
def test_an_invalid_executor_is_refused_with_the_valid_ones(bad):
    with pytest.raises(ValueError, match="'inprocess', 'dask'"):
        check_executor(bad)
    with pytest.raises(ValueError, match="concurrent.futures.Executor"):
        list(run_tasks(math.sqrt, [1], bad))


def test_default_jobs_is_the_cpus_this_process_may_use():
    n = default_jobs()
    assert n >= 1
    if hasattr(os, "sched_getaffinity"):
        assert n == len(os.sched_getaffinity(0))
