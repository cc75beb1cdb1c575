"""The LB's target sets over time, as the compiled engines read them: set k is in force from
``seg_t[k]`` on and lists ``seg_ids[seg_off[k] : seg_off[k + 1]]`` (pods on the direct path,
nodes on the NodePort path); the state slot S_TARGETS is the set the last choice read."""

from __future__ import annotations

import numpy as np

from .layout import S_TARGETS

__all__ = ["TargetSets"]


class TargetSets:
    """The sets still to be read, and their packed arrays (``seg_t``, ``seg_off``,
    ``seg_ids``)."""

    def __init__(self, first: np.ndarray) -> None:
        self.t: list[int] = [-1]
        self.ids: list[np.ndarray] = [np.asarray(first, np.int64)]
        self._pack()

    def set(self, t: int, ids: np.ndarray, lb2b: int, S: np.ndarray) -> None:
        """From ``t`` on the LB sends new flows to ``ids``. Every attempt still to come reaches
        its backend at ``t`` or later (a window ends at each control-plane instant), so the LB
        ``lb2b`` earlier: a set whose successor was in force by then is never read again."""
        ids = np.asarray(ids, np.int64)
        if self.t[-1] == t:
            self.ids[-1] = ids
        else:
            self.t.append(t)
            self.ids.append(ids)
        while len(self.t) > 1 and self.t[1] <= t - lb2b:
            del self.t[0], self.ids[0]
            S[S_TARGETS] = max(0, S[S_TARGETS] - 1)
        self._pack()

    def _pack(self) -> None:
        self.seg_t = np.asarray(self.t, np.int64)
        self.seg_off = np.concatenate(([0], np.cumsum([a.size for a in self.ids]))).astype(
            np.int64)
        self.seg_ids = np.concatenate(self.ids + [np.zeros(0, np.int64)]).astype(np.int64)
