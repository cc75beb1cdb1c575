"""The claims of the direct-to-Pod design and how the simulated numbers judge them.

A claim's verdict is computed from the two paths' summary metrics by the rule stated next to it
(:data:`CLAIMS`); nothing here is a hard-coded result. A claim whose scenario is not defined in
:data:`lbsim.scenarios.SCENARIOS`, was not run, or lacks a metric the rule needs is reported as
"not measured" with the reason. :func:`claims_markdown` and :func:`claims_text` print the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..formatting import fmt_dt, fmt_value, is_finite, md_cell, pct, show

__all__ = ["Claim", "CLAIMS", "ClaimRow", "RunRecord", "evaluate_claims", "claims_markdown",
           "claims_text", "PATHS", "FAIL_THRESHOLD", "PERSISTENCE_THRESHOLD", "HOTSPOT_MARGIN"]

PATHS = ("nodeport", "direct")
HOLDS, NOT, DEPENDS = "holds", "does not hold", "depends"

#: a path "fails" above this failed_fraction
FAIL_THRESHOLD = 0.01
#: a path "keeps sessions" at or above this session_persistence_fraction
PERSISTENCE_THRESHOLD = 0.99
#: NodePort's busiest pod must exceed direct's max/mean by at least this much of the mean load
HOTSPOT_MARGIN = 0.10
#: config keys never named as a verdict's condition
_IGNORED_KEYS = {"seed", "path"}
#: at most this many differing settings are named per scenario in a "depends" verdict
_MAX_COND_KEYS = 3

# -- claims ---------------------------------------------------------------------------------------

Summary = Mapping[str, float]
Config = Mapping[str, Any]
#: (status, why): status is "holds", "does not hold" or "depends"
Verdict = tuple[str, str]
Judge = Callable[[Summary, Summary, Config], Verdict]


@dataclass(frozen=True)
class Claim:
    """One claim of the direct-to-Pod design and how the numbers judge it."""

    text: str
    #: scenarios that show it; each is judged, the verdict combines them
    scenarios: tuple[str, ...]
    #: metrics shown for both paths
    metrics: tuple[str, ...]
    #: the verdict rule in words (stated in the report)
    rule: str
    #: (nodeport summary, direct summary, scenario config dict) -> (status, why)
    judge: Judge | None = None
    #: metrics the judge needs, finite on both paths (default: ``metrics``)
    needs: tuple[str, ...] | None = None
    #: the same setup with a setting changed (a newer kernel, say): judged by the same rule; if the
    #: outcome differs, the verdict is "depends" on the settings that differ
    contrasts: tuple[str, ...] = ()
    #: related scenarios (a workaround on the NodePort path, say): judged by the same rule and
    #: shown after the verdict as "see also", without changing it
    related: tuple[str, ...] = ()
    #: set when the model cannot measure the claim at all: the reason
    not_modelled: str | None = None
    #: the scenarios are judged together: ``judge`` takes the list of (nodeport summary, direct
    #: summary, config) of every scenario, in order (a setting's effect: without, with)
    joint: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        return self.metrics if self.needs is None else self.needs


def _judge_latency(np_: Summary, d: Summary, _: Config) -> Verdict:
    """The data path's own cost (datapath_delay) decides; pod queueing, which comes from the
    balancing difference, is reported beside it."""
    own = [(q, np_[f"datapath_delay_{q}_s"] - d[f"datapath_delay_{q}_s"]) for q in ("p50", "p99")]
    hop, dhop = np_["second_hop_fraction"], d["second_hop_fraction"]
    cost = ", ".join(f"{q} {'+' if x >= 0 else ''}{fmt_dt(x)}" for q, x in own)
    queue = (f"queueing at the pods (from the balancing difference, not part of the verdict): "
             f"pod wait p99 NodePort {fmt_dt(np_['pod_wait_p99_s'])}, direct "
             f"{fmt_dt(d['pod_wait_p99_s'])}; response p99 NodePort "
             f"{fmt_dt(np_['response_time_p99_s'])}, direct {fmt_dt(d['response_time_p99_s'])}")
    text = (f"NodePort's data path adds {cost} to the response (its node's CPU and conntrack, "
            f"{pct(hop)} of flows on a second hop, direct {pct(dhop)}); {queue}")
    if own[0][1] > 0 and hop > dhop:
        return HOLDS, text
    if own[0][1] <= 0:
        return NOT, text
    return DEPENDS, text + " (slower, but no more second hops)"


def _judge_snat(np_: Summary, d: Summary, _: Config) -> Verdict:
    f, pe, df = np_["failed_fraction"], np_["fail_cause_port_exhaustion"], d["failed_fraction"]
    text = (f"NodePort fails {pct(f)} of flows with {fmt_value('', pe)} packets dropped for port "
            f"exhaustion, direct {pct(df)}")
    if f > FAIL_THRESHOLD and pe > 0 and df == 0:
        return HOLDS, text
    if f > FAIL_THRESHOLD and pe > 0:
        return DEPENDS, text + " (both paths fail)"
    return NOT, text


def _judge_race(np_: Summary, d: Summary, _: Config) -> Verdict:
    n, dn = np_["conntrack_insert_failed"], d["conntrack_insert_failed"]
    text = f"conntrack_insert_failed NodePort {fmt_value('', n)}, direct {fmt_value('', dn)}"
    if n > 0 and dn == 0:
        return HOLDS, text
    if n == 0:
        return NOT, text
    return DEPENDS, text + " (both paths)"


def _judge_balance(np_: Summary, d: Summary, _: Config) -> Verdict:
    """A hotspot decides: NodePort's busiest pod above direct's by the margin. Jain's index is
    reported beside it: near 1 on both paths its order is noise (it flipped between --quick and
    full size when it was part of the rule)."""
    j, dj = np_["pod_load_jain"], d["pod_load_jain"]
    worse = []  # (measure, NodePort, direct) where NodePort's busiest pod is worse by the margin
    text = f"Jain's index NodePort {j:.3f} vs direct {dj:.3f}"
    for m, what in (("pod_load_max_over_mean", "flows"), ("pod_conn_max_over_mean", "open connections")):
        if is_finite(np_.get(m)) and is_finite(d.get(m)):
            text += f"; busiest pod's {what} {np_[m]:.3g} vs {d[m]:.3g} x the mean"
            if np_[m] - d[m] >= HOTSPOT_MARGIN:
                worse.append(what)
    if worse:
        return HOLDS, text + f" (NodePort's busiest pod worse in {' and '.join(worse)})"
    return NOT, text


def _setting(cfg: Mapping[str, Any], dotted: str) -> str | None:
    v: Any = cfg
    for part in dotted.split("."):
        if not isinstance(v, Mapping) or part not in v:
            return None
        v = v[part]
    return show(v)


def _judge_source_ip(np_: Summary, d: Summary, cfg: Config) -> Verdict:
    f, df = np_["source_ip_preserved_fraction"], d["source_ip_preserved_fraction"]
    policy = _setting(cfg, "kube_proxy.external_traffic_policy")
    text = (f"client IP seen by the pod: direct {pct(df)} of flows, NodePort {pct(f)}"
            + (f" (externalTrafficPolicy {policy})" if policy else ""))
    if df == 1 and f < 1:
        return HOLDS, text
    if df == 1:
        return DEPENDS, text + ": NodePort keeps it too in this setup"
    return NOT, text


def _judge_persistence(np_: Summary, d: Summary, cfg: Config) -> Verdict:
    f, df = np_["session_persistence_fraction"], d["session_persistence_fraction"]
    extra = [f"{k} = {v}" for k in ("lb.persistence_s", "kube_proxy.session_affinity")
             if (v := _setting(cfg, k)) is not None]
    text = (f"flows reaching the client's first pod: direct {pct(df)}, NodePort {pct(f)}"
            + (f" ({', '.join(extra)})" if extra else ""))
    if df >= PERSISTENCE_THRESHOLD > f:
        return HOLDS, text
    if df >= PERSISTENCE_THRESHOLD:
        return DEPENDS, text + ": NodePort keeps sessions too in this setup"
    return NOT, text


def _f(x: float) -> str:
    return f"{x:.3g}"


def _judge_gate(runs: list[tuple[Summary, Summary, Config]]) -> Verdict:
    """rollout, rollout-readiness-gate: direct without and with the gate."""
    (np0, d0, _), (np1, d1, _) = runs
    cost = (f"the gate makes the rollout take {_f(d1['rollout_duration_s'])} s instead of "
            f"{_f(d0['rollout_duration_s'])} s (NodePort: {_f(np0['rollout_duration_s'])} s, "
            f"failed_fraction {_f(np0['failed_fraction'])})")
    if d0["failed_fraction"] <= FAIL_THRESHOLD:
        return NOT, (f"direct without the gate fails only {pct(d0['failed_fraction'])} of flows; "
                     + cost)
    if d1["failed_fraction"] == 0:
        return HOLDS, (f"direct fails {pct(d0['failed_fraction'])} of flows without the gate "
                       f"({_f(d0['fail_cause_no_target'])} attempts found no target) and none "
                       f"with it; " + cost)
    return DEPENDS, (f"direct fails {pct(d0['failed_fraction'])} without the gate and still "
                     f"{pct(d1['failed_fraction'])} with it; " + cost)


def _lost(s: Summary) -> float:
    return s["failed"] + s["connections_reset"]


def _judge_drain(runs: list[tuple[Summary, Summary, Config]]) -> Verdict:
    """scale-in-draining, scale-in-draining-prestop: both paths without and with preStop."""
    (np0, d0, _), (np1, d1, _) = runs
    said = (f"without: NodePort {_f(np0['failed'])} failed + {_f(np0['connections_reset'])} "
            f"reset, direct {_f(d0['failed'])} + {_f(d0['connections_reset'])}; with: NodePort "
            f"{_f(np1['failed'])} + {_f(np1['connections_reset'])}, direct {_f(d1['failed'])} + "
            f"{_f(d1['connections_reset'])}")
    if _lost(np0) > 0 and _lost(d0) > 0 and _lost(np1) == 0 and _lost(d1) == 0:
        return HOLDS, said
    if _lost(np0) == 0 and _lost(d0) == 0:
        return NOT, said
    return DEPENDS, said


def _judge_local(runs: list[tuple[Summary, Summary, Config]]) -> Verdict:
    """local-terminating, local-terminating-fallback: NodePort without and with KEP-1669."""
    (np0, d0, _), (np1, d1, _) = runs
    said = (f"NodePort fails {_f(np0['failed'])} flows ({_f(np0['fail_cause_no_local_endpoint'])} "
            f"packets dropped for no local endpoint) without the fallback, {_f(np1['failed'])} "
            f"with it; direct {_f(d0['failed'])} and {_f(d1['failed'])}")
    if np0["failed"] > 0 and np1["failed"] == 0:
        return HOLDS, said
    if np0["failed"] == 0:
        return NOT, said
    return DEPENDS, said


def _judge_udp(runs: list[tuple[Summary, Summary, Config]]) -> Verdict:
    """udp-stale-conntrack, udp-stale-conntrack-cleanup: NodePort without and with kube-proxy's
    deletion of removed endpoints' UDP entries."""
    (np0, d0, _), (np1, d1, _) = runs
    said = (f"NodePort fails {pct(np0['failed_fraction'])} of datagrams without the cleanup, "
            f"{pct(np1['failed_fraction'])} with it; direct {pct(d0['failed_fraction'])} and "
            f"{pct(d1['failed_fraction'])}")
    if np0["failed_fraction"] > FAIL_THRESHOLD >= np1["failed_fraction"]:
        return HOLDS, said
    if np0["failed_fraction"] <= FAIL_THRESHOLD:
        return NOT, said
    return DEPENDS, said


