"""The clients' ephemeral ports, as Linux picks one for a socket that has none (readable reference).

:mod:`lbsim.client_ports` is its compiled twin, which draws the workload's ports; the two must
agree port for port (tests/property/test_client_ports.py). Every client connects to one
destination (the Service's address and port), so the client's own live 4-tuples are its live
ports.

TCP, ``connect()`` -> ``__inet_hash_connect()`` (net/ipv4/inet_hashtables.c, 5.18+)::

    high++; remaining = high - low; if (remaining > 1) remaining &= ~1U;
    index = port_offset & (INET_TABLE_PERTURB_SIZE - 1);
    offset = table_perturb[index] + (port_offset >> 32);  offset %= remaining;
    offset &= ~1U;                       /* the low end's parity first */
    other_parity_scan:
    port = low + offset;
    for (i = 0; i < remaining; i += step, port += step) {   /* step = 2 */
        if (port >= high) port -= remaining;
        ... a port whose 4-tuple is in use (established, or TIME_WAIT that tcp_tw_reuse
        ... does not let it take over): next port; else goto ok;
    }
    offset++; if ((offset & 1) && remaining > 1) goto other_parity_scan;
    return -EADDRNOTAVAIL;
    ok:
    i = max_t(int, i, get_random_u32_below(8) * step);
    table_perturb[index] += i + step;

``port_offset = secure_ipv4_port_ephemeral(saddr, daddr, dport)`` is a keyed hash and
``table_perturb`` starts random, so one client's connections to the Service share one counter
whose start is a random 32-bit value per client (drawn from the ``client_ports`` stream). A
connection holds its port from its connect() until its close, and then for TCP_TIMEWAIT_LEN
(the client closes first). UDP, ``udp_lib_get_port()`` (net/ipv4/udp.c) with no port: a random
first port (``reciprocal_scale(get_random_u32(), remaining) + low``); when it is taken the kernel
tries the other ports of its hash slot in a random order, which lbsim follows by drawing again (up
to UDP_PORT_DRAWS times, then the next free port upward). A UDP socket holds its port until it
closes. Without a free port the flow fails at once (NO_CLIENT_PORT: connect() or sendto() returns
EADDRNOTAVAIL, nothing is sent).
"""

from __future__ import annotations

import math

from ..kernel import CONNECT_JITTER, CONNECT_STEP, UDP_PORT_DRAWS
from ..rng import mix64_scalar

__all__ = ["ClientPorts"]

_M32 = (1 << 32) - 1


def _bits(key: int, flow: int, attempt: int, draw: int) -> int:
    """lbsim.rng's counter-based draw of one (flow, attempt, draw), in plain Python."""
    return mix64_scalar(mix64_scalar((flow << 24) | (attempt << 16) | draw) ^ key)


def _uniform(key: int, flow: int, attempt: int, draw: int) -> float:
    return (_bits(key, flow, attempt, draw) >> 11) * (1.0 / (1 << 53))


class ClientPorts:
    """Every client's ports in use, and its connect() perturbation, as connections open in time
    order. ``port_range``: ``ip_local_port_range`` (inclusive); ``key``: the ``client_ports``
    stream's key."""

    def __init__(self, port_range: tuple[int, int], tcp: bool, key: int) -> None:
        self.low, self.high = port_range[0], port_range[1] + 1     # high++: [low, high[
        self.tcp, self.key = tcp, int(key)
        remaining = self.high - self.low
        if tcp and remaining > 1:        # whole pairs of the two parities (connect() only)
            remaining &= ~1
        self.remaining = remaining
        self.perturb: dict[int, int] = {}            # client -> its table_perturb + hash
        self.busy_until: dict[tuple[int, int], int] = {}   # (client, port) -> when it frees, ns

    def free(self, client: int, port: int, t: int) -> bool:
        """The client's port is not held by one of its own sockets at ``t``."""
        return self.busy_until.get((client, port), 0) <= t

    def open(self, client: int, t: int, until: int, sock: int) -> int:
        """The port socket number ``sock`` of ``client`` gets at ``t`` (-1: none free), held
        until ``until`` ns."""
        port = self._connect(client, t, sock) if self.tcp else self._autobind(client, t, sock)
        if port >= 0:
            self.busy_until[(client, port)] = until
        return port

    def _connect(self, client: int, t: int, sock: int) -> int:
        if client not in self.perturb:   # table_perturb[index] + (port_offset >> 32)
            self.perturb[client] = _bits(self.key, client, 0, 1) >> 32
        start = self.perturb[client]
        offset = (start % self.remaining) & ~1
        while True:                      # other_parity_scan
            port = self.low + offset
            for i in range(0, self.remaining, CONNECT_STEP):
                if port >= self.high:
                    port -= self.remaining
                if self.free(client, port, t):
                    jitter = math.floor(_uniform(self.key, sock, 0, 0) * CONNECT_JITTER)
                    step = max(i, jitter * CONNECT_STEP) + CONNECT_STEP
                    self.perturb[client] = (start + step) & _M32
                    return port
                port += CONNECT_STEP
            offset += 1
            if not (offset & 1 and self.remaining > 1):
                return -1                # EADDRNOTAVAIL

    def _autobind(self, client: int, t: int, sock: int) -> int:
        n = self.remaining
        port = self.low
        for j in range(UDP_PORT_DRAWS):
            port = self.low + math.floor(_uniform(self.key, sock, j, 0) * n)
            if self.free(client, port, t):
                return port
        for k in range(1, n):            # the next free port upward, wrapping
            q = self.low + (port - self.low + k) % n
            if self.free(client, q, t):
                return q
        return -1
