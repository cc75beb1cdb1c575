"""Full records written to Parquet as a run goes, and read back only when asked for.

A streamed run with ``records = "full"`` (:mod:`lbsim.compiled.stream`) hands its finished flows
out window by window, and its engine's drops and SNAT change points are drained after each
window; :class:`Spill` turns each batch into the rows the in-memory tables would hold
(:mod:`lbsim.metrics`' own functions) and appends them to ``flows.parquet``, ``drops.parquet``
and ``snat.parquet``, so the run holds only a row group's worth. :class:`Lazy` is what
:class:`lbsim.Result` keeps for such a table: the file is read on first access; the load table
is computed from the flows file in batches, never holding all of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .metrics import chunk_frame, drops_table, load_table, snat_table
from .records import FlowChunk

__all__ = ["Spill", "Lazy", "TABLES", "ROW_GROUP", "prepare_dir", "load_from", "write_tables"]

#: the tables a spilled run writes, each to ``<name>.parquet`` in its directory
TABLES = ("flows", "drops", "snat")
#: rows buffered before a row group is written (a flows row is ~130 bytes in memory)
ROW_GROUP = 1 << 17


def prepare_dir(records_dir: str | os.PathLike | None) -> tuple[Path, bool]:
    """The directory a run writes its tables to, and whether lbsim made it (a temporary one,
    removed with the :class:`Spill` that writes it). A path that exists and is not a directory,
    or one that cannot be written, is refused (an empty name is refused before: lbsim.run)."""
    if records_dir is None:
        return Path(tempfile.mkdtemp(prefix="lbsim-records-")), True
    path = Path(records_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"records_dir = {str(path)!r} is invalid: it exists and is not a "
                         f"directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()        # writable: refused now, not at the end
    except OSError as e:
        raise ValueError(f"records_dir = {str(path)!r} is invalid: {e.strerror or e}") from None
    return path, False


def write_tables(directory: Path, frames: dict[str, pd.DataFrame]) -> Path:
    """Write a whole run's tables (``name``: frame) to ``<directory>/<name>.parquet``; a failed
    write (a full disk) is refused in one line."""
    try:
        for name, df in frames.items():
            df.to_parquet(directory / f"{name}.parquet", index=False)
    except OSError as e:
        raise ValueError(f"records_dir = {str(directory)!r}: writing the run's tables failed: "
                         f"{e.strerror or e}") from None
    return directory


class _Table:
    """One Parquet file, appended row group by row group; every row group has the schema of
    the first (the same columns, dtypes and categories)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts: list[pd.DataFrame] = []
        self.rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def add(self, df: pd.DataFrame) -> None:
        if len(df):
            self.parts.append(df)
            self.rows += len(df)
            if self.rows >= ROW_GROUP:
                self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        df = pd.concat(self.parts, ignore_index=True) if len(self.parts) > 1 else self.parts[0]
        self.parts, self.rows = [], 0
        self._write(df)

    def _write(self, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table)

    def close(self, empty: pd.DataFrame) -> None:
        """Write what is buffered (``empty``, the table with no rows, if nothing was added)."""
        self.flush()
        if self.writer is None:
            self._write(empty)
        self.writer.close()


