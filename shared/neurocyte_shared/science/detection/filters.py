"""Raw samples to filtered, referenced microvolts; the noise level; clipped samples."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..arrays import median
from . import _kernels
from .params import (
    ARTEFACT_END_MAD,
    ARTEFACT_MAX_MS,
    ARTEFACT_MIN_ELECTRODES,
    ARTEFACT_PROBES,
    ARTEFACT_QUIET_MS,
    ARTEFACT_REACH_MAD,
    ARTEFACT_SHARE,
    ARTEFACT_STRIDE_MS,
    BAD_CLIPPED_SHARE,
    BAD_NOISE_RATIO,
    BLANK_MS,
    MAD_TO_SIGMA,
    REFERENCE_CLIP_MAD,
    REFERENCE_MAX_GAIN,
    REFERENCE_MIN_RATIO,
    SUBTRACT_AFTER_MS,
    SUBTRACT_BEFORE_MS,
    SUBTRACT_COMMON_MAD,
    SUBTRACT_CORE_MAD,
    SUBTRACT_CORE_SHARE,
    SUBTRACT_EDGE_MS,
    SUBTRACT_GROUP_MS,
    SUBTRACT_MAX_SPAN_MS,
    SUBTRACT_MIN_ELECTRODES,
    SUBTRACT_PAD_MS,
    SUBTRACT_TAPER_MS,
    SUBTRACT_TEMPLATE_ELECTRODES,
    SUBTRACT_VOTE_UM,
    DetectionParams,
)


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


def filter_sos(sampling_rate_hz: float, params: DetectionParams) -> np.ndarray:
    """The bandpass `preprocess` filters with (float32 second-order sections)."""
    return _sos(float(sampling_rate_hz), params.freq_min_hz, params.freq_max_hz, params.filter_order)


class Made(NamedTuple):
    """How `preprocess` made traces from raw ones: what subtracting an artefact from them needs."""

    sos: np.ndarray  # `filter_sos`
    gain_uv: float
    offset_uv: float
    reference_kind: str  # DetectionParams.reference
    reference: np.ndarray  # per sample, what was subtracted (`preprocess`'s reference_out)
    reference_gains: np.ndarray | None


_REFERENCE = {
    "none": _kernels.kernels.REF_NONE,
    "median": _kernels.kernels.REF_MEDIAN,
    "mean": _kernels.kernels.REF_MEAN,
}


def preprocess(
    traces: np.ndarray, sampling_rate_hz: float, params: DetectionParams, gain_uv: float = 1.0, offset_uv: float = 0.0,
    *, reference_gains: np.ndarray | None = None, reference_out: np.ndarray | None = None,
) -> np.ndarray:
    """Raw traces (samples x channels, any numeric dtype) -> float32 microvolts, bandpassed
    forward and backward, then common-referenced; same layout. reference_gains: what share of
    the reference each channel carries (`reference_gains`; None: all of it). reference_out: if
    given (float32 per sample), receives the reference."""
    raw = np.ascontiguousarray(traces)
    if raw.ndim != 2:
        raise ValueError(f"traces must be samples x channels, got shape {raw.shape}")
    sos = filter_sos(sampling_rate_hz, params)
    out = np.empty(raw.shape, np.float32)
    gains = np.ones(raw.shape[1], np.float32) if reference_gains is None else np.asarray(reference_gains, np.float32)
    ref = np.empty(raw.shape[0], np.float32) if reference_out is None else reference_out
    if raw.shape[0]:
        _kernels.kernels.bandpass_reference(
            raw, float(gain_uv), float(offset_uv), sos, _REFERENCE[params.reference], median_network(raw.shape[1]),
            gains, ref, out)
    return out


def common_mode_power(reference: np.ndarray) -> float:
    """The common reference's variance (robust: from its MAD) over a chunk."""
    return (float(np.median(np.abs(reference))) / MAD_TO_SIGMA) ** 2 if reference.size else 0.0


