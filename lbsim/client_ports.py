"""The clients' ephemeral ports as Linux's connect() (TCP) and autobind (UDP) pick them, compiled.

:class:`PortWalk` is the compiled twin of :class:`lbsim.reference.ports.ClientPorts` (which cites
the kernel's rules line by line; the two agree port for port): connections open in time order,
each takes the port its client's kernel would give it and holds it until the time the workload
expects it to free (:func:`holds_until`). The walk's state (each client's perturbation, the ports
held) carries from one window of flows to the next, so a streamed run draws the ports a whole
one does.

The ports held live in an open-addressing hash table keyed by ``client << 16 | port`` (linear
probing, at most two thirds full; a row holds a key and when its port frees, one cache line for
both); when it fills, the entries already free are deleted in place (every later lookup is at a
later time) and it doubles if the held ones need it, so its size follows the ports held at
once, not the flows.
"""

from __future__ import annotations

import math

import numpy as np

from .jit import jit
from .kernel import (CONNECT_JITTER, CONNECT_STEP, TCP_TIMEWAIT_LEN, TCP_TW_REUSE_AFTER,
                     UDP_PORT_DRAWS)
from .rng import bits_nb, mix64_nb, uniform_nb

__all__ = ["PortWalk", "holds_until", "time_wait_ns", "BYTES_PER_HELD_PORT"]

_EMPTY = -1
_MIN_SLOTS = 1 << 10
#: the rows used (held or not) at which the ports already free are purged, and the rows held
#: after a purge past which the table doubles: probes stay short (linear probing below 2/3
#: full) and the table takes 2.5 to 5 rows of 16 bytes a held port
_PURGE_AT = 2 / 3
_GROW_AT = 0.4
#: the table's bytes a held port at most: under 2 / _GROW_AT rows of 16 bytes after a doubling,
#: and the old half beside the new one while it is copied (budget.estimate_bytes)
BYTES_PER_HELD_PORT = int(16 * 1.5 * 2 / _GROW_AT)


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
def _slot(table, k):
    """The slot of key ``k``: where it is, or the empty slot where it would go."""
    mask = table.shape[0] - 1
    h = np.int64(mix64_nb(np.uint64(k)) & np.uint64(mask))
    while table[h, 0] != _EMPTY and table[h, 0] != k:
        h = (h + 1) & mask
    return h


@jit(inline="always")
def _held(table, h, t):
    """Slot ``h`` (a key's, from :func:`_slot`) holds its port past ``t``."""
    return table[h, 0] != _EMPTY and table[h, 1] > t


@jit
def _connect(c, t, sock, low, high, remaining, key, perturb, table):
    """__inet_hash_connect's walk for one connection (lbsim.reference.ports.ClientPorts): the
    port and its slot, or (-1, -1)."""
    if perturb[c] < 0:
        perturb[c] = np.int64(bits_nb(key, c, 0, 1) >> np.uint64(32))
    start = perturb[c]
    offset = (start % remaining) & ~1
    while True:
        port = low + offset
        for i in range(0, remaining, CONNECT_STEP):
            if port >= high:
                port -= remaining
            h = _slot(table, (c << 16) | port)
            if not _held(table, h, t):
                jitter = np.int64(math.floor(uniform_nb(key, sock, 0, 0) * CONNECT_JITTER))
                step = max(i, jitter * CONNECT_STEP) + CONNECT_STEP
                perturb[c] = (start + step) & 0xFFFFFFFF
                return port, h
            port += CONNECT_STEP
        offset += 1
        if not ((offset & 1) == 1 and remaining > 1):
            return -1, -1


@jit
def _autobind(c, t, sock, low, remaining, key, table):
    """udp_lib_get_port's choice for one socket (lbsim.reference.ports.ClientPorts): the port
    and its slot, or (-1, -1)."""
    port = low
    for j in range(UDP_PORT_DRAWS):
        port = low + np.int64(math.floor(uniform_nb(key, sock, j, 0) * np.float64(remaining)))
        h = _slot(table, (c << 16) | port)
        if not _held(table, h, t):
            return port, h
    for k in range(1, remaining):
        q = low + (port - low + k) % remaining
        h = _slot(table, (c << 16) | q)
        if not _held(table, h, t):
            return q, h
    return -1, -1


@jit
def _open(client, t, until, sock, i0, tcp, low, high, remaining, key, perturb, table,
          count, out):
    """Ports for connections ``i0 ..`` in time order into ``out``; returns where it stopped (the
    table full enough: the caller makes room) or ``client.size`` when done."""
    for i in range(i0, client.size):
        if count[0] + 1 > _PURGE_AT * table.shape[0]:
            return i
        c = client[i]
        if tcp:
            port, h = _connect(c, t[i], sock[i], low, high, remaining, key, perturb, table)
        else:
            port, h = _autobind(c, t[i], sock[i], low, remaining, key, table)
        out[i] = port
        if port >= 0:
            if table[h, 0] == _EMPTY:
                table[h, 0] = (c << 16) | port
                count[0] += 1
            table[h, 1] = until[i]
    return client.size


@jit
def _purge(table, t):
    """Delete, in place, every row whose port is free at ``t``; returns the rows left. Each
    deletion shifts the rows after it back where their probe sequence allows (Knuth's
    Algorithm R for linear probing), so every lookup still finds its key or an empty slot;
    the scan starts after an empty slot, where no probe sequence crosses."""
    size = table.shape[0]
    mask = size - 1
    s0 = 0
    while table[s0, 0] != _EMPTY:
        s0 += 1
    left = 0
    for off in range(1, size + 1):
        i = (s0 + off) & mask
        while table[i, 0] != _EMPTY and table[i, 1] <= t:
            _delete(table, i, mask)
        if table[i, 0] != _EMPTY:
            left += 1
    return left


@jit(inline="always")
def _delete(table, i, mask):
    j = i
    while True:
        j = (j + 1) & mask
        if table[j, 0] == _EMPTY:
            break
        home = np.int64(mix64_nb(np.uint64(table[j, 0])) & np.uint64(mask))
        # the row at j may move back to i unless its home lies cyclically in (i, j]
        if i <= j:
            stays = home > i and home <= j
        else:
            stays = home > i or home <= j
        if not stays:
            table[i, 0] = table[j, 0]
            table[i, 1] = table[j, 1]
            i = j
    table[i, 0] = _EMPTY


@jit
def _rehash(old, table):
    """Every row of ``old`` into the empty ``table``."""
    for r in range(old.shape[0]):
        if old[r, 0] != _EMPTY:
            h = _slot(table, old[r, 0])
            table[h, 0] = old[r, 0]
            table[h, 1] = old[r, 1]


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
        self.table = _empty_table(_MIN_SLOTS)
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
                      self.key, self.perturb, self.table, self.count, out)
            if i == client.size:
                return out
            self._make_room(int(t[i]))

    def _make_room(self, t: int) -> None:
        """Drop the ports free at ``t`` (every later lookup is at ``t`` or after), in place,
        and double the table while the held ones fill more than :data:`_GROW_AT` of it."""
        held = _purge(self.table, t)
        size = self.table.shape[0]
        while held + 1 > _GROW_AT * size:
            size *= 2
        if size > self.table.shape[0]:
            old, self.table = self.table, _empty_table(size)
            _rehash(old, self.table)
        self.count[0] = held


def _empty_table(slots: int) -> np.ndarray:
    """``slots`` rows of (key, the time its port frees, ns); a key and its time share a cache
    line."""
    table = np.zeros((slots, 2), np.int64)
    table[:, 0] = _EMPTY
    return table
