"""The insertion race's window on this machine's kernel: :func:`measure_race_window`.

Two UDP flows from two clients with the same source port reach one node for one pod, each sent
by its own process pinned to its own CPU (:mod:`lbsim.testbed.pairs`), the second ``offset``
after the first. MASQUERADE without a port range keeps the client's port when the reply tuple is
free, so both want the same reply tuple; a flow's NAT sees only confirmed entries (kernel-facts
1.5), so when the two are processed at nearly the same instant on the two CPUs neither sees the
other, and the later confirm finds the reply tuple taken: its datagram is dropped (``insert_failed``
and ``drop`` + 1; UDP's clash resolution needs an identical original tuple, which two clients do
not share). Pairs are 1 ms apart and each uses its own port, so pairs do not interact.

``kind = "same_tuple"`` sends identical tuples instead: both processes bind client 0's address and
the pair's port (SO_REUSEPORT). Neither datagram is lost (the twins get the same NAT, and the
later confirm merges into the earlier entry, ``clash_resolve``), so a process in the node's
namespace reads its counters between pairs and a pair clashed when ``clashres`` grew. Its window
is the whole path from the conntrack lookup (PREROUTING) to the confirm, where a same-port pair's
is from the SNAT (POSTROUTING) to the confirm.

The offsets are the senders' own clock readings just before ``sendto`` (CLOCK_MONOTONIC, shared by
every namespace), so the measurement is of the loss against the offset of the two ``sendto``
calls. Most offsets are drawn uniformly within ``spread_s``; a ``control`` share sits at
``+-gap_s / 2.5``, far outside any window.

:func:`fit_window` fits the model lbsim can run: each flow's processing, from its NAT to its
confirm, lasts ``window``; each packet reaches its CPU after a random delay; the two clash if
their processing overlaps, ``|offset + D| < window``, with ``D`` the difference of the two delays.
Exponential delays make ``D`` Laplace; its centre ``shift`` is the two paths' mean difference.
Maximum likelihood over a grid; Pearson's chi-square over 4 us groups says how well it follows.
:meth:`RaceFit.scenario` is that model as an lbsim scenario (pinned same-port pairs, the window as
``cluster.packet_time_s``, the jitter as ``cluster.packet_jitter_s``), and :func:`lbsim_clashes`
runs it at the offsets of a measurement: lbsim's prediction of the kernel's clashes.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Scenario
from ..tuples import client_ip, node_ip, pod_ip
from . import pairs as pairs_proc
from .counters import conntrack_stats
from .kernel_run import TestbedUnavailable, _pdeathsig
from .netns import Namespaces, unavailable
from .plan import NODE_PORT, ip_str, plan

__all__ = ["RaceWindow", "RaceFit", "measure_race_window", "fit_window", "lbsim_clashes",
           "RACE_KINDS", "RACE_PAIR_COLUMNS"]

#: the per-pair table of a measurement
RACE_PAIR_COLUMNS = {
    "pair": "pair number",
    "port": "the two clients' shared source port",
    "planned_offset_s": "the second send's planned instant after the first's, s",
    "offset_s": "the second sendto() after the first, as the senders' clocks read it, s",
    "control": "a control pair (planned far outside any window)",
    "first_lost": "the first client's datagram never reached the pod",
    "second_lost": "the second client's datagram never reached the pod",
    "clashed": "same_port: one of the two was lost; same_tuple: the node's clashres grew",
}
RACE_KINDS = ("same_port", "same_tuple")
#: the scenario whose namespaces carry the pairs: one node, one pod, two clients, UDP, the
#: node's MASQUERADE keeping the client's port when it can (no port range)
_SCENARIO = {"cluster.nodes": 1, "cluster.pods": 1, "workload.protocol": "udp",
             "workload.clients": 2, "workload.flows": 2, "workload.rate_per_s": 1.0,
             "pod.service_s": 0.0, "nat.random_fully": False, "nat.port_range": None}
_FIRST_PORT = 20000
_STARTUP_S = 2.0        # senders start (an interpreter, numpy) before the first pair is due


@dataclass(frozen=True)
class RaceFit:
    """The race model fitted to a measurement (see the module's docstring); times in s."""

    #: each flow's NAT-to-confirm interval: two flows clash if these overlap
    window_s: float
    #: the centre of the delay difference D (second flow's delay minus the first's)
    shift_s: float
    #: the Laplace scale of D: the mean of each packet's exponential delay
    jitter_s: float
    #: log-likelihood at the fit, and Pearson's chi-square over 4 us groups with its degrees of
    #: freedom (groups expecting >= 5 clashes, less the 3 fitted parameters)
    loglik: float
    chi2: float
    dof: int

    def clash_probability(self, offset_s: np.ndarray) -> np.ndarray:
        """P(clash) of a pair whose second send is ``offset_s`` after the first."""
        return _model(np.asarray(offset_s, float), self.window_s, self.shift_s, self.jitter_s)

    def scenario(self, offset_s: float, pairs: int = 2000, seed: int = 0,
                 kind: str = "same_port") -> Scenario:
        """This race in lbsim: ``pairs`` same-port (or identical-tuple) pairs ``offset_s`` apart
        (as the senders' clocks read it), pinned to two CPUs of one node, each flow processed
        for the window (``cluster.packet_time_s``, NAT and SNAT at its start) after an
        exponential delay of mean jitter (``cluster.packet_jitter_s``). lbsim's two delays have
        one distribution, so the senders' shift moves the offset, and its sign does not matter.
        Pairs 10 ms apart, UDP entries gone after 1 ms: pairs do not meet."""
        if kind not in RACE_KINDS:
            raise ValueError(f"kind = {kind!r} is invalid: must be one of {list(RACE_KINDS)}")
        return Scenario().replace(**{
            **_SCENARIO, "seed": seed, "workload.flows": 2 * pairs,
            "workload.arrival": "periodic", "workload.rate_per_s": 200.0,
            "workload.udp_retries": 0, "conntrack.udp_s": 1e-3, "records": "summary",
            "workload.pairs": kind, "workload.pin_pairs": True,
            "workload.pair_offset_s": abs(float(offset_s) + self.shift_s),
            "cluster.packet_time_s": self.window_s,
            "cluster.packet_jitter_s": {"dist": "exponential", "mean": self.jitter_s}})


@dataclass(frozen=True)
class RaceWindow:
    """One measurement: every pair, the node's counters, the fit."""

    kernel: str
    #: "same_port" or "same_tuple"
    kind: str
    #: one row per pair (:data:`RACE_PAIR_COLUMNS`)
    pairs: pd.DataFrame
    #: the node's ``/proc/net/stat/nf_conntrack``, summed over CPUs
    counters: dict[str, int]
    fit: RaceFit

    def curve(self, bin_s: float = 2e-6) -> pd.DataFrame:
        """The measured clash fraction by offset (non-control pairs): ``offset_s`` (bin centre),
        ``pairs``, ``clashes``, ``fraction``, ``model`` (the fit's expected fraction)."""
        p = self.pairs[~self.pairs["control"]]
        b = np.floor(p["offset_s"].to_numpy() / bin_s)
        g = p.groupby(b)["clashed"]
        centre = (g.size().index.to_numpy() + 0.5) * bin_s
        out = pd.DataFrame({"offset_s": centre, "pairs": g.size().to_numpy(),
                            "clashes": g.sum().to_numpy()})
        out["fraction"] = out["clashes"] / out["pairs"]
        out["model"] = self.fit.clash_probability(centre)
        return out


def measure_race_window(pairs: int = 20_000, spread_s: float = 40e-6, *, kind: str = "same_port",
                        gap_s: float = 1e-3, control: float = 0.1, seed: int = 0) -> RaceWindow:
    """Send ``pairs`` same-port (or, ``kind = "same_tuple"``, identical-tuple) pairs through one
    node from two CPUs and fit the race model.

    Needs root and at least two CPUs. Takes about ``pairs x gap_s`` plus a few seconds."""
    if kind not in RACE_KINDS:
        raise ValueError(f"kind = {kind!r} is invalid: must be one of {list(RACE_KINDS)}")
    if not 1 <= pairs <= 40_000:
        raise ValueError(f"pairs = {pairs} is out of range: an integer in [1, 40000] (one "
                         "source port per pair)")
    if not 0 < spread_s < gap_s / 2.5:
        raise ValueError(f"spread_s = {spread_s} is out of range: in (0, gap_s / 2.5 = "
                         f"{gap_s / 2.5:g})")
    if not 0 <= control < 1:
        raise ValueError(f"control = {control} is out of range: a fraction in [0, 1)")
    pl = plan(Scenario().replace(**_SCENARIO))
    why = unavailable(pl.loader)
    if why is None and len(os.sched_getaffinity(0)) < 2:
        why = "the race needs two CPUs; this process may use one"
    if why is not None:
        raise TestbedUnavailable(why)
    rng = np.random.default_rng(seed)
    ctl = rng.random(pairs) < control
    planned = np.where(ctl, np.where(rng.random(pairs) < 0.5, -1, 1) * gap_s / 2.5,
                       rng.uniform(-spread_s, spread_s, pairs))
    with Namespaces(pl) as ns, tempfile.TemporaryDirectory(prefix="lbsim-race-") as tmp:
        d = Path(tmp)
        sent = _run_pairs(ns, d, planned, gap_s, kind == "same_tuple")
        got = np.load(d / "got.npy")
        counters = conntrack_stats(ns.read(ns.node[0], "/proc/net/stat/nf_conntrack"))
        seen = np.load(d / "watch.npy") if kind == "same_tuple" else None
    lost = ~got.reshape(pairs, 2)
    clashed = (lost.any(axis=1) if seen is None
               else np.diff(seen[:, 0], prepend=0) > 0)
    table = pd.DataFrame({
        "pair": np.arange(pairs), "port": _FIRST_PORT + np.arange(pairs),
        "planned_offset_s": planned, "offset_s": (sent[1] - sent[0]) / 1e9, "control": ctl,
        "first_lost": lost[:, 0], "second_lost": lost[:, 1], "clashed": clashed})
    near = table[~table["control"]]
    return RaceWindow(kernel=os.uname().release, kind=kind, pairs=table, counters=counters,
                      fit=fit_window(near["offset_s"].to_numpy(), near["clashed"].to_numpy()))


def lbsim_clashes(fit: RaceFit, offset_s: np.ndarray, *, pairs: int = 2000, bin_s: float = 1e-6,
                  seed: int = 0, kind: str = "same_port") -> np.ndarray:
    """lbsim's clash probability for pairs at ``offset_s`` (s) under ``fit``: one run of
    :meth:`RaceFit.scenario` of ``pairs`` pairs per distinct ``|offset + shift|`` rounded to
    ``bin_s``, its clashed fraction (each a binomial estimate: ``pairs`` trials): pairs with a
    datagram lost (same-port) or merged (identical tuples: ``clash_resolve``)."""
    what = "failed" if kind == "same_port" else "conntrack_clash_resolve"
    import lbsim                                     # the engine, not a testbed module
    lag = np.round(np.abs(np.asarray(offset_s, float) + fit.shift_s) / bin_s)
    out = np.empty(lag.size)
    for v in np.unique(lag):
        sc = fit.scenario(v * bin_s - fit.shift_s, pairs=pairs, seed=seed, kind=kind)
        with warnings.catch_warnings():              # short on purpose: pairs, not a table
            warnings.simplefilter("ignore", RuntimeWarning)
            out[lag == v] = lbsim.run(sc).summary[what] / pairs
    return out


def _run_pairs(ns: Namespaces, d: Path, planned: np.ndarray, gap_s: float,
               same_tuple: bool) -> np.ndarray:
    n = planned.size
    first = (np.arange(n) * gap_s * 1e9).astype(np.int64)
    due = time.monotonic_ns() + int(_STARTUP_S * 1e9)
    np.savez(d / "pairs.npz", ip0=np.array([ip_str(client_ip(0))] * n),
             ip1=np.array([ip_str(client_ip(0 if same_tuple else 1))] * n),
             port=_FIRST_PORT + np.arange(n), reuse=same_tuple, gap=int(gap_s * 1e9),
             t0=first, t1=first + np.round(planned * 1e9).astype(np.int64), T0=due,
             dst_ip=ip_str(node_ip(0)), dst_port=NODE_PORT)
    listen = _STARTUP_S + n * gap_s + 1.0
    me = [sys.executable, pairs_proc.__file__]
    procs = [subprocess.Popen(["ip", "netns", "exec", ns.pod[0], *me, "receive", str(d),
                               ip_str(pod_ip(0)), str(ns.plan.scenario.pod.port), str(listen)],
                              start_new_session=True, preexec_fn=_pdeathsig)]
    try:
        procs += [subprocess.Popen(["ip", "netns", "exec", ns.cli, *me, "send", str(c), str(d)],
                                   start_new_session=True, preexec_fn=_pdeathsig)
                  for c in (0, 1)]
        if same_tuple:
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns.node[0], *me, "watch",
                                           str(d)], start_new_session=True,
                                          preexec_fn=_pdeathsig))
        for p in procs:
            if p.wait(timeout=listen + 60):
                raise RuntimeError(f"the race's {' '.join(p.args[-5:])} process failed "
                                   f"(exit {p.returncode})")
    except BaseException:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
        raise
    if not (d / "ready").exists():
        raise RuntimeError("the race's receiver never started")
    return np.stack([np.load(d / f"sent{c}.npy") for c in (0, 1)])


