"""Threshold crossings that are the extreme within the dead time, on their channel and
over the electrodes within radius_um (spatial de-duplication); and spikes below the threshold
on every electrode that the traces summed over nearby electrodes show (pooled detection)."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..arrays import ranges
from ..table import SpikeTable
from . import _kernels
from .filters import noise_levels
from .params import (
    FAR_ECHO_RATIO,
    POOL_ECHO_MS,
    POOL_ECHO_RATIO,
    POOL_ECHO_UM,
    POOL_REACH,
    POOL_SCALE_STEP,
    POOL_SIGMA_UM,
    POOL_Z_MIN,
    DetectionParams,
)

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


class Pooling(NamedTuple):
    """Each channel's neighbours for pooled detection and their weights (unit norm per row)."""

    index: np.ndarray  # channels x most neighbours (int32)
    weight: np.ndarray  # the same shape (float32)
    count: np.ndarray  # neighbours per channel, itself included (int32)


def pooling(channel_locations_um: np.ndarray | None, n_channels: int) -> Pooling | None:
    """The layout's pooling, or None where no electrode has a neighbour within its reach."""
    if channel_locations_um is None or n_channels < 2:
        return None
    loc = np.ascontiguousarray(channel_locations_um, dtype=np.float64).reshape(n_channels, -1)
    return _pooling(loc.tobytes(), n_channels)


@lru_cache(maxsize=8)
def _pooling(locations: bytes, n_channels: int) -> Pooling | None:
    index, count = _neighbours(locations, n_channels, POOL_REACH * POOL_SIGMA_UM)
    if count.max() < 2:
        return None
    loc = np.frombuffer(locations, dtype=np.float64).reshape(n_channels, -1)
    d2 = _squared_distances(loc)
    rows = np.arange(n_channels)[:, None]
    weight = np.where(np.arange(index.shape[1])[None, :] < count[:, None],
                      np.exp(-d2[rows, index] / (2 * POOL_SIGMA_UM**2)), 0.0)
    weight /= np.sqrt((weight**2).sum(axis=1, keepdims=True))
    out = Pooling(index, weight.astype(np.float32), count)
    for a in out:
        a.flags.writeable = False  # shared by every call
    return out


