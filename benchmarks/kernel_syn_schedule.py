"""Measure when the real kernel sends a connecting client's SYNs and when connect() gives up
(root; iproute2 and iptables): the schedule lbsim.kernel.syn_gaps_ns models.

Two network namespaces joined by a veth; the far one drops every TCP packet to port 9, and
captures the SYNs that reach it (an AF_PACKET socket). For each (tcp_syn_linear_timeouts,
tcp_syn_retries) a client connects and the script records the SYNs' arrival times after the first
and the time connect() failed.

    python benchmarks/kernel_syn_schedule.py 4:1 4:6 0:3

prints one JSON line per pair: kernel, linear, retries, syns_s, gave_up_s.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

NS = (f"lbsim-syn{os.getpid()}-a", f"lbsim-syn{os.getpid()}-b")
A, B = "192.168.231.1", "192.168.231.2"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def setup() -> None:
    a, b = NS
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    sh("ip", "link", "add", "sa", "netns", a, "type", "veth", "peer", "name", "sb", "netns", b)
    sh("ip", "-n", a, "addr", "add", f"{A}/24", "dev", "sa")
    sh("ip", "-n", a, "link", "set", "sa", "up")
    sh("ip", "-n", b, "addr", "add", f"{B}/24", "dev", "sb")
    sh("ip", "-n", b, "link", "set", "sb", "up")
    sh("ip", "netns", "exec", b, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP")


def measure(linear: int, retries: int) -> dict:
    a, b = NS
    sh("ip", "netns", "exec", a, "sysctl", "-qw", f"net.ipv4.tcp_syn_retries={retries}",
       f"net.ipv4.tcp_syn_linear_timeouts={linear}")
    sniff = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, __file__, "--sniff"],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    client = subprocess.run(["ip", "netns", "exec", a, sys.executable, __file__, "--connect"],
                            capture_output=True, text=True, check=True)
    time.sleep(0.2)
    sniff.terminate()
    syns = json.loads(sniff.communicate()[0] or "[]")
    return {"kernel": os.uname().release, "linear": linear, "retries": retries,
            "syns_s": [round(t - syns[0], 3) for t in syns],
            "gave_up_s": float(client.stdout)}


def _sniff() -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    s.bind(("sb", 0))
    times: list[float] = []
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (print(json.dumps(times)), sys.exit(0)))
    while True:
        if select.select([s], [], [], 0.2)[0]:
            pkt, now = s.recv(2048), time.time()
            ihl = (pkt[0] & 15) * 4
            if pkt[9] == 6 and pkt[ihl + 13] & 0x02:
                times.append(now)


def _connect() -> None:
    s = socket.socket()
    t = time.time()
    try:
        s.connect((B, 9))
    except OSError:
        print(round(time.time() - t, 3))


def main() -> None:
    if sys.argv[1:] == ["--sniff"]:
        return _sniff()
    if sys.argv[1:] == ["--connect"]:
        return _connect()
    pairs = [tuple(int(x) for x in p.split(":")) for p in sys.argv[1:] or ["4:1"]]
    try:
        setup()
        for linear, retries in pairs:
            print(json.dumps(measure(linear, retries)), flush=True)
    finally:
        for n in NS:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


if __name__ == "__main__":
    main()
