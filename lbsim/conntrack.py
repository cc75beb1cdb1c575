"""Conntrack tables: every node's entries, hashed under both ORIGINAL and REPLY tuples.

One object holds the tables of all nodes; the node is part of every key (:mod:`lbsim.tuples`), and
``count[node]`` is that node's ``nf_conntrack_count``. An entry stores its whole timeline (confirm,
start of TIME_WAIT, expiry) instead of scheduling expiry events: an entry is live for a lookup at
time ``t`` when ``t < t_expire``. Expired entries keep counting toward ``nf_conntrack_max`` until
the garbage collector (:meth:`collect`) or a lookup that meets them frees them, as in the kernel
(kernel-facts 3.4, 3.5).

:class:`ConntrackTable` indexes keys with a vectorized open-addressing hash in numpy;
:class:`DictConntrackTable` is its obviously-correct reference, a Python dict. Both share the
entry store and expose the same array API; tests/property drives both through the same operations.
"""

from __future__ import annotations

import numpy as np

from .rng import mix64, mix64_scalar

__all__ = ["ConntrackTable", "DictConntrackTable", "TCP", "SNAT", "NAT_CLASH", "ENTRY_FIELDS"]

# Entry flags (a subset of the kernel's ct->status bits that the model needs).
TCP = np.uint8(1)        # TCP entry (else UDP)
SNAT = np.uint8(2)       # IPS_SRC_NAT: the entry was masqueraded
NAT_CLASH = np.uint8(4)  # IPS_NAT_CLASH | IPS_FIXED_TIMEOUT: reply-only clash entry, 1 s

#: field name -> dtype of the entry store
ENTRY_FIELDS = {
    "orig": np.int64,       # ORIGINAL-tuple key, -1 for a reply-only (NAT_CLASH) entry
    "reply": np.int64,      # REPLY-tuple key
    "node": np.int32,
    "pod": np.int32,
    "flow": np.int64,
    "t_confirm": np.int64,  # ns
    "t_assured": np.int64,  # ns; from then on IPS_ASSURED (not evictable by early_drop)
    "t_close": np.int64,    # ns; TCP: start of TIME_WAIT (the entry may then be evicted)
    "t_expire": np.int64,   # ns; first instant at which the entry is no longer live
    "flags": np.uint8,
    "seq": np.int64,        # td_end of the original direction (u32), for nf_seq_has_advanced
    "obucket": np.int64,    # hash bucket of the ORIGINAL tuple (-1: not hashed, NAT_CLASH)
    "rbucket": np.int64,    # hash bucket of the REPLY tuple
    "alive": np.bool_,      # held in the table (not yet freed)
}


#: NF_CT_EVICTION_RANGE: buckets early_drop scans from the new entry's own bucket
EVICTION_RANGE = 8
# gc_worker's autotuning (nf_conntrack_core.c, 5.18+), in ns: the next pass comes after the mean
# remaining timeout of the entries seen, seeded with GC_INITIAL_COUNT entries of
# GC_SCAN_INTERVAL_INIT, each clamped to [GC_SCAN_INTERVAL_MIN, GC_SCAN_INTERVAL_CLAMP], the result
# to [GC_SCAN_INTERVAL_MIN, GC_SCAN_INTERVAL_MAX]
GC_INTERVAL_MIN = 1_000_000_000
GC_INTERVAL_MAX = 60_000_000_000
GC_INTERVAL_CLAMP = 300_000_000_000
GC_INTERVAL_INIT = GC_INTERVAL_MAX
GC_INITIAL_COUNT = 100