def _inverse(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return np.divide(np.float32(1), v, out=np.zeros_like(v), where=v > 0)


def pooled_noise(preprocessed: np.ndarray, noise_uv: np.ndarray, channel_locations_um: np.ndarray | None,
                 params: DetectionParams) -> np.ndarray | None:
    """Per channel, the noise of the traces summed over its neighbours (MAD / 0.6745 of every
    POOL_SCALE_STEP-th sample; 0 where it has none), for `find_peaks`'s pool_noise; None where
    pooled detection is off or the layout has no neighbours. It is not 1: nearby electrodes
    share noise (1.03-1.33 on the bench's families)."""
    x = np.ascontiguousarray(preprocessed, dtype=np.float32)
    wanted = params.pool_threshold_mad > 0 or (params.peel and params.peel_pool_threshold_mad > 0)
    pool = pooling(channel_locations_um, x.shape[1]) if wanted else None
    if pool is None or x.shape[0] == 0:
        return None
    rows = np.empty(((x.shape[0] + POOL_SCALE_STEP - 1) // POOL_SCALE_STEP, x.shape[1]), np.float32)
    _kernels.kernels.pooled_rows(x, _inverse(noise_uv), pool.index, pool.weight, pool.count, POOL_SCALE_STEP, rows)
    return noise_levels(rows)


def find_peaks(preprocessed: np.ndarray, sampling_rate_hz: float, params: DetectionParams, *,
               noise_uv: np.ndarray, channel_locations_um: np.ndarray | None = None,
               valid: tuple[int, int] | None = None, pool_noise: np.ndarray | None = None,
               earlier: SpikeTable | None = None, earlier_ratio: float = POOL_ECHO_RATIO) -> SpikeTable:
    """The detection step alone, on traces already through `preprocess` (e.g. what remains
    after subtracting known spikes). pool_noise (`pooled_noise`): with it, spikes below the
    threshold on every electrode are found where the pooled traces show them (params.pool_threshold_mad).
    earlier: spikes found before and taken out of these traces (peeling); a pooled spike is
    also weighed against them, as `earlier_ratio` times their size. Any peak that one
    1 / FAR_ECHO_RATIO times as large explains (within 2 ms and 300 um: its far field) is dropped."""
    x = np.ascontiguousarray(preprocessed, dtype=np.float32)
    n_samples, n_channels = x.shape
    start, stop = valid if valid is not None else (0, n_samples)
    start, stop = max(0, int(start)), min(n_samples, int(stop))
    pool = None
    if pool_noise is not None and params.pool_threshold_mad > 0 and params.peak_sign == "neg":
        pool = pooling(channel_locations_um, n_channels)
    look = int(round(POOL_ECHO_MS * 1e-3 * sampling_rate_hz))  # a far field's reach (the caller's margin has it)
    lo, hi = max(0, start - look), min(n_samples, stop + look)
    noise = np.asarray(noise_uv, dtype=np.float32)
    inv = _inverse(noise)
    if pool is None:
        t, ch = _find(x, sampling_rate_hz, params, noise, channel_locations_um, lo, hi)
        pooled = np.zeros(0, np.int64)
    else:
        t, ch, pooled = _find_pooled(x, sampling_rate_hz, params, noise, inv, channel_locations_um, pool, pool_noise,
                                     lo, hi)
    keep = (t >= start) & (t < stop)
    if channel_locations_um is not None and t.size:
        distances = distances_um(channel_locations_um, n_channels)
        z = np.abs(x[t, ch] * inv[ch])
        keep &= ~_echoes(t, ch, z, t, ch, z * FAR_ECHO_RATIO, distances, look)
        if pooled.size:
            found = np.ones(t.size, bool)
            found[pooled] = False  # t is sorted, so the spikes found (not pooled) are too
            echo = _echoes(t[pooled], ch[pooled], z[pooled], t[found], ch[found], z[found] * POOL_ECHO_RATIO,
                           distances, look)
            if earlier is not None and len(earlier):
                by_time = np.argsort(earlier.sample_index, kind="stable")
                te, ce = earlier.sample_index[by_time], earlier.channel_index[by_time]
                echo |= _echoes(t[pooled], ch[pooled], z[pooled], te, ce,
                                np.abs(earlier.amplitude_uv[by_time] * inv[ce]) * earlier_ratio, distances, look)
            keep[pooled[echo]] = False
    t, ch = t[keep], ch[keep]
    return SpikeTable(t, ch, x[t, ch])


def _find_pooled(x: np.ndarray, sampling_rate_hz: float, params: DetectionParams, noise: np.ndarray,
                 inv: np.ndarray, channel_locations_um: np.ndarray, pool: Pooling, pool_noise: np.ndarray,
                 lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, ch, which of them are pooled spikes) in [lo, hi). The pooled spikes' samples are
    marked just beyond the threshold (the more so the lower they lie on their own electrode),
    so that a spike that crosses it wins, and the extremes are found as for any other; x (the
    caller's array) is restored after. Marks reach as far around [lo, hi) as a peak is
    compared with its channel and neighbours."""
    n_samples, n_channels = x.shape
    reach = params.dead_time_samples(sampling_rate_hz) + int(round(params.spatial_dead_time_ms * 1e-3
                                                                   * sampling_rate_hz))
    mt, mc = _kernels.kernels.pooled_marks(x, inv, POOL_Z_MIN, params.threshold_mad, params.pool_threshold_mad,
                                           pool.index, pool.weight, pool.count, _inverse(pool_noise),
                                           max(0, lo - reach), min(n_samples, hi + reach))
    held = x[mt, mc].copy()
    below = np.minimum(-held * inv[mc], params.threshold_mad) / params.threshold_mad
    x[mt, mc] = -params.threshold_mad * noise[mc] * (1 + 1e-4 * below)
    try:
        t, ch = _find(x, sampling_rate_hz, params, noise, channel_locations_um, lo, hi)
    finally:
        x[mt, mc] = held
    return t, ch, np.flatnonzero(np.isin(t * n_channels + ch, mt * n_channels + mc))


def distances_um(channel_locations_um: np.ndarray, n_channels: int) -> np.ndarray:
    """channels x channels, um (cached per layout, read-only: shared by every call)."""
    loc = np.ascontiguousarray(channel_locations_um, dtype=np.float64).reshape(n_channels, -1)
    return _distances_of(loc.tobytes(), n_channels)


@lru_cache(maxsize=8)
def _distances_of(locations: bytes, n_channels: int) -> np.ndarray:
    out = np.sqrt(_squared_distances(np.frombuffer(locations, dtype=np.float64).reshape(n_channels, -1)))
    out.flags.writeable = False
    return out


def _echoes(t: np.ndarray, ch: np.ndarray, z: np.ndarray, t_src: np.ndarray, ch_src: np.ndarray,
            z_src: np.ndarray, distances_um: np.ndarray, look: int) -> np.ndarray:
    """For each spike (t, ch, z; z its size in units of its electrode's noise): a spike of
    (t_src sorted, ch_src, z_src) lies within +-look samples and POOL_ECHO_UM, and is at least
    as large (z_src, scaled by the caller's ratio, >= z)."""
    out = np.zeros(t.size, bool)
    if not t.size:
        return out
    large = z_src >= z.min()  # only these can explain a spike: few
    t_src, ch_src, z_src = t_src[large], ch_src[large], z_src[large]
    i, j = ranges(np.searchsorted(t_src, t - look, "left"), np.searchsorted(t_src, t + look, "right"))
    hit = (distances_um[ch[i], ch_src[j]] <= POOL_ECHO_UM) & (z_src[j] >= z[i])
    out[i[hit]] = True
    return out


def _find(x: np.ndarray, sampling_rate_hz: float, params: DetectionParams, noise_uv: np.ndarray,
          channel_locations_um: np.ndarray | None, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    n_channels = x.shape[1]
    index, count = neighbours(channel_locations_um, n_channels, params.radius_um)
    threshold = (params.threshold_mad * np.asarray(noise_uv, dtype=np.float32)).astype(np.float32)
    to_samples = lambda ms: int(round(ms * 1e-3 * sampling_rate_hz))  # noqa: E731
    return _kernels.kernels.find_peaks(
        x,
        threshold,
        _SIGN[params.peak_sign],
        params.dead_time_samples(sampling_rate_hz),
        to_samples(params.spatial_dead_time_ms),
        to_samples(params.echo_window_ms),
        np.float32(params.echo_ratio),
        start,
        stop,
        index,
        count,
    )