def _judge_node_drain(np_: Summary, d: Summary, cfg: Config) -> Verdict:
    """node-drain: both paths through a node's replacement."""
    said = (f"direct fails {pct(d['failed_fraction'])} of flows ({_f(d['fail_cause_pod_gone'])} "
            f"attempts lost to evicted pods, {_f(d['fail_cause_refused'])} refused), NodePort "
            f"{pct(np_['failed_fraction'])}")
    if d["failed_fraction"] <= FAIL_THRESHOLD:
        return NOT, said
    if np_["failed_fraction"] <= FAIL_THRESHOLD:
        return HOLDS, said
    return DEPENDS, said + ": NodePort loses as much in this setup"


_CONTRAST_RULE = ("each contrast scenario (the same setup with a setting changed) is judged by the same "
                  "rule; when the outcomes differ the verdict is \"depends\" and names the settings")

CLAIMS: list[Claim] = [
    Claim(
        "NodePort adds SNAT and a second hop: higher connect latency and response time",
        ("default",),
        ("datapath_delay_p50_s", "datapath_delay_p99_s", "second_hop_fraction", "pod_wait_p99_s",
         "response_time_p99_s"),
        "holds if NodePort's datapath_delay_p50_s (what the path between the LB and the pod adds "
        "to a response: the node's CPU and conntrack, the second hop both ways, retransmissions; "
        "0 on the direct path) is > direct's and its second_hop_fraction > direct's; does not "
        "hold if datapath_delay_p50_s is not > direct's; depends otherwise. Queueing at the pods "
        "(pod_wait_p99_s), which comes from the balancing difference rather than from SNAT or "
        "the hop, is reported beside it and is not part of the verdict",
        _judge_latency),
    Claim(
        "traffic concentrated on a few NodePorts exhausts SNAT source ports",
        ("snat-exhaustion",),
        ("failed_fraction", "fail_cause_port_exhaustion"),
        f"holds if NodePort failed_fraction > {FAIL_THRESHOLD:g} with fail_cause_port_exhaustion > 0 "
        f"and direct failed_fraction == 0; depends if direct fails too; does not hold otherwise; "
        + _CONTRAST_RULE,
        _judge_snat, contrasts=("snat-exhaustion-modern",)),
    Claim(
        "NodePort's SNAT causes conntrack insertion conflicts",
        ("conntrack-race",),
        ("conntrack_insert_failed", "fail_cause_insert_race", "syn_retransmits"),
        "holds if NodePort conntrack_insert_failed > 0 and direct's == 0; does not hold if NodePort's "
        "== 0; " + _CONTRAST_RULE,
        _judge_race, needs=("conntrack_insert_failed",),
        contrasts=("conntrack-race-random-fully", "conntrack-race-modern")),
    Claim(
        "many nodes behind the LB scatter load-balancing state and unbalance load globally",
        ("lb-state-scattered", "imbalance-cluster"),
        ("pod_load_max_over_mean", "pod_load_cv", "pod_load_jain", "pod_conn_max_over_mean"),
        f"holds if NodePort's busiest pod exceeds direct's by >= {HOTSPOT_MARGIN:g} of the mean, "
        f"in established flows (pod_load_max_over_mean) or in open connections "
        f"(pod_conn_max_over_mean, where reported); does not hold otherwise. pod_load_jain "
        f"(Jain's fairness index of flows per pod, 1 = even) is reported beside it: near 1 on "
        f"both paths its order is noise. Each scenario is judged, and the verdict is \"depends\" "
        f"when they differ",
        _judge_balance, needs=("pod_load_max_over_mean", "pod_load_jain"),
        related=("imbalance-local",)),
    Claim(
        "without SNAT the client source IP reaches the pod without externalTrafficPolicy: Local",
        ("source-ip",),
        ("source_ip_preserved_fraction",),
        "holds if direct source_ip_preserved_fraction == 1 and NodePort's < 1; depends if both are 1 "
        "(NodePort keeps it too in that setup); does not hold if direct's < 1",
        _judge_source_ip, related=("source-ip-local",)),
    Claim(
        "session persistence needs only the LB's persistence",
        ("session-persistence",),
        ("session_persistence_fraction",),
        f"holds if direct session_persistence_fraction >= {PERSISTENCE_THRESHOLD:g} and NodePort's "
        f"< {PERSISTENCE_THRESHOLD:g}; depends if both are >= {PERSISTENCE_THRESHOLD:g} (NodePort "
        f"keeps sessions too in that setup); does not hold if direct's < {PERSISTENCE_THRESHOLD:g}",
        _judge_persistence, related=("session-persistence-affinity",)),
    Claim(
        "binding pods directly needs readiness gating (the LB must not send to a pod before it is "
        "registered and ready)",
        ("rollout", "rollout-readiness-gate"),
        ("failed_fraction", "fail_cause_no_target", "rollout_duration_s", "min_serving_pods"),
        f"holds if direct failed_fraction > {FAIL_THRESHOLD:g} in rollout (no gate) and == 0 in "
        f"rollout-readiness-gate; does not hold if direct's failed_fraction <= "
        f"{FAIL_THRESHOLD:g} without the gate; depends if the gate leaves failures. The gate's "
        f"cost is stated from rollout_duration_s with and without it",
        _judge_gate, needs=("failed_fraction", "fail_cause_no_target", "rollout_duration_s"),
        joint=True),
    Claim(
        "a terminating pod loses flows on either path unless a preStop sleep covers the time "
        "until its LB or kube-proxies stop sending to it (and the grace period its connections)",
        ("scale-in-draining", "scale-in-draining-prestop"),
        ("failed", "connections_reset", "fail_cause_refused", "time_to_drain_p99_s"),
        "holds if, without the sleep, both paths fail or reset flows (failed + "
        "connections_reset > 0) and with it neither does; does not hold if neither path loses "
        "any without it; depends otherwise",
        _judge_drain, needs=("failed", "connections_reset"), joint=True),
    Claim(
        "externalTrafficPolicy: Local blackholes a node whose last pod terminates until the "
        "LB's health check notices, unless kube-proxy falls back to terminating endpoints "
        "(KEP-1669)",
        ("local-terminating", "local-terminating-fallback"),
        ("failed", "fail_cause_no_local_endpoint", "min_serving_pods"),
        "holds if NodePort fails flows in local-terminating (no fallback) and none in "
        "local-terminating-fallback; does not hold if it fails none without the fallback; "
        "depends otherwise",
        _judge_local, needs=("failed", "fail_cause_no_local_endpoint"), joint=True),
    Claim(
        "after an endpoint change, UDP clients on a fixed tuple keep reaching the removed pod "
        "through NodePort's conntrack unless kube-proxy deletes its entries",
        ("udp-stale-conntrack", "udp-stale-conntrack-cleanup"),
        ("failed_fraction", "fail_cause_refused", "fail_cause_pod_gone"),
        f"holds if NodePort failed_fraction > {FAIL_THRESHOLD:g} without the cleanup and <= "
        f"{FAIL_THRESHOLD:g} with it; does not hold if it is <= {FAIL_THRESHOLD:g} without; "
        f"depends otherwise",
        _judge_udp, needs=("failed_fraction",), joint=True),
    Claim(
        "draining a node (kubectl drain without a preStop sleep) loses flows on the direct path, "
        "whose LB keeps sending new connections to the evicted pods after they exit, and barely "
        "any on NodePort, whose kube-proxies drop them within about a second (the cordoned "
        "node stays a target and forwards)",
        ("node-drain",),
        ("failed_fraction", "fail_cause_pod_gone", "fail_cause_refused", "time_to_serve_p50_s"),
        f"holds if direct failed_fraction > {FAIL_THRESHOLD:g} and NodePort's <= "
        f"{FAIL_THRESHOLD:g}; does not hold if direct's <= {FAIL_THRESHOLD:g}; depends if "
        f"NodePort fails as much",
        _judge_node_drain, needs=("failed_fraction",)),
]


