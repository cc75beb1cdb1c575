"""Nodes whose endpoint lists are equal share one list, updated one node at a time.

kube-proxy programs each node's rules on its own, yet most nodes list the same pods (every node
of a Cluster Service once it has synced): the data plane keeps each distinct list once and a
group number per node. A rollout changes the lists one node at a time, on thousands of nodes;
:class:`SharedLists` makes each change cost the node's own list (a dict lookup by its bytes),
not a pass over every node, so a run's control-plane cost follows its deliveries (nodes x
endpoint changes, budget.check_control) rather than their product with the nodes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SharedLists"]


class SharedLists:
    """``group[v]``: node v's group; ``lists[g]``: group g's list (empty once no node has it,
    and its number reused for the next new list)."""

    def __init__(self, node_lists: list[np.ndarray]) -> None:
        self.group = np.zeros(len(node_lists), np.int64)
        self.lists: list[np.ndarray] = []
        self._refs: list[int] = []
        self._index: dict[bytes, int] = {}
        self._free: list[int] = []
        for v, eps in enumerate(node_lists):
            eps = np.asarray(eps, np.int64)
            self.group[v] = self._take(eps, eps.tobytes())

    def set(self, v: int, eps: np.ndarray) -> bool:
        """Node v lists ``eps`` now; True when that list is new (the packed lists change),
        False when v only moved to a group that exists."""
        eps = np.asarray(eps, np.int64)
        key = eps.tobytes()
        new = key not in self._index
        old = int(self.group[v])
        self.group[v] = self._take(eps, key)
        self._drop(old)
        return new

    def _take(self, eps: np.ndarray, key: bytes) -> int:
        g = self._index.get(key)
        if g is None:
            if self._free:
                g = self._free.pop()
                self.lists[g] = eps
            else:
                g = len(self.lists)
                self.lists.append(eps)
                self._refs.append(0)
            self._index[key] = g
        self._refs[g] += 1
        return g

    def _drop(self, g: int) -> None:
        self._refs[g] -= 1
        if self._refs[g] == 0:
            del self._index[self.lists[g].tobytes()]
            self.lists[g] = np.zeros(0, np.int64)
            self._free.append(g)
