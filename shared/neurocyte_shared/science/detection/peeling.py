"""Peeling: subtract every spike found as its best-fitting template, detect again on what
remains."""

from __future__ import annotations

import numpy as np

from ..arrays import ranges
from ..table import SpikeTable
from ..waveforms import Waveforms
from . import _kernels
from .matched import find_matched, matched_kernel, wanted
from .params import (
    CANDIDATE_UM,
    PEEL_APART_MS,
    PEEL_BLOCK_MS,
    PEEL_ECHO_RATIO,
    PEEL_FIT_CHANNELS,
    PEEL_FIT_MS,
    PEEL_OTHERS_SHARE,
    PEEL_RATIO,
    PEEL_SCALE,
    PEEL_SHIFT,
    DetectionParams,
    peel_reach,
)
from .peaks import find_peaks
from .templates import Templates, _Layout, _layout

# --- Peeling: spikes hidden under a larger one nearby -------------------------------------
#
# Two neurons that fire within a fraction of a millisecond on nearby electrodes make one
# peak: spatial de-duplication keeps the larger spike and loses the other (about 2.5 % of the
# spikes on the bench recordings). Peeling learns each peak channel's spike waveforms from
# the recording (templates: means of k-means clusters of isolated spikes), subtracts every
# spike found, largest first, as its best-fitting template, and detects again on what
# remains. A peak in what remains is kept unless it is the same spike's leftover: on the
# channel of a spike found within the dead time, or small against what was subtracted there.


