"""The control plane's own record of a run: each pod's instants, every change in the order it
happened, and what the LB sent new flows to over time (:func:`timeline`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from ..budget import check_control
from ..config import Scenario
from ..kernel import NS
from .cluster import NODE_EVENTS, TIMELINE_EVENTS, Cluster

__all__ = ["Timeline", "timeline", "tables", "POD_COLUMNS", "TIMELINE_METRICS"]

#: the pods table (one row per pod that existed), times in s from the start (NaN: never)
POD_COLUMNS = {
    "pod": "pod number (the first cluster.pods exist from the start; later ones in creation order)",
    "node": "node it runs on (-1: never bound, pending for want of a schedulable node)",
    "revision": "pod template revision (0 before the first rollout, +1 per rollout)",
    **{f"{e}_s": f"when it was {e.replace('_', ' ')}, s" for e in
       ("created", "listening", "containers_ready", "registered", "ready", "available",
        "deleted", "deregistered", "sigterm", "gone")},
    "first_receiving_s": "when the LB first sent it new flows, s",
    "last_receiving_s": "when the LB last stopped sending it new flows, s",
}

#: the summary of a timeline
TIMELINE_METRICS = {
    "rollout_duration_s": "first rollout's start to its end (every pod of the new revision and "
                          "replicas of them available), s (NaN: no rollout, or it did not end)",
    "time_to_receive_p50_s": "pods created during the run: Ready in Kubernetes to the LB's first "
                             "new flow, median, s (negative: the LB took it before Kubernetes did)",
    "time_to_receive_p99_s": "the same, 99th percentile, s",
    "time_to_drain_p99_s": "deleted pods: deletion to the LB's last new flow, 99th percentile, s",
    "min_receiving_pods": "fewest pods the LB sent new flows to at any instant",
    "min_accepting_receiving_pods": "fewest of those whose server accepted connections",
    "refusing_receiving_s": "time during which the LB sent new flows to some pod that did not "
                            "accept them (starting, after SIGTERM or gone), s",
}


@dataclass(frozen=True)
class Timeline:
    """What :func:`timeline` returns: ``pods`` (:data:`POD_COLUMNS`), ``events`` (t_s, pod,
    event: one row per change, in order), ``receiving`` (t_s, pods, accepting: from each change
    on, how many pods new flows go to and how many of them accept), ``nodes`` (t_s, node,
    event, endpoints: a node "joined" or was "cordoned" (add-node, drain events); on the NodePort
    path also each node's kube-proxy rules coming into force ("rules", with the endpoints they
    list), the LB "registered" a joined node, and found a node "healthy" or "unhealthy";
    endpoints -1 but for rules), ``summary`` (:data:`TIMELINE_METRICS`) and
    ``ignored`` (the numbers of the events that changed nothing: a crash of a pod that did not
    exist or was not running then, a drain of a cordoned node left with no pod)."""

    pods: pd.DataFrame
    events: pd.DataFrame
    receiving: pd.DataFrame
    summary: dict[str, float]
    nodes: pd.DataFrame
    ignored: tuple[int, ...] = ()


#: how long after the last event the control plane may take to settle (a registration, a
#: draining, a rollout), s; a run of the timeline stops earlier once nothing is pending
SETTLE_MAX_S = 3_600.0


def run_cluster(sc: Scenario) -> Cluster:
    """Run the scenario's control plane alone, until nothing is pending (at most
    :data:`SETTLE_MAX_S` after the last event)."""
    last = sc.events[-1].at_s if sc.events else 0.0
    check_control(sc, last + SETTLE_MAX_S)
    env = simpy.Environment()
    cl = Cluster(env, sc)
    end = int((last + SETTLE_MAX_S) * NS)
    step = 10 * NS
    t = int(last * NS) + 1
    while t < end:
        env.run(until=t)
        if _settled(cl):
            break
        t += step
    return cl


def _settled(cl: Cluster) -> bool:
    rollouts_done = all(e is not None for _, e in cl.rollouts)
    pods_done = all((p.deleted is None and p.available is not None and not p.unready
                     and (p.healthy or cl.nodeport))
                    or (p.deleted is not None and p.gone is not None
                        and (p.registered is None or p.removed is not None))
                    for p in cl.pods)
    nodes_done = not cl.nodeport or (cl.proxies.idle() and cl.node_targets.settled())
    return rollouts_done and pods_done and nodes_done and len(cl._live()) == cl.replicas


def timeline(sc: Scenario) -> Timeline:
    """The control plane of ``sc`` on its own: pods, the Deployment and the LB's targets, from
    the steady state through the scenario's events until nothing is pending."""
    return tables(run_cluster(sc))


def tables(cl: Cluster) -> Timeline:
    """The :class:`Timeline` of a cluster as far as it ran."""
    s = 1.0 / NS
    events = pd.DataFrame([(t * s, p.index, what) for p in cl.pods for t, what in p.log],
                          columns=["t_s", "pod", "event"])
    order = {e: i for i, e in enumerate(TIMELINE_EVENTS)}
    events = events.assign(_k=events["event"].map(order)).sort_values(
        ["t_s", "_k", "pod"], kind="stable").drop(columns="_k").reset_index(drop=True)
    events["event"] = pd.Categorical(events["event"], list(TIMELINE_EVENTS))
    first, last = _receiving_spans(cl)
    rows = []
    for p in cl.pods:
        row = {"pod": p.index, "node": p.node, "revision": p.revision}
        for f in ("created", "listening", "containers_ready", "registered", "ready",
                  "available", "deleted", "deregistered", "sigterm", "gone"):
            v = getattr(p, f)
            row[f"{f}_s"] = np.nan if v is None else v * s
        row["first_receiving_s"] = first.get(p.index, np.nan)
        row["last_receiving_s"] = last.get(p.index, np.nan)
        rows.append(row)
    pods = pd.DataFrame(rows, columns=list(POD_COLUMNS))
    # a row at every change: a SIGTERM changes what accepts without changing the set
    receiving = _receiving(cl)
    return Timeline(pods, events, receiving, _summary(cl, pods, receiving), _nodes(cl),
                    tuple(cl.ignored))


