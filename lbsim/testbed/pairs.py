"""The race window's processes: two pinned senders and the pod's receiver.

Run as ``ip netns exec <clients> python pairs.py send CPU DIR`` (one per CPU),
``ip netns exec <pod> python pairs.py receive DIR IP PORT SECONDS`` and, for identical tuples,
``ip netns exec <node> python pairs.py watch DIR``. ``DIR/pairs.npz`` holds, per
pair, the two clients' addresses, the shared source port and each side's planned send instant
(ns after ``T0``, a CLOCK_MONOTONIC instant: the clock is the machine's, shared by every
namespace; ``reuse``: both sides bind one address and port, SO_REUSEPORT). Sender ``CPU`` pins itself to that CPU (``sched_setaffinity``), so its datagrams'
whole path, the node's conntrack and NAT included, runs there (a veth hands a packet to the
sending CPU's backlog), spins until each of its instants, notes the clock and sends; it writes
``DIR/sent<CPU>.npy``. The receiver writes which datagrams reached the pod (``DIR/got.npy``).
Identical tuples lose nothing (the kernel merges a clashing twin), so the watcher, in the node's
namespace, reads its ``/proc/net/stat/nf_conntrack`` halfway between pairs (a pair's whole path
runs inside its ``sendto`` calls) and writes the ``clashres`` and ``insert_failed`` sums it saw
after each pair (``DIR/watch.npy``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import numpy as np


def send(cpu: int, d: Path) -> None:
    os.sched_setaffinity(0, {cpu})
    p = np.load(d / "pairs.npz")
    ips, ports, when = p[f"ip{cpu}"], p["port"], p[f"t{cpu}"]
    dst = (str(p["dst_ip"]), int(p["dst_port"]))
    t0, clock = int(p["T0"]), time.monotonic_ns
    sent = np.zeros(ports.size, np.int64)
    reuse = bool(p["reuse"]) if "reuse" in p else False
    for k in range(ports.size):
        # the socket is made before the spin: only the send is timed
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if reuse:                     # the twin binds the same address and port
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((str(ips[k]), int(ports[k])))
        due = t0 + int(when[k])
        while clock() < due:
            pass
        t = clock()
        s.sendto(b"%d" % (2 * k + cpu), dst)
        sent[k] = t - t0
        s.close()
    np.save(d / f"sent{cpu}.npy", sent)


def receive(d: Path, ip: str, port: int, seconds: float) -> None:
    n = np.load(d / "pairs.npz")["port"].size
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    s.bind((ip, port))
    s.settimeout(0.1)
    got = np.zeros(2 * n, bool)
    (d / "ready").touch()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, _ = s.recvfrom(64)
        except socket.timeout:
            continue
        i = int(data)
        if 0 <= i < got.size:
            got[i] = True
    np.save(d / "got.npy", got)


def watch(d: Path) -> None:
    p = np.load(d / "pairs.npz")
    t0, when, gap = int(p["T0"]), p["t0"], int(p["gap"])
    out = np.zeros((when.size, 2), np.int64)
    with open("/proc/self/net/stat/nf_conntrack", "rb", buffering=0) as f:
        names = f.readline().split()
        cols = [names.index(b"clashres"), names.index(b"insert_failed")]
        for k in range(when.size):
            due = t0 + int(when[k]) + gap // 2
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            f.seek(0)
            rows = [ln.split() for ln in f.read().splitlines()[1:]]
            out[k] = [sum(int(r[c], 16) for r in rows) for c in cols]
    np.save(d / "watch.npy", out)


def main(argv: list[str]) -> int:
    if argv[0] == "send":
        send(int(argv[1]), Path(argv[2]))
    elif argv[0] == "watch":
        watch(Path(argv[1]))
    else:
        receive(Path(argv[1]), argv[2], int(argv[3]), float(argv[4]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