def _candidates(templates: Templates, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists: the templates to try for a spike peaking on channel c are
    cand[first[c]:first[c + 1]], those whose peak channel lies within CANDIDATE_UM."""
    near = layout.distances[:, templates.anchor] <= CANDIDATE_UM  # channels x templates
    first = np.zeros(near.shape[0] + 1, np.int64)
    first[1:] = np.cumsum(near.sum(1))
    return first, np.nonzero(near)[1].astype(np.int64)


def peel_and_detect(preprocessed: np.ndarray, sampling_rate_hz: float, params: DetectionParams, *,
                    noise_uv: np.ndarray, channel_locations_um: np.ndarray | None, templates: Templates,
                    valid: tuple[int, int] | None = None, first_sample: int = 0,
                    waveforms: Waveforms | None = None, pool_noise: np.ndarray | None = None) -> SpikeTable:
    """Detection with peeling on preprocessed traces (modified in place: what remains);
    first_sample, waveforms and pool_noise as for `detect_spikes`.
    Spikes found beyond `valid` by up to `peel_reach` are subtracted too, so a window with
    margins gives what the whole recording gives; that holds unless a chain of overlapping
    spikes longer than the margin decides which is subtracted first."""
    x = np.ascontiguousarray(preprocessed, dtype=np.float32)
    n_samples, n_channels = x.shape
    start, stop = valid if valid is not None else (0, n_samples)
    reach = peel_reach(sampling_rate_hz)
    found = find_peaks(x, sampling_rate_hz, params, noise_uv=noise_uv, channel_locations_um=channel_locations_um,
                       valid=(max(0, start - reach), min(n_samples, stop + reach)), pool_noise=pool_noise)
    inside = (found.sample_index >= start) & (found.sample_index < stop)
    if len(templates) == 0 or len(found) == 0:
        if waveforms is not None:
            waveforms.add(x, found.sample_index[inside], found.channel_index[inside])
        return SpikeTable(found.sample_index[inside], found.channel_index[inside], found.amplitude_uv[inside])
    # taken before anything is subtracted, summed once it is known which spikes are kept
    taken = None if waveforms is None else waveforms.take(x, found.sample_index[inside], found.channel_index[inside])
    block = max(1, int(round(PEEL_BLOCK_MS * 1e-3 * sampling_rate_hz)))
    order = np.lexsort((found.channel_index, found.sample_index, -np.abs(found.amplitude_uv),
                        (found.sample_index + first_sample) // block))
    layout = _layout(channel_locations_um, n_channels, params.peel_radius_um)
    first, cand = _candidates(templates, layout)
    fit = _Fit(templates, first, cand, sampling_rate_hz, noise_uv)
    placed = fit.subtract(x, found.sample_index[order], found.channel_index[order], params.peel_min_share)
    theirs = np.zeros(len(found), bool)
    theirs[order] = _explained_by_others(x, found.sample_index[order], found.channel_index[order],
                                         found.amplitude_uv[order], placed[1], noise_uv, params)
    if taken is not None:
        waveforms.add_taken(taken, ~theirs[inside])
    inside &= ~theirs
    # What remains is searched as the traces were, pooled detection included (at its own
    # threshold): a spike under the threshold on every electrode, found in the first search
    # only where pooling shows it, may lie beside a larger one that made it an echo there.
    # Subtraction takes a spike's near field away, not its far field beyond the template's
    # electrodes, so a pooled spike in what remains is weighed against the spikes found first
    # too, as PEEL_ECHO_RATIO times their size.
    again = params.model_copy(update={"threshold_mad": params.peel_threshold_mad,
                                      "pool_threshold_mad": params.peel_pool_threshold_mad})
    hidden = find_peaks(x, sampling_rate_hz, again, noise_uv=noise_uv, channel_locations_um=channel_locations_um,
                        valid=(start, stop), pool_noise=pool_noise, earlier=found, earlier_ratio=PEEL_ECHO_RATIO)
    t, c = hidden.sample_index, hidden.channel_index
    used = placed[1] >= 0
    by_start = np.argsort(placed[0][used], kind="stable")
    prior = tuple(p[used][by_start] for p in placed)  # what was subtracted, by start (a copy: refits move it)
    removed = _kernels.kernels.subtracted_at(t, c, *prior, templates.waveforms, templates.support,
                                             templates.n_support)
    keep = np.abs(hidden.amplitude_uv) >= PEEL_RATIO * np.abs(removed)
    keep &= ~_near_found(t, c, found.sample_index, found.channel_index, None,
                         params.dead_time_samples(sampling_rate_hz))
    # A spike found in what remains is kept only where a template explains it, as for the
    # spikes subtracted above (largest first, and subtracted in turn: x is what remains).
    t, c, a = t[keep], c[keep], hidden.amplitude_uv[keep]
    # A spike short of that share is tried once more with the found spike that hid it fitted
    # again (its first fit may have taken part of this one): matching pursuit's refit.
    largest = np.argsort(-np.abs(a), kind="stable")
    explained = np.zeros(t.size, bool)
    explained[largest] = fit.subtract(x, t[largest], c[largest], params.peel_accept_share,
                                      prior=prior, prior_min_share=params.peel_min_share)[1] >= 0
    # The mismatch a found spike's fit leaves lies on its own electrodes at its own time; a spike
    # apart from every spike found cannot be that, and is held to the looser peel_apart_share.
    # After the strict test, so that the spikes passing it are fitted first.
    if params.peel_apart_share < params.peel_accept_share:
        apart = ~explained & ~_near_found(t, c, found.sample_index, found.channel_index, layout.distances,
                                          int(round(PEEL_APART_MS * 1e-3 * sampling_rate_hz)))
        second = np.flatnonzero(apart)[np.argsort(-np.abs(a[apart]), kind="stable")]
        explained[second] = fit.subtract(x, t[second], c[second], params.peel_apart_share,
                                         prior=prior, prior_min_share=params.peel_min_share)[1] >= 0
    t, c, a = t[explained], c[explained], a[explained]
    tables = [SpikeTable(found.sample_index[inside], found.channel_index[inside], found.amplitude_uv[inside]),
              SpikeTable(t, c, a, np.ones(t.size, bool))]
    # Last, what remains of everything subtracted is searched with the matched filter
    # (`matched`): neurons too small for a threshold or a template of their own.
    pool = wanted(params, channel_locations_um, n_channels)
    if pool is not None and templates.matched_noise is not None and pool_noise is not None:
        kernel, at = matched_kernel(templates.waveforms[:, :, 0], templates.before, sampling_rate_hz)
        ft = np.concatenate([found.sample_index, t])
        fc = np.concatenate([found.channel_index, c])
        fz = np.abs(np.concatenate([found.amplitude_uv, a])) / np.asarray(noise_uv, np.float32)[fc]
        mt, mc, ma = find_matched(x, sampling_rate_hz, params, noise_uv=noise_uv, pool=pool,
                                  channel_locations_um=channel_locations_um, pool_noise=pool_noise, kernel=kernel,
                                  at=at, filter_noise=templates.matched_noise, found_t=ft, found_c=fc, found_z=fz,
                                  valid=(start, stop))
        tables.append(SpikeTable(mt, mc, ma, np.ones(mt.size, bool)))
    return SpikeTable.concat(tables)


def _explained_by_others(x: np.ndarray, t: np.ndarray, c: np.ndarray, amplitude_uv: np.ndarray,
                         template: np.ndarray, noise_uv: np.ndarray, params: DetectionParams) -> np.ndarray:
    """Which found spikes (t, c) were the others': no template of their own was subtracted
    (template -1), and in what remains, x with the spikes around them subtracted, their peak
    (within a sample) has fallen by PEEL_OTHERS_SHARE of it or more, below peel_threshold_mad
    x the noise. Such a crossing was the far field or late phase of larger spikes nearby, or
    noise on top of it (matching pursuit: a spike is kept where what the larger ones explain
    leaves it standing)."""
    n = x.shape[0]
    around = np.stack([x[np.clip(t + k, 0, n - 1), c] for k in (-1, 0, 1)])
    sign = {"neg": -1.0, "pos": 1.0}.get(params.peak_sign)  # None: both
    peak = (around * sign).max(axis=0) if sign is not None else np.abs(around).max(axis=0)
    return ((template < 0) & (peak < params.peel_threshold_mad * np.asarray(noise_uv)[c])
            & (peak <= (1.0 - PEEL_OTHERS_SHARE) * np.abs(amplitude_uv)))


class _Fit:
    """`peel` with one recording's templates and constants."""

    def __init__(self, templates: Templates, first: np.ndarray, cand: np.ndarray, sampling_rate_hz: float,
                 noise_uv: np.ndarray):
        self.templates, self.first, self.cand = templates, first, cand
        self.noise_var = np.square(np.asarray(noise_uv, np.float32))
        self.fit = tuple(int(round(ms * 1e-3 * sampling_rate_hz)) for ms in PEEL_FIT_MS)

    def subtract(self, x: np.ndarray, times: np.ndarray, channels: np.ndarray, min_share: float, *,
                 prior: tuple[np.ndarray, ...] | None = None, prior_min_share: float = 0.0) -> tuple[np.ndarray, ...]:
        """Subtract these spikes from x in the order given, each only where its best template
        removes min_share of the signal's energy: (start, template or -1, amplitude). prior:
        placements subtracted before, sorted by start (start, template, amplitude; updated in
        place where a refit moves one), for the refit of a spike short of min_share."""
        n, tm = times.size, self.templates
        placed = np.zeros(n, np.int64), np.full(n, -1, np.int32), np.zeros(n, np.float32)
        if prior is None:
            prior = np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        _kernels.kernels.peel(x, times, channels, tm.waveforms, tm.support, tm.n_support, self.noise_var, self.first,
                              self.cand, tm.before, PEEL_SHIFT, PEEL_SCALE[0], PEEL_SCALE[1], *self.fit,
                              PEEL_FIT_CHANNELS, min_share, prior_min_share, *prior, *placed)
        return placed


def _near_found(t: np.ndarray, c: np.ndarray, t_found: np.ndarray, c_found: np.ndarray,
                distances_um: np.ndarray | None, within: int) -> np.ndarray:
    """For each (t, c): a found spike within +-within samples, on channel c (distances_um None)
    or within CANDIDATE_UM of it."""
    order = np.argsort(t_found, kind="stable")
    ts, cs = t_found[order], c_found[order]
    which, j = ranges(np.searchsorted(ts, t - within, "left"), np.searchsorted(ts, t + within, "right"))
    hit = c[which] == cs[j] if distances_um is None else distances_um[c[which], cs[j]] <= CANDIDATE_UM
    out = np.zeros(t.size, bool)
    out[which[hit]] = True
    return out