# -- evaluation -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunRecord:
    """What the claims need of one run: its name, config and both paths' summaries."""

    name: str
    config: Mapping[str, Any]
    paths: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class ClaimRow:
    claim: Claim
    scenario: str
    nodeport: list[str]
    direct: list[str]
    verdict: str
    measured: bool


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _condition(cfg: Mapping[str, Any], keys: list[str]) -> str:
    flat = _flatten(cfg)
    shown = [f"{k} = {show(flat.get(k, 'unset'))}" for k in keys[:_MAX_COND_KEYS]]
    if len(keys) > _MAX_COND_KEYS:
        shown.append(f"… ({len(keys) - _MAX_COND_KEYS} more settings differ)")
    return ", ".join(shown) if shown else "the same settings"


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb)
                  if k not in _IGNORED_KEYS and fa.get(k, "unset") != fb.get(k, "unset"))


def _joint_row(claim: Claim, scen: str, runs: Mapping[str, RunRecord],
               available: set[str]) -> ClaimRow:
    """A claim whose scenarios are judged together (a setting's effect)."""
    missing = [why for n in claim.scenarios
               for why in [_unmeasured(claim, n, runs, available)] if why is not None]
    if missing:
        return ClaimRow(claim, scen, ["—"], ["—"], "not measured: " + "; ".join(missing), False)
    assert claim.judge is not None
    st, why = claim.judge([(runs[n].paths["nodeport"], runs[n].paths["direct"], runs[n].config)
                           for n in claim.scenarios])
    return ClaimRow(claim, scen, _cells(claim, claim.scenarios, runs, "nodeport"),
                    _cells(claim, claim.scenarios, runs, "direct"), f"{st}: {why}", True)


