"""The compiled engine's data layout: the parameter block, the array rows, the state slots.

Numba compiles module-level ints into the machine code, so row fields and state slots are named
ints here; the parameter block is a named tuple generated from :class:`lbsim.workload.Params` by
field name (``P.ct_max``), and the run's arrays travel in three named tuples (:class:`Inputs`,
:class:`Outputs`, :class:`State`) so that a handler takes four arguments, not fifty.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from ..jit import jit as _jit
from ..kernel import GC_INTERVAL_CLAMP, NS
from ..rng import STREAMS
from ..workload import Params

__all__ = ["EngineParams", "engine_params", "Inputs", "Outputs", "State", "ENTRY_DTYPE", "entry_rows", "ROW"]

# -- decorators: compiled once, cached on disk under a stamp of lbsim's sources (lbsim.jit) -----
jit = _jit
#: per-event functions allocate nothing: without NRT, passing arrays costs no atomic refcounts
hot = _jit(_nrt=False)
#: small helpers inlined into their caller by numba (the handlers: no call, no argument passing)
inline = _jit(inline="always")

# -- the parameter block: Params' int and bool fields, by name ----------------------------------
_PARAM_NAMES = tuple(f.name for f in dataclasses.fields(Params) if f.type in ("int", "bool"))
EngineParams = collections.namedtuple("EngineParams", _PARAM_NAMES)


def engine_params(p: Params) -> EngineParams:
    """``p``'s int and bool fields as the compiled engine's parameter block."""
    return EngineParams(**p.int_fields())


# -- keys: the streams' 64-bit keys (rng.STREAMS order), then the conntrack hash salt -------------
_KEY = {name: i for i, name in enumerate(STREAMS)}
K_NAT, K_CPU_TIME, K_ISN, K_RSS, K_ENDPOINT = (_KEY["nat"], _KEY["cpu_time"], _KEY["isn"],
                                               _KEY["rss"], _KEY["endpoint"])
K_JITTER = _KEY["jitter"]
K_CT_SALT = len(STREAMS)
#: the LB's client-address hash salt (lbsim.workload.Workload.lb_salt), after the conntrack salt
K_LB_SALT = len(STREAMS) + 1

# -- entry rows: E is a structured array, a row a conntrack entry (80 bytes). Numba compiles a
# field name that is a module-level string into a fixed offset, so E[e][T_EXPIRE] costs what a
# column of a 2-D array did. What a GC walk and a release read comes first (one cache line);
# times and tuple keys in 8 bytes, rows, nodes, pods, flags and buckets in 4 (a table holds
# < 2^31 rows), the TCP sequence number in its own 32 bits.
NXT, T_EXPIRE, NODE, PRV, REPLY, ORIG, POD, T_ASSURED, T_CLOSE, FLAGS, SEQ, OBUCKET, RBUCKET, \
    BORN = ("nxt", "t_expire", "node", "prv", "reply", "orig", "pod", "t_assured", "t_close",
            "flags", "seq", "obucket", "rbucket", "born")
ENTRY_DTYPE = np.dtype([
    (T_EXPIRE, np.int64), (REPLY, np.int64), (ORIG, np.int64), (NXT, np.int32),
    (PRV, np.int32), (NODE, np.int32), (POD, np.int32), (FLAGS, np.int32), (OBUCKET, np.int32),
    (RBUCKET, np.int32), (SEQ, np.uint32), (T_ASSURED, np.int64), (T_CLOSE, np.int64),
    (BORN, np.int64)], align=True)
assert ENTRY_DTYPE.itemsize == 80


#: the dtype of the entry free list and of SE (row numbers: 4 bytes, as NXT and PRV are)
ROW = np.int32


def entry_rows(n: int) -> np.ndarray:
    """``n`` entry rows holding no entry (T_EXPIRE -1)."""
    E = np.zeros(n, ENTRY_DTYPE)
    E[T_EXPIRE] = -1
    return E


# -- the expiry calendar (lbsim.compiled.calendar) -----------------------------------------------
#: one-second buckets in a node's ring
RING = 256
assert RING & (RING - 1) == 0 and RING * NS <= GC_INTERVAL_CLAMP   # ring entries never clamp high
#: a head row: (first entry or -1, entries not yet counted as expired)
H_NEXT, H_CNT = 0, 1
#: (lo, HS) in a node's first calendar row, (HC, EXPD) in its second
N_LO, N_HS, N_HC, N_EXPD = 0, 1, 0, 1
#: a (node, pod) pair's row after the nodes' blocks (full records): its SNAT entries held, and
#: how many of them are counted expired (its SNAT ports in use at a sample: the difference)
P_HELD, P_EXPD = 0, 1

# -- pending attempts (PD rows): between the CPU (ARRIVE) and the confirm ------------------------
PA_ARRIVE, PA_TNAT, PA_TCONF, PA_NODE, PA_POD, PA_PORT, PA_EXH, PA_ORIG, PA_REPLY, PA_ISN, \
    PA_FOLLOW = range(11)
PENDING_WIDTH = 11

# -- scalar state (S) ------------------------------------------------------------------------------
(S_NEXT_NEW, S_RESOLVED, S_MAX_WAIT, S_SAMPLE_NEXT, S_SIZE, S_NFREE, S_USED, S_HN, S_PFREE,
 S_PSIZE, S_NDROP, S_NGAUGE, S_NSNAT, S_BORN, S_NEXT_TICK, S_LAST_SAMPLE,
 S_TARGETS, S_PAIR_BASE, S_PAIR_PODS, S_FLOW_END, S_NSLOT, S_END) = range(22)
#: S_TARGETS: with events, the LB's target set in force at the last choice (its segment);
#: S_PAIR_BASE: the first of HD's SNAT pair rows (0: none kept), S_PAIR_PODS: pods per node in
#: their numbering (pair = node x pods + pod); S_FLOW_END: the flows whose inputs are loaded
#: (all of them, or in a streamed run those up to the window's end); S_NSLOT: a closed loop's
#: free slots (lbsim.compiled.slots), S_END: when the flow resolved last ends for its client
#: (its slot frees then)
STATE_SLOTS = 22

# -- what the window function returns ------------------------------------------------------------
DONE, PAUSE, ROOM = 0, 1, 2
#: how far ahead index slots are prefetched (flows; releases in a GC sweep)
AHEAD = 16

#: the run's inputs (read only): the workload's arrays, the stream keys (K), the packet time's
#: and the jitter's parameters (pt: packet a, b, jitter a, b) and the retry gaps; with events, backend is the LB's node per flow, written
#: as each flow reaches the LB (-1 until then)
Inputs = collections.namedtuple("Inputs", (
    "K", "pt", "gaps", "backend", "sport", "client", "service", "hold", "t0", "flow_pod",
    "pod_node", "instance", "socket", "lane"))
#: the per-flow records and per-node counters the engine writes (lbsim.records)
Outputs = collections.namedtuple("Outputs", (
    "outcome", "cause", "attempts", "pod", "nat_port", "connect", "response", "pod_wait", "src_ip",
    "C",
    "cause_count"))
#: the engine's state. PC: with full records, each (node, pod) pair's SNAT ports at the last
#: sample (the change points' reference; its counts are HD's pair rows). ep_* are kube-proxy's
#: endpoints: node v lists ep_list[ep_ptr[g] :
#: ep_ptr[g + 1]] (with their cascade CDF in cdf) for g = ep_group[v]; ep_reject[v]: an empty
#: list rejects. With events: each pod's listen / sigterm / gone instants and its last
#: connection's close (closes), and the LB's node target sets, set k (from seg_t[k] on) listing
#: seg_ids[seg_off[k] : seg_off[k + 1]], with round robin's counter per instance (rr), and the
#: node chosen for each flow (node: the same array as Inputs.backend in such a run) and for
#: each socket whose queries share a tuple (sock_node, with Inputs.socket); slots: a closed
#: loop's free slots (lbsim.compiled.slots) and its flows' starts as it finds them (starts:
#: Inputs.t0 is a read-only view of it then, lbsim.workload.own_starts). The
#: arrays from E on grow between windows (the driver replaces them).
State = collections.namedtuple("State", (
    "S", "count", "unconfirmed", "rover", "cpu_free", "gc_next", "gc_flag", "worker_free", "HD",
    "due", "W", "PC", "ep_group", "ep_ptr", "ep_list", "cdf", "ep_reject",
    "listen", "sigterm", "gone", "closes", "seg_t", "seg_off", "seg_ids", "rr", "node",
    "sock_node", "slots", "starts",
    "E", "IX", "free", "SK", "SE", "H", "PD", "pfree", "D", "G_t", "G_count", "G_live", "G_smax",
    "G_spairs", "SG"))