def _laplace_cdf(z: np.ndarray) -> np.ndarray:
    return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0.0)), 1 - 0.5 * np.exp(-np.maximum(z, 0.0)))


def _model(offset: np.ndarray, window: float, shift, jitter) -> np.ndarray:
    # clash iff -window < offset + D < window, D ~ Laplace(shift, jitter)
    return (_laplace_cdf((window - offset - shift) / jitter)
            - _laplace_cdf((-window - offset - shift) / jitter))


def fit_window(offset_s: np.ndarray, clashed: np.ndarray) -> RaceFit:
    """Maximum-likelihood (window, shift, jitter) of the race model for pairs at ``offset_s``
    (s) that ``clashed`` or not: a grid over 0.05 to 20 us windows, -10 to 10 us shifts and
    0.5 to 40 us jitters, refined once around its best point."""
    us = np.asarray(offset_s, float) * 1e6
    k = np.asarray(clashed, bool)
    if us.size == 0:
        raise ValueError("no pairs to fit")
    edges = np.arange(math.floor(us.min()), math.ceil(us.max()) + 1.0, 0.5)
    i = np.clip(np.searchsorted(edges, us, side="right") - 1, 0, max(edges.size - 1, 0))
    n = np.bincount(i, minlength=edges.size).astype(float)
    c = np.bincount(i, weights=k, minlength=edges.size)
    keep = n > 0
    x, n, c = edges[keep] + 0.25, n[keep], c[keep]
    grid = (np.geomspace(0.05, 20, 40), np.arange(-10, 10.01, 0.5), np.geomspace(0.5, 40, 40))
    best = _grid_best(x, n, c, *grid)
    w, s, j = best[1:]
    fine = (np.geomspace(w / 1.3, w * 1.3, 15), np.linspace(s - 0.5, s + 0.5, 11),
            np.geomspace(j / 1.3, j * 1.3, 15))
    ll, w, s, j = _grid_best(x, n, c, *fine)
    chi2, dof = _chi_square(x, n, c, _model(x, w, s, j))
    return RaceFit(window_s=w * 1e-6, shift_s=s * 1e-6, jitter_s=j * 1e-6, loglik=ll,
                   chi2=chi2, dof=dof)


def _grid_best(x, n, c, windows, shifts, jitters) -> tuple[float, float, float, float]:
    best = (-math.inf, 0.0, 0.0, 0.0)
    sh, ji = np.meshgrid(shifts, jitters, indexing="ij")
    for w in windows:
        p = np.clip(_model(x[None, None, :], w, sh[..., None], ji[..., None]), 1e-12, 1 - 1e-12)
        ll = (c * np.log(p) + (n - c) * np.log1p(-p)).sum(axis=-1)
        a, b = np.unravel_index(np.argmax(ll), ll.shape)
        if ll[a, b] > best[0]:
            best = (float(ll[a, b]), float(w), float(shifts[a]), float(jitters[b]))
    return best


def _chi_square(x, n, c, p) -> tuple[float, int]:
    g = np.floor(x / 4.0)
    chi2, groups = 0.0, 0
    for v in np.unique(g):
        m = g == v
        e, o, t = (n[m] * p[m]).sum(), c[m].sum(), n[m].sum()
        if e >= 5 and t - e >= 5:
            chi2 += (o - e) ** 2 / (e * (1 - e / t))
            groups += 1
    return float(chi2), max(groups - 3, 0)
