"""The clients' connect() port choice on this machine's kernel: :func:`measure_connect_ports`.

One network namespace with its loopback up and ``ip_local_port_range`` set, a listener on
127.0.0.1:7 and ``connections`` connect() calls from sockets with no port, one after another;
each port as ``getsockname()`` reports it, or ``-errno`` where connect() failed. ``keep_open``:
every connection stays open, so the walk must skip the ports taken; else each is reset at once
(SO_LINGER 0: no TIME_WAIT), so none is ever taken when the next connect() walks. This is what
lbsim.client_ports models (lbsim.reference.ports cites the kernel's code); the kernel's own
perturbation is random, so what can be compared is the walk's shape: its steps, its parity order,
when it runs out. The namespace is deleted on every exit.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from .kernel_run import TestbedUnavailable
from .netns import unavailable

__all__ = ["measure_connect_ports"]

_SCRIPT = r"""
import errno, socket, struct, sys
n, keep = int(sys.argv[1]), sys.argv[2] == "1"
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 7))
srv.listen(65535)
held, out = [], []
for _ in range(n):
    s = socket.socket()
    if not keep:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        s.connect(("127.0.0.1", 7))
        out.append(s.getsockname()[1])
    except OSError as e:
        out.append(-e.errno)
        s.close()
        continue
    c, _ = srv.accept()
    if keep:
        held += [s, c]
    else:
        s.close()
        c.close()
print(" ".join(map(str, out)))
"""


def measure_connect_ports(connections: int, port_range: tuple[int, int] = (32768, 60999), *,
                          keep_open: bool = False) -> np.ndarray:
    """The ports (or ``-errno``) of ``connections`` successive connect() calls on this kernel
    (root and network namespaces needed: :class:`TestbedUnavailable` otherwise)."""
    why = unavailable()
    if why:
        raise TestbedUnavailable(why)
    lo, hi = port_range
    if not (1 <= lo <= hi <= 65535 and 1 <= connections <= 1 << 20):
        raise ValueError(f"port_range = {port_range} (1 <= low <= high <= 65535) or "
                         f"connections = {connections} (1 .. 2^20) out of range")
    name = f"lbsim-connect-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w",
                        f"net.ipv4.ip_local_port_range={lo} {hi}"], check=True,
                       capture_output=True)
        out = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", _SCRIPT,
                              str(connections), "1" if keep_open else "0"],
                             check=True, capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return np.array(out.stdout.split(), dtype=np.int64)
