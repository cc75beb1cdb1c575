"""A streamed run with full records writes its flows, drops and SNAT tables to Parquet as it goes
(lbsim.spill) and reads them back on first access: every table equals the whole run's in
memory, at any window and row-group size, and the run's directory, if lbsim made it, goes with
its Result."""

import gc
import warnings
from unittest import mock

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import lbsim
from lbsim import Scenario
from lbsim.budget import check_disk
from lbsim.scenarios import get
from tests.property.test_engines_agree import scenarios as engine_scenarios
from tests.property.test_streaming import _streamable, assert_same_summary

TABLES = ("flows", "drops", "snat", "load", "gauges", "counters")


def _run(sc, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # tiny runs: their caveats
        return lbsim.run(sc, progress=False, **kw)


def assert_same_tables(whole, streamed):
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(streamed, name),
                                      obj=name)
    assert_same_summary(whole.summary, streamed.summary)


@settings(max_examples=40, deadline=None)
@given(engine_scenarios(), st.integers(1, 300), st.sampled_from([1, 37, 1 << 17]))
def test_spilled_tables_equal_the_whole_runs(tmp_path_factory, d, window, row_group):
    sc = _streamable(d).replace(records="full")
    whole = _run(sc)
    with mock.patch("lbsim.spill.ROW_GROUP", row_group):
        streamed = _run(sc, stream_window=window, records_dir=tmp_path_factory.mktemp("r"))
    assert_same_tables(whole, streamed)


def test_drops_and_snat_change_points_cross_windows_in_order(tmp_path):
    # snat-exhaustion: drops and changing port counts all along; windows of 50 flows
    sc = get("snat-exhaustion", quick=True).replace(**{"records": "full",
                                                       "workload.flows": 20000})
    whole = _run(sc)
    streamed = _run(sc, stream_window=50, records_dir=tmp_path)
    assert len(whole.drops) > 100 and len(whole.snat) > 100
    assert_same_tables(whole, streamed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drops.parquet", "flows.parquet",
                                                          "snat.parquet"]
    assert streamed.records_dir == tmp_path


def test_a_long_full_run_streams_to_a_temporary_directory_removed_with_its_result():
    sc = Scenario().replace(**{"records": "full", "workload.flows": 5000})
    with mock.patch("lbsim.workload.STREAM_FLOWS", 1000):
        r = _run(sc)
    d = r.records_dir
    assert d is not None and (d / "flows.parquet").exists()
    assert r._flows.__class__.__name__ == "Lazy"          # not read yet
    pd.testing.assert_frame_equal(r.flows, _run(sc).flows)
    del r
    gc.collect()
    assert not d.exists()


def test_a_whole_run_writes_its_tables_where_asked(tmp_path):
    sc = Scenario().replace(**{"records": "full", "workload.flows": 500})
    r = _run(sc, records_dir=tmp_path / "out")
    assert r.records_dir == tmp_path / "out"
    for name in ("flows", "drops", "snat"):
        want = getattr(r, name)
        got = pd.read_parquet(tmp_path / "out" / f"{name}.parquet").astype(want.dtypes.to_dict())
        pd.testing.assert_frame_equal(got, want)


def test_records_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    sc = Scenario().replace(**{"records": "full", "workload.flows": 50})
    with pytest.raises(ValueError, match="records_dir = .* is invalid: it exists and is not a "
                                         "directory"):
        _run(sc, stream_window=8, records_dir=f)
    with pytest.raises(TypeError, match="records_dir must be a path"):
        _run(sc, records_dir=3)
    with pytest.raises(ValueError, match="records_dir = '' is invalid: must name a directory"):
        _run(sc, records_dir="")
    with pytest.raises(TypeError, match="tables must be True or False, not 'no'"):
        _run(sc, tables="no")


def test_records_dir_with_summary_records_is_ignored_with_a_warning(tmp_path):
    sc = Scenario().replace(**{"records": "summary", "workload.flows": 50})
    with pytest.warns(RuntimeWarning, match="records_dir = .* is ignored"):
        r = lbsim.run(sc, records_dir=tmp_path, progress=False)
    assert r.records_dir is None and not any(tmp_path.iterdir())


def test_a_run_whose_tables_would_not_fit_on_disk_is_refused(tmp_path):
    sc = Scenario().replace(**{"records": "full", "workload.flows": 10**8})
    with pytest.raises(ValueError, match=r"records_dir = .*would need about 4\.5 GiB there and "
                                         r"1\.0 GiB are free"):
        check_disk(sc, tmp_path, free=2**30)
    assert check_disk(sc, tmp_path, free=2**40) > 0