def _unmeasured(claim: Claim, name: str, runs: Mapping[str, RunRecord],
                available: set[str]) -> str | None:
    """Why ``name`` cannot judge ``claim`` (not defined, not run, a metric missing), or None."""
    if name not in available:
        return f"scenario {name} not available"
    if name not in runs:
        return (f"scenario {name} not run (run it with --scenario {name}, or --out without "
                f"--scenario)")
    run = runs[name]
    for m in claim.required:
        for p in PATHS:
            if m not in run.paths[p]:
                return f"metric {m} not available (scenario {name})"
            if not is_finite(run.paths[p][m]):
                return (f"metric {m} is {fmt_value(m, run.paths[p][m])} on the {p} path "
                        f"(scenario {name})")
    return None


def _judge_one(claim: Claim, name: str, runs: Mapping[str, RunRecord],
               available: set[str]) -> tuple[str | None, str]:
    why = _unmeasured(claim, name, runs, available)
    if why is not None:
        return None, why
    run = runs[name]
    assert claim.judge is not None
    return claim.judge(run.paths["nodeport"], run.paths["direct"], run.config)


def _cells(claim: Claim, names: Sequence[str], runs: Mapping[str, RunRecord], path: str) -> list[str]:
    lines = []
    for name in names:
        vals = [f"{m} {fmt_value(m, runs[name].paths[path].get(m))}" if m in runs[name].paths[path]
                else f"{m} n/a" for m in claim.metrics]
        if len(claim.scenarios) > 1:
            lines.append(f"{name}: " + ", ".join(vals))
        else:
            lines.extend(vals)
    return lines


