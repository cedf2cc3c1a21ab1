"""Spike detection: a pure function of arrays and parameters (no AWS, no files).

Pipeline, with SpikeInterface's defaults and names:
    raw -> microvolts (float32) -> bandpass (Butterworth, second-order sections, forward
    and backward) -> common reference (median or mean across channels) -> threshold in
    multiples of the per-channel noise (MAD / 0.6745) -> a peak must be the extreme within
    +-dead_time_ms on its channel and on every channel within radius_um (spatial
    de-duplication: one spike seen on five electrodes is one row, on its peak channel)
    -> peeling (params.peel, on by default): every spike found is subtracted as its best
    fitting template, learned once from the whole recording's isolated spikes, and what
    remains is searched again at peel_threshold_mad, for spikes that a larger one nearby
    hid within the de-duplication window.

Exact borders: a caller that detects a window [start, stop) passes the traces from
start - margin to stop + margin (`DetectionParams.margin_samples`) and `valid=(start, stop)`
in the coordinates of that array; peaks outside `valid` belong to the neighbouring window.
Windows cut in different places give the same spikes up to the float32 rounding of the
filter (about 1e-3 uV, whatever the margin): only a peak that close to its threshold can
come out differently (1 of 77,451 spikes on 64 channels x 240 s, 1 s against 4 s windows).
With peeling the margin also covers one template's reach beyond the window, so a spike
subtracted there is subtracted in both windows; a chain of overlapping spikes longer than
that (several spikes each within 4.5 ms of the next, on nearby electrodes) can differ.
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

from .kernels_aot import load as _load_kernels

kernels = _load_kernels()  # compiled ahead of time when built (`make setup`), else numba's JIT

MAD_TO_SIGMA = 0.6744897501960817  # MAD of a standard normal
F16_MAX = float(np.finfo(np.float16).max)

# Peeling (see `Templates`). Fixed rather than parameters: measured on the bench recordings,
# and none trades recall for precision the way peel_threshold_mad does.
TEMPLATE_BEFORE_MS, TEMPLATE_AFTER_MS = 1.5, 3.0  # the filtered spike's extent around its peak
TEMPLATE_MAX_CHANNELS = 40  # nearest channels within peel_radius_um a template spans
TEMPLATE_MIN_SPIKES = 10  # isolated spikes a peak channel needs for templates of its own
TEMPLATE_MAX_CLUSTERS = 4  # templates per peak channel (units that peak on the same electrode)
TEMPLATE_MIN_SHARE = 0.1  # a template needs this share of its channel's spikes: fewer are coincidences
TEMPLATE_SNIPPET_BUDGET = 16_384  # isolated spikes kept for learning, over all channels
SNIPPET_BATCH = 2_048  # spikes gathered at once (float32: 44 MB at 30 kHz)
ISOLATION_UM = 100.0  # a learning spike has no other spike this close within its window
CANDIDATE_UM = 30.0  # a spike is fitted with the templates of peak channels this close (nearest neighbours)
PEEL_SHIFT = 1  # samples a template may move to fit
PEEL_FIT_MS = (0.3, 0.7)  # the fit looks this far before and after the peak,
PEEL_FIT_CHANNELS = 40  # on this many channels nearest the template's peak channel
PEEL_SCALE = (0.5, 2.0)  # the fitted amplitude's range, in units of the template
# Spikes are subtracted largest first within blocks of recording time this long, the blocks in
# time order, so the traces a block touches stay in cache (30 % less time on 384 channels, the
# same spikes but a few); blocks start at multiples of it from the recording's start.
PEEL_BLOCK_MS = 20.0
PEEL_RATIO = 0.8  # a peak in what remains must be this large against what was subtracted there


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
    peel: bool = Field(True, description="learn spike templates from the recording, subtract the spikes found and "
                       "detect again on what remains: finds spikes hidden under a larger one nearby")
    peel_threshold_mad: float = Field(
        4.75, gt=0, description="threshold on what remains after subtraction, in multiples of the noise")
    peel_radius_um: float = Field(200.0, gt=0, description="a template spans the channels within this radius")
    noise_chunks: int = Field(20, ge=1, description="random chunks used to estimate the noise (and learn templates)")
    noise_chunk_s: float = Field(0.5, gt=0, description="length of each noise chunk")

    def dead_time_samples(self, sampling_rate_hz: float) -> int:
        return int(round(self.dead_time_ms * 1e-3 * sampling_rate_hz))

    def margin_samples(self, sampling_rate_hz: float) -> int:
        """Samples to read on each side of a window so its result equals the whole recording's:
        five time constants of the lowest filter frequency, plus the longest look-around."""
        filter_margin = int(math.ceil(5.0 / self.freq_min_hz * sampling_rate_hz))
        look = max(self.dead_time_ms, self.spatial_dead_time_ms, self.echo_window_ms)
        peel = peel_reach(sampling_rate_hz) if self.peel else 0
        return filter_margin + int(math.ceil(look * 1e-3 * sampling_rate_hz)) + peel + 1

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
        kernels.bandpass_reference(raw, float(gain_uv), float(offset_uv), sos, _REFERENCE[params.reference],
                                   median_network(raw.shape[1]), out)
    return out


NETWORK_MAX_CHANNELS = 64  # beyond, the network grows as n log^2 n and the bracketed select wins


@lru_cache(maxsize=16)
def median_network(n_channels: int) -> np.ndarray:
    """Compare-exchange pairs (i < j: wire i gets the smaller) that bring the median of
    n_channels values to wires (n-1)//2 and n//2: Batcher's odd-even merge sort over the next
    power of two (the extra wires hold +inf), keeping only the pairs those two outputs depend
    on (445 of 543 for 64). Empty beyond NETWORK_MAX_CHANNELS: the kernel then selects."""
    if n_channels > NETWORK_MAX_CHANNELS or n_channels < 2:
        return np.zeros((0, 2), np.int64)
    size = 1 << (n_channels - 1).bit_length()
    pairs = []
    p = 1
    while p < size:  # Knuth's formulation (TAOCP 5.3.4, algorithm M)
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed = {(n_channels - 1) // 2, n_channels // 2}
    kept = []
    for i, j in reversed(pairs):
        if i in needed or j in needed:
            kept.append((i, j))
            needed.update((i, j))
    net = np.array(kept[::-1], np.int64).reshape(-1, 2)
    net.flags.writeable = False  # shared by every call
    return net


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
    strided: 40 ms of every start on 1024 channels)."""
    d2 = np.zeros((loc.shape[0], loc.shape[0]))
    for k in range(loc.shape[1]):
        diff = np.subtract.outer(loc[:, k], loc[:, k])
        d2 += diff * diff
    return d2


