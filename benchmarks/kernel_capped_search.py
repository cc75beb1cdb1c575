"""Measure the capped SNAT port search on the real kernel, for lbsim's check b (issue 3).

The testbed runs the same experiment with answering pods (``python -m lbsim.testbed
--experiments all``: capped-search-0.95 and -1.1, lbsim beside the kernel); this script keeps the
silent-pod measurement behind tests/data/kernel_capped_search_6.18.jsonl.

Run as root on a Linux machine with nftables (``nft``); it builds three network namespaces::

    cli (10.0.0.2, 10.0.0.3, ...)  --  node (10.0.0.1 | 10.1.0.1)  --  pod (10.1.0.2)

``node`` DNATs UDP 10.0.0.1:30000 to the pod's 10.1.0.2:8080 (a NodePort) and masquerades to the
pod with ``to :PORT_MIN-PORT_MAX fully-random`` (kube-proxy's MASQUERADE --random-fully with an
explicit range), its ``nf_conntrack_udp_timeout`` set to the holding time. The pod never answers,
so every conntrack entry holds its SNAT port exactly ``udp_timeout`` seconds after its only packet.
The client sends one datagram per flow, each from a fresh (client IP, port), at Poisson times with
rate ``load x ports / udp_timeout``; the datagram carries its sequence number, the pod records which
arrive. A flow fails when its datagram is dropped at confirm (its SNAT search found no free port:
``insert_failed`` and ``drop`` rise by one). The failed fraction counts flows sent after a warm-up.

    python benchmarks/kernel_capped_search.py --ports 2048 --timeout 10 --load 0.95 --span 100

prints one JSON line: ports, load, sent, failed, failed_fraction, insert_failed, drop, kernel.
``--lbsim`` runs lbsim on the same scenario (UDP, random_fully, the same port range, holding time
and rate, several seeds) and prints its failed fraction beside the kernel's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time

NS = ("lbsim-cli", "lbsim-node", "lbsim-pod")
VIP, NODE_PORT, POD, POD_PORT = "10.0.0.1", 30000, "10.1.0.2", 8080


def sh(cmd: str, ns: str | None = None, check: bool = True) -> str:
    full = f"ip netns exec {ns} {cmd}" if ns else cmd
    out = subprocess.run(full, shell=True, capture_output=True, text=True)
    if check and out.returncode:
        raise SystemExit(f"failed: {full}\n{out.stderr}")
    return out.stdout


def teardown() -> None:
    for ns in NS:
        sh(f"ip netns del {ns}", check=False)


def setup(port_min: int, port_max: int, timeout_s: int, clients: int) -> None:
    teardown()
    cli, node, pod = NS
    for ns in NS:
        sh(f"ip netns add {ns}")
        sh("ip link set lo up", ns)
    sh(f"ip link add c0 netns {cli} type veth peer name n0 netns {node}")
    sh(f"ip link add n1 netns {node} type veth peer name p0 netns {pod}")
    for i in range(clients):
        sh(f"ip addr add 10.0.{i // 250}.{2 + i % 250}/16 dev c0", cli)
    sh("ip link set c0 up", cli)
    sh(f"ip route add default via {VIP}", cli)
    sh(f"ip addr add {VIP}/16 dev n0", node)
    sh("ip addr add 10.1.0.1/24 dev n1", node)
    sh("ip link set n0 up", node)
    sh("ip link set n1 up", node)
    sh("sysctl -qw net.ipv4.ip_forward=1", node)
    sh(f"ip addr add {POD}/24 dev p0", pod)
    sh("ip link set p0 up", pod)
    sh("ip route add default via 10.1.0.1", pod)
    rules = f"""
table ip lbsim {{
  chain pre {{ type nat hook prerouting priority dstnat; udp dport {NODE_PORT} dnat to {POD}:{POD_PORT}; }}
  chain post {{ type nat hook postrouting priority srcnat; oifname "n1" meta l4proto udp masquerade to :{port_min}-{port_max} fully-random; }}
}}"""
    subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "-"], input=rules, text=True,
                   check=True)
    # conntrack's per-netns sysctls exist once the netns has a conntrack user (the rules above)
    sh(f"sysctl -qw net.netfilter.nf_conntrack_udp_timeout={timeout_s}", node)
    sh("sysctl -qw net.netfilter.nf_conntrack_max=1048576", node)


def stats(ns: str) -> dict[str, int]:
    """``conntrack -S`` summed over CPUs."""
    tot: dict[str, int] = {}
    for line in sh("conntrack -S", ns).splitlines():
        for kv in line.split()[1:]:
            k, _, v = kv.partition("=")
            if v.isdigit():
                tot[k] = tot.get(k, 0) + int(v)
    return tot


def sender(rate: float, duration: float, clients: int, seed: int, out: str) -> None:
    """In the client netns: one datagram per flow from a fresh (IP, port), Poisson times; writes
    the send time of each sequence number."""
    rnd = random.Random(seed)
    ips = [f"10.0.{i // 250}.{2 + i % 250}" for i in range(clients)]
    ports = list(range(1024, 65536))
    times = []
    start = time.perf_counter()
    t = 0.0
    seq = 0
    while True:
        t += rnd.expovariate(rate)
        if t > duration:
            break
        while time.perf_counter() - start < t:
            pass
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ips[seq % clients], ports[(seq // clients) % len(ports)]))
        s.sendto(struct.pack("!Q", seq), (VIP, NODE_PORT))
        s.close()
        times.append(time.perf_counter() - start)
        seq += 1
    with open(out, "w") as f:
        json.dump(times, f)


def sink(duration: float, out: str) -> None:
    """In the pod netns: record the sequence numbers that arrive."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    s.bind((POD, POD_PORT))
    s.settimeout(0.5)
    got, end = [], time.monotonic() + duration
    while time.monotonic() < end:
        try:
            got.append(struct.unpack("!Q", s.recv(64)[:8])[0])
        except socket.timeout:
            pass
    with open(out, "w") as f:
        json.dump(got, f)


