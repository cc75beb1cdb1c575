"""Warnings that keep a run honest: settings that are ignored or starve backends, and runs that
cannot mean what they seem (too short to fill the table, overloaded pods or node CPUs).

:func:`scenario_caveats` reads the scenario alone; :func:`run_caveats` also reads the records.
``lbsim.run`` issues each as a ``RuntimeWarning`` (on stderr by default) and keeps them in
``Result.warnings``; the bench's report lists them per scenario.
"""

from __future__ import annotations

import math

from .config import (Arrival, CiliumAlgorithm, DataPath, IpvsScheduler, LBAlgorithm, Pairing,
                     Protocol, ProxyMode, Scenario, SessionAffinity, Source, TrafficPolicy,
                     WorkloadConfig)
from .durations import duration_to_toml
from .kernel import NO_CLIENT_PORT, NS, TABLE_FULL, TCP_TIMEWAIT_LEN, TCP_TW_REUSE_AFTER
from .kube_proxy import IPVS_MH_TABLE
from .records import Records

__all__ = ["scenario_caveats", "run_caveats", "duration_caveats"]

#: LB algorithms that read ``lb.weights``
_WEIGHTED = (LBAlgorithm.WRR, LBAlgorithm.MAGLEV)


def scenario_caveats(sc: Scenario) -> list[str]:
    """What in ``sc`` is ignored, or starves backends, before anything runs."""
    out = []
    lb, kp, nodeport = sc.lb, sc.kube_proxy, sc.path is DataPath.NODEPORT
    backends = sc.cluster.nodes if nodeport else sc.cluster.pods
    w = sc.workload
    if w.arrival is not Arrival.CLOSED_LOOP and (w.concurrency or w.think_s):
        out.append(f"workload.concurrency = {w.concurrency} and workload.think_s = "
                   f"{w.think_s:g} are ignored: they shape a closed loop (workload.arrival = "
                   f"'closed_loop'), not arrival = '{w.arrival.value}'")
    if w.tcp_tw_reuse != 2 and (w.protocol is Protocol.UDP or w.arrival is Arrival.TRACE):
        out.append(f"workload.tcp_tw_reuse = {w.tcp_tw_reuse} is ignored: "
                   + ("a UDP socket has no TIME_WAIT" if w.protocol is Protocol.UDP else
                      "a trace's flows keep their recorded ports"))
    if w.pairs is Pairing.NONE and w.pair_offset_s.mean > 0:
        out.append(f"workload.pair_offset_s = {duration_to_toml(w.pair_offset_s)} is ignored: "
                   "flows come in pairs only with workload.pairs = 'same_port' or 'same_tuple'")
    masquerades = (nodeport and w.source is not Source.POD
                   and kp.external_traffic_policy is not TrafficPolicy.LOCAL)
    if sc.cluster.snat_offset_s > 0 and not masquerades:
        out.append(f"cluster.snat_offset_s = {sc.cluster.snat_offset_s:g} is ignored: nothing is "
                   "masqueraded (the direct path, externalTrafficPolicy Local or pod clients)")
    if not nodeport and (sc.cluster.packet_jitter_s.mean > 0 or w.pin_pairs):
        out.append("cluster.packet_jitter_s and workload.pin_pairs are ignored on the direct "
                   "path: no node's CPU processes its packets")
    if lb.weights != "equal" and lb.algorithm not in _WEIGHTED:
        out.append(f"lb.weights = {lb.weights!r} is ignored: lb.algorithm = "
                   f"{lb.algorithm.value!r} does not weigh backends (wrr and maglev do)")
    elif lb.weights == "local_pods" and not nodeport:
        out.append("lb.weights = 'local_pods' is ignored on the direct path: its backends are "
                   "pods (equal weights)")
    if lb.algorithm is LBAlgorithm.MAGLEV and lb.maglev_table_size < backends:
        out.append(f"lb.maglev_table_size = {lb.maglev_table_size} is smaller than the LB's "
                   f"{backends} backends: at most {lb.maglev_table_size} of them get traffic "
                   f"(Maglev wants a table > 100 x the backends)")
    if not nodeport:
        return out
    if sc.events and sc.deployment.readiness_gate:
        out.append("deployment.readiness_gate = true is ignored on the NodePort path: the LB's "
                   "targets are nodes, so no LB health check gates a pod (it is Ready when its "
                   "containers are)")
    pods = sc.cluster.pods
    if (kp.mode is ProxyMode.CILIUM and kp.cilium_algorithm is CiliumAlgorithm.MAGLEV
            and kp.cilium_maglev_table_size < pods):
        out.append(f"kube_proxy.cilium_maglev_table_size = {kp.cilium_maglev_table_size} is "
                   f"smaller than the {pods} pods: at most that many of them get traffic")
    if kp.mode is ProxyMode.IPVS and kp.ipvs_scheduler is IpvsScheduler.MH and IPVS_MH_TABLE < pods:
        out.append(f"IPVS mh's table has {IPVS_MH_TABLE} slots for {pods} pods: at most "
                   f"{IPVS_MH_TABLE} of them get traffic")
    if (kp.session_affinity is SessionAffinity.CLIENT_IP
            and kp.mode not in (ProxyMode.IPTABLES, ProxyMode.NFTABLES)):
        out.append(f"kube_proxy.session_affinity = 'ClientIP' is not modelled for kube_proxy.mode "
                   f"= {kp.mode.value!r}: ignored")
    return out


