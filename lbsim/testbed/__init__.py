"""The real kernel as lbsim's oracle: a scenario's flows through network namespaces on this
machine's own kernel (kube-proxy's NodePort rules, conntrack, MASQUERADE), side by side with lbsim.

>>> import lbsim, lbsim.testbed               # doctest: +SKIP
>>> cmp = lbsim.testbed.compare_kernel(lbsim.Scenario.from_toml("exhaustion.toml"))
>>> cmp.table()                               # metric, kernel, lbsim, lbsim_sd, verdict

Needs root, iproute2 and iptables (or nftables for ``kube_proxy.mode = "nftables"``).
"""

from .kernel_run import KERNEL_FLOW_COLUMNS, KernelRun, TestbedUnavailable, run_kernel
from .netns import netns_list, unavailable
from .plan import LIMITS, Limits, refusal
from .verdict import COMPARED, KernelComparison, compare_kernel, verdict

__all__ = ["compare_kernel", "KernelComparison", "verdict", "COMPARED", "run_kernel", "KernelRun", "TestbedUnavailable", "KERNEL_FLOW_COLUMNS", "refusal",
           "unavailable", "netns_list", "Limits", "LIMITS"]