def strong_common_mode(common_powers: list[float], noise_uv: np.ndarray) -> bool:
    """Whether the reference carries common-mode noise worth measuring each channel's gain on:
    its variance (median over chunks) at least REFERENCE_MIN_RATIO x what the median of the
    channels' own noise alone has (pi/2 x sigma^2 / n). Weaker, what a gain would remove is
    small and the gains measured would be noise."""
    n = noise_uv.size
    if n < 2 or not common_powers:
        return False
    own = float(np.median(noise_uv)) ** 2
    return float(np.median(common_powers)) >= REFERENCE_MIN_RATIO * (np.pi / 2) * own / n


def reference_sums(x: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's share of each channel's least-squares gain on the reference: (sum of
    reference x filtered traces, sum of reference^2), over the samples where neither holds a
    spike or an artefact (both within REFERENCE_CLIP_MAD of their spread). x: the chunk
    referenced whole (gain 1), so the filtered traces are x + reference."""
    f = x + reference[:, None]
    spread = noise_levels(f)
    ref_spread = np.sqrt(common_mode_power(reference))
    quiet = (np.abs(f) < REFERENCE_CLIP_MAD * spread) & (np.abs(reference) < REFERENCE_CLIP_MAD * ref_spread)[:, None]
    r = np.where(quiet, reference[:, None], np.float32(0)).astype(np.float64)
    return (r * f).sum(axis=0), (r * r).sum(axis=0)


def reference_gains(sums: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each channel's share of the common reference (least squares over the chunks' sums,
    `reference_sums`): amplifiers and electrodes pick up common-mode noise with gains that
    differ by 10-15 %, and subtracting the reference whole leaves that share on each."""
    num = np.sum([s[0] for s in sums], axis=0)
    den = np.sum([s[1] for s in sums], axis=0)
    gains = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return np.clip(gains, 0.0, REFERENCE_MAX_GAIN).astype(np.float32)


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
    _kernels.kernels.median_abs_deviation(x, mad)
    return (mad / np.float32(MAD_TO_SIGMA)).astype(np.float32)


def saturated_samples(raw: np.ndarray) -> np.ndarray:
    """Per channel, how many samples sit at the integer type's limits (the amplifier or the
    converter clipped). Float data cannot tell: zeros."""
    if not np.issubdtype(raw.dtype, np.integer):
        return np.zeros(raw.shape[1], np.int64)
    info = np.iinfo(raw.dtype)
    return ((raw == info.min) | (raw == info.max)).sum(axis=0).astype(np.int64)


def bad_channels(noise_uv: np.ndarray) -> np.ndarray:
    """Channels whose noise is BAD_NOISE_RATIO times the median channel's, or that fraction of
    it: a hot electrode, whose noise would beat real spikes on its neighbours, or a dead one,
    which holds only what the common reference puts there."""
    typical = float(np.median(noise_uv)) if noise_uv.size else 0.0
    if typical <= 0:
        return np.zeros(noise_uv.shape, bool)
    return (noise_uv > BAD_NOISE_RATIO * typical) | (noise_uv < typical / BAD_NOISE_RATIO)


def blank(x: np.ndarray, raw: np.ndarray, noise_uv: np.ndarray, sampling_rate_hz: float, *, artefact_mad: float,
          silenced: np.ndarray | None = None, valid: tuple[int, int] | None = None, first_sample: int = 0,
          artefacts: list[int] | None = None, made: Made | None = None,
          channel_locations_um: np.ndarray | None = None) -> None:
    """Silence (set to 0, in place) what detection must not read in preprocessed traces x: bad
    channels (`bad_channels`), channels clipped for more than BAD_CLIPPED_SHARE of the samples,
    stimulation artefacts (`_artefacts`: a quarter of the electrodes far beyond their noise at once), and
    on other channels the samples within BLANK_MS of a raw sample at the integer type's limits
    (the filter rings where a trace was clipped: every such ring would be a spike). From an
    artefact or a clipped sample, each electrode is silenced on until its trace is quiet
    (`_loud_extent`). Silenced samples neither make peaks nor beat a neighbour's. silenced: if
    given, each channel's count of the samples in `valid` (default: all) silenced around clipped
    samples and artefacts is added to it (bad channels are not counted: they are reported as such).
    first_sample: x's first sample's index in the recording (artefacts are looked for at the same
    samples whatever the window). artefact_mad: `DetectionParams.artefact_mad` (0: no artefacts
    are looked for; clipped samples still are). artefacts: if given, the first sample (in the
    recording) of each artefact whose core begins in `valid` is appended to it: a window's
    margins find its neighbours' artefacts, and each is reported once. made: how x was made
    from raw; if given, an artefact on several electrodes at once is subtracted first
    (`_subtract_artefacts`) and only its core silenced; channel_locations_um tell which
    electrodes one spike cannot reach at once (`_silence_common`)."""
    bad = bad_channels(noise_uv)
    if bad.any():
        x[:, bad] = 0.0
    n = x.shape[0]
    quiet = max(1, int(round(ARTEFACT_QUIET_MS * 1e-3 * sampling_rate_hz)))
    cap = int(round(ARTEFACT_MAX_MS * 1e-3 * sampling_rate_hz))
    valid = valid or (0, n)
    count = _Count(silenced, valid)
    # reported as found before anything is subtracted (the stimuli either way); silenced as
    # found after, when an artefact's ringing that set their extent is gone
    cores = _artefacts(x, noise_uv, bad, sampling_rate_hz, quiet, first_sample, artefact_mad)
    if artefacts is not None:
        artefacts.extend(first_sample + t0 for t0, _ in cores if valid[0] <= t0 < valid[1])
    t, c = _clipped(x, raw, bad)
    if made is not None and t.size:
        edge = int(round(SUBTRACT_EDGE_MS * 1e-3 * sampling_rate_hz))
        subtracted, done = _subtract_artefacts(x, raw, t, c, noise_uv, bad, sampling_rate_hz, made)
        noise = np.asarray(noise_uv, np.float32)
        locations = None if channel_locations_um is None else np.asarray(channel_locations_um, np.float64)
        for group, c0, c1, lo, hi in subtracted:
            _silence_common(x, group, lo, hi, noise, edge, count, locations)
            a, b = max(c0 - edge, 0), min(c1 + edge, n)
            # what is left of the core: silenced on until quiet where still loud (as `_silence`)
            loud = (np.abs(x[c0:c1, group]) >= ARTEFACT_REACH_MAD * noise[group]).any(axis=0)
            for ch in group[loud].tolist():
                _silence(x, slice(ch, ch + 1), c0, c1, noise_uv, quiet, cap, count, at_least=(a, b))
            _zero(x, group[~loud], a, b, count)
        t, c = t[~done], c[~done]
        if subtracted and cores:
            cores = _artefacts(x, noise_uv, bad, sampling_rate_hz, quiet, first_sample, artefact_mad)
    for t0, t1 in cores:
        _silence(x, slice(None), t0, t1, noise_uv, quiet, cap, count)
    if not t.size:
        return
    reach = max(1, int(round(BLANK_MS * 1e-3 * sampling_rate_hz)))
    lo, hi = np.maximum(t - reach, 0), np.minimum(t + reach + 1, n)
    # overlapping reaches on one electrode make one run (t ascends within an electrode)
    first = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (lo[1:] > hi[:-1])])
    last = np.r_[first[1:], t.size] - 1
    for a, b, t0, t1, ch in zip(lo[first].tolist(), hi[last].tolist(), t[first].tolist(), t[last].tolist(),
                                c[first].tolist()):
        _silence(x, slice(ch, ch + 1), t0, t1 + 1, noise_uv, quiet, cap, count, at_least=(a, b))