class _EntryStore:
    """Struct-of-arrays storage of entries, indexed by entry id (eid).

    ``buckets`` (``nf_conntrack_buckets``) and ``salt`` (the per-boot hash secret) place every
    tuple in a hash bucket, which only ``early_drop`` needs: entries are otherwise found by key.
    """

    def __init__(self, nodes: int, capacity: int = 1024, buckets: int = 262144, salt: int = 0) -> None:
        self.nodes = nodes
        self.buckets = buckets
        self.salt = np.uint64(salt)
        self.count = np.zeros(nodes, dtype=np.int64)
        self.size = 0
        for name, dt in ENTRY_FIELDS.items():
            setattr(self, name, np.zeros(capacity, dtype=dt))

    def _grow(self, need: int) -> None:
        cap = self.orig.size
        if self.size + need <= cap:
            return
        new = max(2 * cap, self.size + need)
        for name in ENTRY_FIELDS:
            old = getattr(self, name)
            arr = np.zeros(new, dtype=old.dtype)
            arr[: self.size] = old[: self.size]
            setattr(self, name, arr)

    def live(self, eid: np.ndarray, t: np.ndarray | int) -> np.ndarray:
        """True where ``eid`` names an entry held in the table and not expired at ``t``."""
        eid = np.asarray(eid)
        ok = eid >= 0
        e = np.where(ok, eid, 0)
        return ok & self.alive[e] & (self.t_expire[e] > t)

    def add(self, **fields: np.ndarray) -> np.ndarray:
        """Append entries (keys must not be indexed already); returns their eids."""
        n = int(np.size(fields["reply"]))
        self._grow(n)
        self._index_reserve(2 * n)
        eid = np.arange(self.size, self.size + n, dtype=np.int64)
        for name in ENTRY_FIELDS:
            if name not in ("alive", "obucket", "rbucket"):
                getattr(self, name)[eid] = fields[name]
        self.alive[eid] = True
        o = self.orig[eid]
        self.obucket[eid] = np.where(o >= 0, self.bucket(np.maximum(o, 0)), -1)
        self.rbucket[eid] = self.bucket(self.reply[eid])
        self.size += n
        np.add.at(self.count, self.node[eid], 1)
        has_orig = self.orig[eid] >= 0
        self._index_put(np.concatenate((self.reply[eid], self.orig[eid][has_orig])),
                        np.concatenate((eid, eid[has_orig])))
        return eid

    # -- scalar API: one entry at a time, without numpy call overhead ------------------------------
    def get(self, key: int) -> int:
        """Entry id stored under ``key``, or -1."""
        raise NotImplementedError

    def add1(self, orig: int, reply: int, node: int, pod: int, flow: int, t_confirm: int,
             t_assured: int, t_close: int, t_expire: int, flags: int, seq: int) -> int:
        """Append one entry (its keys must not be indexed already); returns its eid."""
        self._grow(1)
        self._index_reserve(2)
        e = self.size
        self.orig[e], self.reply[e], self.node[e], self.pod[e], self.flow[e] = orig, reply, node, pod, flow
        self.t_confirm[e], self.t_assured[e], self.t_close[e] = t_confirm, t_assured, t_close
        self.t_expire[e], self.flags[e], self.seq[e], self.alive[e] = t_expire, flags, seq, True
        self.obucket[e] = self._bucket1(orig) if orig >= 0 else -1
        self.rbucket[e] = self._bucket1(reply)
        self.size += 1
        self.count[node] += 1
        self._put1(reply, e)
        if orig >= 0:
            self._put1(orig, e)
        return e

    def release1(self, eid: int) -> None:
        """Free one entry (no-op if already freed)."""
        if not self.alive[eid]:
            return
        self.alive[eid] = False
        self.count[self.node[eid]] -= 1
        self._del1(int(self.reply[eid]), eid)
        o = int(self.orig[eid])
        if o >= 0:
            self._del1(o, eid)

    def _put1(self, key: int, eid: int) -> None:
        self._index_put(np.array([key], np.int64), np.array([eid], np.int64))

    def _del1(self, key: int, eid: int) -> None:
        self._index_del(np.array([key], np.int64), np.array([eid], np.int64))

    def release(self, eid: np.ndarray) -> None:
        """Free entries (killed, evicted, or expired and met by a lookup or the GC)."""
        eid = np.unique(np.asarray(eid, dtype=np.int64))
        eid = eid[self.alive[eid]]
        if eid.size == 0:
            return
        self.alive[eid] = False
        np.subtract.at(self.count, self.node[eid], 1)
        self._index_del(self.reply[eid], eid)
        has_orig = self.orig[eid] >= 0
        self._index_del(self.orig[eid][has_orig], eid[has_orig])

    def bucket(self, keys: np.ndarray) -> np.ndarray:
        """Hash bucket of tuples: ``reciprocal_scale(hash, buckets)`` of a keyed 32-bit hash."""
        h = mix64(np.asarray(keys, np.int64).view(np.uint64) ^ self.salt) >> np.uint64(32)
        return ((h * np.uint64(self.buckets)) >> np.uint64(32)).astype(np.int64)

    def _bucket1(self, key: int) -> int:
        h = mix64_scalar((key & 0xFFFFFFFFFFFFFFFF) ^ int(self.salt)) >> 32
        return (h * self.buckets) >> 32

    def early_drop(self, node: int, new_orig: int, t: int) -> int:
        """``early_drop()`` (nf_conntrack_core.c) for a new entry over ``nf_conntrack_max``.

        Scans up to 8 buckets from the new tuple's bucket; in each, frees expired entries and kills
        every confirmed entry that is not ASSURED; stops at the first bucket that killed any.
        An entry sits in the chain of its ORIGINAL and of its REPLY tuple. Returns the kills.
        """
        n = self.size
        b0 = self._bucket1(new_orig)
        # the chains of the 8 buckets b0 .. b0+7 (mod buckets): entries hashed there either way
        near_o = (self.obucket[:n] - b0) % self.buckets < EVICTION_RANGE
        near_r = (self.rbucket[:n] - b0) % self.buckets < EVICTION_RANGE
        mine = np.flatnonzero(self.alive[:n] & (self.node[:n] == node)
                              & ((near_o & (self.obucket[:n] >= 0)) | near_r))
        ob, rb = self.obucket[mine], self.rbucket[mine]
        for i in range(EVICTION_RANGE):
            b = (b0 + i) % self.buckets
            here = mine[(ob == b) | (rb == b)]
            here = here[self.alive[here]]
            expired = here[self.t_expire[here] <= t]
            self.release(expired)
            victims = here[(self.t_expire[here] > t) & (self.t_assured[here] > t)]
            if victims.size:
                self.release(victims)
                return int(victims.size)
        return 0

    def gc_pass(self, t: int, limit95: int, due: np.ndarray | None = None,
                early: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One full pass of the GC worker (``gc_worker`` in nf_conntrack_core.c) at ``t`` over
        the nodes in the boolean mask ``due`` (default: all).

        Frees every expired entry. On a node whose ``early`` flag is set (``gc_work->early_drop``:
        a new entry found the table full since the last pass; default: set) and that holds at
        least ``limit95`` entries (95 % of ``nf_conntrack_max``), it also kills entries that
        ``gc_worker_can_early_drop`` allows: not ASSURED, or TCP and closing (FIN_WAIT ..
        TIME_WAIT, CLOSE). The pass walks buckets in order and each chain newest first; an entry
        is met in the first of its two buckets.

        Returns ``(killed, next_run)`` per node: entries killed early (no ``conntrack -S``
        counter counts them) and the autotuned delay to the next pass in ns (5.18+ "revisit gc
        autotuning"): the running mean, seeded with 100 entries of 60 s, of the remaining
        timeouts (clamped to 1..300 s) of the unexpired entries met, clamped to 1..60 s.
        """
        nodes = np.ones(self.nodes, bool) if due is None else np.asarray(due, bool)
        flag = np.ones(self.nodes, bool) if early is None else np.asarray(early, bool)
        killed = np.zeros(self.nodes, dtype=np.int64)
        next_run = np.full(self.nodes, GC_INTERVAL_INIT, dtype=np.int64)
        n = self.size
        held = np.flatnonzero(self.alive[:n] & nodes[self.node[:n]])
        if held.size == 0:
            return killed, next_run
        expired = self.t_expire[held] <= t
        rem = np.clip(self.t_expire[held][~expired] - t, GC_INTERVAL_MIN, GC_INTERVAL_CLAMP)
        who = self.node[held][~expired]
        total = np.zeros(self.nodes, np.int64)       # integers: exact in any order
        np.add.at(total, who, rem)
        seen = np.bincount(who, minlength=self.nodes)
        mean = (GC_INITIAL_COUNT * GC_INTERVAL_INIT + total) // (GC_INITIAL_COUNT + seen)
        next_run = np.clip(mean, GC_INTERVAL_MIN, GC_INTERVAL_MAX).astype(np.int64)
        can = ~expired & ((self.t_assured[held] > t)
                          | (((self.flags[held] & TCP) != 0) & (self.t_close[held] <= t)))
        over = nodes & flag & (self.count >= limit95)
        victims = []
        for node in np.flatnonzero(over):
            mine = self.node[held] == node
            e = held[mine]
            first = self._first_bucket(e)
            order = np.lexsort((-e, first))          # bucket, then newest first
            e, exp_o, can_o = e[order], expired[mine][order], can[mine][order]
            freed_before = np.cumsum(exp_o) - exp_o  # expired entries met earlier
            cand = np.flatnonzero(can_o)
            ok = self.count[node] - freed_before[cand] - np.arange(cand.size) >= limit95
            k = int(np.argmin(ok)) if not ok.all() else cand.size
            victims.append(e[cand[:k]])
            killed[node] = k
        self.release(held[expired])
        if victims:
            self.release(np.concatenate(victims))
        # compact only after the kills: compaction renumbers entries
        if self.size > 4096 and self.count.sum() < self.size // 4:
            self._compact()
        return killed, next_run

    def _first_bucket(self, eid: np.ndarray) -> np.ndarray:
        ob, rb = self.obucket[eid], self.rbucket[eid]
        return np.where(ob >= 0, np.minimum(ob, rb), rb)

    def collect(self, t: int) -> int:
        """The GC worker: free every entry expired at ``t``; returns how many."""
        n = self.size
        dead = np.flatnonzero(self.alive[:n] & (self.t_expire[:n] <= t))
        self.release(dead)
        if self.size > 4096 and self.count.sum() < self.size // 4:
            self._compact()
        return int(dead.size)

    def _compact(self) -> None:
        keep = np.flatnonzero(self.alive[: self.size])
        for name in ENTRY_FIELDS:
            arr = getattr(self, name)
            arr[: keep.size] = arr[keep]
            arr[keep.size: self.size] = 0
        self.size = keep.size
        self._index_rebuild()

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Entry id stored under each key, or -1 (liveness is the caller's question)."""
        raise NotImplementedError

    def _index_put(self, keys: np.ndarray, eid: np.ndarray) -> None:
        raise NotImplementedError

    def _index_reserve(self, n: int) -> None:
        """Make room for ``n`` more keys before they are added."""

    def _index_del(self, keys: np.ndarray, eid: np.ndarray) -> None:
        raise NotImplementedError

    def _index_rebuild(self) -> None:
        raise NotImplementedError

    def _all_keys(self) -> tuple[np.ndarray, np.ndarray]:
        alive = np.flatnonzero(self.alive[: self.size])
        has_orig = self.orig[alive] >= 0
        keys = np.concatenate((self.reply[alive], self.orig[alive][has_orig]))
        eids = np.concatenate((alive, alive[has_orig]))
        return keys, eids


class DictConntrackTable(_EntryStore):
    """Reference table: the index is a Python dict from key to entry id."""

    def __init__(self, nodes: int, capacity: int = 1024, **kw) -> None:
        super().__init__(nodes, capacity, **kw)
        self._index: dict[int, int] = {}

    def get(self, key: int) -> int:
        return self._index.get(key, -1)

    def _put1(self, key: int, eid: int) -> None:
        assert key not in self._index, "key indexed twice"
        self._index[key] = eid

    def _del1(self, key: int, eid: int) -> None:
        if self._index.get(key) == eid:
            del self._index[key]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        get = self._index.get
        return np.array([get(int(k), -1) for k in np.ravel(keys)], dtype=np.int64).reshape(np.shape(keys))

    def _index_put(self, keys: np.ndarray, eid: np.ndarray) -> None:
        for k, e in zip(keys.tolist(), eid.tolist()):
            assert k not in self._index, "key indexed twice"
            self._index[k] = e

    def _index_del(self, keys: np.ndarray, eid: np.ndarray) -> None:
        for k, e in zip(keys.tolist(), eid.tolist()):
            if self._index.get(k) == e:
                del self._index[k]

    def _index_rebuild(self) -> None:
        keys, eids = self._all_keys()
        self._index = dict(zip(keys.tolist(), eids.tolist()))


class ConntrackTable(_EntryStore):
    """Vectorized table: linear-probing hash of int64 keys held in numpy arrays.

    Load (keys plus tombstones) stays at most 1/2, so a probe run is short; the index is rebuilt
    when tombstones pile up. Memory is proportional to the entries held.
    """

    _EMPTY = np.int64(-1)
    _TOMB = np.int64(-2)

    def __init__(self, nodes: int, capacity: int = 1024, **kw) -> None:
        super().__init__(nodes, capacity, **kw)
        self._alloc_index(2 * capacity)

    def _alloc_index(self, slots: int) -> None:
        slots = 1 << max(4, int(slots - 1).bit_length())
        self._keys = np.full(slots, self._EMPTY, dtype=np.int64)
        self._vals = np.full(slots, -1, dtype=np.int64)
        self._claim = np.empty(slots, dtype=np.int64)   # scratch: who claims a free slot
        self._mask = np.int64(slots - 1)
        self._used = 0  # keys plus tombstones

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return (mix64(keys.view(np.uint64)) & np.uint64(self._mask)).astype(np.int64)

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        """Slot holding each key, or -1."""
        keys = np.ascontiguousarray(keys, dtype=np.int64).ravel()
        out = np.full(keys.size, -1, dtype=np.int64)
        slot = self._home(keys)
        todo = np.arange(keys.size)
        while todo.size:
            s = slot[todo]
            k = self._keys[s]
            hit = k == keys[todo]
            out[todo[hit]] = s[hit]
            todo = todo[~hit & (k != self._EMPTY)]
            slot[todo] = (slot[todo] + 1) & self._mask
        return out

    def _slot1(self, key: int) -> int:
        keys, mask = self._keys, int(self._mask)
        s = mix64_scalar(key & 0xFFFFFFFFFFFFFFFF) & mask
        while True:
            k = keys[s]
            if k == key:
                return s
            if k == -1:
                return -1
            s = (s + 1) & mask

    def get(self, key: int) -> int:
        s = self._slot1(key)
        return -1 if s < 0 else int(self._vals[s])

    def _put1(self, key: int, eid: int) -> None:
        keys, mask = self._keys, int(self._mask)
        s = mix64_scalar(key & 0xFFFFFFFFFFFFFFFF) & mask
        while True:
            k = keys[s]
            if k < 0:
                break
            if __debug__ and k == key:
                raise AssertionError("key indexed twice")
            s = (s + 1) & mask
        if k == -1:
            self._used += 1
        keys[s] = key
        self._vals[s] = eid

    def _del1(self, key: int, eid: int) -> None:
        s = self._slot1(key)
        if s >= 0 and self._vals[s] == eid:
            self._keys[s] = self._TOMB
            self._vals[s] = -1

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        shape = np.shape(keys)
        s = self._slots(keys)
        return np.where(s >= 0, self._vals[np.maximum(s, 0)], -1).reshape(shape)

    def _index_reserve(self, n: int) -> None:
        if 2 * (self._used + n) > self._keys.size:
            self._index_rebuild(extra=n)

    def _index_put(self, keys: np.ndarray, eid: np.ndarray) -> None:
        if keys.size == 0:
            return
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        slot = self._home(keys)
        todo = np.arange(keys.size)
        while todo.size:
            s = slot[todo]
            free = self._keys[s] < 0  # empty or tombstone: keys are never present already
            cand, cs = todo[free], s[free]
            # the first candidate (smallest index) of each slot wins; ufunc.at is deterministic
            self._claim[cs] = np.iinfo(np.int64).max
            np.minimum.at(self._claim, cs, cand)
            won = cand[self._claim[cs] == cand]
            claimed = slot[won]
            self._used += int(np.count_nonzero(self._keys[claimed] == self._EMPTY))
            self._keys[claimed] = keys[won]
            self._vals[claimed] = eid[won]
            placed = np.zeros(keys.size, dtype=bool)
            placed[won] = True
            todo = todo[~placed[todo]]
            slot[todo] = (slot[todo] + 1) & self._mask

    def _index_del(self, keys: np.ndarray, eid: np.ndarray) -> None:
        s = self._slots(keys)
        ok = s >= 0
        s, e = s[ok], eid[ok]
        s = s[self._vals[s] == e]
        self._keys[s] = self._TOMB
        self._vals[s] = -1

    def _index_rebuild(self, extra: int = 0) -> None:
        keys, eids = self._all_keys()
        self._alloc_index(4 * (keys.size + extra) + 16)
        self._index_put(keys, eids)
