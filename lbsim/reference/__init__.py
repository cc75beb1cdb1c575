"""The reference engine: every kernel rule in readable Python, citing the kernel (the test oracle).

``conntrack`` (the table), ``nat`` (the SNAT port search), ``engine`` (the event loop's steps).
"""

from .engine import ReferenceEngine

__all__ = ["ReferenceEngine"]
