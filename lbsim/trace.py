"""Recorded flows replayed as they are: ``[workload] arrival = "trace"``, ``trace = "FILE"``.

A trace is a CSV or Parquet file with one row per flow (a flow log, a load generator's record):

==============  ==============================================================================
``time_s``      when the flow started, s (any origin: the first row is time 0)
``client_ip``   the client's IPv4 address, dotted ("198.51.100.7") or as an integer
``client_port`` the client's source port, 1 .. 65535
``protocol``    "tcp" or "udp"; every row the scenario's ``workload.protocol`` (one Service)
``duration_s``  optional: how long the client keeps the connection after the response, s (it
                replaces ``workload.hold_s``)
==============  ==============================================================================

Rows are replayed in time order (ties keep the file's order), so flow ``i`` is the ``i``-th
start. Clients are numbered by first appearance: client ``c`` is the trace's ``c``-th distinct
address (lbsim's own address for it is 11.0.0.0 + c, :mod:`lbsim.tuples`). The run's
``workload.flows`` and ``workload.clients`` are the trace's, and ``workload.rate_per_s`` its mean
rate (:func:`with_trace`); everything else (the LB's choice, kube-proxy's, services) is drawn as
for any arrival process.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from .config import Arrival, Scenario
from .config.fields import MAX_CLIENTS
from .kernel import NS

__all__ = ["Trace", "TRACE_COLUMNS", "read_trace", "with_trace"]

TRACE_COLUMNS = ("time_s", "client_ip", "client_port", "protocol")
#: the optional column
DURATION = "duration_s"


@dataclass(frozen=True)
class Trace:
    """A trace's flows in time order (arrays of one length; read-only)."""

    #: start of each flow, ns after the first
    t0: np.ndarray
    #: client number (the trace's addresses by first appearance)
    client: np.ndarray
    sport: np.ndarray
    #: each flow's hold (duration_s), ns; None: the file has no durations
    hold: np.ndarray | None
    #: the protocol every row names
    protocol: str
    #: each client number's address as the trace gave it (an integer)
    addresses: np.ndarray

    @property
    def flows(self) -> int:
        return int(self.t0.size)


def _bad(path: str, what: str) -> ValueError:
    return ValueError(f"workload.trace = {path!r} is invalid: {what}")


def _read_table(path: str) -> pd.DataFrame:
    try:
        if path.lower().endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"client_ip": str, "protocol": str})
    except FileNotFoundError:
        raise _bad(path, "no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise _bad(path, f"cannot read it as {'Parquet' if path.endswith('parquet') else 'CSV'}"
                   f" ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _addresses(path: str, col: pd.Series) -> np.ndarray:
    """IPv4 addresses as integers, from dotted strings or integers."""
    if pd.api.types.is_integer_dtype(col):
        a = col.to_numpy(np.int64)
        if ((a < 0) | (a > 0xFFFFFFFF)).any():
            raise _bad(path, f"client_ip row {int(np.argmax((a < 0) | (a > 0xFFFFFFFF)))} is "
                       "not an IPv4 address (an integer in [0, 2^32 - 1])")
        return a
    uniq = pd.unique(col.astype(str))
    lookup = {}
    for i, s in enumerate(uniq):
        try:                  # dotted, or an integer written as text (a CSV's column)
            v = s.strip()
            lookup[s] = int(ipaddress.IPv4Address(int(v) if v.isdigit() else v))
        except ValueError:
            row = int(np.flatnonzero(col.astype(str).to_numpy() == s)[0])
            raise _bad(path, f"client_ip row {row} = {s!r} is not an IPv4 address") from None
    return col.astype(str).map(lookup).to_numpy(np.int64)


def _numbers(path: str, df: pd.DataFrame, name: str) -> np.ndarray:
    x = pd.to_numeric(df[name], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(x)
    if bad.any():
        raise _bad(path, f"{name} row {int(np.argmax(bad))} = {df[name].iloc[int(np.argmax(bad))]!r} "
                   "is not a finite number")
    return x


@lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> Trace:
    df = _read_table(path)
    missing = [c for c in TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise _bad(path, f"no column {', '.join(missing)} (a trace has columns "
                   f"{', '.join(TRACE_COLUMNS)} and optionally {DURATION})")
    if len(df) == 0:
        raise _bad(path, "it has no rows")
    if len(df) > 1 << 40:
        raise _bad(path, f"{len(df)} rows, at most 2^40 (as workload.flows)")
    time_s = _numbers(path, df, "time_s")
    port = _numbers(path, df, "client_port")
    badp = (port != np.round(port)) | (port < 1) | (port > 65535)
    if badp.any():
        raise _bad(path, f"client_port row {int(np.argmax(badp))} = {port[np.argmax(badp)]:g} "
                   "is not a port in [1, 65535]")
    protos = df["protocol"].astype(str).str.strip().str.lower()
    kinds = sorted(set(protos))
    if len(kinds) > 1 or kinds[0] not in ("tcp", "udp"):
        raise _bad(path, f"protocol has {kinds}: every row must be the same \"tcp\" or \"udp\" "
                   "(one Service, one protocol)")
    hold = None
    if DURATION in df.columns:
        hold = _numbers(path, df, DURATION)
        if (hold < 0).any():
            raise _bad(path, f"{DURATION} row {int(np.argmax(hold < 0))} is negative")
    addr = _addresses(path, df["client_ip"])
    order = np.argsort(time_s, kind="stable")
    addr = addr[order]
    first, client = np.unique(addr, return_index=True, return_inverse=True)[1:]
    # number clients by first appearance, not by address
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    client = rank[client.reshape(-1)]
    if first.size > MAX_CLIENTS:
        raise _bad(path, f"{first.size} distinct client addresses, at most {MAX_CLIENTS}")
    t = time_s[order]
    t0 = np.rint((t - t[0]) * NS).astype(np.int64)
    out = Trace(t0=t0, client=client.astype(np.int64), sport=port[order].astype(np.int64),
                hold=None if hold is None else np.rint(hold[order] * NS).astype(np.int64),
                protocol=kinds[0], addresses=addr[np.sort(first)])
    for a in (out.t0, out.client, out.sport, out.hold, out.addresses):
        if a is not None:
            a.flags.writeable = False
    return out


def read_trace(path: str) -> Trace:
    """The flows of trace file ``path`` (module docstring); read once while the file is
    unchanged. Raises ValueError naming the file and what is wrong."""
    try:
        st = os.stat(path)
    except OSError:
        raise _bad(path, "no such file") from None
    return _read(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def with_trace(sc: Scenario) -> Scenario:
    """``sc`` with its trace's counts: ``workload.flows`` and ``workload.clients`` the trace's,
    ``rate_per_s`` its mean rate (flows over their span); unchanged without a trace."""
    w = sc.workload
    if w.arrival is not Arrival.TRACE:
        return sc
    tr = read_trace(w.trace)
    if tr.protocol != w.protocol.value:
        raise _bad(w.trace, f"its flows are {tr.protocol}, workload.protocol is "
                   f"{w.protocol.value!r}")
    span = tr.t0[-1] / NS
    rate = (tr.flows - 1) / span if tr.flows > 1 and span > 0 else w.rate_per_s
    return sc.replace(**{"workload.flows": tr.flows, "workload.clients": int(tr.addresses.size),
                         "workload.rate_per_s": float(rate)})