class Spill:
    """The tables of one streamed run with full records, written to ``directory``; ``p`` and
    ``pod_node``: the run's :class:`~lbsim.workload.Params` and pods' nodes (the flows table's
    derived columns read them)."""

    def __init__(self, directory: Path, p, pod_node: np.ndarray, temporary: bool) -> None:
        self.directory, self.p, self.pod_node, self.temporary = directory, p, pod_node, temporary
        self.paths = {name: directory / f"{name}.parquet" for name in TABLES}
        self._tables: dict[str, _Table] | None = {name: _Table(path)
                                                  for name, path in self.paths.items()}
        self._last_drop = (-1, -1, -1)
        #: each file's (size, mtime_ns) when written: a later run writing there is noticed
        self.stamps: dict[str, tuple[int, int]] = {}
        if temporary:
            # the directory lives as long as the spill: the Records or Result (and any copy of
            # it) holding its tables; removed however the run ends
            weakref.finalize(self, shutil.rmtree, str(directory), True)

    def __getstate__(self) -> dict:
        # a pickled spill (a Result sent between processes) reads the same files; the writers
        # are closed by then, and the directory stays the original's to remove
        return {k: v for k, v in self.__dict__.items() if k != "_tables"} | {"_tables": None,
                                                                           "temporary": False}

    def flows(self, c: FlowChunk) -> None:
        """Flows ``c.first`` .. in flow order (full records' fields)."""
        self._tables["flows"].add(chunk_frame(c, self.p, self.pod_node))

    def drops(self, D: np.ndarray) -> None:
        """A batch of drop rows (t, flow, attempt, node, cause), every one later than the last
        batch's (the engine processes events in time order): sorted as the whole table is."""
        if not len(D):
            return
        df = drops_table(*(np.ascontiguousarray(D[:, i]) for i in range(5)))
        first = (int(D[:, 0].min()), int(df["flow"].iat[0]), int(df["attempt"].iat[0]))
        if first < self._last_drop:
            raise RuntimeError(f"spill: drops out of time order across windows ({first} after "
                               f"{self._last_drop})")
        self._last_drop = (int(D[:, 0].max()), int(df["flow"].iat[-1]),
                           int(df["attempt"].iat[-1]))
        self._tables["drops"].add(df)

    def snat(self, SG: np.ndarray) -> None:
        """A batch of SNAT change points (t, pair, ports), in the order the engine wrote them."""
        if len(SG):
            self._tables["snat"].add(snat_table(SG[:, 0].copy(), SG[:, 1].copy(),
                                                SG[:, 2].copy(), self.p.pods))

    def _empty(self, name: str) -> pd.DataFrame:
        """Table ``name`` with no rows: its columns and dtypes."""
        none = np.zeros(0, np.int64)
        if name == "flows":
            return chunk_frame(_no_flows(), self.p, self.pod_node)
        if name == "drops":
            return drops_table(none, none, none, none, none)
        return snat_table(none, none, none, self.p.pods)

    def close(self) -> None:
        """Write the rest; an empty table still gets its file (its columns, no rows)."""
        assert self._tables is not None
        for name, table in self._tables.items():
            table.close(self._empty(name))
            st = self.paths[name].stat()
            self.stamps[name] = (st.st_size, st.st_mtime_ns)
        self._tables = None

    def frames(self) -> dict[str, Lazy]:
        """The tables as :class:`Lazy` frames, and the load table computed from the flows."""
        return {name: Lazy(self, name) for name in TABLES + ("load",)}

    def read(self, name: str) -> pd.DataFrame:
        """Table ``name`` (or "load", from the flows file), read from its file; refused in one
        line if another run has written over the file since."""
        path = self.paths["flows" if name == "load" else name]
        st = path.stat() if path.exists() else None
        if st is None or (st.st_size, st.st_mtime_ns) != self.stamps.get(path.stem):
            why = ("it is gone (a temporary directory goes with the run that wrote it: pass "
                   "records_dir= to keep the tables)" if st is None else
                   "another run wrote over it (give each run its own records_dir)")
            raise ValueError(f"{str(path)!r} is no longer this run's: {why}")
        if name != "load":
            return _read(path, self._empty(name))
        from .budget import load_bins
        p = self.p
        return load_table(lambda: load_from(path), p.pods, self.pod_node, load_bins(p.pods))


def _no_flows() -> FlowChunk:
    none = np.zeros(0, np.int64)
    return FlowChunk(0, np.zeros(0, np.int8), none, none, none, none, none, none, none, none,
                     none, none, none, cause=np.zeros(0, np.int8), nat_port=none, sport=none,
                     instance=none)


def _read(path: Path, like: pd.DataFrame, available: int | None = None) -> pd.DataFrame:
    """The table in ``path`` with ``like``'s categorical dtypes (Parquet gives a table with no
    rows categories of another dtype). A table that would not fit in memory (its rows x
    ``like``'s bytes a row, twice: Arrow's copy and pandas') is refused, naming the way to read
    part of it."""
    from .budget import available_bytes
    rows = pq.ParquetFile(path).metadata.num_rows
    need = 2 * rows * sum(1 if isinstance(t, pd.CategoricalDtype) else np.dtype(t).itemsize
                          for t in like.dtypes)
    have = available_bytes() if available is None else available
    if have is not None and need > 0.8 * have:
        raise ValueError(f"{path.name} holds {rows:,} rows: reading it whole would need about "
                         f"{need / 2**30:,.1f} GiB and {have / 2**30:,.1f} GiB are available; "
                         f"read the columns or row groups you need from {str(path)!r} "
                         f"(pd.read_parquet(path, columns=[...]), pyarrow.parquet.ParquetFile)")
    df = pd.read_parquet(path)
    cats = {k: t for k, t in like.dtypes.items() if isinstance(t, pd.CategoricalDtype)}
    return df.astype(cats) if cats else df


def load_from(path: Path, batch: int = ROW_GROUP):
    """The (arrival_s, closed_s, pod) arrays of the established flows in the flows file at
    ``path``, a batch at a time (a failed flow has no close time)."""
    f = pq.ParquetFile(path)
    for b in f.iter_batches(batch_size=batch, columns=["arrival_s", "closed_s", "pod"]):
        a, c, pod = (b.column(i).to_numpy(zero_copy_only=False) for i in range(3))
        ok = ~np.isnan(c)
        yield a[ok], c[ok], pod[ok].astype(np.int64)


class Lazy:
    """Table ``name`` of a spilled run, read from its Parquet file when first asked for, then
    kept (it keeps the spill, and so its directory, alive)."""

    def __init__(self, spill: Spill, name: str) -> None:
        self.spill, self.name = spill, name
        self._frame: pd.DataFrame | None = None

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self.spill.read(self.name)
        return self._frame

    def __repr__(self) -> str:
        return f"Lazy({str(self.spill.directory)!r}, {self.name!r})"

