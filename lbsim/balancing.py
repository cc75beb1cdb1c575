"""Load-balancing primitives: round robin, weighted round robin, hashing, Maglev, least
connections, the iptables cascade and nftables' numgen.

Vectorized functions and their scalar references share a name (``_scalar`` suffix) and agree
decision for decision; tests/property checks that.
"""

from __future__ import annotations

import bisect
from functools import lru_cache

import numpy as np

from .jit import jit
from .rng import mix64, mix64_scalar

__all__ = [
    "iptables_probability_threshold", "iptables_cascade_cdf", "iptables_endpoint",
    "iptables_endpoint_scalar", "round_robin", "round_robin_scalar", "smooth_wrr_sequence",
    "weighted_round_robin", "weighted_round_robin_scalar", "source_hash", "ipvs_sh_bucket",
    "ipvs_sh_table", "maglev_permutation", "maglev_table", "maglev_lookup", "maglev_lookup_scalar",
    "least_connections", "least_connections_queued", "least_connections_queued_scalar",
    "numgen_random",
]


def iptables_probability_threshold(n: int) -> int:
    """The 31-bit threshold the kernel compares for ``--probability`` of 1/n.

    kube-proxy writes ``fmt.Sprintf("%0.10f", 1.0/float64(n))`` (``computeProbability`` in
    ``pkg/proxy/iptables/proxier.go``); iptables stores ``lround(0x80000000 * p)``
    (``libxt_statistic.c``); ``xt_statistic.c`` matches when
    ``(get_random_u32() & 0x7FFFFFFF) < threshold``.
    """
    p = float(f"{1.0 / n:0.10f}")
    return int(np.round(0x80000000 * p))  # lround: halves away from zero; p*2**31 never ties here


@lru_cache(maxsize=4096)
def iptables_cascade_cdf(n: int) -> np.ndarray:
    """Cumulative probability of choosing endpoints 0..n-1 through the rule cascade.

    Rule i (i < n-1) matches with probability ``threshold(n - i) / 2**31`` given that rules before
    it did not; the last rule is unconditional (``writeServiceToEndpointRules``). The distribution
    is exact for the kernel's fixed-point probabilities; one uniform per flow then picks the same
    endpoint distribution as the kernel's n-1 independent draws.
    """
    if n < 1:
        raise ValueError(f"endpoints = {n} is invalid: must be >= 1")
    # iptables_probability_threshold for n, n-1, ..., 2 at once (a million endpoints take
    # 0.5 s, not 11): lround is floor(x + 0.5) here, as no k <= 2**20 gives a tie (the nearest
    # fraction is 1.5e-6 from a half, three ulps at 2**31)
    prob = np.array([float(f"{1.0 / k:0.10f}") for k in range(n, 1, -1)])
    p = np.append(np.floor(0x80000000 * prob + 0.5) / 2**31, 1.0)
    survive = np.concatenate(([1.0], np.cumprod(1.0 - p[:-1])))
    cdf = np.cumsum(survive * p)
    cdf[-1] = 1.0
    cdf.flags.writeable = False
    return cdf


def iptables_endpoint(u: np.ndarray, n: int) -> np.ndarray:
    """Endpoint index in [0, n) for uniforms ``u`` through the cascade of ``n`` endpoints."""
    idx = np.searchsorted(iptables_cascade_cdf(n), u, side="right")
    return np.minimum(idx, n - 1)


def iptables_endpoint_scalar(u: float, n: int) -> int:
    """Scalar reference of :func:`iptables_endpoint`."""
    return min(bisect.bisect_right(_cdf_list(n), u), n - 1)


@lru_cache(maxsize=4096)
def _cdf_list(n: int) -> list[float]:
    return [float(x) for x in iptables_cascade_cdf(n)]


def round_robin(instance: np.ndarray, backends: int, instances: int,
                counter: np.ndarray | None = None) -> np.ndarray:
    """Backend index for each flow (in arrival order) when every LB instance round-robins.

    Each instance keeps its own counter, starting at backend 0 (as IPVS's rr does with fresh
    state); the k-th flow that reaches an instance goes to backend ``k % backends``. ``counter``
    (instances, int64; updated in place) carries the counters from the flows before, so that a
    run drawn window by window makes the same choices as one drawn whole.
    """
    if counter is None:
        counter = np.zeros(instances, np.int64)
    return _round_robin(np.ascontiguousarray(instance, dtype=np.int64), backends, counter)


