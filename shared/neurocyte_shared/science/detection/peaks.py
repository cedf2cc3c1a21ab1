"""Threshold crossings that are the extreme within the dead time, on their channel and
over the electrodes within radius_um (spatial de-duplication)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..table import SpikeTable
from . import _kernels
from .params import DetectionParams

_SIGN = {"neg": _kernels.kernels.SIGN_NEG, "pos": _kernels.kernels.SIGN_POS, "both": _kernels.kernels.SIGN_BOTH}


def neighbours(channel_locations_um: np.ndarray | None, n_channels: int, radius_um: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """(index, count): index[c, :count[c]] are the channels within radius_um of channel c,
    itself included. Computed once per layout: every window and shard of a recording asks
    again with the same positions."""
    if channel_locations_um is None or radius_um <= 0 or n_channels == 1:
        return np.arange(n_channels, dtype=np.int32)[:, None], np.ones(n_channels, np.int32)
    loc = np.ascontiguousarray(channel_locations_um, dtype=np.float64).reshape(n_channels, -1)
    return _neighbours(loc.tobytes(), n_channels, float(radius_um))


@lru_cache(maxsize=8)
def _neighbours(locations: bytes, n_channels: int, radius_um: float) -> tuple[np.ndarray, np.ndarray]:
    loc = np.frombuffer(locations, dtype=np.float64).reshape(n_channels, -1)
    d2 = _squared_distances(loc)
    near = d2 <= radius_um**2
    count = near.sum(1).astype(np.int32)
    index = np.zeros((n_channels, int(count.max())), np.int32)
    rows, cols = np.nonzero(near)  # row by row, ascending: each row's channels in order
    index[rows, _rank_in_row(rows)] = cols
    return index, count


def _squared_distances(loc: np.ndarray) -> np.ndarray:
    """Channels x channels squared distances, one coordinate at a time: the same sums as
    ((a - b) ** 2).sum(-1), in a quarter of the time (that sums over an axis of 2 or 3,
    strided, a noticeable part of every start on 1024 channels)."""
    d2 = np.zeros((loc.shape[0], loc.shape[0]))
    for k in range(loc.shape[1]):
        diff = np.subtract.outer(loc[:, k], loc[:, k])
        d2 += diff * diff
    return d2


def _rank_in_row(rows: np.ndarray) -> np.ndarray:
    """For sorted row numbers: each entry's position within its row."""
    return np.arange(rows.size) - np.searchsorted(rows, rows, "left")


def find_peaks(preprocessed: np.ndarray, sampling_rate_hz: float, params: DetectionParams, *,
               noise_uv: np.ndarray, channel_locations_um: np.ndarray | None = None,
               valid: tuple[int, int] | None = None) -> SpikeTable:
    """The detection step alone, on traces already through `preprocess` (e.g. what remains
    after subtracting known spikes)."""
    x = np.ascontiguousarray(preprocessed, dtype=np.float32)
    n_samples, n_channels = x.shape
    index, count = neighbours(channel_locations_um, n_channels, params.radius_um)
    threshold = (params.threshold_mad * np.asarray(noise_uv, dtype=np.float32)).astype(np.float32)
    start, stop = valid if valid is not None else (0, n_samples)
    to_samples = lambda ms: int(round(ms * 1e-3 * sampling_rate_hz))  # noqa: E731
    t, ch = _kernels.kernels.find_peaks(
        x,
        threshold,
        _SIGN[params.peak_sign],
        params.dead_time_samples(sampling_rate_hz),
        to_samples(params.spatial_dead_time_ms),
        to_samples(params.echo_window_ms),
        np.float32(params.echo_ratio),
        max(0, int(start)),
        min(n_samples, int(stop)),
        index,
        count,
    )
    return SpikeTable(t, ch, x[t, ch])
