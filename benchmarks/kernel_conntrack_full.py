"""Watch a real kernel's conntrack table fill with TIME_WAIT entries (root, nftables).

Not part of lbsim.testbed: a full table needs a small nf_conntrack_max, which 6.18 does not let a
namespace set, so this script sets the host's (and restores it); the testbed never writes a host
sysctl and refuses a run that could fill the table.

The topology of ``kernel_capped_search.py`` (client, node, pod namespaces), with TCP: the node
DNATs 10.0.0.1:30000 to the pod's 10.1.0.2:8080 and masquerades; ``nf_conntrack_max`` and
``nf_conntrack_tcp_timeout_time_wait`` are set in the node's namespace. Clients open short TCP
connections at Poisson times (connect, send, read the answer, close; a SYN the node drops is
retransmitted by the client's kernel). Every ``--sample`` seconds the node's ``conntrack -S``
(summed over CPUs) and ``conntrack -C`` are recorded, so the time series shows when the table is
full, how many packets are dropped, and when the GC worker frees entries.

    python benchmarks/kernel_conntrack_full.py --max 1000 --time-wait 20 --rate 100 --duration 90

prints one JSON object: the settings, the client's outcome counts and the time series.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from kernel_capped_search import NS, POD, VIP, sh, stats, teardown  # noqa: E402

NODE_PORT, POD_PORT = 30000, 8080


def setup(max_entries: int, time_wait: int, clients: int) -> None:
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
  chain pre {{ type nat hook prerouting priority dstnat; tcp dport {NODE_PORT} dnat to {POD}:{POD_PORT}; }}
  chain post {{ type nat hook postrouting priority srcnat; oifname "n1" masquerade fully-random; }}
}}"""
    subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "-"], input=rules, text=True,
                   check=True)
    sh(f"sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait={time_wait}", node)
    # nf_conntrack_max is global on 6.18 (a write in a netns does not limit it): set it in the
    # initial namespace, which holds no entries of its own here; main() restores it
    sh(f"sysctl -qw net.netfilter.nf_conntrack_max={max_entries}")
    # keep the client's and the pod's own connection tracking out of the way
    for ns in (cli, pod):
        sh("sysctl -qw net.ipv4.tcp_tw_reuse=1", ns)


def server(duration: float) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((POD, POD_PORT))
    s.listen(4096)
    s.settimeout(0.5)
    end = time.monotonic() + duration

    def handle(c: socket.socket) -> None:
        try:
            c.settimeout(5)
            c.recv(16)
            c.sendall(b"ok")
        except OSError:
            pass
        finally:
            c.close()

    while time.monotonic() < end:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def client(rate: float, duration: float, clients: int, seed: int, timeout: float, out: str) -> None:
    rnd = random.Random(seed)
    ips = [f"10.0.{i // 250}.{2 + i % 250}" for i in range(clients)]
    res = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def one(ip: str) -> None:
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.bind((ip, 0))
            s.connect((VIP, NODE_PORT))
            s.sendall(b"hi")
            s.recv(16)
            r = "ok"
        except OSError:
            r = "failed"
        finally:
            s.close()
        with lock:
            res[r] += 1

    start, t, n, threads = time.perf_counter(), 0.0, 0, []
    while True:
        t += rnd.expovariate(rate)
        if t > duration:
            break
        while time.perf_counter() - start < t:
            time.sleep(0.0002)
        th = threading.Thread(target=one, args=(ips[n % clients],), daemon=True)
        th.start()
        threads.append(th)
        n += 1
    for th in threads:
        th.join()
    res["sent"] = n
    with open(out, "w") as f:
        json.dump(res, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=("measure", "client", "server"), default="measure")
    ap.add_argument("--max", type=int, default=1000)
    ap.add_argument("--time-wait", type=int, default=20)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--sample", type=float, default=0.25)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--connect-timeout", type=float, default=12.0)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.role == "server":
        return server(a.duration)
    if a.role == "client":
        return client(a.rate, a.duration, a.clients, a.seed, a.connect_timeout, a.out)
    old_max = sh("sysctl -n net.netfilter.nf_conntrack_max").strip()
    try:
        result = measure(a, old_max)
    finally:
        sh(f"sysctl -qw net.netfilter.nf_conntrack_max={old_max}")
    print(json.dumps(result))


def measure(a: argparse.Namespace, old_max: str) -> dict:
    here = __file__
    setup(a.max, a.time_wait, a.clients)
    out = f"/tmp/lbsim-kcf-{a.seed}.json"
    srv = subprocess.Popen(["ip", "netns", "exec", NS[2], sys.executable, here, "--role", "server",
                            "--duration", str(a.duration + a.connect_timeout + 5)])
    time.sleep(1.0)
    cl = subprocess.Popen(["ip", "netns", "exec", NS[0], sys.executable, here, "--role", "client",
                           "--rate", str(a.rate), "--duration", str(a.duration), "--clients",
                           str(a.clients), "--seed", str(a.seed), "--connect-timeout",
                           str(a.connect_timeout), "--out", out])
    start, series = time.monotonic(), []
    while cl.poll() is None:
        st = stats(NS[1])
        count = int(sh("conntrack -C", NS[1]).strip() or 0)
        series.append({"t_s": round(time.monotonic() - start, 3), "count": count,
                       **{k: st.get(k, 0) for k in ("drop", "early_drop", "insert_failed",
                                                     "found", "invalid")}})
        time.sleep(a.sample)
    srv.kill()
    res = json.load(open(out))
    teardown()
    return {"kernel": os.uname().release, "max": a.max, "time_wait_s": a.time_wait,
            "rate_per_s": a.rate, "duration_s": a.duration, "clients": res, "series": series}


if __name__ == "__main__":
    main()
