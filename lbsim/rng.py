"""Seed -> named random streams, and counter-based draws per (flow, attempt).

One integer seed goes in. ``numpy.random.SeedSequence`` spawns one 64-bit key per named stream
(arrivals, clients, endpoint choice, NAT offsets, ...). A draw is then a pure function of
``(stream key, flow index, attempt, draw index)``: the SplitMix64 finalizer applied twice (Steele,
Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014). So every flow and every
retransmission sees the same numbers whatever the batch size, the engine or the order in which
flows are processed, and NodePort and direct runs of one seed see the same clients and arrivals.
Nothing here touches numpy's or Python's global generators.
"""

from __future__ import annotations

import numpy as np

from .jit import jit

__all__ = ["STREAMS", "Streams", "mix64", "mix64_scalar"]

#: Stream names, in a fixed order: appending is safe, reordering changes every result.
STREAMS = (
    "arrivals", "clients", "client_ports", "service", "hold", "lb", "endpoint", "nat",
    "cpu_time", "isn", "rss", "ct_hash", "control", "pair", "jitter",
)

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
        return z ^ (z >> np.uint64(31))


def mix64_scalar(x: int) -> int:
    """Pure-Python reference of :func:`mix64` for one value."""
    z = (x + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def _counter(flow: np.ndarray, attempt: np.ndarray | int, draw: int) -> np.ndarray:
    # flow < 2**40, attempt < 2**8, draw < 2**16: a unique 64-bit counter per draw.
    f = np.asarray(flow, dtype=np.uint64) << np.uint64(24)
    a = np.asarray(attempt, dtype=np.uint64) << np.uint64(16)
    return f | a | np.uint64(draw)


@jit(inline="always")
def mix64_nb(x):
    """Compiled :func:`mix64` of one uint64 (for numba code: the same wrapping arithmetic)."""
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


@jit(inline="always")
def bits_nb(key, flow, attempt, draw):
    """Compiled :meth:`Streams.bits` of one (flow, attempt, draw) under a stream's ``key``."""
    c = (np.uint64(flow) << np.uint64(24)) | (np.uint64(attempt) << np.uint64(16)) | np.uint64(draw)
    return mix64_nb(mix64_nb(c) ^ key)


@jit(inline="always")
def uniform_nb(key, flow, attempt, draw):
    """Compiled :meth:`Streams.uniform` of one draw."""
    return np.float64(bits_nb(key, flow, attempt, draw) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@jit
def _uniform_1d(flow, attempt, draw, key):
    """``Streams.uniform`` for a 1-D array of flows, in one pass into one output array (numpy
    needs ~15 passes, and fresh temporaries cost page faults)."""
    out = np.empty(flow.size, np.float64)
    for i in range(flow.size):
        out[i] = uniform_nb(key, flow[i], attempt, draw)
    return out


@jit
def _bits_1d(flow, attempt, draw, key):
    """``Streams.bits`` for a 1-D array of flows and one attempt, in one pass."""
    out = np.empty(flow.size, np.uint64)
    for i in range(flow.size):
        out[i] = bits_nb(key, flow[i], attempt, draw)
    return out


class Streams:
    """The named streams of one run, derived from its seed."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        children = np.random.SeedSequence(self.seed).spawn(len(STREAMS))
        self.keys = {name: np.uint64(child.generate_state(1, dtype=np.uint64)[0])
                     for name, child in zip(STREAMS, children)}

    def bits(self, stream: str, flow: np.ndarray, attempt: np.ndarray | int = 0,
             draw: int = 0) -> np.ndarray:
        """64 random bits per element: a pure function of (stream, flow, attempt, draw)."""
        if (isinstance(flow, np.ndarray) and flow.ndim == 1 and flow.dtype.kind in "iu"
                and np.ndim(attempt) == 0 and flow.size > 64):
            return _bits_1d(flow, int(attempt), int(draw), self.keys[stream])
        with np.errstate(over="ignore"):
            return mix64(mix64(_counter(flow, attempt, draw)) ^ self.keys[stream])

    def uniform(self, stream: str, flow: np.ndarray, attempt: np.ndarray | int = 0,
                draw: int = 0) -> np.ndarray:
        """Uniform doubles in [0, 1) with 53 random bits."""
        if (isinstance(flow, np.ndarray) and flow.ndim == 1 and flow.dtype.kind in "iu"
                and np.ndim(attempt) == 0 and flow.size > 64):
            return _uniform_1d(flow, int(attempt), int(draw), self.keys[stream])
        b = self.bits(stream, flow, attempt, draw)
        return (b >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def u16(self, stream: str, flow: np.ndarray, attempt: np.ndarray | int = 0,
            draw: int = 0) -> np.ndarray:
        """Random 16-bit integers, like the kernel's ``get_random_u16()``."""
        return (self.bits(stream, flow, attempt, draw) >> np.uint64(48)).astype(np.int64)

    def u32(self, stream: str, flow: np.ndarray, attempt: np.ndarray | int = 0,
            draw: int = 0) -> np.ndarray:
        """Random 32-bit integers, like ``get_random_u32()``."""
        return (self.bits(stream, flow, attempt, draw) >> np.uint64(32)).astype(np.int64)