def test_a_disk_that_fills_during_a_run_is_reported_in_one_line(tmp_path):
    def full(self, df):
        raise OSError(28, "No space left on device")
    sc = Scenario().replace(**{"records": "full", "workload.flows": 300})
    with mock.patch("lbsim.spill._Table._write", full):
        with pytest.raises(ValueError, match="records_dir = .*: writing the run's tables "
                                             "failed: No space left on device"):
            _run(sc, stream_window=16, records_dir=tmp_path)


def test_a_table_too_big_to_read_whole_is_refused_with_the_way_to_read_part(tmp_path):
    from lbsim.spill import _read
    sc = Scenario().replace(**{"records": "full", "workload.flows": 2000})
    r = _run(sc, stream_window=256, records_dir=tmp_path)
    like = r.flows.iloc[:0]
    with pytest.raises(ValueError, match=r"flows.parquet holds 2,000 rows: reading it whole "
                                         r"would need about .* GiB and 0\.0 GiB are available; "
                                         r"read the columns"):
        _read(tmp_path / "flows.parquet", like, available=1000)
    pd.testing.assert_frame_equal(_read(tmp_path / "flows.parquet", like), r.flows)


def test_compare_gives_each_path_its_own_directory(tmp_path):
    sc = Scenario().replace(**{"records": "full", "workload.flows": 600})
    c = lbsim.compare(sc, stream_window=64, records_dir=tmp_path, progress=False)
    assert c.nodeport.records_dir == tmp_path / "nodeport"
    assert c.direct.records_dir == tmp_path / "direct"
    assert (c.nodeport.flows["node"] >= 0).all() and (c.direct.flows["node"] == -1).all()


def test_a_file_another_run_wrote_over_is_refused_not_read(tmp_path):
    sc = Scenario().replace(**{"records": "full", "workload.flows": 600})
    first = _run(sc, stream_window=64, records_dir=tmp_path)
    _run(sc.replace(seed=2), stream_window=64, records_dir=tmp_path)
    with pytest.raises(ValueError, match="flows.parquet' is no longer this run's: another run "
                                         "wrote over it"):
        first.flows


def test_copies_pickles_and_bare_records_keep_the_tables_and_free_the_directory():
    import copy
    import pickle
    from lbsim.simulation import simulate
    sc = Scenario().replace(**{"records": "full", "workload.flows": 600})
    r = _run(sc, stream_window=64)
    d, want = r.records_dir, _run(sc).flows
    twin = copy.copy(r)
    sent = pickle.loads(pickle.dumps(r))
    del r
    gc.collect()
    pd.testing.assert_frame_equal(twin.flows, want)        # the copy keeps the directory
    pd.testing.assert_frame_equal(sent.flows, want)
    del twin, sent
    gc.collect()
    assert not d.exists()
    rec = simulate(sc, stream_window=64)                    # records alone: the same lifetime
    d = rec.spill.directory
    assert (d / "flows.parquet").exists()
    del rec
    gc.collect()
    assert not d.exists()


def test_tables_false_builds_and_writes_none(tmp_path):
    sc = Scenario().replace(**{"records": "full", "workload.flows": 600})
    with pytest.warns(RuntimeWarning, match="records_dir = .* is ignored: tables=False"):
        r = lbsim.run(sc, stream_window=64, records_dir=tmp_path, tables=False, progress=False)
    assert r.records_dir is None and not any(tmp_path.iterdir())
    assert len(r.flows) == len(r.drops) == len(r.snat) == len(r.load) == 0
    assert_same_summary(_run(sc).summary, r.summary)
    whole = _run(sc, tables=False)
    assert len(whole.flows) == 0 and whole.summary["flows"] == 600


def test_an_unwritable_records_dir_is_refused_before_the_run():
    sc = Scenario().replace(**{"records": "full", "workload.flows": 600})
    with pytest.raises(ValueError, match="records_dir = '/proc/self' is invalid"):
        _run(sc, records_dir="/proc/self")


def test_simulate_says_when_it_ignores_records_dir(tmp_path):
    from lbsim.simulation import simulate
    sc = Scenario().replace(**{"records": "full", "workload.flows": 300})
    with pytest.warns(RuntimeWarning, match="records_dir = .* is ignored: simulate"):
        simulate(sc, records_dir=tmp_path)


def test_a_run_that_fails_midway_leaves_no_temporary_directory():
    import tempfile
    from pathlib import Path

    def before():
        return set(Path(tempfile.gettempdir()).glob("lbsim-records-*"))
    had = before()

    def broken(self, D):
        raise RuntimeError("stop")
    sc = Scenario().replace(**{"records": "full", "workload.flows": 600})
    with mock.patch("lbsim.spill.Spill.drops", broken):
        with pytest.raises(RuntimeError, match="stop") as caught:
            _run(sc, stream_window=64)
    assert caught.value is not None and before() == had       # the exception still held
    with pytest.raises(ValueError, match="records_dir = '' is invalid"):
        lbsim.compare(sc, records_dir="", progress=False)