def _clipped(x: np.ndarray, raw: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sample, channel) of each sample of raw at its integer type's limits, in channel then
    time order, on readable channels; an electrode that lives at the rails (clipped for
    BAD_CLIPPED_SHARE of the samples) is silenced whole instead: its noise is measured low
    (flat while clipped), and every crossing is suspect. Clipped samples are few (a few hundred
    per second on a real recording whose electrodes touch the rails now and then): found block
    by block, then silenced run by run."""
    none = np.zeros(0, np.int64)
    if not np.issubdtype(raw.dtype, np.integer) or raw.shape[0] == 0:
        return none, none
    info = np.iinfo(raw.dtype)
    t, c = np.divmod(_at_rails(raw, info.min, info.max), raw.shape[1])
    if not t.size:
        return none, none
    rails = (np.bincount(c, minlength=raw.shape[1]) > BAD_CLIPPED_SHARE * raw.shape[0]) & ~bad
    x[:, rails] = 0.0
    keep = ~(rails | bad)[c]
    order = np.lexsort((t[keep], c[keep]))
    return t[keep][order], c[keep][order]


def _subtract_artefacts(x: np.ndarray, raw: np.ndarray, t: np.ndarray, c: np.ndarray,
                        noise_uv: np.ndarray, bad: np.ndarray, sampling_rate_hz: float,
                        made: Made) -> tuple[list[tuple[np.ndarray, int, int, int, int]], np.ndarray]:
    """Subtract from x (in place) each artefact that clips SUBTRACT_MIN_ELECTRODES or more
    electrodes at once (see params.py's SUBTRACT_ constants). Not yet a stimulation artefact that
    clips none (`_artefacts`): what is left of it is common to most electrodes, as a response
    evoked on many at once is, and the rule that silences the one would silence the other (the
    stimulation end-to-end test lost 3 of 5 responding electrodes). t, c: the clipped samples (`_clipped`).
    Returns, per artefact subtracted, (its electrodes, its core's first and last + 1 row, the
    rows changed), and which of the clipped samples are its."""
    gap = int(round(SUBTRACT_GROUP_MS * 1e-3 * sampling_rate_hz))
    by_time = np.argsort(t, kind="stable")
    ts, cs = t[by_time], c[by_time]
    done = np.zeros(t.size, bool)
    found = []
    # an artefact on ARTEFACT_SHARE of the electrodes moves the common reference, and through it
    # reaches every electrode: it is subtracted from all of them
    readable = np.flatnonzero(~bad & (np.asarray(noise_uv) > 0))
    for run in np.split(np.arange(ts.size), np.flatnonzero(np.diff(ts) > gap) + 1):
        if not run.size:
            continue
        group = np.unique(cs[run])
        group = readable if group.size >= ARTEFACT_SHARE * readable.size else group
        one = _subtract_one(x, raw, int(ts[run[0]]), int(ts[run[-1]]), group, sampling_rate_hz, made)
        if one is not None:
            found.append(one)
            done[by_time[run]] = True
    return found, done


def _subtract_one(x: np.ndarray, raw: np.ndarray, first: int, last: int, group: np.ndarray, sampling_rate_hz: float,
                  made: Made) -> tuple[np.ndarray, int, int, int, int] | None:
    """Subtract one artefact, from its first to its last sample on the group's electrodes (see
    `_subtract_artefacts`); None where it is not one pulse or too near the edge to fit (it is
    silenced as before)."""
    def ms(v: float) -> int:
        return int(round(v * 1e-3 * sampling_rate_hz))

    n = x.shape[0]
    taper, pad = ms(SUBTRACT_TAPER_MS), ms(SUBTRACT_PAD_MS)
    a, b = max(first - ms(SUBTRACT_BEFORE_MS), 0), min(last + ms(SUBTRACT_AFTER_MS) + 1, n)
    head = (first - a) // 2  # the baseline, over which the template fades in
    if group.size < SUBTRACT_MIN_ELECTRODES or last - first > ms(SUBTRACT_MAX_SPAN_MS) or head < 2 or b - last <= taper:
        return None
    seg = raw[a:b, group].astype(np.float64) * made.gain_uv + made.offset_uv
    seg -= median(seg[:head], axis=0)
    template = median(seg[:, _spread(group.size, SUBTRACT_TEMPLATE_ELECTRODES)], axis=1)
    slope = np.abs(np.diff(template))
    step_noise = float(median(median(np.abs(np.diff(seg[:head], axis=0)), axis=0), axis=0)) / MAD_TO_SIGMA
    jumps = np.flatnonzero(slope > max(SUBTRACT_CORE_MAD * step_noise, SUBTRACT_CORE_SHARE * float(slope.max())))
    if not jumps.size:
        return None
    c0, c1 = max(int(jumps[0]) - 2, 0), min(int(jumps[-1]) + 4, b - a)
    fade = np.ones(b - a)
    fade[:head] = 0.5 - 0.5 * np.cos(np.pi * np.arange(head) / head)
    fade[b - a - taper:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(taper) + 1) / taper)
    faded = template * fade
    basis = np.stack([faded, np.gradient(faded)], axis=1)
    estimate = np.zeros_like(seg)
    for lo, hi in ((0, c0), (c1, b - a)):  # before and after the core: different processes
        if hi - lo >= 4:
            estimate[lo:hi] = basis[lo:hi] @ _least_squares(basis[lo:hi], seg[lo:hi])
    rest = seg - estimate  # in the core: a straight line between what is left either side
    left = rest[max(c0 - 3, 0):c0].mean(axis=0) if c0 > 0 else rest[c1:c1 + 3].mean(axis=0)
    right = rest[c1:c1 + 3].mean(axis=0) if c1 < b - a else left
    share = ((np.arange(c1 - c0) + 0.5) / max(c1 - c0, 1))[:, None]
    estimate[c0:c1] = seg[c0:c1] - (left + (right - left) * share)
    lo, hi = max(a - pad, 0), min(b + pad, n)
    padded = np.zeros((hi - lo, group.size), np.float32)
    padded[a - lo : b - lo] = estimate
    _take(x, group, lo, hi, _bandpass(padded, made.sos), made)
    return group, a + c0, a + c1, lo, hi


def _least_squares(basis: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin_w |basis @ w - y| for a basis of two columns, by its normal equations (a 2 x 2
    solve per artefact instead of an SVD: the same weights where the columns are independent,
    lstsq's where they are not)."""
    gram = basis.T @ basis
    det = gram[0, 0] * gram[1, 1] - gram[0, 1] * gram[1, 0]
    if not det > 1e-9 * gram[0, 0] * gram[1, 1]:
        return np.linalg.lstsq(basis, y, rcond=None)[0]
    inverse = np.array([[gram[1, 1], -gram[0, 1]], [-gram[1, 0], gram[0, 0]]]) / det
    return inverse @ (basis.T @ y)


