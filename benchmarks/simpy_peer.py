"""The idiomatic simpy model of the same system, the peer lbsim is measured against.

One simpy process per connection, Python dicts and sets for conntrack and SNAT ports, a timeout
process per conntrack entry (TIME_WAIT). It follows the same rules as lbsim for the perf
scenarios (LB round robin over nodes or pods, iptables' uniform endpoint choice, MASQUERADE
--random-fully with runs of 128/64/32/16/8 probes, pods as FIFO queues with ``workers`` servers),
but none of lbsim's exactness machinery (CPUs, confirm races, retransmissions): it is the cheap
version a modeller would write first, so the ratio flatters the peer if anything.
"""

from __future__ import annotations

import random

import simpy

from lbsim import Scenario
from lbsim.config import DataPath


def run(sc: Scenario) -> dict[str, float]:
    """Simulate ``sc`` (TCP, fixed network delays); returns counts of established/failed flows."""
    rnd = random.Random(sc.seed)
    env = simpy.Environment()
    nodes, pods = sc.cluster.nodes, sc.cluster.pods
    pod_node = [p % nodes for p in range(pods)]
    workers = sc.pod.workers if isinstance(sc.pod.workers, int) else max(sc.pod.workers)
    servers = [simpy.Resource(env, capacity=workers) for _ in range(pods)]
    conntrack: list[dict[tuple, float]] = [dict() for _ in range(nodes)]
    used: dict[tuple[int, int], set[int]] = {}
    lo, hi = sc.nat.port_range or (1024, 65535)
    size = hi - lo + 1
    d_in = sc.network.client_to_lb_s + sc.network.lb_to_backend_s
    hop = sc.network.node_to_pod_s
    tw = sc.conntrack.time_wait_s
    mean_service = sc.pod.service_s.mean
    direct = sc.path is DataPath.DIRECT
    stats = {"established": 0, "failed": 0}
    rr = [0]

    def select_port(key: tuple[int, int]) -> int | None:
        ports = used.setdefault(key, set())
        attempts = min(128, size)
        while True:
            off = rnd.getrandbits(16)
            for i in range(attempts):
                p = lo + (off + i) % size
                if p not in ports:
                    return p
            if attempts >= size or attempts < 16:
                return None
            attempts //= 2

    def expire(node: int, tup: tuple, key: tuple[int, int], port: int, delay: float):
        yield env.timeout(delay)
        del conntrack[node][tup]
        used[key].discard(port)

    def connection(flow: int):
        yield env.timeout(d_in)
        b = rr[0]
        rr[0] += 1
        client = (rnd.randrange(sc.workload.clients), rnd.randrange(32768, 61000))
        if direct:
            pod = b % pods
        else:
            node = b % nodes
            pod = rnd.randrange(pods)
            key = (node, pod)
            port = select_port(key)
            if port is None:
                stats["failed"] += 1
                return
            used[key].add(port)
            conntrack[node][(client, flow)] = env.now
            if pod_node[pod] != node:
                yield env.timeout(hop)
        with servers[pod].request() as req:
            yield req
            yield env.timeout(rnd.expovariate(1 / mean_service) if mean_service > 0 else 0)
        stats["established"] += 1
        if not direct:
            env.process(expire(node, (client, flow), key, port, d_in + tw))

    def arrivals():
        for f in range(sc.workload.flows):
            yield env.timeout(rnd.expovariate(sc.workload.rate_per_s))
            env.process(connection(f))

    env.process(arrivals())
    env.run()
    return stats