def _combine(judged: list[tuple[str, str, str]], runs: Mapping[str, RunRecord]) -> str:
    """One verdict from (scenario, status, why) of every measured scenario of a claim."""
    statuses = {st for _, st, _ in judged}
    if len(judged) == 1 or (len(statuses) == 1 and DEPENDS not in statuses):
        st = judged[0][1]
        why = "; ".join(f"{w} ({n})" for n, _, w in judged)
        return f"{st}: {why}"
    if len(statuses) == 1:  # all "depends"
        return "depends: " + "; ".join(f"{w} ({n})" for n, _, w in judged)
    ref_name = judged[0][0]
    ref = runs[ref_name].config
    parts = []
    for name, st, why in judged:
        if name == ref_name:  # the settings in which any other scenario differs from it
            keys = sorted({k for other, _, _ in judged if other != ref_name
                           for k in _differing(ref, runs[other].config)})
        else:
            keys = _differing(ref, runs[name].config)
        parts.append(f"{st} with {_condition(runs[name].config, keys)} ({name}: {why})")
    return "depends: " + "; ".join(parts)


def evaluate_claims(runs: Mapping[str, RunRecord], available: Iterable[str]) -> list[ClaimRow]:
    """Judge every claim of :data:`CLAIMS` from ``runs`` (named-scenario runs, by name).

    ``available`` are the names defined in ``lbsim.scenarios.SCENARIOS``.
    """
    available = set(available)
    rows = []
    for claim in CLAIMS:
        scen = " + ".join(claim.scenarios) or "—"
        if claim.contrasts:
            scen += f" (contrast: {', '.join(claim.contrasts)})"
        if claim.related:
            scen += f" (see also: {', '.join(claim.related)})"
        if claim.not_modelled:
            rows.append(ClaimRow(claim, scen, ["—"], ["—"], f"not measured: {claim.not_modelled}",
                                 False))
            continue
        if claim.joint:
            rows.append(_joint_row(claim, scen, runs, available))
            continue
        primary = [(n, *_judge_one(claim, n, runs, available)) for n in claim.scenarios]
        contrast = [(n, *_judge_one(claim, n, runs, available)) for n in claim.contrasts]
        measured = [(n, st, w) for n, st, w in primary if st is not None]
        if not measured:
            rows.append(ClaimRow(claim, scen, ["—"], ["—"],
                                 "not measured: " + "; ".join(w for _, _, w in primary), False))
            continue
        judged = measured + [(n, st, w) for n, st, w in contrast if st is not None]
        verdict = _combine(judged, runs)
        missing = [f"{w}" for n, st, w in primary + contrast if st is None]
        if missing:
            verdict += " [not measured: " + "; ".join(missing) + "]"
        related = [(n, *_judge_one(claim, n, runs, available)) for n in claim.related]
        seen = []
        for n, st, w in related:
            if st is not None:
                keys = _differing(runs[measured[0][0]].config, runs[n].config)
                short = 0 < len(keys) <= _MAX_COND_KEYS
                cond = f" (with {_condition(runs[n].config, keys)})" if short else ""
                seen.append(f"{n}{cond}: {st}: {w}")
        if seen:
            verdict += " — see also (not part of the verdict): " + "; ".join(seen)
        shown = [n for n, _, _ in measured]
        rows.append(ClaimRow(claim, scen, _cells(claim, shown, runs, "nodeport"),
                             _cells(claim, shown, runs, "direct"), verdict, True))
    return rows