def _take(x: np.ndarray, group: np.ndarray, lo: int, hi: int, artefact: np.ndarray, made: Made) -> None:
    """Take the filtered artefact (rows lo:hi, the group's columns) out of x, and out of the
    common reference where it moved it: a mean always, a median where the group is
    ARTEFACT_SHARE of the electrodes or more (fewer are outliers a median ignores). Samples
    already silenced stay silent."""
    n_ch = x.shape[1]
    # a group of ARTEFACT_SHARE or more is every readable electrode (`_subtract_artefacts`)
    if made.reference_kind == "none" or (made.reference_kind == "median" and group.size < ARTEFACT_SHARE * n_ch):
        x[lo:hi, group] -= artefact
        return
    gains = np.ones(n_ch, np.float32) if made.reference_gains is None else made.reference_gains
    old = made.reference[lo:hi]
    block = x[lo:hi]
    silent = block == 0
    whole = block + gains * old[:, None]  # the filtered traces before the reference
    whole[:, group] -= artefact
    new = median(whole, axis=1) if made.reference_kind == "median" else whole.mean(axis=1)
    block = whole - gains * new[:, None].astype(np.float32)
    block[silent] = 0.0
    x[lo:hi] = block
    made.reference[lo:hi] = new


def _spread(n: int, most: int) -> slice | np.ndarray:
    """At most `most` of n columns, spread evenly: all of them, or an even sample."""
    return slice(None) if n <= most else np.linspace(0, n - 1, most).round().astype(np.int64)