def _rank_in_row(rows: np.ndarray) -> np.ndarray:
    """For sorted row numbers: each entry's position within its row."""
    return np.arange(rows.size) - np.searchsorted(rows, rows, "left")


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
    templates: "Templates | None" = None,
    first_sample: int = 0,
) -> SpikeTable:
    """Detect spikes in traces (samples x channels, as recorded; raw integers with their gain
    to microvolts, or float microvolts with the default gain 1).

    noise_uv: per-channel noise from the whole recording (`estimate_noise`); when omitted it
    is measured on these traces. templates: spike templates from the whole recording
    (`learn_recording`), for params.peel; when omitted they are learned from these traces.
    valid: keep only peaks in [start, stop) of this array. Sample indices are relative to the
    array's first sample. first_sample: that sample's index in the recording (peeling works
    through the recording in blocks of time counted from its start, so that windows agree).
    """
    x = preprocess(traces, sampling_rate_hz, params, gain_uv, offset_uv)
    noise = noise_levels(x) if noise_uv is None else noise_uv
    if not params.peel:
        return find_peaks(x, sampling_rate_hz, params, noise_uv=noise, channel_locations_um=channel_locations_um,
                          valid=valid)
    if templates is None:
        templates = learn_templates([x], sampling_rate_hz, params, noise, channel_locations_um)
    return peel_and_detect(x, sampling_rate_hz, params, noise_uv=noise, channel_locations_um=channel_locations_um,
                           templates=templates, valid=valid, first_sample=first_sample)


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
    """Per-channel noise over the whole recording (see `learn_recording`)."""
    return learn_recording(read, n_samples, sampling_rate_hz, params.model_copy(update={"peel": False}),
                           gain_uv, offset_uv, map_=map_)[0]


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels for the common input types, e.g. while
    building a container image, so the first shard does not pay for compilation."""
    rng = np.random.default_rng(0)
    locations = np.stack([np.arange(8) * 20.0, np.zeros(8)], axis=1)
    # 20 large spikes on channel 3: enough to learn a template, so the peeling kernel compiles too
    spikes = np.zeros((4_000, 8))
    spikes[100::200, 3] = -2_000.0
    spikes = np.apply_along_axis(np.convolve, 0, spikes, np.hanning(9), "same")
    for dtype in (np.int16, np.uint16, np.float32):
        traces = (rng.standard_normal((4_000, 8)) * 50 + spikes + (5_000 if dtype == np.uint16 else 0)).astype(dtype)
        detect_spikes(traces, 20_000.0, channel_locations_um=locations)


# --- Peeling: spikes hidden under a larger one nearby -------------------------------------
#
# Two neurons that fire within a fraction of a millisecond on nearby electrodes make one
# peak: spatial de-duplication keeps the larger spike and loses the other (about 2.5 % of the
# spikes on the bench recordings). Peeling learns each peak channel's spike waveforms from
# the recording (templates: means of k-means clusters of isolated spikes), subtracts every
# spike found, largest first, as its best-fitting template, and detects again on what
# remains. A peak in what remains is kept unless it is the same spike's leftover: on the
# channel of a spike found within the dead time, or small against what was subtracted there.


def peel_reach(sampling_rate_hz: float) -> int:
    """Samples a spike's subtraction reaches: a template's width plus its shift each way."""
    return _template_before(sampling_rate_hz) + _template_after(sampling_rate_hz) + 1 + 2 * PEEL_SHIFT


def _template_before(fs: float) -> int:
    return int(round(TEMPLATE_BEFORE_MS * 1e-3 * fs))


def _template_after(fs: float) -> int:
    return int(round(TEMPLATE_AFTER_MS * 1e-3 * fs))


@dataclass(frozen=True)
class Templates:
    """Spike templates of a recording: waveforms[j] (width x TEMPLATE_MAX_CHANNELS, float32 uV,
    preprocessed) over channels support[j, :n_support[j]], sample `before` on the peak of
    peak channel anchor[j]."""

    waveforms: np.ndarray
    support: np.ndarray
    n_support: np.ndarray
    anchor: np.ndarray
    before: int

    def __len__(self) -> int:
        return int(self.anchor.size)

    @staticmethod
    def empty(width: int = 1, before: int = 0) -> "Templates":
        return Templates(np.zeros((0, width, TEMPLATE_MAX_CHANNELS), np.float32),
                         np.zeros((0, TEMPLATE_MAX_CHANNELS), np.int32), np.zeros(0, np.int32),
                         np.zeros(0, np.int32), before)

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        np.savez(buf, waveforms=self.waveforms, support=self.support, n_support=self.n_support,
                 anchor=self.anchor, before=np.int64(self.before))
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> "Templates":
        import io

        z = np.load(io.BytesIO(data))
        return Templates(z["waveforms"].astype(np.float32), z["support"].astype(np.int32),
                         z["n_support"].astype(np.int32), z["anchor"].astype(np.int32), int(z["before"]))


@dataclass(frozen=True)
class _Layout:
    distances: np.ndarray  # channels x channels, um
    support: np.ndarray  # channels x TEMPLATE_MAX_CHANNELS: nearest channels within the radius, nearest first
    n_support: np.ndarray


def _layout(channel_locations_um: np.ndarray | None, n_channels: int, radius_um: float) -> _Layout:
    if channel_locations_um is None:  # no geometry: every channel alone
        loc = np.stack([np.arange(n_channels) * 1e6, np.zeros(n_channels)], axis=1)
    else:
        loc = np.ascontiguousarray(channel_locations_um, dtype=np.float64).reshape(n_channels, -1)
    return _layout_of(loc.tobytes(), n_channels, float(radius_um))


@lru_cache(maxsize=8)
def _layout_of(locations: bytes, n_channels: int, radius_um: float) -> _Layout:
    loc = np.frombuffer(locations, dtype=np.float64).reshape(n_channels, -1)
    distances = np.sqrt(_squared_distances(loc))
    rows, cols = np.nonzero(distances <= radius_um)
    order = np.lexsort((cols, distances[rows, cols], rows))  # per channel: nearest first, ties by index
    rows, cols = rows[order], cols[order]
    rank = _rank_in_row(rows)
    kept = rank < TEMPLATE_MAX_CHANNELS
    support = np.zeros((n_channels, TEMPLATE_MAX_CHANNELS), np.int32)
    support[rows[kept], rank[kept]] = cols[kept]
    n_support = np.bincount(rows[kept], minlength=n_channels).astype(np.int32)
    return _Layout(distances, support, n_support)


def learn_templates(chunks, sampling_rate_hz: float, params: DetectionParams, noise_uv: np.ndarray,
                    channel_locations_um: np.ndarray | None) -> Templates:
    """Templates from preprocessed chunks (samples x channels arrays) of one recording."""
    per_chunk = [_snippets(x, sampling_rate_hz, params, noise_uv, channel_locations_um) for x in chunks]
    n_channels = chunks[0].shape[1] if per_chunk else 1
    return _templates(per_chunk, sampling_rate_hz, params, channel_locations_um, n_channels)


def _snippets(x: np.ndarray, sampling_rate_hz: float, params: DetectionParams, noise_uv: np.ndarray,
              channel_locations_um: np.ndarray | None) -> dict[int, np.ndarray]:
    """Isolated spikes of one preprocessed chunk, per peak channel: the first few (in time) as
    an array spikes x width x support. Gathered at once, not spike by spike in Python: that
    held the GIL for 1 s of 7 on 1024 channels, time no other thread could use."""
    before, after = _template_before(sampling_rate_hz), _template_after(sampling_rate_hz)
    n_samples, n_channels = x.shape
    layout = _layout(channel_locations_um, n_channels, params.peel_radius_um)
    found = find_peaks(x, sampling_rate_hz, params, noise_uv=noise_uv, channel_locations_um=channel_locations_um,
                       valid=(before, n_samples - after))
    alone = _isolated(found.sample_index, found.channel_index, layout.distances, before + after)
    t, c = found.sample_index[alone], found.channel_index[alone]
    by_channel = np.argsort(c, kind="stable")  # time order kept within a channel
    t, c = t[by_channel], c[by_channel]
    first = np.searchsorted(c, c, "left")
    kept = np.arange(c.size) - first < _snippet_cap(n_channels)
    t, c = t[kept], c[kept]
    if not t.size:
        return {}
    # spikes x width x TEMPLATE_MAX_CHANNELS, then each channel's own support. float16: a
    # template is a mean of these, and half the memory (the budget of snippets is 16 K x 40
    # channels x the width: 178 MB at 30 kHz, not 356); clipped: an artefact, not inf.
    # In batches: float32 gathers of a few thousand spikes at most, whatever the chunk holds.
    offsets = np.arange(-before, after + 1)[None, :, None]
    snippets = np.empty((t.size, before + after + 1, TEMPLATE_MAX_CHANNELS), np.float16)
    for a in range(0, t.size, SNIPPET_BATCH):
        b = min(a + SNIPPET_BATCH, t.size)
        batch = x[t[a:b, None, None] + offsets, layout.support[c[a:b]][:, None, :]]
        snippets[a:b] = np.clip(batch, -F16_MAX, F16_MAX, out=batch)
    channels, starts = np.unique(c, return_index=True)
    stops = np.append(starts[1:], c.size)
    return {int(ch): snippets[a:b, :, : layout.n_support[ch]] for ch, a, b in zip(channels, starts, stops)}


def _snippet_cap(n_channels: int) -> int:
    return max(TEMPLATE_MIN_SPIKES, TEMPLATE_SNIPPET_BUDGET // n_channels)


def _templates(per_chunk, sampling_rate_hz: float, params: DetectionParams,
               channel_locations_um: np.ndarray | None, n_channels: int) -> Templates:
    """Per peak channel, the means of up to TEMPLATE_MAX_CLUSTERS k-means clusters of its
    isolated spikes (the first ones in chunk order, up to a memory budget). Deterministic:
    every worker learns the same templates."""
    before, after = _template_before(sampling_rate_hz), _template_after(sampling_rate_hz)
    width = before + after + 1
    layout = _layout(channel_locations_um, n_channels, params.peel_radius_um)
    cap = _snippet_cap(n_channels)
    snippets: dict[int, list[np.ndarray]] = {}
    for chunk in per_chunk:
        for c, found in chunk.items():
            kept = snippets.setdefault(c, [])
            kept.append(found[: max(0, cap - sum(map(len, kept)))])
    waveforms, anchors = [], []
    rng = np.random.default_rng(0)
    for c in sorted(snippets):
        flat = np.concatenate(snippets[c])
        if flat.shape[0] < TEMPLATE_MIN_SPIKES:
            continue
        flat = flat.reshape(flat.shape[0], -1).astype(np.float64)
        k = max(1, min(TEMPLATE_MAX_CLUSTERS, flat.shape[0] // (2 * TEMPLATE_MIN_SPIKES)))
        labels = _kmeans(flat, k, rng) if k > 1 else np.zeros(flat.shape[0], np.int64)
        for j in range(k):
            members = flat[labels == j]
            if members.shape[0] >= max(TEMPLATE_MIN_SPIKES // 2, TEMPLATE_MIN_SHARE * flat.shape[0]):
                w = np.zeros((width, TEMPLATE_MAX_CHANNELS), np.float32)
                w[:, : layout.n_support[c]] = members.mean(0).reshape(width, -1)
                waveforms.append(w)
                anchors.append(c)
    if not waveforms:
        return Templates.empty(width, before)
    anchor = np.array(anchors, np.int32)
    return Templates(np.stack(waveforms), layout.support[anchor].copy(), layout.n_support[anchor].copy(), anchor,
                     before)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 20) -> np.ndarray:
    """Cluster labels of points (n x d) by k-means with k-means++ seeding. Written out rather
    than scipy.cluster.vq.kmeans2: importing scipy.cluster costs 0.34 s of every command's
    start-up, for a few dozen points per channel."""
    norms = (points**2).sum(1)

    def sq_distances(centres: np.ndarray) -> np.ndarray:  # n x len(centres), by one product
        return norms[:, None] - 2.0 * points @ centres.T + (centres**2).sum(1)[None, :]

    centres = points[[rng.integers(points.shape[0])]]
    for _ in range(1, k):
        d2 = np.maximum(sq_distances(centres).min(1), 0.0)
        pick = rng.choice(points.shape[0], p=d2 / d2.sum()) if d2.sum() > 0 else 0
        centres = np.vstack([centres, points[pick]])
    labels = np.full(points.shape[0], -1)
    for _ in range(rounds):
        new = sq_distances(centres).argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if (labels == j).any():
                centres[j] = points[labels == j].mean(0)
    return labels


def _isolated(t: np.ndarray, c: np.ndarray, distances: np.ndarray, window: int) -> np.ndarray:
    """Which spikes (t, c) (sorted by time) have no other spike within ISOLATION_UM and
    +-window samples."""
    lo = np.searchsorted(t, t - window, "left")
    hi = np.searchsorted(t, t + window, "right")
    n = hi - lo
    first = np.repeat(np.arange(t.size), n)  # (spike, other spike) pairs close in time
    second = np.arange(first.size) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
    crowded = (first != second) & (distances[c[first], c[second]] <= ISOLATION_UM)
    alone = np.ones(t.size, bool)
    alone[first[crowded]] = False
    return alone


def _candidates(templates: Templates, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists: the templates to try for a spike peaking on channel c are
    cand[first[c]:first[c + 1]], those whose peak channel lies within CANDIDATE_UM."""
    near = layout.distances[:, templates.anchor] <= CANDIDATE_UM  # channels x templates
    first = np.zeros(near.shape[0] + 1, np.int64)
    first[1:] = np.cumsum(near.sum(1))
    return first, np.nonzero(near)[1].astype(np.int64)