def _nodes(cl: Cluster) -> pd.DataFrame:
    rows = [(t / NS, v, what, -1) for t, v, what in cl.node_log]
    if cl.nodeport:
        rows += ([(t / NS, v, "rules", n) for t, v, n in cl.proxies.log]
                 + [(t / NS, v, what, -1) for t, v, what in cl.node_targets.log])
    order = {e: i for i, e in enumerate(NODE_EVENTS)}
    rows.sort(key=lambda r: (r[0], r[1], order[r[2]]))
    df = pd.DataFrame(rows, columns=["t_s", "node", "event", "endpoints"])
    df["event"] = pd.Categorical(df["event"], list(NODE_EVENTS))
    return df.astype({"node": np.int64, "endpoints": np.int64})


def _receiving_spans(cl: Cluster) -> tuple[dict[int, float], dict[int, float]]:
    """Each pod's first instant in the LB's set and the last instant it left it, s."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    prev: set[int] = set()
    for t, ids in cl.series:
        now = set(ids)
        for i in now - prev:
            first.setdefault(i, t / NS)
        for i in prev - now:
            last[i] = t / NS
        prev = now
    return first, last


def _summary(cl: Cluster, pods: pd.DataFrame, receiving: pd.DataFrame) -> dict[str, float]:
    start, end = cl.rollouts[0] if cl.rollouts else (None, None)
    later = pods[pods["created_s"] > 0]
    to_receive = (later["first_receiving_s"] - later["ready_s"]).dropna().to_numpy()
    deleted = pods[pods["deleted_s"].notna()]
    to_drain = (deleted["last_receiving_s"] - deleted["deleted_s"]).dropna().to_numpy()
    t = receiving["t_s"].to_numpy()
    short = (receiving["accepting"] < receiving["pods"]).to_numpy()
    refusing = float(np.sum(np.diff(t)[short[:-1]])) if t.size > 1 else 0.0

    def q(x: np.ndarray, k: float) -> float:
        return float(np.quantile(x, k)) if x.size else math.nan

    return {
        "rollout_duration_s": (end - start) / NS if end is not None else math.nan,
        "time_to_receive_p50_s": q(to_receive, 0.5),
        "time_to_receive_p99_s": q(to_receive, 0.99),
        "time_to_drain_p99_s": q(to_drain, 0.99),
        "min_receiving_pods": int(receiving["pods"].min()) if len(receiving) else 0,
        "min_accepting_receiving_pods": int(receiving["accepting"].min()) if len(receiving) else 0,
        "refusing_receiving_s": refusing,
    }


def _receiving(cl: Cluster) -> pd.DataFrame:
    """A row at every instant a pod changed or the LB's set did: how many pods the LB sends new
    flows to, and how many of them accept (each set's count in one numpy pass)."""
    big = np.iinfo(np.int64).max
    at = lambda v: big if v is None else v  # noqa: E731
    listen = np.array([at(p.listening) for p in cl.pods], np.int64)
    stop = np.array([min(at(p.sigterm), at(p.gone)) for p in cl.pods], np.int64)
    down = _down(cl, big)
    marks = np.unique(np.array([t for p in cl.pods for t, _ in p.log]
                               + [t for t, _ in cl.series], np.int64))
    set_t = np.array([t for t, _ in cl.series], np.int64)
    which = np.searchsorted(set_t, marks, side="right") - 1      # the set in force at each mark
    sets = [np.asarray(ids, np.int64) for _, ids in cl.series]
    pods = np.array([sets[g].size if g >= 0 else 0 for g in which], np.int64)
    accepting = np.array([_accepting(sets[g], t, listen, stop, down) if g >= 0 else 0
                          for g, t in zip(which, marks)], np.int64)
    return pd.DataFrame({"t_s": marks / NS, "pods": pods, "accepting": accepting})


def _accepting(ids: np.ndarray, t: int, listen: np.ndarray, stop: np.ndarray,
               down: list[tuple[int, int, int]]) -> int:
    """How many of the pods ``ids`` accept at ``t``: listening, not stopped, not crashed."""
    n = int(np.count_nonzero((listen[ids] <= t) & (t < stop[ids])))
    crashed = [i for i, a, b in down if a <= t < b]
    return n - int(np.count_nonzero(np.isin(ids, crashed))) if crashed else n


def _down(cl: Cluster, big: int) -> list[tuple[int, int, int]]:
    """(pod, crash, restart): the spans a crashed server did not accept, within its pod's
    listening life (a pod deleted while down stays down)."""
    out = []
    for p in cl.pods:
        crashed = None
        for t, what in p.log:
            if what == "crashed":
                crashed = t
            elif what == "restarted" and crashed is not None:
                out.append((p.index, crashed, t))
                crashed = None
        if crashed is not None:
            out.append((p.index, crashed, big))
    return out
