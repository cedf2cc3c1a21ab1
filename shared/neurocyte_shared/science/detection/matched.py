"""Matched filtering of what remains after peeling: spikes of neurons too small to cross a
threshold on any electrode, or to make a template of their own.

A spike 3x the noise on its electrode is hardly a peak there; summed over the electrodes
near it (pooled detection) and over the samples of its waveform, it stands out: a neuron of
a 30 um grid that peaks at 2.9x the noise on two electrodes reads about 7x its noise
through a filter matched to its shape. The traces pooled over nearby electrodes (as
`peaks.find_peaks` pools them) are correlated in time with the recording's mean spike
shape (`matched_kernel`: the mean of its templates' peak-channel waveforms, each scaled to
a unit trough), and a peak of that beyond params.matched_threshold_mad x its own noise
(learned with the templates, `matched_noise`) is a spike. Not where a spike already found
explains it: near one (MATCHED_NEAR_MS, MATCHED_NEAR_UM: what a subtraction left), or
within MATCHED_ECHO_MS and MATCHED_ECHO_UM of one as large as it, or within MATCHED_FAR_MS and
MATCHED_FAR_UM of one MATCHED_FAR_RATIO times as large (the far field that templates, cut
at peel_radius_um, do not subtract: 300-400 um from spikes 20-60x the noise, 0.7-1.2 ms
before their peak, it summed to 6-7x on the bench's 2-column probes). Nor within
MATCHED_SILENCE_MS of a silenced sample on an electrode it pools (an artefact's ringing).
"""

from __future__ import annotations

import numpy as np

from ..arrays import ranges
from . import _kernels
from .params import (
    MAD_TO_SIGMA,
    MATCHED_ECHO_MS,
    MATCHED_ECHO_UM,
    MATCHED_FAR_MS,
    MATCHED_FAR_RATIO,
    MATCHED_FAR_UM,
    MATCHED_KERNEL_MS,
    MATCHED_LEARN_SAMPLES,
    MATCHED_NEAR_MS,
    MATCHED_NEAR_UM,
    MATCHED_POOL_MIN,
    MATCHED_SHIFT,
    MATCHED_SILENCE_MS,
    MATCHED_Z_MIN,
    DetectionParams,
)
from .peaks import Pooling, _inverse, distances_um, pooling


def wanted(params: DetectionParams, channel_locations_um: np.ndarray | None, n_channels: int) -> Pooling | None:
    """The layout's pooling where the matched search runs (on, negative peaks, neighbours)."""
    if not (params.peel and params.matched_threshold_mad > 0 and params.peak_sign == "neg"):
        return None
    return pooling(channel_locations_um, n_channels)


def learning_block(x: np.ndarray, pool: Pooling | None) -> np.ndarray | None:
    """The first MATCHED_LEARN_SAMPLES samples of a learning chunk (preprocessed, float16), on
    which `matched_noise` measures the filter's noise once the recording's noise is known."""
    return None if pool is None else np.ascontiguousarray(x[:MATCHED_LEARN_SAMPLES], dtype=np.float16)


def matched_kernel(waveforms: np.ndarray, before: int, sampling_rate_hz: float) -> tuple[np.ndarray, int]:
    """(kernel, its trough's index): the mean of the templates' peak-channel waveforms
    (templates x width), each scaled to a trough of -1, over MATCHED_KERNEL_MS around the
    trough, with unit norm."""
    a = max(0, before - int(round(MATCHED_KERNEL_MS[0] * 1e-3 * sampling_rate_hz)))
    b = min(waveforms.shape[1], before + int(round(MATCHED_KERNEL_MS[1] * 1e-3 * sampling_rate_hz)) + 1)
    troughs = np.abs(waveforms[:, before : before + 1]).astype(np.float64)
    k = (waveforms[:, a:b] / np.where(troughs > 0, troughs, 1.0)).mean(axis=0)
    norm = float(np.sqrt((k * k).sum()))
    return (k / norm if norm > 0 else k).astype(np.float32), before - a


def matched_noise(blocks: list[np.ndarray], noise_uv: np.ndarray, pool: Pooling, pool_noise: np.ndarray,
                  kernel: np.ndarray) -> np.ndarray:
    """Per channel, the matched filter's noise (MAD / 0.6745) on the learning chunks' blocks
    (`learning_block`), pooled as detection pools them, in units of the pooled noise; 0 where
    a channel has none."""
    values = []
    for block in blocks:
        n = block.shape[0] - kernel.size + 1
        if n <= 0:
            continue
        x = block.astype(np.float32)
        pooled = np.empty(x.shape, np.float32)
        _kernels.kernels.pooled_rows(x, _inverse(noise_uv), pool.index, pool.weight, pool.count, 1, pooled)
        out = np.zeros((n, x.shape[1]), np.float32)
        for j, kj in enumerate(kernel):
            out += kj * pooled[j : j + n]
        values.append(out)
    if not values:
        return np.zeros(np.asarray(pool_noise).size, np.float32)
    v = np.concatenate(values) * _inverse(pool_noise)
    return (np.median(np.abs(v - np.median(v, axis=0)), axis=0) / MAD_TO_SIGMA).astype(np.float32)