@jit
def _round_robin(instance, backends, counter):
    out = np.empty(instance.size, np.int64)
    for i in range(instance.size):
        out[i] = counter[instance[i]] % backends
        counter[instance[i]] += 1
    return out


def round_robin_scalar(instance: list[int], backends: int, instances: int) -> list[int]:
    """Scalar reference of :func:`round_robin`: one counter per instance."""
    counter = [0] * instances
    out = []
    for i in instance:
        out.append(counter[i] % backends)
        counter[i] += 1
    return out


# -- weighted round robin ---------------------------------------------------------------------
def smooth_wrr_sequence(weights: list[int] | np.ndarray, length: int | None = None) -> np.ndarray:
    """The first ``length`` picks (default: one period, ``sum(weights)``) of smooth weighted
    round robin (nginx's algorithm: every pick adds each backend's weight to its credit, takes
    the largest credit, first on ties, and charges it the total). Zero-weight backends are never
    picked. Equal weights are plain round robin."""
    w = np.asarray([int(x) for x in weights], np.int64)
    if not w.size or w.min() < 0 or w.sum() == 0:
        raise ValueError(f"weights = {w.tolist()} are invalid: must be >= 0 with a positive sum")
    total = int(w.sum())
    length = total if length is None else min(int(length), total)
    if (w == w[0]).all():           # every credit equal after each round: 0, 1, ..., n - 1
        return np.arange(length, dtype=np.int64) % w.size
    return _swrr(w, total, length)


@jit
def _swrr(w, total, length):
    credit = np.zeros(w.size, np.int64)
    out = np.empty(length, np.int64)
    for k in range(length):
        best = 0
        for i in range(w.size):
            credit[i] += w[i]
            if credit[i] > credit[best]:
                best = i
        credit[best] -= total
        out[k] = best
    return out


def weighted_round_robin(instance: np.ndarray, weights, instances: int,
                         counter: np.ndarray | None = None) -> np.ndarray:
    """Backend per flow (arrival order) when every instance runs its own smooth WRR: only as
    many picks of the sequence as the busiest instance makes. ``counter``: each instance's
    picks so far (:func:`round_robin`'s)."""
    instance = np.ascontiguousarray(instance, dtype=np.int64)
    if counter is None:
        counter = np.zeros(instances, np.int64)
    needed = int((np.bincount(instance, minlength=instances) + counter).max()) if instance.size else 0
    total = int(sum(int(x) for x in weights))
    seq = smooth_wrr_sequence(weights, max(1, min(needed, total)))
    return seq[round_robin(instance, total, instances, counter)]


def weighted_round_robin_scalar(instance: list[int], weights, instances: int) -> list[int]:
    """Scalar reference of :func:`weighted_round_robin`: one credit vector per instance."""
    w = [int(x) for x in weights]
    total = sum(w)
    credit = [[0] * len(w) for _ in range(instances)]
    out = []
    for i in instance:
        c = credit[i] = [a + b for a, b in zip(credit[i], w)]
        best = max(range(len(w)), key=lambda k: (c[k], -k))
        c[best] -= total
        out.append(best)
    return out


# -- hashing ----------------------------------------------------------------------------------
def source_hash(key: np.ndarray, n: int, salt: int) -> np.ndarray:
    """Backend in [0, n) by a salted 64-bit hash of ``key`` (a client IP, say)."""
    h = mix64(np.asarray(key, np.int64).view(np.uint64) ^ np.uint64(salt))
    return (h % np.uint64(n)).astype(np.int64)