def _longer(sc: Scenario) -> str:
    """How to make ``sc``'s run longer: the setting that decides its length."""
    return ("a longer workload.duration_s" if sc.workload.duration_s > 0
            else "more workload.flows")


def run_caveats(sc: Scenario, r: Records) -> list[str]:
    """What makes ``r`` not mean what it seems: a span shorter than the time an entry is held,
    pods offered more work than their workers do, node CPUs queueing past the client's timeout."""
    out = []
    w, p = sc.workload, r.workload.params
    span = r.last_arrival_ns / NS
    longer = _longer(sc)
    service = float(sc.pod.service_s.mean)
    workers = int(r.workload.workers[:sc.cluster.pods].sum())   # the steady state's pods
    utilisation = w.rate_per_s * service / workers
    # a closed loop cannot overload its pods: at most concurrency flows wait at once
    if utilisation > 1 and w.arrival is not Arrival.CLOSED_LOOP:
        out.append(f"the pods are overloaded: rate_per_s x mean pod.service_s / workers = "
                   f"{w.rate_per_s:g} x {service:g} / {workers} = {utilisation:.3g} > 1; queues grow "
                   f"for the whole run, and latencies measure its length, not a steady state")
    if p.nodeport:
        held = (sc.conntrack.time_wait_s + float(w.hold_s.mean) if w.protocol is Protocol.TCP
                else sc.conntrack.udp_s + float(w.hold_s.mean))
        if span < held:
            what = "TIME_WAIT" if w.protocol is Protocol.TCP else "the UDP timeout"
            out.append(f"the run's arrivals span {span:.3g} s, shorter than the {held:.3g} s a "
                       f"conntrack entry and its SNAT port stay held (hold + {what}): occupancy "
                       f"is still rising when the run ends, so the headroom metrics undersize "
                       f"(run at least {held:.3g} s: {longer})")
    out += _gc_caveat(sc, r)
    out += _client_port_caveat(sc, r)
    out += _event_caveats(sc, r, span)
    rto = w.syn_rto_s if w.protocol is Protocol.TCP else w.udp_timeout_s
    wait = r.max_cpu_wait_ns / NS
    if wait > rto:
        out.append(f"a new packet waited {wait:.3g} s in a node CPU's queue, longer than the "
                   f"client's retransmission timeout ({rto:g} s): the node's CPUs are overloaded "
                   f"(rate x cluster.packet_time_s per CPU >= 1) and client retransmissions of "
                   f"queued packets are not modelled, so this run's latencies and retransmission "
                   f"counts are not what a node would show")
    return out


