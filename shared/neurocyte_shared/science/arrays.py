"""Small array helpers that the science modules share."""

from __future__ import annotations

import numpy as np


def ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with lo[i] <= j < hi[i], in order of i then j, as two arrays: the pairs
    behind a searchsorted window (spikes near each spike, spikes around each stimulus)
    without a Python loop."""
    n = hi - lo
    which = np.repeat(np.arange(lo.size), n)
    return which, np.arange(which.size) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