# -- rendering ------------------------------------------------------------------------------------

def claims_markdown(rows: list[ClaimRow]) -> str:
    """The claims table and its verdict rules, as markdown."""
    out = ["| # | claim of the direct-to-Pod design | scenario | NodePort | direct | verdict |",
           "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        cells = ["<br>".join(md_cell(x) for x in lines) for lines in (r.nodeport, r.direct)]
        out.append(f"| {i} | {md_cell(r.claim.text)} | {md_cell(r.scenario)} | {cells[0]} | "
                   f"{cells[1]} | {md_cell(r.verdict)} |")
    out += ["", "Verdict rules (applied to the summary metrics of the named scenarios; a claim whose "
            "scenario is not defined, not run, or lacks a metric is \"not measured\"; a \"see also\" "
            "scenario is judged by the same rule but does not change the verdict):", ""]
    out += [f"{i}. {md_cell(r.claim.rule)}" for i, r in enumerate(rows, 1)]
    return "\n".join(out)


def claims_text(rows: list[ClaimRow]) -> str:
    """The claims table for the terminal."""
    out = ["== claims of the direct-to-Pod design (verdict rules: see report.md or docs/report.md) =="]
    for i, r in enumerate(rows, 1):
        out.append(f"{i}. {r.claim.text}  [{r.scenario}]")
        if r.measured:
            out.append(f"   NodePort: {'; '.join(r.nodeport)}")
            out.append(f"   direct:   {'; '.join(r.direct)}")
        out.append(f"   verdict:  {r.verdict}")
    return "\n".join(out)

