"""Spike detection: a pure function of arrays and parameters (no AWS, no files).

Pipeline, with SpikeInterface's defaults and names:
    raw -> microvolts (float32) -> bandpass (Butterworth, second-order sections, forward
    and backward) -> common reference (median or mean across channels) -> an artefact that
    clips several electrodes at once is subtracted (a template per stimulus, fitted to each
    electrode: `filters.SUBTRACT_*`) -> what must not be read is silenced
    (`filters.blank`: hot and dead electrodes, electrodes that live at the converter's rails,
    an artefact's core, and around any other clipped sample and any artefact left until the
    trace is quiet) -> threshold in
    multiples of the per-channel noise (MAD / 0.6745) -> a peak must be the extreme within
    +-dead_time_ms on its channel and on every channel within radius_um (spatial
    de-duplication: one spike seen on five electrodes is one row, on its peak channel); a
    spike under the threshold on every electrode is found where the traces summed over nearby
    electrodes pass pool_threshold_mad times their noise (pooled detection, `peaks.find_peaks`)
    -> peeling (params.peel, on by default): every spike found is subtracted as its best
    fitting template, learned once from the whole recording's isolated spikes, and what
    remains is searched again at peel_threshold_mad (and pooled at peel_pool_threshold_mad),
    for spikes that a larger one nearby hid within the de-duplication window. Peeling must
    not invent spikes: a spike is subtracted only where its template explains it
    (peel_min_share), a spike found in what
    remains is kept only where a template explains it (peel_accept_share), and a template
    that leaves spike-sized peaks on its own isolated spikes is not used (peel_max_invented).

Exact borders: a caller that detects a window [start, stop) passes the traces from
start - margin to stop + margin (`DetectionParams.margin_samples`) and `valid=(start, stop)`
in the coordinates of that array; peaks outside `valid` belong to the neighbouring window.
Windows cut in different places give the same spikes up to the float32 rounding of the
filter (about 1e-3 uV, whatever the margin): only a peak that close to its threshold can
come out differently (1 of 77,451 spikes on 64 channels x 240 s, 1 s against 4 s windows).
With peeling the margin also covers one template's reach beyond the window, so a spike
subtracted there is subtracted in both windows; a chain of overlapping spikes longer than
that (several spikes each within 4.5 ms of the next, on nearby electrodes) can differ, and
so can spikes beside an artefact subtracted across a border (its fit reaches 15 ms before and
50 ms after it, beyond the margin: 1-5 of 7,388 spikes on the hybrid bench, 1 s windows
against 2.5 and 4 s).
Traces are time-major (samples x channels), as recorded; the kernels (`science/kernels/`) run
over channels in the inner loop and keep float32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..table import SpikeTable
from ..waveforms import Waveforms
from .filters import (
    Made,
    blank,
    common_mode_power,
    filter_sos,
    noise_levels,
    preprocess,
    reference_gains,
    reference_sums,
    strong_common_mode,
)
from .matched import learning_block
from .matched import wanted as matched_pooling
from .params import REFERENCE_CHUNKS, DetectionParams
from .peaks import find_peaks, pooled_noise
from .peeling import peel_and_detect
from .templates import ChunkSnippets, Templates, _Room, _snippets, _templates, learn_templates


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
    templates: Templates | None = None,
    first_sample: int = 0,
    waveforms: Waveforms | None = None,
    silenced: np.ndarray | None = None,
    artefacts: list[int] | None = None,
    reference_gains: np.ndarray | None = None,
    pool_noise: np.ndarray | None = None,
) -> SpikeTable:
    """Detect spikes in traces (samples x channels, as recorded; raw integers with their gain
    to microvolts, or float microvolts with the default gain 1).

    noise_uv: per-channel noise from the whole recording (`estimate_noise`); when omitted it
    is measured on these traces. templates: spike templates from the whole recording
    (`learn_recording`), for params.peel; when omitted they are learned from these traces.
    valid: keep only peaks in [start, stop) of this array. Sample indices are relative to the
    array's first sample. first_sample: that sample's index in the recording (peeling works
    through the recording in blocks of time counted from its start, so that windows agree).
    waveforms: if given, the spikes' filtered waveforms are summed into it (before peeling
    subtracts anything; the spikes peeling finds are not in it).
    silenced: if given (int64 per channel), the samples in `valid` that `blank` silenced around
    clipped samples and stimulation artefacts are counted into it. artefacts: if given, each
    stimulation artefact that begins in `valid` is appended to it (its first sample, counted
    from the recording's start: `first_sample` + its index here). reference_gains: each
    channel's share of the common reference, from the whole recording (`learn_recording`).
    pool_noise: the noise of the traces pooled over nearby electrodes, from the whole recording
    (`learn_recording`); when omitted it is measured on these traces.
    """
    ref = np.empty(traces.shape[0], np.float32)
    x = preprocess(traces, sampling_rate_hz, params, gain_uv, offset_uv, reference_gains=reference_gains,
                   reference_out=ref)
    noise = noise_levels(x) if noise_uv is None else noise_uv
    blank(x, traces, noise, sampling_rate_hz, artefact_mad=params.artefact_mad, silenced=silenced, valid=valid,
          first_sample=first_sample, artefacts=artefacts,
          made=Made(filter_sos(sampling_rate_hz, params), gain_uv, offset_uv, params.reference, ref, reference_gains),
          channel_locations_um=channel_locations_um)
    if pool_noise is None:
        pool_noise = pooled_noise(x, noise, channel_locations_um, params)
    if not params.peel:
        found = find_peaks(x, sampling_rate_hz, params, noise_uv=noise, channel_locations_um=channel_locations_um,
                           valid=valid, pool_noise=pool_noise)
        if waveforms is not None:
            waveforms.add(x, found.sample_index, found.channel_index)
        return found
    if templates is None:
        templates = learn_templates([x], sampling_rate_hz, params, noise, channel_locations_um, pool_noise)
    return peel_and_detect(x, sampling_rate_hz, params, noise_uv=noise, channel_locations_um=channel_locations_um,
                           templates=templates, valid=valid, first_sample=first_sample, waveforms=waveforms,
                           pool_noise=pool_noise)


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


class Learned(NamedTuple):
    """What every window of a recording needs from the whole of it."""

    noise_uv: np.ndarray
    templates: Templates | None
    reference_gains: np.ndarray | None  # each channel's share of the common reference; None: all of it
    pool_noise: np.ndarray | None = None  # the pooled traces' noise (`peaks.pooled_noise`); None: no pooling


def learn_recording(read, n_samples: int, sampling_rate_hz: float, params: DetectionParams,
                    gain_uv: float = 1.0, offset_uv: float = 0.0, *, channel_locations_um: np.ndarray | None = None,
                    map_=map) -> Learned:
    """What every window of a recording needs from the whole of it, from one pass over random
    chunks: the per-channel noise (the median over chunks of each chunk's MAD/0.6745; bounded
    memory, unlike pooling every chunk) and, with params.peel, the templates (learned from
    each chunk's isolated spikes, found with that chunk's noise). Where the chunks show strong
    common-mode noise (`strong_common_mode`), each channel's gain on the reference is measured
    and every chunk is learned with it. REFERENCE_CHUNKS of the chunks are learned first and
    decide: each also measures its share of the gains when its own reference is strong, so a
    recording with common-mode noise learns those few twice, not every chunk, and one
    without costs nothing more. `read(start, stop)` returns raw samples x channels; chunks
    are read with margins so filtering edges do not count. `map_` may be a thread pool's
    map: the kernels release the GIL."""
    length = int(params.noise_chunk_s * sampling_rate_hz)
    margin = params.margin_samples(sampling_rate_hz)
    starts = noise_chunk_starts(n_samples, sampling_rate_hz, params)

    def referenced(i: int, gains: np.ndarray | None):
        """(raw, preprocessed, reference, the core's slice, first sample read) of chunk i."""
        start = starts[i]
        lo, hi = max(0, start - margin), min(n_samples, start + length + margin)
        raw = read(lo, hi)
        ref = np.empty(raw.shape[0], np.float32)
        x = preprocess(raw, sampling_rate_hz, params, gain_uv, offset_uv, reference_gains=gains, reference_out=ref)
        return raw, x, ref, slice(start - lo, start - lo + length), lo

    def chunk(i: int, gains: np.ndarray | None, room: _Room) -> _Chunk | None:
        raw, x, ref, core_at, lo = referenced(i, gains)
        core = x[core_at]
        if core.shape[0] == 0:
            return None
        levels, common = noise_levels(core), common_mode_power(ref[core_at])
        # measured before blanking, on the chunk referenced whole (gains None)
        sums = (reference_sums(core, ref[core_at])
                if gains is None and params.reference != "none" and strong_common_mode([common], levels) else None)
        if not params.peel:
            return _Chunk(i, levels, common, sums, pooled_noise(core, levels, channel_locations_um, params))
        # templates (and the pooled traces' noise) are learned from what detection reads
        blank(x, raw, levels, sampling_rate_hz, artefact_mad=params.artefact_mad, first_sample=lo,
              made=Made(filter_sos(sampling_rate_hz, params), gain_uv, offset_uv, params.reference, ref, gains),
              channel_locations_um=channel_locations_um)
        found = _snippets(core, sampling_rate_hz, params, levels, channel_locations_um, room.left(i))
        room.add(i, found.counts)
        return _Chunk(i, levels, common, sums, pooled_noise(core, levels, channel_locations_um, params), found,
                      learning_block(core, matched_pooling(params, channel_locations_um, core.shape[1])))

    def learn(which, gains: np.ndarray | None, room: _Room) -> list[_Chunk]:
        return [r for r in map_(lambda i: chunk(i, gains, room), which) if r is not None]

    def sums(i: int):
        _, x, ref, core_at, _ = referenced(i, None)
        return reference_sums(x[core_at], ref[core_at])

    picked = [int(i) for i in np.unique(np.linspace(0, len(starts) - 1, min(REFERENCE_CHUNKS, len(starts))).round())]
    gains, room = None, _Room(len(starts))
    results = learn(picked, None, room)
    if (params.reference != "none" and results
            and strong_common_mode([r.common for r in results], _median_of([r.levels for r in results]))):
        gains = reference_gains([r.sums if r.sums is not None else sums(r.i) for r in results])
        results = learn(range(len(starts)), gains, _Room(len(starts)))  # what the few learned is not kept
    else:
        results = sorted(results + learn([i for i in range(len(starts)) if i not in picked], None, room),
                         key=lambda r: r.i)
    noise = _median_of([r.levels for r in results])
    pooled = None if results[0].pooled is None else _median_of([r.pooled for r in results])
    if not params.peel:
        return Learned(noise, None, gains, pooled)
    templates = _templates((r.found for r in results), sampling_rate_hz, params, channel_locations_um, noise.size,
                           noise)
    matched = matched_pooling(params, channel_locations_um, noise.size)
    return Learned(noise, templates.with_matched_noise(sampling_rate_hz, [r.block for r in results], noise, pooled,
                                                       matched), gains, pooled)


class _Chunk(NamedTuple):
    """What one learning chunk gives (`learn_recording`)."""

    i: int
    levels: np.ndarray
    common: float  # the reference's variance
    sums: tuple[np.ndarray, np.ndarray] | None  # its share of the reference gains, where it was measured
    pooled: np.ndarray | None
    found: ChunkSnippets | None = None  # its snippets, with peeling
    block: np.ndarray | None = None  # its share of the matched filter's noise (`matched.learning_block`)


def _median_of(levels: list[np.ndarray]) -> np.ndarray:
    """The median over chunks of per-channel levels, as np.median computes it (the mean of the
    middle two), without np.median's import of numpy.ma (a one-shot command's time, holding
    the GIL)."""
    stack = np.sort(np.stack(levels), axis=0)
    return ((stack[(len(stack) - 1) // 2] + stack[len(stack) // 2]) / np.float32(2)).astype(np.float32)