def find_matched(x: np.ndarray, sampling_rate_hz: float, params: DetectionParams, *, noise_uv: np.ndarray,
                 pool: Pooling, channel_locations_um: np.ndarray, pool_noise: np.ndarray, kernel: np.ndarray, at: int,
                 filter_noise: np.ndarray, found_t: np.ndarray, found_c: np.ndarray, found_z: np.ndarray,
                 valid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spikes in what remains (x, samples x channels) that the matched filter shows beyond
    params.matched_threshold_mad, in [valid): (sample, channel, amplitude in uV). found_*:
    the spikes found so far (sample, channel, size in units of its electrode's noise); pool:
    the layout's pooling (`wanted`)."""
    n, n_c = x.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    start, stop = valid
    w = max(1, int(round(params.spatial_dead_time_ms * 1e-3 * sampling_rate_hz)))
    t, c, score = _kernels.kernels.matched_marks(
        x, _inverse(noise_uv), MATCHED_Z_MIN, w, pool.index, pool.weight, pool.count, kernel,
        at, MATCHED_SHIFT, _inverse(pool_noise), MATCHED_POOL_MIN, _inverse(filter_noise), params.matched_threshold_mad,
        max(0, start - w - MATCHED_SHIFT), min(n, stop + w + MATCHED_SHIFT),
        # what is left beside a silenced stretch (a stimulation artefact's, a clipped
        # electrode's: `filters.blank`) is the filter's ringing, alike on every electrode, and
        # pooling adds it up (a stimulated recording's pulses made 25 such spikes in 640 pulse
        # and electrode pairs)
        int(round(MATCHED_SILENCE_MS * 1e-3 * sampling_rate_hz)))
    c = c.astype(np.int64)
    distances = distances_um(channel_locations_um, n_c)
    keep = ~_beaten(t, c, score, distances, w, float(params.radius_um))
    keep &= (t >= start) & (t < stop)
    t, c, score = t[keep], c[keep], score[keep]
    keep = ~_explained(t, c, score, found_t, found_c, found_z, distances, sampling_rate_hz)
    t, c = t[keep], c[keep]
    return t, c, x[t, c].astype(np.float32)


def _beaten(t: np.ndarray, c: np.ndarray, score: np.ndarray, distances: np.ndarray, within: int,
            radius_um: float) -> np.ndarray:
    """Which candidates another beats: a higher score (ties: the earlier, then the lower
    channel) within +-within samples and radius_um."""
    order = np.lexsort((c, t))
    ts = t[order]
    i, j = ranges(np.searchsorted(ts, t - within, "left"), np.searchsorted(ts, t + within, "right"))
    j = order[j]
    other = j != i
    rival = other & (distances[c[i], c[j]] <= radius_um) & (
        (score[j] > score[i]) | ((score[j] == score[i]) & ((t[j] < t[i]) | ((t[j] == t[i]) & (c[j] < c[i])))))
    out = np.zeros(t.size, bool)
    out[i[rival]] = True
    return out


def _explained(t: np.ndarray, c: np.ndarray, score: np.ndarray, found_t: np.ndarray, found_c: np.ndarray,
               found_z: np.ndarray, distances: np.ndarray, sampling_rate_hz: float) -> np.ndarray:
    """Which candidates a spike found explains (see the module's docstring)."""
    ms = 1e-3 * sampling_rate_hz
    reach = int(round(max(MATCHED_NEAR_MS, MATCHED_ECHO_MS, MATCHED_FAR_MS) * ms))
    order = np.argsort(found_t, kind="stable")
    fs, fc, fz = found_t[order], found_c[order], found_z[order]
    i, j = ranges(np.searchsorted(fs, t - reach, "left"), np.searchsorted(fs, t + reach, "right"))
    dt, d = np.abs(fs[j] - t[i]), distances[c[i], fc[j]]
    near = (dt <= MATCHED_NEAR_MS * ms) & (d <= MATCHED_NEAR_UM)
    echo = (dt <= MATCHED_ECHO_MS * ms) & (d <= MATCHED_ECHO_UM) & (fz[j] >= score[i])
    far = (dt <= MATCHED_FAR_MS * ms) & (d <= MATCHED_FAR_UM) & (fz[j] >= MATCHED_FAR_RATIO * score[i])
    out = np.zeros(t.size, bool)
    out[i[near | echo | far]] = True
    return out
