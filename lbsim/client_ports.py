"""The clients' ephemeral ports as Linux's connect() (TCP) and autobind (UDP) pick them, compiled.

:class:`PortWalk` is the compiled twin of :class:`lbsim.reference.ports.ClientPorts` (which cites
the kernel's rules line by line; the two agree port for port): connections open in time order,
each takes the port its client's kernel would give it and holds it until the time the workload
expects it to free (:func:`holds_until`). The walk's state (each client's perturbation, the ports
held) carries from one window of flows to the next, so a streamed run draws the ports a whole
one does.

The ports held are two structures, both sized by the ports held at once, not by the flows:

* a bit per port in a 64-bit word per (client, 64 ports): an open-addressing hash table keyed by
  ``client << 10 | port >> 6`` (linear probing, at most half full, a word's row deleted when its
  last port frees). connect() walks its client's ports two by two from where its perturbation
  points, and that point moves a few ports a connection, so a client's walk reads the word its
  previous connection read: a cache hit, where a row per port would be a miss per connection;
* a calendar of when each port frees: entries (the time, the client and port) on lists, one per
  bucket of ``2 ** shift`` ns in a ring of buckets, the ones beyond the ring on a far list that
  joins the ring as it turns. Before a connection at ``t`` every bucket before ``t``'s is freed
  whole; the entries of ``t``'s own bucket that free by ``t`` are freed only when the walk meets
  a port still marked held (a sweep of that bucket at that ``t``), so the bits say exactly what
  the reference's times say. The bucket width and the ring's size come from the first window
  (its gaps and lifetimes) and change nothing but the speed.

Every compiled function here allocates nothing and is compiled without numba's reference counting
(``_nrt=False``): the arrays it is passed cost no atomic increments per call.
"""

from __future__ import annotations

import math

import numpy as np

from numba.cpython.unsafe.numbers import trailing_zeros

from .jit import jit
from .kernel import (CONNECT_JITTER, CONNECT_STEP, TCP_TIMEWAIT_LEN, TCP_TW_REUSE_AFTER,
                     UDP_PORT_DRAWS)
from .rng import bits_nb, mix64_nb, uniform_nb

__all__ = ["PortWalk", "holds_until", "time_wait_ns", "walk_bytes"]

_EMPTY = -1
_hot = jit(_nrt=False)
_inline = jit(inline="always", _nrt=False)
#: the state slots: the free entries' list, the far list, the first bucket not yet freed, the
#: ring's start (a multiple of half the ring), the last time a sweep freed ``t``'s bucket, the
#: bucket width's log2, the ring's size - 1, the words held
_FREE, _FAR, _DONE, _MARK, _SWEPT, _SHIFT, _RING, _WORDS = range(8)
#: the entries' columns: when the port frees (ns), client << 16 | port, the next on its list
_UNTIL, _PORT, _NEXT = range(3)
_MIN_ROWS = 1 << 10
#: a word's bits of the even ports, of the odd ones; all its bits
_PARITY = (np.uint64(0x5555555555555555), np.uint64(0xAAAAAAAAAAAAAAAA))
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
#: the ring holds at most this many buckets (8 bytes each)
_MAX_RING = 1 << 20
#: the walk's bytes at most: an entry (24 bytes) a held port, in a pool that doubles (its old
#: half beside the new one while it grows); a word row (16 bytes) in a table at most half full
#: that doubles (2 to 4 rows a word, the old table beside the new one while it rehashes)
_BYTES_PER_HELD = 24 * 3
_BYTES_PER_WORD = 16 * 6


