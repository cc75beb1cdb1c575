"""lbsim.sweep on a local process pool and on a Dask cluster: the same table as in one process."""

import os

import pandas as pd
import pytest

import lbsim
from tests.shared import BASE, GRID, ROOT, small_sweep
from tests.shared import untimed as _untimed


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """The small sweep, in process, no cache: what every other way must reproduce."""
    return small_sweep()


def test_process_pool_and_dask_give_the_same_table_as_in_process(reference, monkeypatch):
    distributed = pytest.importorskip("distributed")
    pool = lbsim.sweep(BASE, GRID, replications=2, executor=None, jobs=2, progress=False)
    pd.testing.assert_frame_equal(_untimed(pool), _untimed(reference))
    # workers in their own processes: they import lbsim themselves
    # from a source tree, let them find it (CI installs the package)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = lbsim.sweep(BASE, GRID, replications=2, executor=client, progress=False)
    pd.testing.assert_frame_equal(_untimed(on_dask), _untimed(reference))
