"""Helpers shared by the tests: build conntrack entries by hand, mirror a reference table into
the compiled engine's arrays."""

import numpy as np

from lbsim.compiled import calendar, layout as L, table as ctable
from lbsim.kernel import F_SNAT, F_TCP
from lbsim.tuples import orig_key, reply_key


def add_entry(table, *, node=0, pod=0, port, client=1, t_assured=0, t_close=10**12, t_expire=2 * 10**12,
              flags=F_TCP | F_SNAT, seq=0):
    """Insert one confirmed entry whose reply tuple is (node, pod, port)."""
    node, pod, port, client = int(node), int(pod), int(port), int(client)
    return int(table.add1(orig_key(node, client, port), reply_key(node, pod, port), node, pod, 0,
                          0, t_assured, t_close, t_expire, flags, seq))


def compiled_table(ref, cap=4096):
    """The compiled table's arrays (E, HD, S, free, IX, count) holding ``ref``'s live entries."""
    E = L.entry_rows(cap)
    HD = calendar.calendar_heads(ref.nodes)
    S = np.zeros(L.STATE_SLOTS, np.int64)
    IX = np.full(8 * cap, -1, np.int64)
    free, count = np.zeros(cap, L.ROW), np.zeros(ref.nodes, np.int64)
    for e in np.flatnonzero(ref.alive[: ref.size]):
        ctable.insert(E, HD, S, free, IX, count, np.uint64(ref.salt), ref.buckets,
                      int(ref.orig[e]), int(ref.reply[e]), int(ref.node[e]), int(ref.pod[e]),
                      int(ref.t_assured[e]), int(ref.t_close[e]), int(ref.t_expire[e]),
                      int(ref.flags[e]), int(ref.seq[e]))
    return E, HD, S, free, IX, count
