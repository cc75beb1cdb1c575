"""The clients' ephemeral ports as Linux's connect() (TCP) and autobind (UDP) pick them, compiled.

:class:`PortWalk` is the compiled twin of :class:`lbsim.reference.ports.ClientPorts` (which cites
the kernel's rules line by line; the two agree port for port): connections open in time order,
each takes the port its client's kernel would give it and holds it until the time the workload
expects it to free (:func:`holds_until`). The walk's state (each client's perturbation, the ports
held) carries from one window of flows to the next, so a streamed run draws the ports a whole
one does.

The ports held live in an open-addressing hash table keyed by ``client << 16 | port`` (linear
probing, never more than half full); when it fills, the entries already free are dropped (every
later lookup is at a later time) and it grows if the live ones need it, so its size follows the
ports held at once, not the flows.
"""

from __future__ import annotations

import math

import numpy as np

from .jit import jit
from .kernel import (CONNECT_JITTER, CONNECT_STEP, TCP_TIMEWAIT_LEN, TCP_TW_REUSE_AFTER,
                     UDP_PORT_DRAWS)
from .rng import bits_nb, mix64_nb, uniform_nb

__all__ = ["PortWalk", "holds_until", "time_wait_ns"]

_EMPTY = -1
_MIN_SLOTS = 1 << 10


def time_wait_ns(tcp_tw_reuse: int) -> int:
    """How long a client's closed TCP connection keeps its port from connect(), ns."""
    return TCP_TW_REUSE_AFTER if tcp_tw_reuse == 1 else TCP_TIMEWAIT_LEN


def holds_until(tcp: bool, rtt: int, time_wait: int, t0: np.ndarray, service: np.ndarray,
                hold: np.ndarray) -> np.ndarray:
    """When each connection's port frees on its client (ns), as the workload can know it: TCP,
    the handshake, the request and its service, the hold, the FIN exchange (three round trips
    ``rtt``), then ``time_wait`` (the client closes first: :func:`time_wait_ns`); UDP, the
    answer and the hold. Queueing, drops and retransmissions happen in the engine and are not
    seen here (docs/design.md)."""
    if tcp:
        return t0 + 3 * rtt + service + hold + time_wait
    return t0 + rtt + service + hold


@jit(inline="always")
def _slot(keys, k):
    """The slot of key ``k``: where it is, or the empty slot where it would go."""
    mask = np.uint64(keys.size - 1)
    h = np.int64(mix64_nb(np.uint64(k)) & mask)
    while keys[h] != _EMPTY and keys[h] != k:
        h = (h + 1) & (keys.size - 1)
    return h


@jit(inline="always")
def _free(keys, vals, k, t):
    h = _slot(keys, k)
    return keys[h] == _EMPTY or vals[h] <= t


@jit
def _connect(c, t, sock, low, high, remaining, key, perturb, keys, vals):
    """__inet_hash_connect's walk for one connection (lbsim.reference.ports.ClientPorts)."""
    if perturb[c] < 0:
        perturb[c] = np.int64(bits_nb(key, c, 0, 1) >> np.uint64(32))
    start = perturb[c]
    offset = (start % remaining) & ~1
    while True:
        port = low + offset
        for i in range(0, remaining, CONNECT_STEP):
            if port >= high:
                port -= remaining
            if _free(keys, vals, (c << 16) | port, t):
                jitter = np.int64(math.floor(uniform_nb(key, sock, 0, 0) * CONNECT_JITTER))
                step = max(i, jitter * CONNECT_STEP) + CONNECT_STEP
                perturb[c] = (start + step) & 0xFFFFFFFF
                return port
            port += CONNECT_STEP
        offset += 1
        if not ((offset & 1) == 1 and remaining > 1):
            return -1


@jit
def _autobind(c, t, sock, low, remaining, key, keys, vals):
    """udp_lib_get_port's choice for one socket (lbsim.reference.ports.ClientPorts)."""
    port = low
    for j in range(UDP_PORT_DRAWS):
        port = low + np.int64(math.floor(uniform_nb(key, sock, j, 0) * np.float64(remaining)))
        if _free(keys, vals, (c << 16) | port, t):
            return port
    for k in range(1, remaining):
        q = low + (port - low + k) % remaining
        if _free(keys, vals, (c << 16) | q, t):
            return q
    return -1


@jit
def _open(client, t, until, sock, i0, tcp, low, high, remaining, key, perturb, keys, vals,
          count, out):
    """Ports for connections ``i0 ..`` in time order into ``out``; returns where it stopped (the
    table half full: the caller makes room) or ``client.size`` when done."""
    for i in range(i0, client.size):
        if 2 * (count[0] + 1) > keys.size:
            return i
        c = client[i]
        if tcp:
            port = _connect(c, t[i], sock[i], low, high, remaining, key, perturb, keys, vals)
        else:
            port = _autobind(c, t[i], sock[i], low, remaining, key, keys, vals)
        out[i] = port
        if port >= 0:
            k = (c << 16) | port
            h = _slot(keys, k)
            if keys[h] == _EMPTY:
                keys[h] = k
                count[0] += 1
            vals[h] = until[i]
    return client.size


@jit
def _insert_all(keys, vals, ks, vs):
    for i in range(ks.size):
        h = _slot(keys, ks[i])
        keys[h] = ks[i]
        vals[h] = vs[i]


class PortWalk:
    """Every client's ports held and connect() perturbation, as connections open in time order
    (window after window)."""

    def __init__(self, port_range: tuple[int, int], tcp: bool, clients: int,
                 key: np.uint64) -> None:
        self.low, self.high = int(port_range[0]), int(port_range[1]) + 1
        self.tcp, self.key = tcp, np.uint64(key)
        remaining = self.high - self.low
        self.remaining = remaining & ~1 if tcp and remaining > 1 else remaining
        self.perturb = np.full(clients, -1, np.int64)
        self.keys = np.full(_MIN_SLOTS, _EMPTY, np.int64)
        self.vals = np.zeros(_MIN_SLOTS, np.int64)
        self.count = np.zeros(1, np.int64)

    def open(self, client: np.ndarray, t: np.ndarray, until: np.ndarray,
             sock: np.ndarray) -> np.ndarray:
        """The ports of sockets ``sock`` (numbers for the draws) of ``client`` opening at ``t``
        (ascending) and held until ``until``; -1 where the client has none free."""
        client, t, until, sock = (np.ascontiguousarray(a, np.int64)
                                  for a in (client, t, until, sock))
        out = np.empty(client.size, np.int64)
        i = 0
        while True:
            i = _open(client, t, until, sock, i, self.tcp, self.low, self.high, self.remaining,
                      self.key, self.perturb, self.keys, self.vals, self.count, out)
            if i == client.size:
                return out
            self._make_room(int(t[i]))

    def _make_room(self, t: int) -> None:
        """Drop the ports free at ``t`` (every later lookup is at ``t`` or after) and grow the
        table while the held ones would fill more than a quarter of it."""
        used = self.keys != _EMPTY
        held = used & (self.vals > t)
        ks, vs = self.keys[held], self.vals[held]
        size = self.keys.size
        while 4 * (ks.size + 1) > size:
            size *= 2
        self.keys = np.full(size, _EMPTY, np.int64)
        self.vals = np.zeros(size, np.int64)
        _insert_all(self.keys, self.vals, ks, vs)
        self.count[0] = ks.size
