"""simpy as the clock and the control plane: the data plane's driver (:mod:`.plane`) and the
Kubernetes and cloud LB processes that change what it sees (:mod:`.cluster`)."""

from .plane import ControlPlane, Engine, drive, run_engine

__all__ = ["Engine", "ControlPlane", "drive", "run_engine"]