def ipvs_sh_bucket(ip: np.ndarray) -> np.ndarray:
    """IPVS ``sh`` bucket of a source IP: ``(ip * 2654435761) mod 2^32 >> 24`` over 256 buckets
    (``ip_vs_sh_hashkey``, IP_VS_SH_TAB_BITS = 8, no port)."""
    ip = np.asarray(ip, np.uint64)
    return (((ip * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) >> np.uint64(24)).astype(np.int64)


def ipvs_sh_table(weights: list[int]) -> np.ndarray:
    """The 256-bucket IPVS ``sh`` table: buckets go to the destinations in list order, each
    destination taking ``weight`` consecutive buckets per pass (``ip_vs_sh_reassign``)."""
    w = [int(x) for x in weights]
    if not w or min(w) < 0 or sum(w) == 0:
        raise ValueError(f"weights = {w} are invalid: must be >= 0 with a positive sum")
    order = [i for i, x in enumerate(w) for _ in range(x)]
    return np.array([order[b % len(order)] for b in range(256)], dtype=np.int64)


# -- Maglev -----------------------------------------------------------------------------------
def maglev_permutation(backend_keys: np.ndarray, size: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """``offset`` and ``skip`` of each backend's permutation (Maglev paper, section 3.4):
    ``offset = h1 % M``, ``skip = h2 % (M - 1) + 1`` from two hashes of the backend's name."""
    k = np.asarray(backend_keys, np.int64).view(np.uint64)
    h1 = mix64(k ^ np.uint64(salt))
    h2 = mix64(k ^ np.uint64(salt) ^ np.uint64(0x5BD1E9955BD1E995))
    return ((h1 % np.uint64(size)).astype(np.int64),
            (h2 % np.uint64(size - 1)).astype(np.int64) + 1)


@lru_cache(maxsize=64)
def maglev_table(backend_keys: tuple[int, ...], size: int, salt: int,
                 weights: tuple[int, ...] | None = None) -> np.ndarray:
    """The Maglev lookup table: entry -> index into ``backend_keys`` (Maglev paper, Pseudocode 1).

    Backends take turns filling the table, each from its own permutation of the M entries; with
    ``weights``, backend i takes its turn in pass n only when ``floor((n+1) w_i / w_max)`` grows,
    so the shares follow the weights. ``size`` must be prime (then every permutation is complete).
    """
    n = len(backend_keys)
    if n == 0:
        raise ValueError("a Maglev table needs at least one backend")
    offset, skip = maglev_permutation(np.array(backend_keys, np.int64), size, salt)
    offset, skip = offset.tolist(), skip.tolist()
    w = list(weights) if weights is not None else [1] * n
    wmax = max(w)
    nxt = [0] * n
    entry = [-1] * size
    filled, rnd = 0, 0
    while filled < size:
        for i in range(n):
            if w[i] == 0 or (rnd + 1) * w[i] // wmax == rnd * w[i] // wmax:
                continue
            c = (offset[i] + nxt[i] * skip[i]) % size
            while entry[c] >= 0:
                nxt[i] += 1
                c = (offset[i] + nxt[i] * skip[i]) % size
            entry[c] = i
            nxt[i] += 1
            filled += 1
            if filled == size:
                break
        rnd += 1
    table = np.array(entry, dtype=np.int64)
    table.flags.writeable = False
    return table


def maglev_lookup(table: np.ndarray, key: np.ndarray, salt: int) -> np.ndarray:
    """Backend index of each flow key: ``table[hash(key) % M]``."""
    h = mix64(np.asarray(key, np.int64).view(np.uint64) ^ np.uint64(salt))
    return table[(h % np.uint64(table.size)).astype(np.int64)]


def maglev_lookup_scalar(table: np.ndarray, key: int, salt: int) -> int:
    """Scalar reference of :func:`maglev_lookup`."""
    return int(table[(mix64_scalar(key & ((1 << 64) - 1) ^ salt)) % table.size])


# -- least connections ------------------------------------------------------------------------
def least_connections(group: np.ndarray, t: np.ndarray, life: np.ndarray,
                      candidates: list[np.ndarray]) -> np.ndarray:
    """Least-connections choice per flow, each ``group`` (an LB instance, a node) on its own state.

    Flows come in time order; a flow opens a connection to its choice at ``t`` and closes it at
    ``t + life``. It goes to the candidate of its group with the fewest open connections, the
    first in list order on ties (IPVS ``lc`` keeps the first least-loaded destination). An empty
    candidate list gives -1. This is sequential by nature; it is its own reference.
    """
    import heapq
    out = np.full(len(t), -1, dtype=np.int64)
    open_: dict[int, np.ndarray] = {}
    ends: list[tuple[int, int, int]] = []
    for f in range(len(t)):
        now = int(t[f])
        while ends and ends[0][0] <= now:
            _, g0, b0 = heapq.heappop(ends)
            open_[g0][b0] -= 1
        g = int(group[f])
        cand = candidates[g]
        if cand.size == 0:
            continue
        conns = open_.get(g)
        if conns is None:
            conns = open_[g] = np.zeros(cand.size, np.int64)
        k = int(conns.argmin())
        conns[k] += 1
        heapq.heappush(ends, (now + int(life[f]), g, k))
        out[f] = int(cand[k])
    return out


def numgen_random(u: np.ndarray, n: int) -> np.ndarray:
    """nftables ``numgen random mod n``: ``reciprocal_scale(u32, n) = (u32 * n) >> 32`` with
    ``u32 = floor(u * 2^32)``."""
    u32 = np.floor(np.asarray(u) * 2.0**32).astype(np.uint64)
    return ((u32 * np.uint64(n)) >> np.uint64(32)).astype(np.int64)


# -- least connections that count a connection until it closes ---------------------------------
# A connection's life at its scheduler (an IPVS node, or the LB) is known only with its pod's
# queue: it closes after its wait for a worker, its service and its hold. Both functions below
# make every choice in arrival order while running each pod's FIFO queue (workers servers) over
# the flows chosen so far, so that a pod with a backlog keeps its connections open, as the kernel
# sees them. Per candidate the load is active x ``active_weight`` + inactive (ip_vs_lc: active
# << 8 + inactive; the first least-loaded candidate in list order wins, as ip_vs_lc_schedule's
# strict "<" does). A TCP connection is inactive from its SYN to the handshake's last ACK, active
# until the client's FIN reaches the scheduler, then inactive ``closing_ns`` more (IPVS's
# FIN_WAIT / TIME_WAIT); a UDP one (``tcp`` False) is inactive from its first packet to
# ``closing_ns`` after its last. ``closing_ns = 0`` and ``active_weight = 1`` count open
# connections only (a cloud LB).
#
# Arguments: flows in time order reach scheduler ``group[f]`` at ``t[f]``; its candidates are
# pods ``cand[cand_off[g]:cand_off[g + 1]]``; a pod on node ``group_node[g]`` is ``near_ns``
# away, another ``far_ns`` (each way); the client is ``client_ns`` from the scheduler (each
# way); pods have ``workers[p]`` servers; ``service``, ``hold``: per flow, ns. Returns each
# flow's pod (-1: its scheduler has no candidate).

_ACTIVATE, _CLOSE, _EXPIRE = 0, 1, 2


@jit
def _times(t, delay, client_ns, wait_start, service, hold, tcp, closing_ns):
    """(established, closed, expired) at the scheduler for a flow whose request reaches its
    pod at ``t + delay`` and whose service starts at ``wait_start``."""
    finish = wait_start + service
    if tcp:
        est = t + 2 * delay + 2 * client_ns
        close = finish + delay + 2 * client_ns + hold
        return est, close, close + closing_ns
    last = finish + delay + hold
    return t, t, last + closing_ns


def least_connections_queued_scalar(group, t, cand, cand_off, group_node, pod_node, near_ns,
                                    far_ns, client_ns, workers, service, hold, tcp,
                                    active_weight, closing_ns):
    """The readable reference of :func:`least_connections_queued` (same arguments): plain
    Python, a list of open connections searched at every flow."""
    free = [[0] * int(w) for w in workers]            # each pod's workers' free times
    conns = []                                         # (group, k, est, close, expire)
    out = []
    for f in range(len(t)):
        g, now = int(group[f]), int(t[f])
        c = [int(x) for x in cand[cand_off[g]:cand_off[g + 1]]]
        if not c:
            out.append(-1)
            continue
        load = [0] * len(c)
        for (g2, k, est, close, expire) in conns:
            if g2 != g or now >= expire:
                continue
            active = est <= now < close
            load[k] += active_weight if active else 1
        k = min(range(len(c)), key=lambda j: (load[j], j))
        pod = c[k]
        delay = near_ns if pod_node[pod] == group_node[g] else far_ns
        w = min(range(len(free[pod])), key=lambda j: (free[pod][j], j))
        start = max(now + delay, free[pod][w])
        free[pod][w] = start + int(service[f])
        est, close, expire = _times(now, delay, client_ns, start, int(service[f]), int(hold[f]),
                                    tcp, closing_ns)
        if not tcp:
            est = close = now                          # never active
        conns.append((g, k, est, close, expire))
        out.append(pod)
    return np.asarray(out, np.int64)


@jit
def _heap_push(h, n, key, val):
    """Push (key, val) on the min-heap of rows ``h[:n]`` (2 columns); returns the new size."""
    i = n
    h[i, 0], h[i, 1] = key, val
    while i > 0:
        parent = (i - 1) >> 1
        if h[parent, 0] <= h[i, 0]:
            break
        k0, v0 = h[parent, 0], h[parent, 1]
        h[parent, 0], h[parent, 1] = h[i, 0], h[i, 1]
        h[i, 0], h[i, 1] = k0, v0
        i = parent
    return n + 1


@jit
def _heap_pop(h, n):
    """Remove the smallest row of ``h[:n]`` (it goes to row n - 1); returns the new size."""
    n -= 1
    k0, v0 = h[0, 0], h[0, 1]
    h[0, 0], h[0, 1] = h[n, 0], h[n, 1]
    h[n, 0], h[n, 1] = k0, v0
    i = 0
    while True:
        a, b, m = 2 * i + 1, 2 * i + 2, i
        if a < n and h[a, 0] < h[m, 0]:
            m = a
        if b < n and h[b, 0] < h[m, 0]:
            m = b
        if m == i:
            return n
        k1, v1 = h[m, 0], h[m, 1]
        h[m, 0], h[m, 1] = h[i, 0], h[i, 1]
        h[i, 0], h[i, 1] = k1, v1
        i = m


@jit
def _sift_worker(free, lo, hi):
    """Restore the min-heap of one pod's worker free times ``free[lo:hi]`` after its root
    grew."""
    i = 0
    n = hi - lo
    while True:
        a, b, m = 2 * i + 1, 2 * i + 2, i
        if a < n and free[lo + a] < free[lo + m]:
            m = a
        if b < n and free[lo + b] < free[lo + m]:
            m = b
        if m == i:
            return
        free[lo + m], free[lo + i] = free[lo + i], free[lo + m]
        i = m


@jit
def least_connections_queued(group, t, cand, cand_off, group_node, pod_node, near_ns, far_ns,
                             client_ns, workers, service, hold, tcp, active_weight, closing_ns):
    """Least connections counted until each connection closes, its pod's queue included (the
    comment above; :func:`least_connections_queued_scalar` is its reference)."""
    F = t.size
    out = np.full(F, -1, np.int64)
    act = np.zeros(cand.size, np.int64)       # per (group, candidate) slot: cand_off[g] + k
    inact = np.zeros(cand.size, np.int64)
    w_off = np.zeros(workers.size + 1, np.int64)
    for p in range(workers.size):
        w_off[p + 1] = w_off[p] + workers[p]
    free = np.zeros(w_off[-1], np.int64)      # per pod a min-heap of its workers' free times
    ev = np.zeros((min(3 * F + 3, 1 << 16), 2), np.int64)   # (time, slot * 3 + kind), grown
    n = 0
    for f in range(F):
        if n + 3 > ev.shape[0]:
            bigger = np.zeros((2 * ev.shape[0], 2), np.int64)
            bigger[:n] = ev[:n]
            ev = bigger
        now = t[f]
        while n > 0 and ev[0, 0] <= now:
            n = _heap_pop(ev, n)
            slot, kind = ev[n, 1] // 3, ev[n, 1] % 3
            if kind == _ACTIVATE:
                inact[slot] -= 1
                act[slot] += 1
            elif kind == _CLOSE:
                act[slot] -= 1
                inact[slot] += 1
            else:
                inact[slot] -= 1
        g = group[f]
        lo, hi = cand_off[g], cand_off[g + 1]
        if lo == hi:
            continue
        best, best_load = lo, act[lo] * active_weight + inact[lo]
        for s in range(lo + 1, hi):
            load = act[s] * active_weight + inact[s]
            if load < best_load:
                best, best_load = s, load
        pod = cand[best]
        out[f] = pod
        delay = near_ns if pod_node[pod] == group_node[g] else far_ns
        a, b = w_off[pod], w_off[pod + 1]
        start = max(now + delay, free[a])
        free[a] = start + service[f]
        _sift_worker(free, a, b)
        est, close, expire = _times(now, delay, client_ns, start, service[f], hold[f], tcp,
                                    closing_ns)
        inact[best] += 1
        if tcp:
            n = _heap_push(ev, n, est, best * 3 + _ACTIVATE)
            n = _heap_push(ev, n, close, best * 3 + _CLOSE)
        n = _heap_push(ev, n, expire, best * 3 + _EXPIRE)
    return out
