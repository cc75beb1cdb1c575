"""What a run with ``[[events]]`` says about its pods changing: connections cut by a pod's
SIGKILL, the rollout's duration, how long new pods waited for traffic and old ones kept getting
it, and the fewest pods the LB sent new flows to. In the steady state: 0, NaN or the pod count.
"""

from __future__ import annotations

import math

import numpy as np

from .kernel import NEVER, NS, OK
from .records import Records

__all__ = ["ROLLOUT_METRICS", "resets", "rollout_metrics"]

ROLLOUT_METRICS = {
    "connections_reset": "established connections still open at their pod when it was gone (its "
                         "SIGKILL at terminationGracePeriodSeconds) or its server crashed: cut",
    "rollout_duration_s": "the first rollout's start to its end (every pod of the new revision, "
                          "replicas of them available), s (NaN: none, or it had not ended when "
                          "the run did)",
    "time_to_serve_p50_s": "pods created during the run: Ready in Kubernetes to the arrival of "
                           "the first flow it served, median, s (negative: the LB sent it flows "
                           "before Kubernetes called it Ready)",
    "time_to_serve_p99_s": "the same, 99th percentile, s",
    "time_to_drain_p99_s": "deleted pods: deletion to the arrival of the last flow it served, "
                           "99th percentile, s",
    "min_serving_pods": "fewest pods the LB sent new flows to at any instant of the run",
}


def resets(r: Records) -> np.ndarray:
    """Per flow: established, and its connection still open at the pod (the client's FIN
    reaches it ``d_in`` after the client sent it, plus the node -> pod hop on the NodePort path
    when the pod is on another node) when the pod was gone or its server crashed."""
    if r.pod_gone_ns is None:
        return np.zeros(r.outcome.size, bool)
    w, p = r.workload, r.workload.params
    ok = r.outcome == OK
    pod = np.where(ok, r.pod, 0)
    hop = (np.where(w.pod_node[pod] != w.backend, p.d_hop, 0) if p.nodeport
           else np.zeros(pod.size, np.int64))
    close_at_pod = w.t0 + r.response_ns + w.hold + p.d_in + hop
    cut = ok & (r.pod_gone_ns[pod] < NEVER) & (close_at_pod > r.pod_gone_ns[pod])
    if r.pod_cuts_ns is not None and len(r.pod_cuts_ns):
        # a crash cuts what its server had accepted (the SYN or request reached it) and not
        # yet closed: the request reached the pod service + wait before it finished, the SYN
        # the handshake's two crossings before that
        finish = w.t0 + r.response_ns - p.d_in - hop
        accepted = finish - w.service - r.pod_wait_ns - (2 * (hop + p.d_in) if p.tcp else 0)
        for victim, t in r.pod_cuts_ns:
            cut |= ok & (pod == victim) & (accepted < t) & (close_at_pod > t)
    return cut


def rollout_metrics(r: Records) -> dict[str, float]:
    """The :data:`ROLLOUT_METRICS` of one run."""
    tl = r.timeline
    if tl is None:
        return {"connections_reset": 0, "rollout_duration_s": math.nan,
                "time_to_serve_p50_s": math.nan, "time_to_serve_p99_s": math.nan,
                "time_to_drain_p99_s": math.nan, "min_serving_pods": r.workload.params.pods}
    ok = r.outcome == OK
    arrival = r.workload.t0[ok] / NS
    pod = r.pod[ok]
    n = len(tl.pods)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    # flows are in arrival order: each pod's first flow, and (reversed) its last
    served, i = np.unique(pod, return_index=True)
    first[served] = arrival[i]
    served, i = np.unique(pod[::-1], return_index=True)
    last[served] = arrival[::-1][i]
    pods = tl.pods
    later = (pods["created_s"] > 0).to_numpy()
    serve = (first - pods["ready_s"].to_numpy())[later]
    deleted = pods["deleted_s"].notna().to_numpy()
    drain = (last - pods["deleted_s"].to_numpy())[deleted]

    def q(x: np.ndarray, k: float) -> float:
        x = x[~np.isnan(x)]
        return float(np.quantile(x, k)) if x.size else math.nan

    return {"connections_reset": int(np.count_nonzero(resets(r))),
            "rollout_duration_s": tl.summary["rollout_duration_s"],
            "time_to_serve_p50_s": q(serve, 0.5), "time_to_serve_p99_s": q(serve, 0.99),
            "time_to_drain_p99_s": q(drain, 0.99),
            "min_serving_pods": int(tl.summary["min_receiving_pods"])}