def _bandpass(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """x (float32, samples x channels, at rest at both ends) bandpassed as `preprocess` does,
    without a reference."""
    out = np.empty(x.shape, np.float32)
    _kernels.kernels.bandpass_reference(x, 1.0, 0.0, sos, _REFERENCE["none"], np.zeros((0, 2), np.int64),
                                        np.ones(x.shape[1], np.float32), np.empty(x.shape[0], np.float32), out)
    return out


def _silence_common(x: np.ndarray, group: np.ndarray, lo: int, hi: int, noise: np.ndarray, edge: int,
                    count: _Count, locations: np.ndarray | None) -> None:
    """Zero x[lo:hi] on the group's electrodes +-edge around each sample where the median of
    |x| / noise over electrodes of the group SUBTRACT_VOTE_UM apart (at least
    SUBTRACT_MIN_ELECTRODES of them; of SUBTRACT_TEMPLATE_ELECTRODES spread over it) exceeds
    SUBTRACT_COMMON_MAD: what a subtraction left on most of the group is the artefact's, and one
    spike reaches one of them at most. A group too compact to hold that many is left as it is."""
    voters = _apart(group[_spread(group.size, SUBTRACT_TEMPLATE_ELECTRODES)], locations)
    if voters.size < SUBTRACT_MIN_ELECTRODES:
        return
    level = np.abs(x[lo:hi, voters]) / np.where(noise[voters] > 0, noise[voters], np.inf)
    # the median can exceed it only where half of them do: the few rows worth a median
    rows = np.flatnonzero(np.count_nonzero(level > SUBTRACT_COMMON_MAD, axis=1) * 2 >= voters.size)
    if not rows.size:
        return
    loud = np.zeros(hi - lo, bool)
    loud[rows] = median(level[rows], axis=1) > SUBTRACT_COMMON_MAD
    near = np.convolve(loud.astype(np.int32), np.ones(2 * edge + 1, np.int32), "same") > 0
    block = x[lo:hi, group]
    mask = np.broadcast_to(near[:, None], block.shape)
    count(block, mask, lo, group)
    block[mask] = 0.0
    x[lo:hi, group] = block


def _apart(channels: np.ndarray, locations: np.ndarray | None) -> np.ndarray:
    """Those of the channels, in turn, at least SUBTRACT_VOTE_UM from every one kept (all of
    them without locations)."""
    if locations is None or channels.size == 0:
        return channels
    loc = np.ascontiguousarray(locations, np.float64)
    # the same few groups come back in every window of a recording (one stimulator's electrodes)
    return _apart_of(np.ascontiguousarray(channels, np.int64).tobytes(), loc.tobytes(), loc.shape[1])


@lru_cache(maxsize=64)
def _apart_of(channels: bytes, locations: bytes, dims: int) -> np.ndarray:
    chans = np.frombuffer(channels, np.int64)
    loc = np.frombuffer(locations, np.float64).reshape(-1, dims)
    kept = [int(chans[0])]
    for ch in chans[1:].tolist():
        if np.min(np.linalg.norm(loc[kept] - loc[ch], axis=1)) >= SUBTRACT_VOTE_UM:
            kept.append(ch)
    out = np.asarray(kept, np.int64)
    out.flags.writeable = False  # shared by every caller
    return out


def _zero(x: np.ndarray, channels: np.ndarray, a: int, b: int, count: _Count) -> None:
    """Zero x[a:b] on these channels, counted."""
    if channels.size and b > a:
        block = x[a:b, channels]
        count(block, np.ones(block.shape, bool), a, channels)
        x[a:b, channels] = 0.0


def _artefacts(x: np.ndarray, noise_uv: np.ndarray, bad: np.ndarray, sampling_rate_hz: float,
               quiet: int, first_sample: int, mad: float) -> list[tuple[int, int]]:
    """(first, last + 1) sample of each stimulation artefact's core in x: rows, looked at every
    ARTEFACT_STRIDE_MS from the recording's start (x begins at its sample first_sample), on at
    most ARTEFACT_PROBES readable electrodes spread over the array,
    where ARTEFACT_SHARE of them (and at least ARTEFACT_MIN_ELECTRODES) are beyond mad x their
    noise (none if mad is 0); rows closer than `quiet` make one core, widened by the stride each way."""
    probes = np.flatnonzero(~bad & (np.asarray(noise_uv) > 0))
    probes = probes[_spread(probes.size, ARTEFACT_PROBES)]  # an artefact reaches the whole array: a sample tells
    need = max(ARTEFACT_MIN_ELECTRODES, int(np.ceil(ARTEFACT_SHARE * probes.size)))
    if probes.size < need or x.shape[0] == 0 or mad <= 0:
        return []
    stride = max(1, int(round(ARTEFACT_STRIDE_MS * 1e-3 * sampling_rate_hz)))
    level = (mad * np.asarray(noise_uv, np.float32)[probes]).astype(np.float32)
    step = stride * max(1, CLIP_BLOCK // probes.size)  # samples at a time: the copies stay cache-sized
    hits = [np.flatnonzero(np.count_nonzero(np.abs(x[a : a + step : stride, probes]) >= level, axis=1) >= need)
            * stride + a for a in range((-first_sample) % stride, x.shape[0], step)]
    hits = np.concatenate(hits)
    if not hits.size:
        return []
    split = np.flatnonzero(np.diff(hits) > quiet) + 1
    # widened by the stride: the core may reach past the rows looked at
    starts = np.maximum(hits[np.r_[0, split]] - stride, 0)
    ends = np.minimum(hits[np.r_[split - 1, hits.size - 1]] + stride + 1, x.shape[0])
    return list(zip(starts.tolist(), ends.tolist()))


class _Count:
    """Adds, per channel, the samples about to be silenced inside `valid` that were not already
    (a filtered sample is never exactly 0 otherwise) to `silenced`, if given."""

    def __init__(self, silenced: np.ndarray | None, valid: tuple[int, int]):
        self.silenced, self.valid = silenced, valid

    def __call__(self, block: np.ndarray, mask: np.ndarray, first: int, channels: slice) -> None:
        if self.silenced is None:
            return
        rows = np.arange(block.shape[0]) + first
        inside = (rows >= self.valid[0]) & (rows < self.valid[1])
        self.silenced[channels] += np.count_nonzero(mask[inside] & (block[inside] != 0), axis=0)


def _silence(x: np.ndarray, channels: slice, t0: int, t1: int, noise_uv: np.ndarray, quiet: int, cap: int,
             count: _Count, at_least: tuple[int, int] | None = None) -> None:
    """On each of these channels that x[t0:t1] takes beyond ARTEFACT_REACH_MAD x the noise: zero
    that stretch and the loud one either side (beyond ARTEFACT_END_MAD: `_loud_extent`, at most
    cap samples each way). A channel the artefact does not reach keeps its samples, but for
    x[at_least], which is zeroed on every one of them."""
    n = x.shape[0]
    noise = np.asarray(noise_uv, np.float32)[channels]
    lv = ARTEFACT_END_MAD * noise
    hit = (np.abs(x[t0:t1, channels]) >= ARTEFACT_REACH_MAD * noise).any(axis=0)
    if not hit.any() and at_least is None:
        return
    after = np.where(hit, _loud_extent(x[t1 : min(t1 + cap, n), channels], lv, quiet), 0)
    before = np.where(hit, _loud_extent(x[max(t0 - cap, 0) : t0, channels][::-1], lv, quiet), 0)
    a, b = at_least or (t0, t0)
    first, last = min(t0 - int(before.max()), a), max(t1 + int(after.max()), b)
    block = x[first:last, channels]
    rows = np.arange(block.shape[0])[:, None] + first
    mask = (hit & (rows >= t0 - before) & (rows < t1 + after)) | ((rows >= a) & (rows < b))
    count(block, mask, first, channels)
    block[mask] = 0.0


def _loud_extent(trace: np.ndarray, levels: np.ndarray, quiet: int) -> np.ndarray:
    """Per column of trace (samples x channels): samples from its start to the first stretch of
    `quiet` samples all below the column's level in magnitude (0 if it starts quiet; all of it
    if it never is)."""
    m = trace.shape[0]
    loud = np.abs(trace) >= levels
    if m <= quiet:
        return np.where(loud.any(axis=0), m, 0)
    seen = np.zeros((m + 1, trace.shape[1]), np.int32)
    np.cumsum(loud, axis=0, out=seen[1:])
    busy = seen[quiet:] > seen[:-quiet]  # row i: a loud sample among i .. i + quiet - 1
    return np.where(busy.all(axis=0), m, np.argmin(busy, axis=0))


CLIP_BLOCK = 1 << 18  # samples of a block searched for clipped ones: cache-sized


def _at_rails(raw: np.ndarray, low: int, high: int) -> np.ndarray:
    """Flat indices of raw's samples at low or high. A block's min and max rule most blocks out
    at once: comparing the whole array made two 1-byte masks of it (0.7 s on 256 channels x
    30 s, against 0.02 s this way); real noise that touches the rails often costs the same."""
    rows = max(1, CLIP_BLOCK // max(1, raw.shape[1]))
    found = []
    for a in range(0, raw.shape[0], rows):
        block = raw[a : a + rows]
        if block.max() < high and block.min() > low:
            continue
        found.append(np.flatnonzero((block == high) | (block == low)) + a * raw.shape[1])
    return np.concatenate(found) if found else np.zeros(0, np.int64)
