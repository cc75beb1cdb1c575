"""kube-proxy's endpoint choice and externalTrafficPolicy shares, checked with chi-square and
binomial bounds (fixed seeds)."""

import math

import numpy as np
import pytest

import lbsim
from lbsim.analytic import local_pod_shares
from lbsim.balancing import iptables_cascade_cdf, iptables_endpoint
from lbsim.rng import Streams

pytestmark = pytest.mark.slow

# chi-square critical values at alpha = 0.001 (upper tail), by degrees of freedom
CHI2_999 = {2: 13.816, 6: 22.458, 9: 27.877}


@pytest.mark.parametrize("n", [3, 7, 10])
def test_iptables_cascade_gives_each_endpoint_one_nth(n):
    u = Streams(11).uniform("endpoint", np.arange(200_000))
    counts = np.bincount(iptables_endpoint(u, n), minlength=n)
    expected = counts.sum() / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < CHI2_999[n - 1], chi2
    # the fixed-point probabilities differ from 1/n by less than 1e-9 for these n
    p = np.diff(np.concatenate(([0.0], iptables_cascade_cdf(n))))
    assert np.abs(p - 1 / n).max() < 1e-9


def test_local_policy_shares_follow_pods_per_node():
    """Local, LB round robin over 2 nodes, 2 pods on node 0 and 1 on node 1: 25 % / 25 % / 50 %."""
    sc = lbsim.Scenario().replace(**{
        "workload.flows": 40_000, "workload.rate_per_s": 400.0, "cluster.nodes": 2, "cluster.pods": 3,
        "cluster.placement": [2, 1], "kube_proxy.external_traffic_policy": "Local",
        "pod.workers": 1000, "pod.service_s": 0.001})
    r = lbsim.run(sc)
    f = r.flows
    assert (f["outcome"] == "established").all()
    n = len(f)
    want = local_pod_shares([2, 1])
    assert want == [0.25, 0.25, 0.5]
    counts = np.bincount(f["pod"], minlength=3)
    # node 1 gets exactly every other flow (round robin): pod 2's share is exact
    assert counts[2] == n // 2
    # node 0's flows split by the cascade: binomial(n/2, 1/2), 4 standard deviations
    half = n // 2
    assert abs(counts[0] - half / 2) < 4 * math.sqrt(half / 4)
    assert r.summary["pod_load_max_over_mean"] == pytest.approx(1.5, abs=0.02)


def expected_max_load(n: int) -> float:
    """E[max bin] for n balls thrown uniformly into n bins, exactly:
    P(max <= k) = n! / n^n [x^n] (sum_{j<=k} x^j / j!)^n."""
    e = 0.0
    log_norm = math.lgamma(n + 1) - n * math.log(n)
    for k in range(n):
        base = np.array([1 / math.factorial(j) for j in range(k + 1)] + [0.0] * (n - k))
        poly = np.zeros(n + 1)
        poly[0] = 1.0
        p, b = n, base.copy()
        while p:                                  # poly = base^n, truncated at degree n
            if p & 1:
                poly = np.convolve(poly, b)[:n + 1]
            b = np.convolve(b, b)[:n + 1]
            p >>= 1
        at_most = math.exp(log_norm + math.log(poly[n])) if poly[n] > 0 else 0.0
        e += 1 - at_most
        if at_most > 1 - 1e-15:
            break
    return e


def test_random_endpoint_choice_matches_balls_into_bins():
    """n flows over n pods through the iptables cascade: the mean of the largest pod count over
    400 independent groups of n consecutive flows equals the exact E[max] (4 standard errors)."""
    n, groups = 50, 400
    sc = lbsim.Scenario().replace(**{"cluster.nodes": 1, "cluster.pods": n, "pod.workers": 1000,
                                     "workload.flows": n * groups, "workload.rate_per_s": 2000.0,
                                     "seed": 11})
    f = lbsim.run(sc).flows
    assert (f["outcome"] == "established").all()
    pods = f["pod"].to_numpy().reshape(groups, n)
    maxima = np.array([np.bincount(g, minlength=n).max() for g in pods])
    se = maxima.std(ddof=1) / math.sqrt(groups)
    want = expected_max_load(n)
    assert abs(maxima.mean() - want) < 4 * se, (maxima.mean(), want, se)
