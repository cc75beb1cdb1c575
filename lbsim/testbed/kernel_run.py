"""One scenario on this machine's own kernel: :func:`run_kernel`.

The flows are lbsim's own draws for the scenario and its seed (:mod:`lbsim.testbed.plan`), replayed
in real time by :mod:`lbsim.testbed.traffic` through namespaces built by
:mod:`lbsim.testbed.netns`; the summary metrics come from the kernel's counters and from what each
client and pod saw, under the bench's metric names.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DataPath, Scenario
from ..metrics import _max_over_mean, pod_load_metrics
from ..tuples import client_ip, pod_ip
from ..workload import slot_opens
from . import traffic
from .counters import KERNEL_COUNTERS, conntrack_stats, tcp_ext
from .netns import Namespaces, unavailable
from .plan import LIMITS, Limits, Plan, plan, table_refusal

__all__ = ["KernelRun", "TestbedUnavailable", "run_kernel", "KERNEL_FLOW_COLUMNS"]

#: the per-flow table of a kernel run
KERNEL_FLOW_COLUMNS = {
    "flow": "flow number (lbsim's, in arrival order)",
    "arrival_s": "when lbsim's draw started the flow (a closed loop: when the client process "
                 "did), s from the replay's start",
    "start_late_s": "how much later the client process started it, s",
    "client": "client number (its IP is 11.0.0.0 + client)",
    "client_port": "client's source port",
    "node": "node the LB sent the flow to (-1 on the direct path)",
    "pod": "pod that saw the flow's request (-1: none did)",
    "outcome": '"established", "timed_out", "refused", "address_busy", "error" or "not_run"',
    "sends": "UDP requests sent (0 for TCP: the kernel retransmits SYNs itself)",
    "connect_latency_s": "connect() call to its return, s (NaN: failed or UDP)",
    "response_time_s": "first SYN or request to the pod's answer at the client, s (NaN: none)",
    "source_ip": "source IP the pod saw, as a 32-bit integer (0: no pod saw the flow)",
    "source_ip_preserved": "the pod saw the client's own IP",
    "second_hop": "the pod ran on another node than the one the LB chose (NodePort only)",
}
#: the late start beyond which a replay is said to have fallen behind, s
LATE_WARN_S = 0.005


class TestbedUnavailable(RuntimeError):
    """This machine cannot run the testbed (not root, no namespaces, a tool missing)."""


@dataclass(frozen=True)
class KernelRun:
    """What this machine's kernel did with a scenario's flows."""

    scenario: Scenario
    #: ``uname -r``
    kernel: str
    #: the bench's metric names that the kernel measures
    summary: dict[str, float]
    #: one row per flow (:data:`KERNEL_FLOW_COLUMNS`)
    flows: pd.DataFrame
    #: one row per node: ``/proc/net/stat/nf_conntrack`` summed over CPUs at the end
    counters: pd.DataFrame


def _pdeathsig() -> None:
    # the replay dies with its parent, even one killed by SIGKILL
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def _replay(ns: Namespaces, pl: Plan, d: Path) -> dict[str, np.ndarray]:
    w, sc = pl.workload, pl.scenario
    pods = pl.pods
    workers = (np.asarray(sc.pod.workers, np.int64) if isinstance(sc.pod.workers, tuple)
               else np.full(pods, sc.pod.workers, np.int64))
    np.savez(d / "plan.npz", t0=w.t0, client_ip=client_ip(w.client), sport=w.sport,
             dst_ip=pl.dst_ip, dst_port=pl.dst_port, service=w.service, hold=w.hold,
             tcp=np.bool_(w.params.tcp), udp_timeout_s=sc.workload.udp_timeout_s,
             udp_retries=sc.workload.udp_retries, workers=workers, pod_ns=np.array(ns.pod),
             pod_ip=pod_ip(np.arange(pods)), pod_port=sc.pod.port,
             concurrency=sc.workload.concurrency if w.params.closed_loop else 0,
             think_ns=w.params.think, ramp=slot_opens(sc))
    cmd = ["ip", "netns", "exec", ns.cli, sys.executable, traffic.__file__, str(d)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_pdeathsig)
    try:
        _, err = proc.communicate(timeout=pl.wall_s + 60)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        raise RuntimeError(f"the testbed's traffic process failed: {last}")
    return dict(np.load(d / "result.npz"))


def run_kernel(scenario: Scenario, *, limits: Limits = LIMITS) -> KernelRun:
    """Run ``scenario``'s flows on this machine's kernel (root; namespaces, iptables or nftables)
    and measure it. Raises ValueError for what the testbed cannot express (one line naming the
    field) and :class:`TestbedUnavailable` where the machine cannot run it; every namespace,
    rule and process it made is gone when it returns or raises."""
    pl = plan(scenario, limits)
    why = unavailable(pl.loader)
    if why is not None:
        raise TestbedUnavailable(why)
    sc, w = pl.scenario, pl.workload
    with Namespaces(pl) as ns, tempfile.TemporaryDirectory(prefix="lbsim-testbed-") as tmp:
        node0 = ns.node[0]
        host_max = int(ns.read(node0, "/proc/sys/net/netfilter/nf_conntrack_max"))
        why = table_refusal(sc, host_max)
        if why is not None:
            raise ValueError(why)
        _buckets_warning(sc, int(ns.read(node0, "/proc/sys/net/netfilter/nf_conntrack_buckets")))
        before = tcp_ext(ns.read(ns.cli, "/proc/net/netstat"))
        res = _replay(ns, pl, Path(tmp))
        after = tcp_ext(ns.read(ns.cli, "/proc/net/netstat"))
        stats = [conntrack_stats(ns.read(n, "/proc/net/stat/nf_conntrack")) for n in ns.node]
    flows = _flows(pl, res)
    late = flows["start_late_s"].quantile(0.99) if len(flows) else 0.0
    if late > LATE_WARN_S:
        warnings.warn(f"the testbed's replay fell behind: 1 % of flows started more than "
                      f"{late * 1e3:.1f} ms late (a busy machine, or workload.rate_per_s = "
                      f"{sc.workload.rate_per_s:g} too high for one process)", RuntimeWarning,
                      stacklevel=2)
    retrans = (after.get("TCPSynRetrans", 0) - before.get("TCPSynRetrans", 0) if w.params.tcp
               else int(np.maximum(res["sends"] - 1, 0).sum()))
    counters = pd.DataFrame(stats)
    counters.insert(0, "node", np.arange(len(stats)))
    return KernelRun(scenario=sc, kernel=os.uname().release,
                     summary=_summary(pl, flows, stats, retrans), flows=flows, counters=counters)


def _buckets_warning(sc: Scenario, host: int) -> None:
    if sc.conntrack.buckets != host:
        warnings.warn(f"conntrack.buckets = {sc.conntrack.buckets} is not used by the testbed: "
                      f"nf_conntrack_buckets is the host's ({host}); it matters only to early "
                      "drop in a full table, which a testbed run cannot reach", RuntimeWarning,
                      stacklevel=3)


def _flows(pl: Plan, res: dict[str, np.ndarray]) -> pd.DataFrame:
    w, sc = pl.workload, pl.scenario
    nodeport = sc.path is DataPath.NODEPORT
    pod = res["pod"].astype(np.int64)
    ok = res["outcome"] == traffic.ESTABLISHED
    node = w.backend if nodeport else np.full(w.flows, -1, np.int64)
    pod_node = w.pod_node[np.maximum(pod, 0)]
    return pd.DataFrame({
        "flow": np.arange(w.flows),
        "arrival_s": (res["start_ns"] if w.params.closed_loop else w.t0) / 1e9,
        "start_late_s": res["late_ns"] / 1e9,
        "client": w.client,
        "client_port": w.sport,
        "node": node,
        "pod": pod,
        "outcome": pd.Categorical.from_codes(res["outcome"].astype(np.int64),
                                             categories=list(traffic.OUTCOMES)),
        "sends": res["sends"].astype(np.int64),
        "connect_latency_s": np.where(res["connect_ns"] >= 0, res["connect_ns"] / 1e9, np.nan),
        "response_time_s": np.where(res["response_ns"] >= 0, res["response_ns"] / 1e9, np.nan),
        "source_ip": res["seen_ip"],
        "source_ip_preserved": (res["seen_ip"] == client_ip(w.client)) & (pod >= 0),
        "second_hop": nodeport & (pod >= 0) & (pod_node != node),
    }).assign(established=ok)


def _summary(pl: Plan, flows: pd.DataFrame, stats: list[dict[str, int]], retrans: int
             ) -> dict[str, float]:
    sc = pl.scenario
    ok = flows["established"].to_numpy()
    n, n_ok = len(flows), int(ok.sum())
    good = flows[ok]
    seen = good[good["pod"] >= 0]
    load = np.bincount(seen["pod"], minlength=pl.pods)[:pl.pods]
    nodeport = sc.path is DataPath.NODEPORT
    node_of = seen["node"] if nodeport else pl.workload.pod_node[seen["pod"]]
    node_load = np.bincount(node_of, minlength=pl.nodes).astype(float)
    out: dict[str, float] = {"flows": n, "established": n_ok, "failed": n - n_ok,
                             "failed_fraction": (n - n_ok) / n if n else float("nan"),
                             "last_arrival_s": float(flows["arrival_s"].max()) if n else 0.0,
                             "syn_retransmits": retrans}
    for metric, col in KERNEL_COUNTERS.items():
        out[metric] = sum(s.get(col, 0) for s in stats)
    q = [0.5, 0.99]
    conn = good["connect_latency_s"].dropna()
    resp = good["response_time_s"].dropna()
    out.update({
        "connect_latency_p50_s": float(conn.quantile(q[0])) if len(conn) else float("nan"),
        "connect_latency_p99_s": float(conn.quantile(q[1])) if len(conn) else float("nan"),
        "response_time_p50_s": float(resp.quantile(q[0])) if len(resp) else float("nan"),
        "response_time_p99_s": float(resp.quantile(q[1])) if len(resp) else float("nan"),
        **pod_load_metrics(load),
        "node_load_max_over_mean": _max_over_mean(node_load),
        "source_ip_preserved_fraction": float(good["source_ip_preserved"].mean())
        if n_ok else float("nan"),
        "second_hop_fraction": float(good["second_hop"].mean()) if n_ok else float("nan"),
    })
    return out