def _client_port_caveat(sc: Scenario, r: Records) -> list[str]:
    """Flows that failed at their own client, out of ephemeral ports (often a load generator
    with too few addresses, not the cluster)."""
    failed = int(r.cause_count[NO_CLIENT_PORT])
    if not failed:
        return []
    w = sc.workload
    size = w.client_port_range[1] - w.client_port_range[0] + 1
    reuse, tw = TCP_TW_REUSE_AFTER / NS, TCP_TIMEWAIT_LEN / NS
    if w.protocol is not Protocol.TCP:
        held = "its socket's life"
    elif w.tcp_tw_reuse == 1:
        held = f"its connection and about {reuse:g} s after it closes (workload.tcp_tw_reuse = 1)"
    else:
        held = (f"its connection and {tw:g} s of TIME_WAIT after it (workload.tcp_tw_reuse = 1: "
                f"about {reuse:g} s)")
    loop = ("" if w.arrival is not Arrival.CLOSED_LOOP else
            ". In a closed loop the clients' ports follow each slot's nominal cycle, which a flow "
            "failing at once cuts short: from the first such failure on, this run's pace and "
            "ports are not what a load generator would see (it would get the error)")
    return [f"{failed} flows failed at their client before sending anything: it had no free "
            f"ephemeral port (EADDRNOTAVAIL; fail_cause_no_client_port). A client's {size} "
            f"ports (workload.client_port_range) each stay held for {held}, so one client "
            f"address opens at most about {size} per that time; more workload.clients spread "
            f"the load{loop}"]


def _gc_caveat(sc: Scenario, r: Records) -> list[str]:
    """Before 5.15 the GC scanned 1/128 of the table per run; lbsim's pass every 16 s has the
    same mean delay but not its shape, which matters only where the table filled."""
    kb = sc.nat.behaviour
    full = int(r.counters["early_drop"].sum() + r.counters["gc_early_drop"].sum()
               + r.cause_count[TABLE_FULL])
    if not (kb.gc_approximate and sc.conntrack.gc_interval_s == "auto" and full):
        return []
    return [f"nat.kernel = {str(sc.nat.kernel)!r}: its GC (before 5.15) scanned 1/128 of the "
            f"table at a time, the whole table within 16 s (about 1 s while most entries were "
            f"expired); lbsim makes one pass every 16 s, and this run filled the table "
            f"({full} early drops or table-full drops), where the two differ: take its "
            f"table-full figures as approximate"]


def _event_caveats(sc: Scenario, r: Records, span: float) -> list[str]:
    """Events the run's flows never see, and a rollout the run ends in the middle of."""
    out = []
    longer = _longer(sc)
    for i, e in enumerate(sc.events):
        if e.at_s > span:
            out.append(f"events[{i}] ({e.kind} at {e.at_s:g} s) comes after the last arrival "
                       f"({span:.3g} s): no flow sees it ({longer})")
    tl = r.timeline
    for i in (tl.ignored if tl is not None else ()):
        e = sc.events[i]
        if e.kind == "drain":
            out.append(f"events[{i}] (drain of node {e.node} at {e.at_s:g} s) changed nothing: "
                       f"that node was cordoned already and ran no pod")
        else:
            out.append(f"events[{i}] (crash of pod {e.pod} at {e.at_s:g} s) changed nothing: "
                       f"that pod did not exist, was deleted or was not running then")
    if tl is not None:
        pending = tl.pods[(tl.pods["node"] < 0) & tl.pods["deleted_s"].isna()]
        if len(pending):
            where = ("every packed node was cordoned by a drain (their nodeSelector matches no "
                     "other node)" if sc.cluster.placement == "packed" else
                     "every node was cordoned by a drain (an add-node event gives them one)")
            out.append(f"{len(pending)} pods were still pending when the run ended: {where}")
    if tl is not None and math.isnan(tl.summary["rollout_duration_s"]) and any(
            e.kind == "rollout" and e.at_s <= span for e in sc.events):
        out.append(f"the rollout had not ended when the run's arrivals did ({span:.3g} s): "
                   f"rollout_duration_s is NaN and the failures count only part of it "
                   f"({longer})")
    return out


def duration_caveats(asked: Scenario, ran: Scenario) -> list[str]:
    """``workload.flows`` set as well as ``workload.duration_s``, which decides."""
    a, r = asked.workload, ran.workload
    default = WorkloadConfig().flows
    if a.duration_s > 0 and a.flows not in (default, r.flows):
        return [f"workload.flows = {a.flows:,} is ignored: workload.duration_s = "
                f"{a.duration_s:g} s sets the run's flows (the {r.flows:,} that start within "
                f"it)"]
    return []
