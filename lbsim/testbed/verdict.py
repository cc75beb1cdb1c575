"""lbsim beside the kernel: :func:`compare_kernel` and its statistical verdict per metric.

The kernel runs once, on the flows of the scenario's seed; lbsim runs ``replicas`` times, on seeds
``seed, seed + 1, ...``. If lbsim is right, the kernel's value is one more draw from the
distribution lbsim's replicas sample, so it lies within 4 standard deviations of their mean, the
deviation widened by the uncertainty of the mean itself (a prediction interval):

    |kernel - mean| <= 4 * sd * sqrt(1 + 1 / replicas)

Where every replica gives the same value the metric is deterministic and must agree exactly. A
metric the testbed does not reproduce (the latencies: its links add no delay, and its pods run on
this machine's CPUs) is "not comparable", as is every metric the kernel does not measure.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import Scenario
from ..simulation import run
from .kernel_run import KernelRun, run_kernel
from .plan import LIMITS, Limits

__all__ = ["COMPARED", "KernelComparison", "compare_kernel", "verdict", "Z_LIMIT"]

#: the metrics the testbed reproduces, and so compares
COMPARED = ("flows", "established", "failed", "failed_fraction", "last_arrival_s",
            "syn_retransmits",
            "conntrack_insert", "conntrack_insert_failed", "conntrack_drop",
            "conntrack_early_drop", "conntrack_clash_resolve", "conntrack_found",
            "pod_load_max_over_mean", "pod_load_cv", "pod_load_jain", "node_load_max_over_mean",
            "source_ip_preserved_fraction", "second_hop_fraction")
#: standard deviations of the prediction interval
Z_LIMIT = 4.0


def verdict(kernel: float, values: list[float]) -> tuple[str, float]:
    """("agree" | "differ", z) for one metric: the kernel's value against lbsim's replicas
    (z: the distance in prediction-interval standard deviations; inf where a deterministic
    metric differs, 0 where it agrees)."""
    x = np.asarray(values, float)
    if math.isnan(kernel) or np.isnan(x).any():
        same = math.isnan(kernel) and np.isnan(x).all()
        return ("agree" if same else "differ"), (0.0 if same else math.inf)
    m = float(x.mean())
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    if sd == 0.0:
        ok = math.isclose(kernel, m, rel_tol=1e-9, abs_tol=1e-12)
        return ("agree" if ok else "differ"), (0.0 if ok else math.inf)
    z = abs(kernel - m) / (sd * math.sqrt(1 + 1 / x.size))
    return ("agree" if z <= Z_LIMIT else "differ"), z


@dataclass(frozen=True)
class KernelComparison:
    """A scenario on the kernel and in lbsim, metric by metric."""

    scenario: Scenario
    kernel: KernelRun
    #: lbsim's summary on each replica's seed
    replicas: list[dict[str, float]]
    verdicts: dict[str, str] = field(default_factory=dict)
    z: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.scenario.path.value

    def lbsim_mean(self) -> dict[str, float]:
        return {m: float(np.mean([r[m] for r in self.replicas])) for m in self.replicas[0]}

    def table(self) -> pd.DataFrame:
        """One row per metric: metric, kernel, lbsim (the replicas' mean), lbsim_sd, z,
        verdict."""
        rows = []
        for m in self.replicas[0]:
            vals = np.asarray([r[m] for r in self.replicas], float)
            rows.append({"metric": m, "kernel": self.kernel.summary.get(m, math.nan),
                         "lbsim": float(vals.mean()),
                         "lbsim_sd": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
                         "z": self.z.get(m, math.nan), "verdict": self.verdicts[m]})
        return pd.DataFrame(rows)

    def to_json(self) -> dict:
        """``{PATH: {"kernel", "lbsim", "lbsim_sd", "verdicts"}}`` (plain floats; NaN as None)."""
        t = self.table()
        clean = (lambda v: None if isinstance(v, float) and not math.isfinite(v) else v)
        return {self.path: {
            "kernel": {m: clean(float(v)) for m, v in self.kernel.summary.items()},
            "lbsim": {r.metric: clean(r.lbsim) for r in t.itertuples()},
            "lbsim_sd": {r.metric: clean(r.lbsim_sd) for r in t.itertuples()},
            "verdicts": dict(self.verdicts)}}


def compare_kernel(scenario: Scenario, *, replicas: int = 30, limits: Limits = LIMITS
                   ) -> KernelComparison:
    """Run ``scenario`` on this machine's kernel (:func:`lbsim.testbed.run_kernel`) and in lbsim
    on ``replicas`` seeds, and give each metric its verdict (module docstring)."""
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 2 <= replicas <= 1000:
        raise ValueError(f"replicas = {replicas!r}: allowed an integer in [2, 1000] (a spread "
                         "needs two)")
    k = run_kernel(scenario, limits=limits)
    sc = k.scenario.replace(records="summary")
    reps = [dict(run(sc).summary)]            # its warnings, once: the replicas' are alike
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reps += [dict(run(sc.replace(seed=sc.seed + i)).summary) for i in range(1, replicas)]
    verdicts, zs = {}, {}
    for m in reps[0]:
        if m in COMPARED and m in k.summary:
            verdicts[m], zs[m] = verdict(float(k.summary[m]), [r[m] for r in reps])
        else:
            verdicts[m] = "not comparable"
    return KernelComparison(scenario=k.scenario, kernel=k, replicas=reps, verdicts=verdicts,
                            z=zs)
