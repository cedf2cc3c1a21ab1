"""Spike detection: a pure function of arrays and parameters (no AWS, no files).

Pipeline, with SpikeInterface's defaults and names:
    int -> microvolts (float32) -> bandpass (Butterworth, second-order sections, forward
    and backward) -> common reference (median or mean across channels) -> threshold in
    multiples of the per-channel noise (MAD / 0.6745) -> a peak must be the extreme within
    +-dead_time_ms on its channel and on every channel within radius_um (spatial
    de-duplication: one spike seen on five electrodes is one row, on its peak channel).

Exact borders: a caller that detects a window [start, stop) passes the traces from
start - margin to stop + margin (`DetectionParams.margin_samples`) and `valid=(start, stop)`
in the coordinates of that array; peaks outside `valid` belong to the neighbouring window.
Traces are processed channel-major (channels x samples, contiguous along time) in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage, signal

MAD_TO_SIGMA = 0.6744897501960817  # MAD of a standard normal


class DetectionParams(BaseModel):
    """Every detection parameter, with its unit in its name and its default stated once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    freq_min_hz: float = Field(300.0, gt=0, description="bandpass low corner")
    freq_max_hz: float = Field(6000.0, gt=0, description="bandpass high corner (clipped below Nyquist)")
    filter_order: int = Field(5, ge=1, le=10, description="Butterworth order")
    reference: Literal["median", "mean", "none"] = Field("median", description="common reference")
    threshold_mad: float = Field(5.0, gt=0, description="threshold in multiples of MAD/0.6745 noise")
    peak_sign: Literal["neg", "pos", "both"] = "neg"
    dead_time_ms: float = Field(1.0, ge=0, description="a peak is the extreme within +- this window")
    radius_um: float = Field(50.0, ge=0, description="spatial de-duplication radius (0: per channel)")
    noise_chunks: int = Field(20, ge=1, description="random chunks used to estimate the noise")
    noise_chunk_s: float = Field(0.5, gt=0, description="length of each noise chunk")

    def dead_time_samples(self, sampling_rate_hz: float) -> int:
        return int(round(self.dead_time_ms * 1e-3 * sampling_rate_hz))

    def margin_samples(self, sampling_rate_hz: float) -> int:
        """Samples to read on each side of a window so its result equals the whole recording's:
        five time constants of the lowest filter frequency, plus the dead time."""
        filter_margin = int(math.ceil(5.0 / self.freq_min_hz * sampling_rate_hz))
        return filter_margin + self.dead_time_samples(sampling_rate_hz) + 1

    def cache_key(self) -> str:
        import hashlib

        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SpikeTable:
    """Detected spikes, sorted by time then channel. Columns as in the exported table."""

    sample_index: np.ndarray  # int64, from the start of the array given (or the recording)
    channel_index: np.ndarray  # int32, column in the recording
    amplitude_uv: np.ndarray  # float32, filtered and referenced amplitude at the peak

    def __len__(self) -> int:
        return int(self.sample_index.size)

    def shifted(self, offset: int) -> "SpikeTable":
        return SpikeTable(self.sample_index + offset, self.channel_index, self.amplitude_uv)

    @staticmethod
    def empty() -> "SpikeTable":
        return SpikeTable(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @staticmethod
    def concat(tables: list["SpikeTable"]) -> "SpikeTable":
        if not tables:
            return SpikeTable.empty()
        t = SpikeTable(
            np.concatenate([x.sample_index for x in tables]).astype(np.int64),
            np.concatenate([x.channel_index for x in tables]).astype(np.int32),
            np.concatenate([x.amplitude_uv for x in tables]).astype(np.float32),
        )
        order = np.lexsort((t.channel_index, t.sample_index))
        return SpikeTable(t.sample_index[order], t.channel_index[order], t.amplitude_uv[order])


@lru_cache(maxsize=32)
def _sos(sampling_rate_hz: float, freq_min_hz: float, freq_max_hz: float, order: int) -> np.ndarray:
    nyquist = sampling_rate_hz / 2.0
    high = min(freq_max_hz, 0.95 * nyquist)
    if freq_min_hz >= high:
        raise ValueError(
            f"freq_min_hz {freq_min_hz} must be below freq_max_hz {high} (and below Nyquist {nyquist})"
        )
    sos = signal.butter(order, [freq_min_hz, high], btype="bandpass", fs=sampling_rate_hz, output="sos")
    return sos.astype(np.float32)


def to_microvolts(raw: np.ndarray, gain_uv: float, offset_uv: float = 0.0) -> np.ndarray:
    """Raw integers (samples x channels) -> float32 microvolts, channel-major (channels x samples)."""
    out = np.empty((raw.shape[1], raw.shape[0]), dtype=np.float32)
    out[...] = raw.T
    out *= np.float32(gain_uv)
    if offset_uv:
        out += np.float32(offset_uv)
    return out


def preprocess(traces_uv: np.ndarray, sampling_rate_hz: float, params: DetectionParams) -> np.ndarray:
    """Bandpass then common reference, on channel-major float32 traces (channels x samples)."""
    x = np.ascontiguousarray(traces_uv, dtype=np.float32)
    sos = _sos(float(sampling_rate_hz), params.freq_min_hz, params.freq_max_hz, params.filter_order)
    # padlen 0: the caller's margins, not reflection padding, make window borders exact.
    x = signal.sosfiltfilt(sos, x, axis=-1, padtype=None).astype(np.float32, copy=False)
    if params.reference == "median" and x.shape[0] > 1:
        x -= np.median(x, axis=0, keepdims=True)
    elif params.reference == "mean" and x.shape[0] > 1:
        x -= x.mean(axis=0, keepdims=True)
    return x


def noise_levels(preprocessed: np.ndarray) -> np.ndarray:
    """Per-channel noise (uV): MAD / 0.6745 of preprocessed traces (channels x samples)."""
    med = np.median(preprocessed, axis=1, keepdims=True)
    return (np.median(np.abs(preprocessed - med), axis=1) / MAD_TO_SIGMA).astype(np.float32)


def neighbours(channel_locations_um: np.ndarray | None, n_channels: int, radius_um: float) -> np.ndarray:
    """(n_channels, k) indices of the channels within radius_um of each one (itself included,
    padded with itself)."""
    if channel_locations_um is None or radius_um <= 0 or n_channels == 1:
        return np.arange(n_channels)[:, None]
    loc = np.asarray(channel_locations_um, dtype=np.float64).reshape(n_channels, -1)
    d2 = ((loc[:, None, :] - loc[None, :, :]) ** 2).sum(-1)
    near = d2 <= radius_um**2
    k = int(near.sum(1).max())
    out = np.repeat(np.arange(n_channels)[:, None], k, axis=1)
    for c in range(n_channels):  # a loop over channels, not samples
        idx = np.flatnonzero(near[c])
        out[c, : idx.size] = idx
    return out


def find_peaks(
    preprocessed: np.ndarray,
    noise_uv: np.ndarray,
    sampling_rate_hz: float,
    params: DetectionParams,
    neighbour_index: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold crossings that are the local extreme in time and among neighbours.
    Returns (sample, channel, signed amplitude) of each peak, in array coordinates."""
    x = preprocessed
    if params.peak_sign == "neg":
        s = np.negative(x)
    elif params.peak_sign == "pos":
        s = x
    else:
        s = np.abs(x)
    half = params.dead_time_samples(sampling_rate_hz)
    thr = (params.threshold_mad * np.asarray(noise_uv, dtype=np.float32))[:, None]
    above = s > thr
    if not above.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    local_max = ndimage.maximum_filter1d(s, size=2 * half + 1, axis=1, mode="nearest")
    ch, t = np.nonzero(above & (s >= local_max))
    if neighbour_index.shape[1] > 1 and ch.size:
        # The peak must also beat every neighbour's extreme over the same +-dead time.
        nb = neighbour_index[ch]  # (n_peaks, k)
        nb_max = local_max[nb, t[:, None]]
        own = s[ch, t][:, None]
        beaten = (nb_max > own) | ((nb_max == own) & (nb < ch[:, None]))  # ties go to the lower channel
        keep = ~beaten.any(axis=1)
        ch, t = ch[keep], t[keep]
    # Plateaus (equal neighbouring samples) would give two peaks: keep the first of a run.
    if ch.size > 1 and half > 0:
        order = np.lexsort((t, ch))
        ch, t = ch[order], t[order]
        dup = np.zeros(ch.size, bool)
        dup[1:] = (ch[1:] == ch[:-1]) & (t[1:] - t[:-1] <= half)
        ch, t = ch[~dup], t[~dup]
    order = np.lexsort((ch, t))
    ch, t = ch[order], t[order]
    return t.astype(np.int64), ch.astype(np.int32), x[ch, t].astype(np.float32)


def detect_spikes(
    traces_uv: np.ndarray,
    sampling_rate_hz: float,
    params: DetectionParams = DetectionParams(),
    *,
    noise_uv: np.ndarray | None = None,
    channel_locations_um: np.ndarray | None = None,
    valid: tuple[int, int] | None = None,
) -> SpikeTable:
    """Detect spikes in channel-major microvolt traces (channels x samples).

    noise_uv: per-channel noise from the whole recording (`estimate_noise`); when omitted it
    is measured on these traces. valid: keep only peaks in [start, stop) of this array.
    Sample indices are relative to the array's first sample.
    """
    n_channels = traces_uv.shape[0]
    x = preprocess(traces_uv, sampling_rate_hz, params)
    if noise_uv is None:
        noise_uv = noise_levels(x)
    nb = neighbours(channel_locations_um, n_channels, params.radius_um)
    t, ch, amp = find_peaks(x, noise_uv, sampling_rate_hz, params, nb)
    if valid is not None:
        keep = (t >= valid[0]) & (t < valid[1])
        t, ch, amp = t[keep], ch[keep], amp[keep]
    return SpikeTable(t, ch, amp)


def noise_chunk_starts(n_samples: int, sampling_rate_hz: float, params: DetectionParams) -> list[int]:
    """Deterministic chunk positions, so every worker estimates exactly the same noise."""
    length = int(params.noise_chunk_s * sampling_rate_hz)
    if n_samples <= length * params.noise_chunks:
        return list(range(0, max(n_samples - length, 0) + 1, max(length, 1)))[: params.noise_chunks] or [0]
    rng = np.random.default_rng(0)
    return sorted(int(s) for s in rng.integers(0, n_samples - length, size=params.noise_chunks))


def estimate_noise(read_uv, n_samples: int, sampling_rate_hz: float, params: DetectionParams) -> np.ndarray:
    """Per-channel noise over the whole recording: the median over random chunks of each chunk's
    MAD/0.6745 (bounded memory, unlike pooling every chunk). `read_uv(start, stop)` returns
    channel-major microvolts; chunks are read with margins so filtering edges do not count."""
    length = int(params.noise_chunk_s * sampling_rate_hz)
    margin = params.margin_samples(sampling_rate_hz)
    levels = []
    for start in noise_chunk_starts(n_samples, sampling_rate_hz, params):
        lo, hi = max(0, start - margin), min(n_samples, start + length + margin)
        x = preprocess(read_uv(lo, hi), sampling_rate_hz, params)
        core = x[:, start - lo : start - lo + length]
        if core.shape[1] > 0:
            levels.append(noise_levels(core))
    return np.median(np.stack(levels), axis=0).astype(np.float32)