def peel_and_detect(preprocessed: np.ndarray, sampling_rate_hz: float, params: DetectionParams, *,
                    noise_uv: np.ndarray, channel_locations_um: np.ndarray | None, templates: Templates,
                    valid: tuple[int, int] | None = None, first_sample: int = 0) -> SpikeTable:
    """Detection with peeling on preprocessed traces (modified in place: what remains);
    first_sample as for `detect_spikes`.
    Spikes found beyond `valid` by up to `peel_reach` are subtracted too, so a window with
    margins gives what the whole recording gives; that holds unless a chain of overlapping
    spikes longer than the margin decides which is subtracted first."""
    x = np.ascontiguousarray(preprocessed, dtype=np.float32)
    n_samples, n_channels = x.shape
    start, stop = valid if valid is not None else (0, n_samples)
    reach = peel_reach(sampling_rate_hz)
    found = find_peaks(x, sampling_rate_hz, params, noise_uv=noise_uv, channel_locations_um=channel_locations_um,
                       valid=(max(0, start - reach), min(n_samples, stop + reach)))
    inside = (found.sample_index >= start) & (found.sample_index < stop)
    if len(templates) == 0 or len(found) == 0:
        return SpikeTable(found.sample_index[inside], found.channel_index[inside], found.amplitude_uv[inside])
    block = max(1, int(round(PEEL_BLOCK_MS * 1e-3 * sampling_rate_hz)))
    order = np.lexsort((found.channel_index, found.sample_index, -np.abs(found.amplitude_uv),
                        (found.sample_index + first_sample) // block))
    first, cand = _candidates(templates, _layout(channel_locations_um, n_channels, params.peel_radius_um))
    to_samples = lambda ms: int(round(ms * 1e-3 * sampling_rate_hz))  # noqa: E731
    n = len(found)
    placed = np.zeros(n, np.int64), np.full(n, -1, np.int32), np.zeros(n, np.float32)
    kernels.peel(x, found.sample_index[order], found.channel_index[order], templates.waveforms,
                 templates.support, templates.n_support, first, cand, templates.before, PEEL_SHIFT,
                 PEEL_SCALE[0], PEEL_SCALE[1], to_samples(PEEL_FIT_MS[0]), to_samples(PEEL_FIT_MS[1]),
                 PEEL_FIT_CHANNELS, *placed)
    hidden = find_peaks(x, sampling_rate_hz, params.model_copy(update={"threshold_mad": params.peel_threshold_mad}),
                        noise_uv=noise_uv, channel_locations_um=channel_locations_um, valid=(start, stop))
    t, c = hidden.sample_index, hidden.channel_index
    used = placed[1] >= 0
    by_start = np.argsort(placed[0][used], kind="stable")
    removed = kernels.subtracted_at(t, c, *(p[used][by_start] for p in placed), templates.waveforms,
                                    templates.support, templates.n_support)
    keep = np.abs(hidden.amplitude_uv) >= PEEL_RATIO * np.abs(removed)
    keep &= ~_near_on_channel(t, c, found.sample_index, found.channel_index, params.dead_time_samples(sampling_rate_hz))
    return SpikeTable.concat([
        SpikeTable(found.sample_index[inside], found.channel_index[inside], found.amplitude_uv[inside]),
        SpikeTable(t[keep], c[keep], hidden.amplitude_uv[keep])])


def _near_on_channel(t: np.ndarray, c: np.ndarray, t_found: np.ndarray, c_found: np.ndarray, dead: int) -> np.ndarray:
    """For each (t, c): a found spike on channel c within +-dead samples (the found spikes of a
    channel are more than `dead` apart, so the two nearest in time decide)."""
    span = np.int64(max(int(t.max(initial=0)), int(t_found.max(initial=0))) + dead + 2)
    keys = np.sort(c_found.astype(np.int64) * span + t_found)
    k = c.astype(np.int64) * span + t
    i = np.searchsorted(keys, k)
    near = np.zeros(k.size, bool)
    for j in (i - 1, i):
        ok = (j >= 0) & (j < keys.size)
        near[ok] |= np.abs(keys[j[ok]] - k[ok]) <= dead
    return near


def learn_recording(read, n_samples: int, sampling_rate_hz: float, params: DetectionParams,
                    gain_uv: float = 1.0, offset_uv: float = 0.0, *, channel_locations_um: np.ndarray | None = None,
                    map_=map) -> tuple[np.ndarray, Templates | None]:
    """What every window of a recording needs from the whole of it, from one pass over random
    chunks: the per-channel noise (the median over chunks of each chunk's MAD/0.6745; bounded
    memory, unlike pooling every chunk) and, with params.peel, the templates (learned from
    each chunk's isolated spikes, found with that chunk's noise). `read(start, stop)` returns
    raw samples x channels; chunks are read with margins so filtering edges do not count.
    `map_` may be a thread pool's map: the kernels release the GIL."""
    length = int(params.noise_chunk_s * sampling_rate_hz)
    margin = params.margin_samples(sampling_rate_hz)

    def chunk(start: int):
        lo, hi = max(0, start - margin), min(n_samples, start + length + margin)
        x = preprocess(read(lo, hi), sampling_rate_hz, params, gain_uv, offset_uv)
        core = x[start - lo : start - lo + length]
        if core.shape[0] == 0:
            return None
        levels = noise_levels(core)
        found = _snippets(core, sampling_rate_hz, params, levels, channel_locations_um) if params.peel else {}
        return levels, found

    results = [r for r in map_(chunk, noise_chunk_starts(n_samples, sampling_rate_hz, params)) if r is not None]
    # The median of a sorted stack, as np.median computes it (the mean of the middle two), without
    # np.median's import of numpy.ma (6-10 ms of a one-shot command, holding the GIL).
    levels = np.sort(np.stack([levels for levels, _ in results]), axis=0)
    noise = ((levels[(len(levels) - 1) // 2] + levels[len(levels) // 2]) / np.float32(2)).astype(np.float32)
    if not params.peel:
        return noise, None
    return noise, _templates((found for _, found in results), sampling_rate_hz, params, channel_locations_um,
                             noise.size)
