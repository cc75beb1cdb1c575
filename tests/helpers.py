"""Helpers shared by the tests: build conntrack entries by hand."""

import numpy as np

from lbsim.conntrack import SNAT, TCP
from lbsim.tuples import orig_key, reply_key


def add_entry(table, *, node=0, pod=0, port, client=1, t_assured=0, t_close=10**12, t_expire=2 * 10**12,
              flags=int(TCP) | int(SNAT), seq=0):
    """Insert one confirmed entry whose reply tuple is (node, pod, port)."""
    return int(table.add(orig=np.array([orig_key(node, client, port)]), reply=np.array([reply_key(node, pod, port)]),
                         node=np.array([node]), pod=np.array([pod]), flow=np.array([0]),
                         t_confirm=np.array([0]), t_assured=np.array([t_assured]), t_close=np.array([t_close]),
                         t_expire=np.array([t_expire]), flags=np.array([flags], np.uint8),
                         seq=np.array([seq]))[0])
