"""The testbed's traffic: every client flow and every pod's server, in one asyncio process.

Run as ``ip netns exec <clients> python -m lbsim.testbed.traffic DIR``: the process lives in the
clients' namespace; it enters each pod's namespace (``setns``) only to open that pod's listening
socket, which stays in the pod's namespace. ``DIR/plan.npz`` holds the flows (lbsim's own draws:
start, client address and port, destination, service and hold times) and the pods;
``DIR/result.npz`` receives, per flow, what the client saw and what the pod saw.

A TCP flow binds its client address and port, ``connect()``s (the clients' kernel retransmits the
SYN as its ``tcp_syn_retries`` and ``tcp_syn_linear_timeouts`` say), sends its flow number, reads
the pod's one-byte answer (sent after the flow's service time, with at most ``workers`` flows in
service per pod, first come first served), holds the connection ``hold`` and closes. A UDP flow
sends its flow number from its own socket and waits ``udp_timeout_s`` for the answer, resending up
to ``udp_retries`` times.

Flows start at their planned instants, or with ``concurrency`` > 0 as a closed loop does
(``workload.arrival = "closed_loop"``): that many clients, client j's first flow at ``ramp[j]``,
each taking the next flow number when it starts one, ``think`` after its last one ended (the
answer, the hold and the close; connect()'s failure; the last UDP wait). Each flow's real start
is in result.npz (``start_ns``, from the replay's start).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import os
import resource
import socket
import struct
import sys
from pathlib import Path

import numpy as np

__all__ = ["OUTCOMES", "main"]

#: a flow's outcome codes in result.npz
NOT_RUN, ESTABLISHED, TIMED_OUT, REFUSED, ADDRESS_BUSY, ERROR = range(6)
#: include/uapi/linux/in.h (Python names it only from 3.12)
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
OUTCOMES = ("not_run", "established", "timed_out", "refused", "address_busy", "error")
CLONE_NEWNET = 0x40000000
_FID = struct.Struct("!q")


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def _listener(netns: str, ip: str, port: int, tcp: bool) -> socket.socket:
    """A socket bound to ip:port in namespace ``netns`` (it stays there once we return)."""
    home = f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net"
    back = os.open(home, os.O_RDONLY)
    try:
        _setns(f"/run/netns/{netns}")
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if not tcp:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            s.bind((ip, port))
            if tcp:
                s.listen(65535)
            s.setblocking(False)
            return s
        finally:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(back)


class Replay:
    def __init__(self, plan: dict[str, np.ndarray]) -> None:
        self.p = plan
        n = plan["t0"].size
        self.outcome = np.zeros(n, np.int8)
        self.connect_ns = np.full(n, -1, np.int64)
        self.response_ns = np.full(n, -1, np.int64)
        self.late_ns = np.zeros(n, np.int64)
        self.start_ns = np.full(n, -1, np.int64)
        self.origin = 0.0                # the replay's start, loop time
        self.sends = np.zeros(n, np.int32)
        self.pod = np.full(n, -1, np.int32)
        self.seen_ip = np.zeros(n, np.int64)
        self.tcp = bool(plan["tcp"])
        self.ips = [str(ipaddress.IPv4Address(int(a))) for a in plan["client_ip"]]
        self.dst = [str(ipaddress.IPv4Address(int(a))) for a in plan["dst_ip"]]

    # -- pods -------------------------------------------------------------------------------------
    async def pods(self) -> list:
        p, loop = self.p, asyncio.get_running_loop()
        servers = []
        self.sems = [asyncio.Semaphore(int(w)) for w in p["workers"]]
        for j, ns in enumerate(str(x) for x in p["pod_ns"]):
            ip = str(ipaddress.IPv4Address(int(p["pod_ip"][j])))
            s = _listener(ns, ip, int(p["pod_port"]), self.tcp)
            if self.tcp:
                servers.append(await asyncio.start_server(
                    lambda r, w, j=j: self._serve_tcp(j, r, w), sock=s, backlog=65535))
            else:
                tr, _ = await loop.create_datagram_endpoint(lambda j=j: _Pod(self, j), sock=s)
                servers.append(tr)
        return servers

    def _seen(self, j: int, fid: int, peer: str) -> bool:
        if not 0 <= fid < self.pod.size:
            return False
        if self.pod[fid] < 0:
            self.pod[fid] = j
            self.seen_ip[fid] = int(ipaddress.IPv4Address(peer))
        return True

    async def _serve_tcp(self, j: int, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            fid = _FID.unpack(await reader.readexactly(_FID.size))[0]
            if not self._seen(j, fid, writer.get_extra_info("peername")[0]):
                return
            async with self.sems[j]:
                await asyncio.sleep(self.p["service"][fid] / 1e9)
            writer.write(b"k")
            await writer.drain()
            await reader.read()          # until the client closes, after its hold
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def answer_udp(self, j: int, tr, fid: int, addr) -> None:
        async with self.sems[j]:
            await asyncio.sleep(self.p["service"][fid] / 1e9)
        tr.sendto(b"k", addr)

    # -- clients ----------------------------------------------------------------------------------
    async def clients(self, start: float) -> None:
        self.origin = start
        if int(self.p["concurrency"]) > 0:
            await self._closed_loop(start)
            return
        loop, t0 = asyncio.get_running_loop(), self.p["t0"]
        tasks = set()
        flow = self._tcp if self.tcp else self._udp
        for i in range(t0.size):
            delay = start + t0[i] / 1e9 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(flow(i, start + t0[i] / 1e9))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)

    async def _closed_loop(self, start: float) -> None:
        """``concurrency`` clients, each starting the next flow ``think`` after its last."""
        loop, n = asyncio.get_running_loop(), self.p["t0"].size
        flow = self._tcp if self.tcp else self._udp
        think = float(self.p["think_ns"]) / 1e9
        nxt = iter(range(n))

        async def client(j: int) -> None:
            due = start + float(self.p["ramp"][j]) / 1e9
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                i = next(nxt, None)
                if i is None:
                    return
                await flow(i, due)
                due = loop.time() + think

        await asyncio.gather(*(client(j) for j in range(int(self.p["concurrency"]))))

    def _socket(self, i: int, kind: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setblocking(False)
        port = int(self.p["sport"][i])
        if port < 0:
            # lbsim's client had no free port: this kernel picks one as connect() (TCP: the
            # address only, IP_BIND_ADDRESS_NO_PORT) or the UDP autobind does, or fails too
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            port = 0
        s.bind((self.ips[i], port))
        return s

    def _open(self, i: int, due: float, kind: int) -> tuple[socket.socket | None, float]:
        """Flow ``i``'s socket (None: its address is busy) and when it started."""
        begin = asyncio.get_running_loop().time()
        self.late_ns[i] = int((begin - due) * 1e9)
        self.start_ns[i] = int((begin - self.origin) * 1e9)
        try:
            return self._socket(i, kind), begin
        except OSError:
            self.outcome[i] = ADDRESS_BUSY
            return None, begin

    async def _tcp(self, i: int, due: float) -> None:
        loop = asyncio.get_running_loop()
        s, begin = self._open(i, due, socket.SOCK_STREAM)
        if s is None:
            return
        try:
            try:
                await loop.sock_connect(s, (self.dst[i], int(self.p["dst_port"][i])))
            except OSError as e:
                self.outcome[i] = {errno.ETIMEDOUT: TIMED_OUT, errno.ECONNREFUSED: REFUSED,
                                   errno.EADDRNOTAVAIL: ADDRESS_BUSY,
                                   errno.EADDRINUSE: ADDRESS_BUSY}.get(e.errno, ERROR)
                return
            self.outcome[i] = ESTABLISHED
            self.connect_ns[i] = int((loop.time() - begin) * 1e9)
            await loop.sock_sendall(s, _FID.pack(i))
            if await loop.sock_recv(s, 1):
                self.response_ns[i] = int((loop.time() - begin) * 1e9)
            await asyncio.sleep(self.p["hold"][i] / 1e9)
        except OSError:
            pass
        finally:
            s.close()

    async def _udp(self, i: int, due: float) -> None:
        loop = asyncio.get_running_loop()
        s, begin = self._open(i, due, socket.SOCK_DGRAM)
        if s is None:
            return
        dst = (self.dst[i], int(self.p["dst_port"][i]))
        self.outcome[i] = TIMED_OUT
        try:
            for _ in range(int(self.p["udp_retries"]) + 1):
                self.sends[i] += 1
                s.sendto(_FID.pack(i), dst)
                try:
                    await asyncio.wait_for(loop.sock_recv(s, 16), float(self.p["udp_timeout_s"]))
                except TimeoutError:
                    continue
                self.outcome[i] = ESTABLISHED
                self.response_ns[i] = int((loop.time() - begin) * 1e9)
                break
        except OSError:
            self.outcome[i] = ERROR
        finally:
            s.close()


class _Pod(asyncio.DatagramProtocol):
    def __init__(self, replay: Replay, j: int) -> None:
        self.replay, self.j = replay, j

    def connection_made(self, transport) -> None:
        self.tr = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < _FID.size:
            return
        fid = _FID.unpack(data[:_FID.size])[0]
        if self.replay._seen(self.j, fid, addr[0]):
            asyncio.get_running_loop().create_task(
                self.replay.answer_udp(self.j, self.tr, fid, addr))


async def _main(d: Path) -> None:
    plan = dict(np.load(d / "plan.npz"))
    r = Replay(plan)
    servers = await r.pods()
    loop = asyncio.get_running_loop()
    try:
        await r.clients(loop.time() + 0.5)
    finally:
        for s in servers:
            s.close()
    np.savez(d / "result.npz", outcome=r.outcome, connect_ns=r.connect_ns,
             response_ns=r.response_ns, late_ns=r.late_ns, start_ns=r.start_ns, sends=r.sends,
             pod=r.pod,
             seen_ip=r.seen_ip)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_main(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
