"""lbsim: how traffic reaches Kubernetes pods from a cloud load balancer, NodePort vs direct.

>>> import lbsim
>>> result = lbsim.run(lbsim.Scenario().replace(**{"workload.flows": 2000}))
>>> round(result.summary["source_ip_preserved_fraction"], 1)
0.0
"""

from importlib.metadata import PackageNotFoundError, version

from .config import (Arrival, CloudConfig, ClusterConfig, ConntrackConfig, DataPath, DeploymentConfig,
                     Event, KubeProxyConfig, LBAlgorithm, LBConfig, LifecycleConfig, NatConfig,
                     NatKernel, NetworkConfig, PodConfig, Protocol, ProxyMode, Scenario,
                     TrafficPolicy, WorkloadConfig)
from .control.timeline import Timeline, timeline
from .durations import Exponential, Fixed, LogNormal
from .simulation import Comparison, Result, compare, run

try:
    __version__ = version("lbsim")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # lbsim.sweep, imported on first use (so `python -m lbsim.sweep` runs it fresh): the module
    # lbsim/sweep.py, which called is the sweep function: lbsim.sweep(base, grid, ...)
    if name == "sweep":
        import importlib
        return importlib.import_module(".sweep", __name__)
    if name == "compare_kernel":     # lbsim.testbed.compare_kernel (the real kernel; root)
        from .testbed import compare_kernel
        return compare_kernel
    raise AttributeError(f"module 'lbsim' has no attribute {name!r}")

__all__ = [
    "Scenario", "WorkloadConfig", "LBConfig", "ClusterConfig", "PodConfig", "KubeProxyConfig",
    "NatConfig", "ConntrackConfig", "NetworkConfig", "LifecycleConfig", "DeploymentConfig",
    "CloudConfig", "Event", "DataPath", "Protocol", "Arrival", "LBAlgorithm",
    "ProxyMode", "TrafficPolicy", "NatKernel", "Fixed", "Exponential", "LogNormal",
    "run", "compare", "Result", "Comparison", "sweep", "compare_kernel", "timeline", "Timeline", "__version__",
]
