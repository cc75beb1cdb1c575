"""The reference conntrack table: every node's entries, hashed under both ORIGINAL and REPLY tuples.

One object holds the tables of all nodes; the node is part of every key (:mod:`lbsim.tuples`), and
``count[node]`` is that node's ``nf_conntrack_count``. An entry stores its whole timeline (confirm,
start of TIME_WAIT, expiry) instead of scheduling expiry events: an entry is live for a lookup at
time ``t`` when ``t < t_expire``. Expired entries keep counting toward ``nf_conntrack_max`` until
the garbage collector (:meth:`ConntrackTable.gc_pass`) or a lookup that meets them frees them, as in
the kernel (kernel-facts 3.4, 3.5).

This is the readable form, the test oracle: a struct of numpy arrays indexed by a Python dict.
The compiled engine's table (:mod:`lbsim.compiled.table`) must take the same decisions;
tests/property drives both through the same operations.
"""

from __future__ import annotations

import numpy as np

from ..kernel import (EVICTION_RANGE, F_TCP, GC_INITIAL_COUNT, GC_INTERVAL_CLAMP,
                      GC_INTERVAL_INIT, GC_INTERVAL_MAX, GC_INTERVAL_MIN)
from ..rng import mix64, mix64_scalar

__all__ = ["ConntrackTable", "ENTRY_FIELDS"]

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
    "flags": np.uint8,      # kernel.F_TCP | F_SNAT | F_NAT_CLASH | F_UNREPLIED
    "seq": np.int64,        # td_end of the original direction (u32), for nf_seq_has_advanced
    "obucket": np.int64,    # hash bucket of the ORIGINAL tuple (-1: not hashed, NAT_CLASH)
    "rbucket": np.int64,    # hash bucket of the REPLY tuple
    "alive": np.bool_,      # held in the table (not yet freed)
}


class ConntrackTable:
    """Struct-of-arrays storage of entries, indexed by entry id (eid) through a dict from key to eid.

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
        self._index: dict[int, int] = {}

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
        return self._index.get(key, -1)

    def add1(self, orig: int, reply: int, node: int, pod: int, flow: int, t_confirm: int,
             t_assured: int, t_close: int, t_expire: int, flags: int, seq: int) -> int:
        """Append one entry (its keys must not be indexed already); returns its eid."""
        self._grow(1)
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
        assert key not in self._index, "key indexed twice"
        self._index[key] = eid

    def _del1(self, key: int, eid: int) -> None:
        if self._index.get(key) == eid:
            del self._index[key]

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
        h = mix64_scalar((int(key) & 0xFFFFFFFFFFFFFFFF) ^ int(self.salt)) >> 32
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
                          | (((self.flags[held] & F_TCP) != 0) & (self.t_close[held] <= t)))
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
        get = self._index.get
        return np.array([get(int(k), -1) for k in np.ravel(keys)],
                        dtype=np.int64).reshape(np.shape(keys))

    def _index_put(self, keys: np.ndarray, eid: np.ndarray) -> None:
        for k, e in zip(keys.tolist(), eid.tolist()):
            self._put1(k, e)

    def _index_del(self, keys: np.ndarray, eid: np.ndarray) -> None:
        for k, e in zip(keys.tolist(), eid.tolist()):
            self._del1(k, e)

    def _index_rebuild(self) -> None:
        alive = np.flatnonzero(self.alive[: self.size])
        has_orig = self.orig[alive] >= 0
        keys = np.concatenate((self.reply[alive], self.orig[alive][has_orig]))
        eids = np.concatenate((alive, alive[has_orig]))
        self._index = dict(zip(keys.tolist(), eids.tolist()))