def walk_bytes(clients: int, range_size: int, held: int) -> int:
    """The port walk's bytes at most for ``held`` ports held at once by ``clients`` clients
    whose ranges have ``range_size`` ports (lbsim.budget)."""
    words = min(held, clients * (range_size // 64 + 2))
    return (8 * clients + _BYTES_PER_HELD * held + _BYTES_PER_WORD * words + 8 * _MAX_RING
            + 2 * 16 * _MIN_ROWS)


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


@_inline
def _slot(words, k):
    """The row of word key ``k``: where it is, or the empty row where it would go."""
    mask = words.shape[0] - 1
    h = np.int64(mix64_nb(np.uint64(k)) & np.uint64(mask))
    while words[h, 0] != _EMPTY and words[h, 0] != k:
        h = (h + 1) & mask
    return h


@_inline
def _word_bits(words, c, port):
    """The bits of client ``c``'s word that holds ``port`` (0: none held)."""
    h = _slot(words, (c << 10) | (port >> 6))
    return np.uint64(words[h, 1]) if words[h, 0] != _EMPTY else np.uint64(0)


@_inline
def _marked(words, c, port):
    """Client ``c``'s ``port`` is marked held (its word's bit is set)."""
    return (_word_bits(words, c, port) >> np.uint64(port & 63)) & np.uint64(1) == np.uint64(1)


@_inline
def _delete(words, i):
    """Empty row ``i``, shifting the rows after it back where their probe sequence allows
    (Knuth's Algorithm R for linear probing): every lookup still finds its key or an empty
    row."""
    mask = words.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        if words[j, 0] == _EMPTY:
            break
        home = np.int64(mix64_nb(np.uint64(words[j, 0])) & np.uint64(mask))
        # the row at j may move back to i unless its home lies cyclically in (i, j]
        if i <= j:
            stays = (home > i) & (home <= j)
        else:
            stays = (home > i) | (home <= j)
        if not stays:
            words[i, 0] = words[j, 0]
            words[i, 1] = words[j, 1]
            i = j
    words[i, 0] = _EMPTY


@_inline
def _unmark(words, meta, cport):
    """Clear the bit of ``cport`` (client << 16 | port); a word left empty leaves the table."""
    c, port = cport >> 16, cport & 0xFFFF
    h = _slot(words, (c << 10) | (port >> 6))
    bits = words[h, 1] & ~(np.int64(1) << (port & 63))
    if bits == 0:
        _delete(words, h)
        meta[_WORDS] -= 1
    else:
        words[h, 1] = bits


@_inline
def _release(e, words, pool, meta):
    """Entry ``e``'s port unmarked, the entry back on the free list."""
    _unmark(words, meta, pool[e, _PORT])
    pool[e, _NEXT] = meta[_FREE]
    meta[_FREE] = e


@_inline
def _free_list(e, words, pool, meta):
    """Every entry of the list from ``e`` released."""
    while e != _EMPTY:
        nxt = pool[e, _NEXT]
        _release(e, words, pool, meta)
        e = nxt


@_hot
def _migrate(words, pool, heads, meta):
    """The far list's entries whose bucket the ring now reaches into their buckets, the ones
    already free (a jump over the whole ring) freed."""
    shift, ring = meta[_SHIFT], meta[_RING]
    limit = meta[_MARK] + ring + 1
    prev, e = _EMPTY, meta[_FAR]
    while e != _EMPTY:
        nxt = pool[e, _NEXT]
        b = pool[e, _UNTIL] >> shift
        if b < limit:
            if prev == _EMPTY:
                meta[_FAR] = nxt
            else:
                pool[prev, _NEXT] = nxt
            if b < meta[_DONE]:
                _release(e, words, pool, meta)
            else:
                pool[e, _NEXT] = heads[b & ring]
                heads[b & ring] = e
        else:
            prev = e
        e = nxt


@_hot
def _advance(t, words, pool, heads, meta):
    """Free every bucket before ``t``'s: one by one, or, past the whole ring, all of them and
    the far list's entries already free."""
    tb, ring = t >> meta[_SHIFT], meta[_RING]
    half = (ring + 1) >> 1
    if tb - meta[_DONE] > ring:
        for b in range(ring + 1):
            e = heads[b]
            heads[b] = _EMPTY
            _free_list(e, words, pool, meta)
        meta[_DONE] = tb
        meta[_MARK] = tb & ~(half - 1)
        _migrate(words, pool, heads, meta)
        return
    while meta[_DONE] < tb:
        b = meta[_DONE] & ring
        e = heads[b]
        heads[b] = _EMPTY
        _free_list(e, words, pool, meta)
        meta[_DONE] += 1
        if meta[_DONE] & (half - 1) == 0:       # the ring turns by half: the far list joins
            meta[_MARK] = meta[_DONE]
            _migrate(words, pool, heads, meta)


@_hot
def _sweep(t, words, pool, heads, meta):
    """Free the entries of ``t``'s bucket whose ports free by ``t``."""
    b = (t >> meta[_SHIFT]) & meta[_RING]
    prev, e = _EMPTY, heads[b]
    while e != _EMPTY:
        nxt = pool[e, _NEXT]
        if pool[e, _UNTIL] <= t:
            if prev == _EMPTY:
                heads[b] = nxt
            else:
                pool[prev, _NEXT] = nxt
            _release(e, words, pool, meta)
        else:
            prev = e
        e = nxt
    meta[_SWEPT] = t


@_hot
def _marked_after_sweep(c, port, t, words, pool, heads, meta):
    """Sweep ``t``'s bucket, then say whether ``port`` is still marked (a call: the rare path)."""
    _sweep(t, words, pool, heads, meta)
    return _marked(words, c, port)


@_inline
def _held(c, port, t, words, pool, heads, meta):
    """Client ``c``'s ``port`` is held at ``t`` (reference: ClientPorts.free)."""
    held = _marked(words, c, port)
    if held and meta[_SWEPT] < t:       # t's bucket may hold it, freed by t
        held = _marked_after_sweep(c, port, t, words, pool, heads, meta)
    return held


@_inline
def _next_free(c, port, i, high, remaining, words):
    """Where the walk from the held ``port`` (``i`` ports into its pass) next finds a free port
    of the same parity in ``port``'s word, the bits exact at this ``t``: (its port, its ``i``,
    True), or (the first port past the word, the wrap or the pass's end to look at next, its
    ``i``, False). One word of 64 ports is read where the walk would probe 32."""
    j = port & 63
    base = port - j
    end = min(base + 64, high, port + (remaining - i))     # exclusive
    if j < 63:
        free = ~_word_bits(words, c, port) & _PARITY[j & 1] & (_ALL << np.uint64(j + 1))
        if end - base < 64:
            free &= (np.uint64(1) << np.uint64(end - base)) - np.uint64(1)
        if free != 0:
            q = np.int64(trailing_zeros(free))
            return base + q, i + q - j, True
    k = (end - port + 1) & ~1                               # to the next port of its parity
    return port + k, i + k, False


@_inline
def _connect(c, t, sock, low, high, remaining, key, perturb, words, pool, heads, meta):
    """__inet_hash_connect's walk for one connection (lbsim.reference.ports.ClientPorts): the
    port, or -1. A port found held lets the walk read the rest of its word at once
    (:func:`_next_free`), which gives the port, and the ``i``, the reference's port-by-port walk
    reaches."""
    if perturb[c] < 0:
        perturb[c] = np.int64(bits_nb(key, c, 0, 1) >> np.uint64(32))
    start = perturb[c]
    offset = (start % remaining) & ~1
    while True:
        port = low + offset
        i = 0
        while i < remaining:
            if port >= high:
                port -= remaining
            if _held(c, port, t, words, pool, heads, meta):     # and the bits are exact at t
                port, i, found = _next_free(c, port, i, high, remaining, words)
                if not found:
                    continue
            jitter = np.int64(math.floor(uniform_nb(key, sock, 0, 0) * CONNECT_JITTER))
            step = max(i, jitter * CONNECT_STEP) + CONNECT_STEP
            perturb[c] = (start + step) & 0xFFFFFFFF
            return port
        offset += 1
        if not (((offset & 1) == 1) & (remaining > 1)):
            return -1


@_inline
def _autobind(c, t, sock, low, remaining, key, words, pool, heads, meta):
    """udp_lib_get_port's choice for one socket (lbsim.reference.ports.ClientPorts): the port,
    or -1."""
    port = low
    for j in range(UDP_PORT_DRAWS):
        port = low + np.int64(math.floor(uniform_nb(key, sock, j, 0) * np.float64(remaining)))
        if not _held(c, port, t, words, pool, heads, meta):
            return port
    for k in range(1, remaining):
        q = low + (port - low + k) % remaining
        if not _held(c, q, t, words, pool, heads, meta):
            return q
    return -1


@_inline
def _hold(c, port, until, words, pool, heads, meta):
    """Mark ``port`` held and file when it frees: in its bucket, or on the far list."""
    k = (c << 10) | (port >> 6)
    h = _slot(words, k)
    if words[h, 0] == _EMPTY:
        words[h, 0] = k
        words[h, 1] = 0
        meta[_WORDS] += 1
    words[h, 1] |= np.int64(1) << (port & 63)
    e = meta[_FREE]
    meta[_FREE] = pool[e, _NEXT]
    pool[e, _UNTIL] = until
    pool[e, _PORT] = (c << 16) | port
    b, ring = until >> meta[_SHIFT], meta[_RING]
    if b <= meta[_MARK] + ring:
        pool[e, _NEXT] = heads[b & ring]
        heads[b & ring] = e
    else:
        pool[e, _NEXT] = meta[_FAR]
        meta[_FAR] = e


@_hot
def _open(client, t, until, sock, i0, tcp, low, high, remaining, key, perturb, words, pool,
          heads, meta, out):
    """Ports for connections ``i0 ..`` in time order into ``out``; returns where it stopped (no
    free entry, or the word table half full: the caller makes room) or ``client.size``."""
    for i in range(i0, client.size):
        if (meta[_FREE] == _EMPTY) | (2 * (meta[_WORDS] + 1) > words.shape[0]):
            return i
        ti, c = t[i], client[i]
        if (ti >> meta[_SHIFT]) > meta[_DONE]:
            _advance(ti, words, pool, heads, meta)
        if tcp:
            port = _connect(c, ti, sock[i], low, high, remaining, key, perturb, words, pool,
                            heads, meta)
        else:
            port = _autobind(c, ti, sock[i], low, remaining, key, words, pool, heads, meta)
        out[i] = port
        if (port >= 0) & (until[i] > ti):       # a port free at once is not held
            _hold(c, port, until[i], words, pool, heads, meta)
    return client.size


@_hot
def _rehash(old, words):
    """Every row of ``old`` into the empty ``words``."""
    for r in range(old.shape[0]):
        if old[r, 0] != _EMPTY:
            h = _slot(words, old[r, 0])
            words[h, 0] = old[r, 0]
            words[h, 1] = old[r, 1]


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
        self.words = np.full((_MIN_ROWS, 2), _EMPTY, np.int64)
        self.pool = _free_entries(0, _MIN_ROWS)
        self.heads: np.ndarray | None = None      # the ring, sized by the first window
        self.meta = np.zeros(8, np.int64)

    def open(self, client: np.ndarray, t: np.ndarray, until: np.ndarray,
             sock: np.ndarray) -> np.ndarray:
        """The ports of sockets ``sock`` (numbers for the draws) of ``client`` opening at ``t``
        (ascending) and held until ``until``; -1 where the client has none free."""
        client, t, until, sock = (np.ascontiguousarray(a, np.int64)
                                  for a in (client, t, until, sock))
        out = np.empty(client.size, np.int64)
        if not client.size:
            return out
        if self.heads is None:
            self._ring(t, until)
        i = 0
        while True:
            i = _open(client, t, until, sock, i, self.tcp, self.low, self.high, self.remaining,
                      self.key, self.perturb, self.words, self.pool, self.heads, self.meta, out)
            if i == client.size:
                return out
            self._make_room()

    def _ring(self, t: np.ndarray, until: np.ndarray) -> None:
        """The calendar's buckets: a few connections' gap wide, the ring twice the lifetime most
        of the first window's connections hold their ports (the rest wait on the far list)."""
        n = t.size
        gap = (int(t[-1]) - int(t[0])) / max(1, n - 1)
        life = max(1.0, float(np.quantile(until - t, 0.99)))
        shift = max(10, math.ceil(math.log2(max(1.0, 4 * gap))),
                    math.ceil(math.log2(2 * life / _MAX_RING)))
        ring = 2
        while ring < _MAX_RING and ring << shift <= 2 * life:
            ring *= 2
        self.heads = np.full(ring, _EMPTY, np.int64)
        m = self.meta
        m[_FREE], m[_FAR], m[_SWEPT], m[_SHIFT], m[_RING], m[_WORDS] = 0, _EMPTY, -1, shift, ring - 1, 0
        m[_DONE] = int(t[0]) >> shift
        m[_MARK] = m[_DONE] & ~(ring // 2 - 1)

    def _make_room(self) -> None:
        """Double the entries when none is free, the word table when it is half full."""
        m = self.meta
        if m[_FREE] == _EMPTY:
            n = self.pool.shape[0]
            self.pool = np.concatenate([self.pool, _free_entries(n, n)])
            m[_FREE] = n
        if 2 * (m[_WORDS] + 1) > self.words.shape[0]:
            old = self.words
            self.words = np.full((2 * old.shape[0], 2), _EMPTY, np.int64)
            _rehash(old, self.words)


def _free_entries(first: int, n: int) -> np.ndarray:
    """``n`` calendar entries numbered from ``first``, each on the free list before the next."""
    pool = np.zeros((n, 3), np.int64)
    pool[:, _NEXT] = np.arange(first + 1, first + n + 1)
    pool[-1, _NEXT] = _EMPTY
    return pool