def port_min(ports: int) -> int:
    """First port of the SNAT range: 20000, or what fits below 65536 (1024 for the full range)."""
    return 20000 if ports <= 45536 else 65536 - ports


def measure(ports: int, timeout_s: int, load: float, warmup: float, span: float, seed: int,
            clients: int) -> dict:
    pmin = port_min(ports)
    setup(pmin, pmin + ports - 1, timeout_s, clients)
    rate = load * ports / timeout_s
    here = os.path.abspath(__file__)
    send_out, sink_out = f"/tmp/lbsim-kcs-send-{os.getpid()}", f"/tmp/lbsim-kcs-sink-{os.getpid()}"
    duration = warmup + span
    pod = subprocess.Popen(["ip", "netns", "exec", NS[2], sys.executable, here, "--role", "sink",
                            "--duration", str(duration + 3), "--out", sink_out])
    time.sleep(1.0)
    before = stats(NS[1])
    subprocess.run(["ip", "netns", "exec", NS[0], sys.executable, here, "--role", "send",
                    "--rate", str(rate), "--duration", str(duration), "--clients", str(clients),
                    "--seed", str(seed), "--out", send_out], check=True)
    after = stats(NS[1])
    pod.wait()
    times = json.load(open(send_out))
    got = set(json.load(open(sink_out)))
    late = [i for i, t in enumerate(times) if t > warmup]
    failed = sum(1 for i in late if i not in got)
    # failures cluster in time (held ports clump for a holding time), so the standard error comes
    # from 10 batch means over the measured span, not from a binomial count
    batches = [[i for i in late if warmup + b * span / 10 < times[i] <= warmup + (b + 1) * span / 10]
               for b in range(10)]
    fr = [sum(1 for i in bt if i not in got) / max(1, len(bt)) for bt in batches]
    mean_fr = sum(fr) / 10
    se = (sum((x - mean_fr) ** 2 for x in fr) / 9 / 10) ** 0.5
    teardown()
    return {"kernel": os.uname().release, "ports": ports, "udp_timeout_s": timeout_s,
            "load": load, "rate_per_s": rate, "warmup_s": warmup, "span_s": span,
            "seed": seed, "sent_all": len(times), "lost_all": len(times) - len(got),
            "sent": len(late), "failed": failed, "failed_fraction": failed / max(1, len(late)),
            "failed_fraction_se": se,
            "insert_failed": after.get("insert_failed", 0) - before.get("insert_failed", 0),
            "drop": after.get("drop", 0) - before.get("drop", 0),
            "achieved_rate_per_s": len(times) / times[-1] if times else 0.0}


def lbsim_failed_fraction(ports: int, timeout_s: float, load: float, warmup: float, span: float,
                          seeds: int, seed0: int = 0) -> list[float]:
    """lbsim on the same scenario: one node, one pod, UDP through the NodePort with
    --random-fully over the same range, no latency, the pod answering at once (so the entry holds
    its port udp_s after the datagram, as the silent pod's does), no resend."""
    import lbsim
    rate = load * ports / timeout_s
    base = lbsim.Scenario().replace(**{
        "workload.protocol": "udp", "workload.udp_retries": 0, "workload.clients": 65536,
        "cluster.nodes": 1, "cluster.pods": 1, "pod.workers": 1, "pod.service_s": 0.0,
        "network.client_to_lb_s": 0.0, "network.lb_to_backend_s": 0.0,
        "network.node_to_pod_s": 0.0, "conntrack.udp_s": float(timeout_s),
        "nat.random_fully": True, "nat.port_range": [port_min(ports), port_min(ports) + ports - 1],
        "conntrack.max": 1_048_576, "conntrack.buckets": 1_048_576, "records": "full",
        "workload.rate_per_s": rate, "workload.flows": int(rate * (warmup + span))})
    out = []
    for seed in range(seed0, seed0 + seeds):
        f = lbsim.run(base.replace(seed=seed)).flows
        late = f[f["arrival_s"] > warmup]
        out.append(float((late["outcome"] != "established").mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=("measure", "send", "sink"), default="measure")
    ap.add_argument("--ports", type=int, default=2048)
    ap.add_argument("--timeout", type=int, default=10, help="nf_conntrack_udp_timeout, s")
    ap.add_argument("--load", type=float, nargs="+", default=[0.95])
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--span", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--lbsim", type=int, default=0, metavar="SEEDS",
                    help="also run lbsim on the same scenario with this many seeds")
    ap.add_argument("--rate", type=float)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.role == "send":
        return sender(a.rate, a.duration, a.clients, a.seed, a.out)
    if a.role == "sink":
        return sink(a.duration, a.out)
    for load in a.load:
        row = measure(a.ports, a.timeout, load, a.warmup, a.span, a.seed, a.clients)
        if a.lbsim:
            fr = lbsim_failed_fraction(a.ports, a.timeout, load, a.warmup, a.span, a.lbsim)
            row["lbsim_failed_fraction"] = sum(fr) / len(fr)
            row["lbsim_runs"] = fr
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
