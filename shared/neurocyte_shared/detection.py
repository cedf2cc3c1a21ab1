"""Spike detection: a pure function of arrays and parameters (no AWS, no files).

Pipeline, with SpikeInterface's defaults and names:
    raw -> microvolts (float32) -> bandpass (Butterworth, second-order sections, forward
    and backward) -> common reference (median or mean across channels) -> threshold in
    multiples of the per-channel noise (MAD / 0.6745) -> a peak must be the extreme within
    +-dead_time_ms on its channel and on every channel within radius_um (spatial
    de-duplication: one spike seen on five electrodes is one row, on its peak channel).

Exact borders: a caller that detects a window [start, stop) passes the traces from
start - margin to stop + margin (`DetectionParams.margin_samples`) and `valid=(start, stop)`
in the coordinates of that array; peaks outside `valid` belong to the neighbouring window.
Windows cut in different places give the same spikes up to the float32 rounding of the
filter (about 1e-3 uV, whatever the margin): only a peak that close to its threshold can
come out differently (1 of 77,451 spikes on 64 channels x 240 s, 1 s against 4 s windows).
Traces are time-major (samples x channels), as recorded; the kernels (`kernels.py`) run
over channels in the inner loop and keep float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import kernels

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
    dead_time_ms: float = Field(0.5, ge=0, description="a peak is the extreme within +- this window")
    radius_um: float = Field(50.0, ge=0, description="spatial de-duplication radius (0: per channel)")
    spatial_dead_time_ms: float = Field(
        0.2, ge=0, description="a peak must beat its neighbours within radius_um over +- this window")
    echo_window_ms: float = Field(
        3.0, ge=0, description="after-wave suppression: look back this far for a larger spike (0: off)")
    echo_ratio: float = Field(
        8.0, gt=1, description="a peak this many times smaller than a spike just before it is its after-wave")
    noise_chunks: int = Field(20, ge=1, description="random chunks used to estimate the noise")
    noise_chunk_s: float = Field(0.5, gt=0, description="length of each noise chunk")

    def dead_time_samples(self, sampling_rate_hz: float) -> int:
        return int(round(self.dead_time_ms * 1e-3 * sampling_rate_hz))

    def margin_samples(self, sampling_rate_hz: float) -> int:
        """Samples to read on each side of a window so its result equals the whole recording's:
        five time constants of the lowest filter frequency, plus the longest look-around."""
        filter_margin = int(math.ceil(5.0 / self.freq_min_hz * sampling_rate_hz))
        look = max(self.dead_time_ms, self.spatial_dead_time_ms, self.echo_window_ms)
        return filter_margin + int(math.ceil(look * 1e-3 * sampling_rate_hz)) + 1

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


def butter_bandpass_sos(order: int, freq_min_hz: float, freq_max_hz: float, sampling_rate_hz: float) -> np.ndarray:
    """Butterworth bandpass as second-order sections (b0 b1 b2 1 a1 a2), the design of
    scipy.signal.butter(order, [lo, hi], 'bandpass', output='sos') written out with numpy:
    importing scipy.signal costs over a second of start-up, more than detecting a minute of
    64 channels. Each section holds a conjugate pole pair and one zero at z=1 and z=-1; the
    gain is spread evenly across sections (kinder to float32 than all in the first)."""
    fs2 = 4.0  # bilinear transform on frequencies normalised to Nyquist (scipy: fs=2)
    lo, hi = (fs2 * np.tan(np.pi * f / sampling_rate_hz) for f in (freq_min_hz, freq_max_hz))
    bw, wo = hi - lo, np.sqrt(lo * hi)
    proto = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))  # analog lowpass
    p_lp = proto * bw / 2
    root = np.sqrt(p_lp**2 - wo**2)
    poles = np.concatenate([p_lp + root, p_lp - root])
    gain = bw**order  # analog bandpass gain; zeros: `order` at s=0
    z_poles = (fs2 + poles) / (fs2 - poles)
    gain = gain * np.real(fs2**order / np.prod(fs2 - poles))
    tol = 1e-9
    pairs = [(p, p.conjugate()) for p in z_poles if p.imag > tol]
    real = np.sort(z_poles[np.abs(z_poles.imag) <= tol].real)
    pairs += [(complex(real[k]), complex(real[k + 1])) for k in range(0, real.size - 1, 2)]
    if len(pairs) != order or not gain > 0:
        raise ValueError(f"cannot design a bandpass {freq_min_hz}-{freq_max_hz} Hz of order {order}")
    pairs.sort(key=lambda pq: max(abs(pq[0]), abs(pq[1])))  # poles nearest the unit circle last
    sos = np.zeros((order, 6))
    for row, (p, q) in zip(sos, pairs):
        row[:] = 1.0, 0.0, -1.0, 1.0, -(p + q).real, (p * q).real
    sos[:, :3] *= gain ** (1.0 / order)
    return sos


@lru_cache(maxsize=32)
def _sos(sampling_rate_hz: float, freq_min_hz: float, freq_max_hz: float, order: int) -> np.ndarray:
    nyquist = sampling_rate_hz / 2.0
    high = min(freq_max_hz, 0.95 * nyquist)
    if freq_min_hz >= high:
        raise ValueError(
            f"freq_min_hz {freq_min_hz} must be below freq_max_hz {high} (and below Nyquist {nyquist})"
        )
    return butter_bandpass_sos(order, freq_min_hz, high, sampling_rate_hz).astype(np.float32)


_REFERENCE = {"none": kernels.REF_NONE, "median": kernels.REF_MEDIAN, "mean": kernels.REF_MEAN}
_SIGN = {"neg": kernels.SIGN_NEG, "pos": kernels.SIGN_POS, "both": kernels.SIGN_BOTH}


def preprocess(traces: np.ndarray, sampling_rate_hz: float, params: DetectionParams,
               gain_uv: float = 1.0, offset_uv: float = 0.0) -> np.ndarray:
    """Raw traces (samples x channels, any numeric dtype) -> float32 microvolts, bandpassed
    forward and backward, then common-referenced; same layout."""
    raw = np.ascontiguousarray(traces)
    if raw.ndim != 2:
        raise ValueError(f"traces must be samples x channels, got shape {raw.shape}")
    sos = _sos(float(sampling_rate_hz), params.freq_min_hz, params.freq_max_hz, params.filter_order)
    out = np.empty(raw.shape, np.float32)
    if raw.shape[0]:
        kernels.bandpass_reference(raw, float(gain_uv), float(offset_uv), sos, _REFERENCE[params.reference], out)
    return out


def noise_levels(preprocessed: np.ndarray) -> np.ndarray:
    """Per-channel noise (uV): MAD / 0.6745 of preprocessed traces (samples x channels)."""
    x = np.ascontiguousarray(preprocessed, dtype=np.float32)
    mad = np.empty(x.shape[1], np.float32)
    if x.shape[0] == 0:
        raise ValueError("no samples to measure the noise on")
    kernels.median_abs_deviation(x, mad)
    return (mad / np.float32(MAD_TO_SIGMA)).astype(np.float32)


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
    d2 = ((loc[:, None, :] - loc[None, :, :]) ** 2).sum(-1)
    near = d2 <= radius_um**2
    count = near.sum(1).astype(np.int32)
    index = np.zeros((n_channels, int(count.max())), np.int32)
    for c in range(n_channels):  # a loop over channels, once per layout
        idx = np.flatnonzero(near[c])
        index[c, : idx.size] = idx
    return index, count


def detect_spikes(
    traces: np.ndarray,
    sampling_rate_hz: float,
    params: DetectionParams = DetectionParams(),
    *,
    gain_uv: float = 1.0,
    offset_uv: float = 0.0,
    noise_uv: np.ndarray | None = None,
    channel_locations_um: np.ndarray | None = None,
    valid: tuple[int, int] | None = None,
) -> SpikeTable:
    """Detect spikes in traces (samples x channels, as recorded; raw integers with their gain
    to microvolts, or float microvolts with the default gain 1).

    noise_uv: per-channel noise from the whole recording (`estimate_noise`); when omitted it
    is measured on these traces. valid: keep only peaks in [start, stop) of this array.
    Sample indices are relative to the array's first sample.
    """
    x = preprocess(traces, sampling_rate_hz, params, gain_uv, offset_uv)
    return find_peaks(x, sampling_rate_hz, params, noise_uv=noise_levels(x) if noise_uv is None else noise_uv,
                      channel_locations_um=channel_locations_um, valid=valid)


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
    t, ch = kernels.find_peaks(x, threshold, _SIGN[params.peak_sign], params.dead_time_samples(sampling_rate_hz),
                               to_samples(params.spatial_dead_time_ms), to_samples(params.echo_window_ms),
                               np.float32(params.echo_ratio), max(0, int(start)), min(n_samples, int(stop)),
                               index, count)
    return SpikeTable(t, ch, x[t, ch])


def saturated_samples(raw: np.ndarray) -> np.ndarray:
    """Per channel, how many samples sit at the integer type's limits (the amplifier or the
    converter clipped). Float data cannot tell: zeros."""
    if not np.issubdtype(raw.dtype, np.integer):
        return np.zeros(raw.shape[1], np.int64)
    info = np.iinfo(raw.dtype)
    return ((raw == info.min) | (raw == info.max)).sum(axis=0).astype(np.int64)


def noise_chunk_starts(n_samples: int, sampling_rate_hz: float, params: DetectionParams) -> list[int]:
    """Deterministic chunk positions, so every worker estimates exactly the same noise."""
    length = int(params.noise_chunk_s * sampling_rate_hz)
    if n_samples <= length * params.noise_chunks:
        return list(range(0, max(n_samples - length, 0) + 1, max(length, 1)))[: params.noise_chunks] or [0]
    rng = np.random.default_rng(0)
    return sorted(int(s) for s in rng.integers(0, n_samples - length, size=params.noise_chunks))


def estimate_noise(read, n_samples: int, sampling_rate_hz: float, params: DetectionParams,
                   gain_uv: float = 1.0, offset_uv: float = 0.0, *, map_=map) -> np.ndarray:
    """Per-channel noise over the whole recording: the median over random chunks of each chunk's
    MAD/0.6745 (bounded memory, unlike pooling every chunk). `read(start, stop)` returns raw
    samples x channels; chunks are read with margins so filtering edges do not count.
    `map_` may be a thread pool's map: the kernels release the GIL."""
    length = int(params.noise_chunk_s * sampling_rate_hz)
    margin = params.margin_samples(sampling_rate_hz)

    def chunk_noise(start: int) -> np.ndarray | None:
        lo, hi = max(0, start - margin), min(n_samples, start + length + margin)
        x = preprocess(read(lo, hi), sampling_rate_hz, params, gain_uv, offset_uv)
        core = x[start - lo : start - lo + length]
        return noise_levels(core) if core.shape[0] > 0 else None

    levels = [lv for lv in map_(chunk_noise, noise_chunk_starts(n_samples, sampling_rate_hz, params)) if lv is not None]
    return np.median(np.stack(levels), axis=0).astype(np.float32)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels for the common input types, e.g. while
    building a container image, so the first shard does not pay for compilation."""
    rng = np.random.default_rng(0)
    locations = np.stack([np.arange(8) * 20.0, np.zeros(8)], axis=1)
    for dtype in (np.int16, np.uint16, np.float32):
        traces = (rng.standard_normal((4_000, 8)) * 50).astype(dtype)
        detect_spikes(traces, 20_000.0, channel_locations_um=locations)
