"""Progress inside one long run: a bar of flows started, simulated time and ETA on a terminal.

The engines report as their windows end (:func:`lbsim.control.drive` after each window, a
streamed run after each window it loads); :class:`RunProgress` draws a tqdm bar on stderr once the
run has lasted :data:`AFTER_S`, at most 4 times a second. It stays silent where a redrawn line
would garble output: stderr not a terminal (logs, CI), a worker process of the bench's or a
sweep's pool (their bars would overwrite each other), ``LBSIM_PROGRESS=0``, or
``progress=False`` in :func:`lbsim.run`.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

from .kernel import NS

__all__ = ["AFTER_S", "RunProgress", "wanted"]

#: a run shorter than this shows no bar
AFTER_S = 2.0


def wanted(progress: bool | None) -> bool:
    """Whether a run draws its bar: ``progress`` if given, else only in the main process of an
    interactive terminal without ``LBSIM_PROGRESS=0``."""
    if progress is not None:
        return bool(progress)
    return (os.environ.get("LBSIM_PROGRESS", "1") != "0" and sys.stderr.isatty()
            and multiprocessing.parent_process() is None)


class RunProgress:
    """A run's bar: ``flows`` to start, arriving over about ``span_s`` simulated seconds."""

    def __init__(self, flows: int, span_s: float, file=None) -> None:
        from tqdm import tqdm
        self.span_s = span_s
        self.bar = tqdm(total=flows, unit="flow", unit_scale=True, delay=AFTER_S,
                        mininterval=0.25, leave=False, dynamic_ncols=True, desc="lbsim",
                        file=sys.stderr if file is None else file)
        self.done = 0

    def __call__(self, t_ns: int, started: int) -> None:
        """The run has simulated up to ``t_ns`` and started ``started`` flows."""
        step = started - self.done
        if step > 0:
            self.done = started
            self.bar.set_postfix_str(f"{min(t_ns, 2**62) / NS:,.0f} / ~{self.span_s:,.0f} s "
                                     f"simulated", refresh=False)
            self.bar.update(step)

    def close(self) -> None:
        self.bar.close()
