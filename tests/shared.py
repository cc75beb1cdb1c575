"""What tests/unit and tests/integration share: the small sweep and its base, the PNG check."""

from pathlib import Path

import pandas as pd

import lbsim
from lbsim.sweep import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[1]

# -- the small sweep ------------------------------------------------------------------------------

# a sound small run: the pods keep up and the run outlasts TIME_WAIT (no caveat fires)
BASE = lbsim.Scenario().replace(**{"workload.flows": 300, "cluster.nodes": 2, "cluster.pods": 4,
                                   "pod.workers": 64, "conntrack.time_wait_s": 0.05, "seed": 7})
GRID = {"cluster.nodes": [2, 3], "nat.random_fully": [True, False]}


def untimed(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=list(TIMING_COLUMNS))


def small_sweep() -> pd.DataFrame:
    """The small sweep, in process, no cache: what every other way must reproduce."""
    return lbsim.sweep(BASE, GRID, replications=2, executor="inprocess", progress=False)


# -- figures --------------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path):
    from matplotlib.image import imread
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), img.shape
    assert img.shape[0] > 200 and img.shape[1] > 400, img.shape
    assert img.std() > 0.01  # not a blank canvas
