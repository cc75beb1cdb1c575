"""The testbed's network namespaces: built from a :class:`~lbsim.testbed.plan.Plan`, torn down on
every exit.

Topology (every address a /32 on a veth, routes ``onlink``, so that each namespace has one
neighbour per link however many clients there are)::

    clients (11.0.0.0 + c)  --  fabric (10.255.255.254)  --  node n (10.0.0.1 + n)  --  pod p

The fabric only routes (no rules, so no conntrack); every node forwards, and holds kube-proxy's
rules, so conntrack and NAT run in each node's namespace on this machine's kernel. Only sysctls of
the testbed's own namespaces are written, never the host's.

Names carry the owner's process id (``lbsim<pid>-...``): a run sweeps away namespaces left by a
process that no longer exists (one killed with SIGKILL, which nothing can catch), and its own on
exit, SIGINT and SIGTERM included.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from ..tuples import node_ip, pod_ip
from .plan import CLIENT_GW_IP, FABRIC_IP, Plan, client_addresses, ip_str

__all__ = ["Namespaces", "unavailable", "sweep_stale", "PREFIX", "netns_list"]

PREFIX = "lbsim"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")
_TOOLS = {"ip": "iproute2", "nft": "nftables", "iptables-restore": "iptables"}


def _run(cmd: list[str], stdin: str | None = None, check: bool = True) -> str:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if check and out.returncode:
        msg = (out.stderr or out.stdout).strip().splitlines()
        raise RuntimeError(f"{' '.join(cmd[:5])}: "
                           f"{'; '.join(msg[:2]) if msg else f'exit {out.returncode}'}")
    return out.stdout


def unavailable(loader: str | None = None) -> str | None:
    """Why this machine cannot run the testbed (not root, a tool missing, no namespaces), or
    None."""
    if os.name != "posix" or not Path("/proc/net").exists():
        return "the testbed needs Linux"
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, netfilter rules)"
    for tool in ["ip", *([loader] if loader else [])]:
        if shutil.which(tool) is None:
            return f"the testbed needs {tool} (Debian package {_TOOLS[tool]})"
    return None


def netns_list() -> list[str]:
    """Names of this machine's named network namespaces."""
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir())
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the testbed namespaces whose owner process is gone; returns their names."""
    stale = [n for n in netns_list()
             if (m := _NAME.match(n)) and int(m.group(1)) != os.getpid()
             and not _alive(int(m.group(1)))]
    for n in stale:
        _run(["ip", "netns", "del", n], check=False)
    return stale


class Namespaces:
    """The namespaces of one plan, as a context manager: built on enter, deleted on exit (SIGTERM
    turned into an exception meanwhile, so that the exit runs)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        tag = f"{PREFIX}{os.getpid()}"
        self.cli, self.fab = f"{tag}-cli", f"{tag}-fab"
        self.node = [f"{tag}-n{n}" for n in range(plan.nodes)]
        self.pod = [f"{tag}-p{p}" for p in range(plan.pods)]
        self.created: list[str] = []
        self._old_term = None

    @property
    def all(self) -> list[str]:
        return [self.cli, self.fab, *self.node, *self.pod]

    def __enter__(self) -> Namespaces:
        if threading.current_thread() is threading.main_thread():
            self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            sweep_stale()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Delete every namespace this object created (links and rules go with them)."""
        if self.created:
            _run(["ip", "-batch", "-"], "".join(f"netns del {n}\n" for n in self.created),
                 check=False)
            for n in self.created:   # what the batch could not delete (it stops at an error)
                if Path("/run/netns", n).exists():
                    _run(["ip", "netns", "del", n], check=False)
            self.created = []
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None

    # -- building ---------------------------------------------------------------------------------
    def _build(self) -> None:
        p, sc = self.plan, self.plan.scenario
        for n in self.all:
            _run(["ip", "netns", "add", n])
            self.created.append(n)
        # sysctls before the links move in: a device takes its namespace's defaults
        off = {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0}
        self.sysctl(self.fab, {"net.ipv4.ip_forward": 1, **off})
        for n in self.node:
            self.sysctl(n, {"net.ipv4.ip_forward": 1, **off})
        w = sc.workload
        self.sysctl(self.cli, {
            **off, "net.ipv4.tcp_syn_retries": w.syn_retries,
            "net.ipv4.tcp_syn_linear_timeouts": w.syn_linear_timeouts,
            # the clients' kernel reuses its TIME_WAIT ports as the scenario says (lbsim's port
            # walk skips them for as long: lbsim.client_ports)
            "net.ipv4.tcp_tw_reuse": w.tcp_tw_reuse})
        for n in self.pod:
            self.sysctl(n, {**off, "net.core.somaxconn": 65535,
                            "net.ipv4.tcp_max_syn_backlog": 65535})
        root = []
        root.append(f"link add c0 netns {self.cli} type veth peer name cli netns {self.fab}")
        for i, n in enumerate(self.node):
            root.append(f"link add eth0 netns {n} type veth peer name n{i} netns {self.fab}")
        pod_node = p.workload.pod_node[:p.pods]
        for j, n in enumerate(self.pod):
            root.append(f"link add eth0 netns {n} type veth peer name p{j} "
                        f"netns {self.node[int(pod_node[j])]}")
        _run(["ip", "-batch", "-"], "\n".join(root) + "\n")
        # clients: every client address on c0, the fabric as the one next hop
        cli = ["link set lo up", "link set c0 up", f"addr add {CLIENT_GW_IP}/32 dev c0"]
        cli += [f"addr add {a}/32 dev c0" for a in client_addresses(w.clients)]
        cli.append(f"route add default via {FABRIC_IP} dev c0 onlink")
        self.batch(self.cli, cli)
        fab = ["link set lo up", "link set cli up", f"addr add {FABRIC_IP}/32 dev cli",
               f"route add 11.0.0.0/8 via {CLIENT_GW_IP} dev cli onlink"]
        for i in range(p.nodes):
            nip = ip_str(node_ip(i))
            fab += [f"link set n{i} up", f"addr add {FABRIC_IP}/32 dev n{i}",
                    f"route add {nip}/32 dev n{i}"]
        for j in range(p.pods):
            fab.append(f"route add {ip_str(pod_ip(j))}/32 via {ip_str(node_ip(int(pod_node[j])))} "
                       f"dev n{int(pod_node[j])} onlink")
        self.batch(self.fab, fab)
        for i, n in enumerate(self.node):
            nip = ip_str(node_ip(i))
            cmds = ["link set lo up", "link set eth0 up", f"addr add {nip}/32 dev eth0",
                    f"route add default via {FABRIC_IP} dev eth0 onlink"]
            for j in range(p.pods):
                if int(pod_node[j]) == i:
                    # the node's own address on the pod's link too: MASQUERADE takes the
                    # outgoing device's address, and the pod's next hop is the node
                    cmds += [f"link set p{j} up", f"addr add {nip}/32 dev p{j}",
                             f"route add {ip_str(pod_ip(j))}/32 dev p{j} src {nip}"]
            self.batch(n, cmds)
            if p.rules[i]:
                _run(["ip", "netns", "exec", n, p.loader, *(["-f", "-"] if p.loader == "nft"
                                                             else [])], p.rules[i])
        for j, n in enumerate(self.pod):
            nip = ip_str(node_ip(int(pod_node[j])))
            self.batch(n, ["link set lo up", "link set eth0 up",
                           f"addr add {ip_str(pod_ip(j))}/32 dev eth0",
                           f"route add default via {nip} dev eth0 onlink"])
        # conntrack's per-namespace sysctls exist once the namespace has a conntrack user (the
        # rules above): the scenario's timeouts in every node
        ct = sc.conntrack
        for n, rules in zip(self.node, p.rules):
            if rules:
                self.sysctl(n, {
                    "net.netfilter.nf_conntrack_tcp_timeout_time_wait": int(ct.time_wait_s),
                    "net.netfilter.nf_conntrack_udp_timeout": int(ct.udp_s),
                    "net.netfilter.nf_conntrack_udp_timeout_stream": int(sc.udp_stream_s)})

    def batch(self, ns: str, cmds: list[str]) -> None:
        _run(["ip", "-n", ns, "-batch", "-"], "\n".join(cmds) + "\n")

    def sysctl(self, ns: str, values: dict[str, int]) -> None:
        """Write ``values`` in namespace ``ns`` (its own /proc/sys/net, never the host's)."""
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
              *(f"{k}={v}" for k, v in values.items())])

    def read(self, ns: str, path: str) -> str:
        """A /proc file as namespace ``ns`` sees it."""
        return _run(["ip", "netns", "exec", ns, "cat", path])


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
