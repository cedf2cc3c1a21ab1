"""Recording metrics from a spike table: pure numpy, no AWS, no files.

Definitions (MEA conventions: Axion's Neural Metric Tool, the EPA's MEA work, MEA-NAP);
every threshold is a `MetricsParams` field with its default, and the summary states them:
- firing rate of an electrode = spikes / recording duration (Hz);
- active electrode: at least `active_min_spikes_per_min` spikes per minute (default 5);
- mean firing rate: over all electrodes; weighted mean firing rate: over active electrodes
  only (Axion's names);
- single-electrode bursts (`burst_method`, default "surprise"): candidates by the max-interval
  method (a burst starts at an inter-spike interval <= `burst_max_isi_start_s`, 0.1 s,
  continues while intervals are <= `burst_max_isi_end_s`, 0.25 s; bursts closer than
  `burst_min_ibi_s`, 0.8 s, are merged; fewer than `burst_min_spikes`, 5, spikes or shorter
  than `burst_min_duration_s`, 0.05 s, are dropped), each kept only when it is surprising for
  the electrode's own rate: its Poisson surprise -ln P(N >= n spikes in its duration | the
  electrode's rate) is at least `burst_min_surprise` (6.5) plus ln(the electrode's spike
  count) (Legendy & Salcman 1985; the second term because every spike is a start the search
  tries: 12.9 for 600 spikes, 15.6 for 9,000); the rate is the mean rate, then, once bursts are
  found, the rate between them, and the search is run again. Fixed intervals alone call
  irregular (Poisson) firing bursts; the surprise adapts to each electrode.
  `burst_method="max_interval"` gives the fixed rule alone, as Axion's NMT computes it;
- network bursts: time in `network_bin_s` bins (0.05 s); a bin is part of a network burst
  when at least `network_min_electrodes` (5) active electrodes, at least
  `network_min_fraction` (0.25) of the active electrodes, more than the mean number of
  electrodes per bin plus `network_min_sd` (3) standard deviations, and as many as
  independent electrodes with the same rates would reach in some bin of the recording only
  with probability `network_max_chance` (0.01) fire in it; consecutive such bins form one network
  burst (EPA-style network spikes, merged);
- synchrony: the spike time tiling coefficient (STTC, Cutts & Eglen 2014) at lag
  `sttc_lag_s` (0.025 s), averaged over all pairs of the `sttc_max_electrodes` (64) most
  active electrodes; 1 for identical trains, about 0 for independent ones;
- response to stimulation, when detection found at least `stimulus_min_count` (5) stimulation
  artefacts: an electrode responds when it fires more in the first 10, 25 or 50 ms or the whole
  `stimulus_window_s` (0.1 s) after each stimulus than its rate elsewhere explains, beyond
  chance over all electrodes tested and these four windows (`stimulus_max_chance`, 0.01,
  Bonferroni; the rate elsewhere counts one spike more, so a few spikes on a silent electrode
  are not a response); for each, its window, the share of stimuli it answers beyond chance, its
  evoked spikes per stimulus and its median first-spike latency; and the peri-stimulus time
  histogram of all electrodes. Detection does not read an artefact that clips nothing until
  each trace is quiet, so the first milliseconds after such a stimulus are blind;
- quality notes: electrodes without a spike (dead or unconnected), electrodes firing above
  `noisy_rate_hz` (100 Hz: no neuron sustains that; noise or artefacts), electrodes with more
  than `saturated_max_fraction` (0.1 %) of samples at the converter's limits, noise levels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from neurocyte_shared.science.arrays import ranges
from neurocyte_shared.science.table import SpikeTable


class MetricsParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    active_min_spikes_per_min: float = Field(5.0, ge=0, description="an electrode is active with at least this rate")
    burst_max_isi_start_s: float = Field(0.1, gt=0, description="a burst starts with spikes this close together")
    burst_max_isi_end_s: float = Field(0.25, gt=0, description="a burst ends at a gap longer than this")
    burst_min_ibi_s: float = Field(0.8, ge=0, description="bursts closer than this are merged")
    burst_min_spikes: int = Field(5, ge=2, description="a burst has at least this many spikes")
    burst_min_duration_s: float = Field(0.05, ge=0, description="a burst lasts at least this long")
    burst_method: Literal["surprise", "max_interval"] = Field(
        "surprise", description="surprise: max-interval bursts kept only when surprising for the electrode's rate; "
                                "max_interval: the fixed rule alone (Axion)")
    burst_min_surprise: float = Field(6.5, gt=0, description="a burst's Poisson surprise, -ln P, is at least this "
                                      "plus ln(the electrode's spike count)")
    network_bin_s: float = Field(0.05, gt=0, description="network bursts are counted in bins this long")
    network_min_electrodes: int = Field(5, ge=1, description="a network burst involves at least this many electrodes")
    network_min_fraction: float = Field(0.25, ge=0, le=1, description="... and at least this share of active ones")
    network_min_sd: float = Field(3.0, ge=0, description="a network burst rises this many SD above the mean")
    network_max_chance: float = Field(0.01, gt=0, le=1, description="independent electrodes with the same rates "
                                      "would make one network burst anywhere in the recording with this probability")
    sttc_lag_s: float = Field(0.025, gt=0, description="synchrony (STTC) counts spikes within +- this lag")
    sttc_max_electrodes: int = Field(64, ge=2, description="synchrony over pairs of this many most active electrodes")
    stimulus_window_s: float = Field(0.1, gt=0, description="spikes this soon after a stimulus are its response")
    stimulus_min_count: int = Field(5, ge=1, description="a response is measured from at least this many stimuli")
    stimulus_max_chance: float = Field(0.01, gt=0, le=1, description="an electrode responds when its rate "
                                       "elsewhere gives its spikes after the stimuli only with this probability, "
                                       "over all electrodes (Bonferroni)")
    noisy_rate_hz: float = Field(100.0, gt=0, description="an electrode firing above this is flagged as noisy")
    saturated_max_fraction: float = Field(0.001, ge=0, le=1,
                                          description="an electrode clipped for more than this share is flagged")

    def cache_key(self) -> str:
        import hashlib

        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class ChannelMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)
    channel_index: int
    channel_id: str
    x_um: float
    y_um: float
    spike_count: int
    firing_rate_hz: float
    active: bool
    median_amplitude_uv: float | None = Field(description="median signed peak amplitude; None without spikes")
    noise_uv: float | None = None
    bursts: int = 0
    burst_rate_per_min: float = 0.0
    mean_burst_duration_s: float | None = None
    mean_spikes_per_burst: float | None = None
    percent_spikes_in_bursts: float = 0.0
    mean_inter_burst_interval_s: float | None = None


class NetworkBurst(BaseModel):
    model_config = ConfigDict(frozen=True)
    start_s: float
    end_s: float
    electrodes: int
    spikes: int


class NetworkMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)
    count: int
    rate_per_min: float
    mean_duration_s: float | None
    mean_participating_electrodes: float | None
    min_electrodes_per_bin: int = Field(description="the threshold actually applied (count and fraction)")
    bursts: list[NetworkBurst] = Field(description="the first 1,000 network bursts")


class Synchrony(BaseModel):
    model_config = ConfigDict(frozen=True)
    method: str = "STTC"
    lag_s: float
    electrodes: int = Field(description="electrodes compared (the most active ones)")
    pairs: int
    sttc_mean: float | None = Field(description="mean STTC over pairs; None with fewer than 2 active electrodes")


class ElectrodeResponse(BaseModel):
    model_config = ConfigDict(frozen=True)
    channel_index: int
    window_ms: float = Field(description="the response was found in this long after each stimulus (the most "
                             "surprising of 10, 25, 50 ms and the whole window)")
    response_probability: float = Field(description="share of the stimuli answered: of those followed by a spike "
                                        "within the window, beyond the share its rate elsewhere gives by chance "
                                        "((seen - chance) / (1 - chance))")
    evoked_spikes_per_stimulus: float = Field(description="spikes per stimulus in its window beyond what the "
                                              "electrode's rate elsewhere gives")
    median_latency_ms: float = Field(description="median time from a stimulus to the first spike after it, over "
                                     "the stimuli followed by one within its window")
    surprise: float = Field(description="-ln P(this many spikes in its windows | the rate elsewhere)")


class StimulusResponse(BaseModel):
    model_config = ConfigDict(frozen=True)
    stimuli: int
    window_s: float
    electrodes_tested: int = Field(description="electrodes with a spike: the Bonferroni correction's count")
    responding_electrodes: int
    median_latency_ms: float | None = Field(description="median of the responding electrodes' latencies")
    evoked_spikes_per_stimulus: float = Field(description="all electrodes: spikes per stimulus in the window "
                                              "beyond what their rates elsewhere give")
    psth_start_s: float = Field(description="the histogram's first bin starts this long from each stimulus")
    psth_bin_s: float
    psth_counts: list[int] = Field(description="spikes of all electrodes per bin, summed over the stimuli")
    electrodes: list[ElectrodeResponse] = Field(description="the responding electrodes, most surprising first "
                                                "(the first 1,000)")


FLAT_NOISE_UV = 0.01  # below this noise level a channel is constant: real electrodes have microvolts
SILENCED_NOTE_FRACTION = 0.001  # the report says how much detection silenced from this share up


class Quality(BaseModel):
    model_config = ConfigDict(frozen=True)
    silent_electrodes: int
    noisy_electrodes: list[int] = Field(description="channel indices firing above noisy_rate_hz")
    saturated_electrodes: list[int] = Field([], description="channel indices clipped more than allowed")
    flat_electrodes: list[int] = Field([], description="channel indices whose signal never leaves its baseline")
    silenced_fraction: float | None = Field(
        None, description="share of the electrodes' samples detection did not read: around stimulation artefacts "
        "and clipped samples, until each trace was quiet again")
    stimulation_artefacts_s: list[float] | None = Field(
        None, description="start of each stimulation artefact detection found (s from the recording's start): a "
        "quarter of the electrodes far beyond their noise at once (detection.artefact_mad); not read until quiet")
    median_noise_uv: float | None = None
    notes: list[str]


class Summary(BaseModel):
    """summary.json: the recording's headline figures and per-electrode metrics.
    Exported as JSON Schema in docs/summary.schema.json."""

    model_config = ConfigDict(frozen=True)
    schema_version: int = 2
    recording_id: str
    recording_name: str
    format: str
    n_channels: int
    sampling_rate_hz: float
    duration_s: float
    total_spikes: int
    active_electrodes: int
    mean_firing_rate_hz: float = Field(description="weighted mean firing rate: over active electrodes (Axion)")
    mean_firing_rate_all_hz: float = Field(0.0, description="mean over all electrodes")
    bursting_electrodes: int = 0
    network: NetworkMetrics | None = None
    synchrony: Synchrony | None = None
    quality: Quality | None = None
    stimulus_response: StimulusResponse | None = None
    parameters: dict
    channels: list[ChannelMetrics]

    def stimulation(self) -> dict:
        """stimuli (artefacts found), responding_electrodes and response_latency_ms (None where
        too few stimuli let no response be measured): what the email and an experiment's table
        say of stimulation."""
        r = self.stimulus_response
        return {"stimuli": len(self.quality.stimulation_artefacts_s or []) if self.quality else 0,
                "responding_electrodes": r.responding_electrodes if r else None,
                "response_latency_ms": r.median_latency_ms if r else None}


# ------------------------------------------------------------------ single-electrode bursts


def max_interval_bursts(times_s: np.ndarray, p: MetricsParams) -> tuple[np.ndarray, np.ndarray]:
    """Bursts of one spike train (sorted times, s), max-interval method.
    Returns (first spike index, last spike index) of each burst, inclusive."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size < p.burst_min_spikes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    isi = np.diff(t)
    inside = isi <= p.burst_max_isi_end_s  # link i joins spikes i and i+1
    # runs of consecutive links that keep a burst going
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    run_start, run_stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # links [start, stop)
    if run_start.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # a burst begins at the first link of the run short enough to start one
    starter = np.where(isi <= p.burst_max_isi_start_s, np.arange(isi.size), isi.size)
    first = np.minimum.reduceat(starter, run_start)
    ok = first < run_stop
    first_spike, last_spike = first[ok], run_stop[ok]  # link run_stop-1 joins spike run_stop
    if first_spike.size == 0:
        return first_spike.astype(np.int64), last_spike.astype(np.int64)
    # merge bursts closer than the minimum inter-burst interval
    gap = t[first_spike[1:]] - t[last_spike[:-1]]
    new = np.concatenate([[True], gap >= p.burst_min_ibi_s])
    starts = first_spike[new]
    ends = np.maximum.reduceat(last_spike, np.flatnonzero(new))
    n_spikes = ends - starts + 1
    keep = (n_spikes >= p.burst_min_spikes) & (t[ends] - t[starts] >= p.burst_min_duration_s)
    return starts[keep].astype(np.int64), ends[keep].astype(np.int64)


def poisson_surprise(n_spikes: np.ndarray, span_s: np.ndarray, rate_hz: float) -> np.ndarray:
    """-ln P(at least n spikes in a span | Poisson firing at rate_hz), per (n, span). Where P is
    below floating point (a dense burst), from the tail's leading terms instead, so that longer
    and denser runs still rank higher."""
    from scipy.special import gammainc, gammaln  # P(N >= n | lam) = the regularized lower incomplete gamma

    n = np.asarray(n_spikes, np.float64)
    lam = np.maximum(rate_hz * np.asarray(span_s, np.float64), 1e-300)
    tail = gammainc(n, lam)
    out = -np.log(np.maximum(tail, 1e-300))
    tiny = tail <= 1e-280
    if tiny.any():  # P ~ pmf(n) / (1 - lam / (n + 1)) when n is far above lam
        n_t, lam_t = n[tiny], lam[tiny]
        out[tiny] = lam_t - n_t * np.log(lam_t) + gammaln(n_t + 1) + np.log1p(-np.minimum(lam_t / (n_t + 1), 0.999))
    return out


SURPRISE_MAX_SPIKES = 256  # the longest burst the surprise search considers (bounds its cost)


def bursts(times_s: np.ndarray, duration_s: float, p: MetricsParams) -> tuple[np.ndarray, np.ndarray]:
    """Bursts of one spike train by `p.burst_method`: (first, last) spike index of each.
    "surprise": within each max-interval candidate (which irregular firing around a burst can
    stretch), the most surprising run of spikes is the burst if its surprise reaches the
    threshold; what is left on either side is searched again (Legendy & Salcman's trimming)."""
    starts, ends = max_interval_bursts(times_s, p)
    if p.burst_method == "max_interval" or starts.size == 0:
        return starts, ends
    found = _surprising(times_s, starts, ends, times_s.size / duration_s, p)
    if found:  # again, against the rate between the bursts: a burst's own spikes are not its background
        inside = sum(j - i + 1 for i, j in found)
        span = sum(float(times_s[j] - times_s[i]) for i, j in found)
        rate = (times_s.size - inside) / max(duration_s - span, 1e-9)
        if rate < times_s.size / duration_s:
            found = _surprising(times_s, starts, ends, rate, p)
    return np.array([f[0] for f in found], np.int64), np.array([f[1] for f in found], np.int64)


def _surprising(times_s: np.ndarray, starts: np.ndarray, ends: np.ndarray, rate: float,
                p: MetricsParams) -> list[tuple[int, int]]:
    # Every spike is a start the search tries, so the most surprising run of irregular firing
    # grows with the train's length, as ln(spikes) + about 5 (90th percentile; Poisson trains at
    # 1-30 Hz, 60-300 s): a fixed threshold of 10 gave 31 % of such electrodes a burst at 60 s,
    # 82 % at 300 s (benchmarks/metrics_accuracy.py)
    threshold = p.burst_min_surprise + float(np.log(times_s.size))
    found: list[tuple[int, int]] = []
    segments = list(zip(starts.tolist(), ends.tolist()))
    while segments:
        a, z = segments.pop()
        best = _most_surprising(times_s, a, z, rate, threshold, p)
        if best is None:
            continue
        i, j = best
        found.append((i, j))
        segments += [(a, i - 1), (j + 1, z)]
    found.sort()
    return found


def _most_surprising(t: np.ndarray, a: int, z: int, rate: float, threshold: float,
                     p: MetricsParams) -> tuple[int, int] | None:
    """The run of spikes a..z (inclusive) with the highest Poisson surprise among those of at
    least burst_min_spikes spikes and burst_min_duration_s, if it reaches `threshold`."""
    k = z - a + 1
    if k < p.burst_min_spikes:
        return None
    # A bound first: no run has more than k spikes, nor a shorter span than the densest run of
    # burst_min_spikes; when even that is not surprising enough, nothing here is (most segments).
    m = p.burst_min_spikes
    densest = max(float((t[a + m - 1 : z + 1] - t[a : z - m + 2]).min()), p.burst_min_duration_s)
    if poisson_surprise(np.array([k]), np.array([densest]), rate)[0] < threshold:
        return None
    # For a given number of spikes the surprise only grows as the span shrinks, so only each
    # length's densest run (the first, on a tie) can be the most surprising: one surprise per
    # length, not one per run (the surprise search was 90 % of a 1,024-electrode summary).
    length = np.arange(p.burst_min_spikes, min(k, SURPRISE_MAX_SPIKES) + 1)
    start = np.arange(k)[:, None]
    last = start + length[None, :] - 1  # runs start..last, relative to a; those past z do not fit
    span = t[a + np.minimum(last, k - 1)] - t[a + start]
    span = np.where((last < k) & (span >= p.burst_min_duration_s), span, np.inf)
    first = np.argmin(span, axis=0)
    shortest = span[first, np.arange(length.size)]
    valid = np.isfinite(shortest)
    if not valid.any():
        return None
    surprise = poisson_surprise(length[valid], shortest[valid], rate)
    best = int(np.argmax(surprise))
    if surprise[best] < threshold:
        return None
    i = a + int(first[valid][best])
    return i, i + int(length[valid][best]) - 1


def _burst_metrics(times_s: np.ndarray, duration_s: float, p: MetricsParams) -> dict:
    starts, ends = bursts(times_s, duration_s, p)
    if starts.size == 0:
        return {}
    durations = times_s[ends] - times_s[starts]
    sizes = ends - starts + 1
    ibi = times_s[starts[1:]] - times_s[ends[:-1]]
    return {
        "bursts": int(starts.size),
        "burst_rate_per_min": starts.size / (duration_s / 60.0),
        "mean_burst_duration_s": float(durations.mean()),
        "mean_spikes_per_burst": float(sizes.mean()),
        "percent_spikes_in_bursts": float(100.0 * sizes.sum() / times_s.size),
        "mean_inter_burst_interval_s": float(ibi.mean()) if ibi.size else None,
    }


# ------------------------------------------------------------------ network bursts


def network_bursts(times_s: np.ndarray, channels: np.ndarray, active: np.ndarray, duration_s: float,
                   p: MetricsParams) -> NetworkMetrics:
    """Network bursts from the spikes of active electrodes (see the module's definition)."""
    n_active = int(active.sum())
    threshold = max(p.network_min_electrodes, int(np.ceil(p.network_min_fraction * n_active)))
    keep = active[channels]
    t, ch = times_s[keep], channels[keep].astype(np.int64)
    n_bins = int(np.ceil(duration_s / p.network_bin_s)) + 1
    b = np.minimum((t / p.network_bin_s).astype(np.int64), n_bins - 1)
    n_ch = int(active.size)
    pairs = np.unique(b * n_ch + ch)  # (bin, electrode) that fired, once each
    electrodes_per_bin = np.bincount(pairs // n_ch, minlength=n_bins)
    chance = electrodes_per_bin.mean() + p.network_min_sd * electrodes_per_bin.std()
    threshold = max(threshold, int(np.floor(chance)) + 1, _independent_threshold(t, ch, active, duration_s, n_bins, p))
    empty = NetworkMetrics(count=0, rate_per_min=0.0, mean_duration_s=None, mean_participating_electrodes=None,
                           min_electrodes_per_bin=threshold, bursts=[])
    if t.size == 0 or n_active < threshold:
        return empty
    hot = electrodes_per_bin >= threshold
    edges = np.diff(np.concatenate([[0], hot.astype(np.int8), [0]]))
    first_bin, end_bin = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # [first, end)
    if first_bin.size == 0:
        return empty
    # which burst each (bin, electrode) pair and each spike belongs to
    burst_of_bin = np.full(n_bins, -1)
    for i, (a, z) in enumerate(zip(first_bin, end_bin)):  # a loop over bursts, not spikes
        burst_of_bin[a:z] = i
    pair_burst = burst_of_bin[pairs // n_ch]
    in_burst = pair_burst >= 0
    electrodes = np.bincount(np.unique(pair_burst[in_burst] * n_ch + pairs[in_burst] % n_ch) // n_ch,
                             minlength=first_bin.size)
    spike_burst = burst_of_bin[b]
    spikes_per = np.bincount(spike_burst[spike_burst >= 0], minlength=first_bin.size)
    starts, ends = first_bin * p.network_bin_s, np.minimum(end_bin * p.network_bin_s, duration_s)
    return NetworkMetrics(
        count=int(first_bin.size),
        rate_per_min=first_bin.size / (duration_s / 60.0),
        mean_duration_s=float((ends - starts).mean()),
        mean_participating_electrodes=float(electrodes.mean()),
        min_electrodes_per_bin=threshold,
        bursts=[NetworkBurst(start_s=float(s), end_s=float(e), electrodes=int(n), spikes=int(k))
                for s, e, n, k in zip(starts[:1000], ends[:1000], electrodes[:1000], spikes_per[:1000])],
    )


def _independent_threshold(t: np.ndarray, ch: np.ndarray, active: np.ndarray, duration_s: float, n_bins: int,
                           p: MetricsParams) -> int:
    """The fewest electrodes per bin that independent trains with these rates reach, in any of
    the recording's bins, with probability below `network_max_chance`: the exact distribution
    of the number of electrodes firing in a bin (a Poisson-binomial: each electrode fires in a
    bin with 1 - exp(-rate x bin)), Bonferroni over the bins."""
    rates = np.bincount(ch, minlength=active.size)[active] / max(duration_s, 1e-9)
    dist = np.ones(1)
    for q in 1.0 - np.exp(-rates * p.network_bin_s):
        dist = np.convolve(dist, (1.0 - q, q))
    tail = np.cumsum(dist[::-1])[::-1]  # tail[c] = P(at least c electrodes fire in a bin)
    rare = np.flatnonzero(tail <= p.network_max_chance / max(n_bins, 1))
    return int(rare[0]) if rare.size else int(active.sum()) + 1


# ------------------------------------------------------------------ synchrony


def _tiled_fraction(t: np.ndarray, lag: float, duration: float) -> float:
    """Fraction of [0, duration] within +-lag of a spike of the sorted train t."""
    if t.size == 0:
        return 0.0
    lo, hi = np.clip(t - lag, 0, duration), np.clip(t + lag, 0, duration)
    overlap = np.clip(hi[:-1] - lo[1:], 0, None)  # consecutive windows overlapping
    return float(((hi - lo).sum() - overlap.sum()) / duration)


def _proportion_near(a: np.ndarray, b: np.ndarray, lag: float) -> float:
    """Fraction of spikes of a within +-lag of some spike of b (both sorted)."""
    if a.size == 0 or b.size == 0:
        return 0.0
    i = np.searchsorted(b, a)
    before = np.abs(a - b[np.clip(i - 1, 0, b.size - 1)])
    after = np.abs(b[np.clip(i, 0, b.size - 1)] - a)
    return float((np.minimum(before, after) <= lag).mean())


def sttc(a: np.ndarray, b: np.ndarray, lag_s: float, duration_s: float) -> float:
    """Spike time tiling coefficient of two sorted trains (Cutts & Eglen 2014)."""
    ta, tb = _tiled_fraction(a, lag_s, duration_s), _tiled_fraction(b, lag_s, duration_s)
    pa, pb = _proportion_near(a, b, lag_s), _proportion_near(b, a, lag_s)

    def term(p, t):
        return 0.0 if p * t == 1.0 else (p - t) / (1.0 - p * t)

    return 0.5 * (term(pa, tb) + term(pb, ta))


def synchrony(trains: list[np.ndarray], counts: np.ndarray, active: np.ndarray, duration_s: float,
              p: MetricsParams) -> Synchrony:
    candidates = np.flatnonzero(active)
    chosen = candidates[np.argsort(-counts[candidates], kind="stable")][: p.sttc_max_electrodes]
    values = [sttc(trains[i], trains[j], p.sttc_lag_s, duration_s)
              for k, i in enumerate(chosen) for j in chosen[k + 1:]]
    return Synchrony(lag_s=p.sttc_lag_s, electrodes=int(chosen.size), pairs=len(values),
                     sttc_mean=float(np.mean(values)) if values else None)


# ------------------------------------------------------------------ response to stimulation

PSTH_BIN_S = 0.002
RESPONSE_SPANS_S = (0.01, 0.025, 0.05)  # and the whole window


def stimulus_response(times_s: np.ndarray, channels: np.ndarray, stimuli_s: np.ndarray, n_channels: int,
                      duration_s: float, p: MetricsParams) -> StimulusResponse | None:
    """How the electrodes answer the stimuli (see the module's definition); None with fewer than
    `stimulus_min_count` stimuli. times_s and channels: every spike, in any order."""
    stim = np.unique(np.asarray(stimuli_s, np.float64))
    if stim.size < max(p.stimulus_min_count, 1) or duration_s <= 0:
        return None
    w = p.stimulus_window_s
    # each stimulus's window ends at the next stimulus: a spike answers the last one before it
    ends = np.minimum(stim + w, np.append(stim[1:], np.inf))
    ends = np.minimum(ends, duration_s)
    lengths = np.maximum(ends - stim, 0)
    window_s = float(lengths.sum())  # the windows' total length
    elsewhere_s = duration_s - window_s
    t = np.asarray(times_s, np.float64)
    ch = np.asarray(channels, np.int64)
    k = np.searchsorted(stim, t, "right") - 1
    inside = k >= 0
    inside[inside] = t[inside] < ends[k[inside]]
    total = np.bincount(ch, minlength=n_channels)[:n_channels]
    answered = np.bincount(ch[inside], minlength=n_channels)[:n_channels]
    rate = (total - answered + 1) / max(elsewhere_s, 1e-9)  # one spike more: a silent electrode is no proof
    # a response is sought in the first 10, 25, 50 ms ... of the window, and the most surprising
    # kept (a 12 ms response drowns in 100 ms of a 20 Hz electrode's own firing); the count of
    # tries goes into the correction
    tk, ck, kk = t[inside], ch[inside], k[inside]
    delay = tk - stim[kk]
    spans = [L for L in RESPONSE_SPANS_S if L < w] + [w]
    surprise = np.zeros((len(spans), n_channels))
    counts = np.zeros((len(spans), n_channels))
    expect = np.zeros((len(spans), n_channels))
    for i, span in enumerate(spans):
        counts[i] = np.bincount(ck[delay < span], minlength=n_channels)[:n_channels]
        expect[i] = rate * float(np.minimum(lengths, span).sum())
        some = counts[i] > expect[i]
        surprise[i, some] = poisson_surprise(counts[i, some], expect[i, some], 1.0)  # the span in units of 1/rate
    best = np.argmax(surprise, axis=0)
    cols = np.arange(n_channels)
    tested = int((total > 0).sum())
    responds = surprise[best, cols] >= np.log(max(tested * len(spans), 1) / p.stimulus_max_chance)
    # first spike after each stimulus, per electrode: spikes in (electrode, time) order
    order = np.lexsort((tk, ck))
    pairs, first = np.unique(ck[order] * stim.size + kk[order], return_index=True)
    latency = delay[order][first]
    pair_ch = pairs // stim.size  # sorted: each electrode's pairs are one slice
    electrodes = []
    for c in np.flatnonzero(responds):
        span = spans[best[c]]
        lat = latency[np.searchsorted(pair_ch, c, "left"):np.searchsorted(pair_ch, c, "right")]
        lat = lat[lat < span]
        chance = float(np.mean(-np.expm1(-(total[c] - answered[c]) / max(elsewhere_s, 1e-9)
                                         * np.minimum(lengths, span))))
        seen = lat.size / stim.size
        electrodes.append(ElectrodeResponse(
            channel_index=int(c), window_ms=span * 1e3,
            response_probability=max(0.0, (seen - chance) / max(1.0 - chance, 1e-9)),
            evoked_spikes_per_stimulus=float((counts[best[c], c] - expect[best[c], c]) / stim.size),
            median_latency_ms=float(np.median(lat) * 1e3), surprise=float(surprise[best[c], c])))
    electrodes.sort(key=lambda e: -e.surprise)
    # peri-stimulus histogram of all spikes, -w .. +w around each stimulus
    order_t = np.sort(t)
    which, at = ranges(np.searchsorted(order_t, stim - w), np.searchsorted(order_t, stim + w))
    n_bins = max(1, int(round(2 * w / PSTH_BIN_S)))
    bins = np.clip(((order_t[at] - stim[which] + w) / PSTH_BIN_S).astype(np.int64), 0, n_bins - 1)
    lat_all = [e.median_latency_ms for e in electrodes]
    return StimulusResponse(
        stimuli=int(stim.size), window_s=w, electrodes_tested=tested, responding_electrodes=len(electrodes),
        median_latency_ms=float(np.median(lat_all)) if lat_all else None,
        evoked_spikes_per_stimulus=float((answered.sum() - (total - answered).sum() * window_s
                                          / max(elsewhere_s, 1e-9)) / stim.size),
        psth_start_s=-w, psth_bin_s=PSTH_BIN_S,
        psth_counts=[int(v) for v in np.bincount(bins, minlength=n_bins)],
        electrodes=electrodes[:1000])


# ------------------------------------------------------------------ the summary


def summarize(
    spikes: SpikeTable,
    *,
    recording_id: str,
    recording_name: str,
    format: str,
    n_channels: int,
    sampling_rate_hz: float,
    n_samples: int,
    channel_ids: tuple[str, ...],
    channel_locations_um: tuple[tuple[float, float], ...],
    detection_parameters: dict,
    noise_uv: np.ndarray | None = None,
    saturated_samples: np.ndarray | None = None,
    silenced_samples: np.ndarray | None = None,
    artefact_samples: np.ndarray | None = None,
    params: MetricsParams = MetricsParams(),
) -> Summary:
    duration_s = n_samples / sampling_rate_hz
    minutes = duration_s / 60.0
    ch = np.asarray(spikes.channel_index, dtype=np.int64)
    counts = np.bincount(ch, minlength=n_channels)[:n_channels]
    rates = counts / duration_s if duration_s > 0 else np.zeros(n_channels)
    active = counts / minutes >= params.active_min_spikes_per_min if duration_s > 0 else counts > 0

    # spikes grouped by electrode, in time order within each: one sort, then slices
    order = np.lexsort((spikes.sample_index, ch))
    times = np.asarray(spikes.sample_index, dtype=np.float64)[order] / sampling_rate_hz
    amps = np.asarray(spikes.amplitude_uv, dtype=np.float32)[order]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    trains = [times[bounds[i]:bounds[i + 1]] for i in range(n_channels)]

    channels = []
    for i in range(n_channels):  # a loop over electrodes; the work inside is vectorised
        burst = _burst_metrics(trains[i], duration_s, params) if active[i] else {}
        a = amps[bounds[i]:bounds[i + 1]]
        channels.append(ChannelMetrics(
            channel_index=i, channel_id=channel_ids[i], x_um=channel_locations_um[i][0],
            y_um=channel_locations_um[i][1], spike_count=int(counts[i]), firing_rate_hz=float(rates[i]),
            active=bool(active[i]), median_amplitude_uv=float(np.median(a)) if a.size else None,
            noise_uv=float(noise_uv[i]) if noise_uv is not None else None, **burst))

    network = network_bursts(times, ch[order], active, duration_s, params) if duration_s > 0 else None
    sync = synchrony(trains, counts, active, duration_s, params) if duration_s > 0 else None
    noisy = [i for i in range(n_channels) if rates[i] > params.noisy_rate_hz]
    silent = int((counts == 0).sum())
    notes = []
    if silent:
        notes.append(f"{silent} of {n_channels} electrodes recorded no spike (dead, unconnected or silent)")
    if noisy:
        notes.append(f"{len(noisy)} electrodes fire above {params.noisy_rate_hz:g} Hz: likely noise or artefacts")
    if noise_uv is not None and noise_uv.size:
        med = float(np.median(noise_uv))
        high = int((noise_uv > 3 * med).sum())
        if high:
            notes.append(f"{high} electrodes have over 3x the median noise ({med:.1f} uV)")
    flat = [int(i) for i in np.flatnonzero(noise_uv < FLAT_NOISE_UV)] if noise_uv is not None else []
    if flat and len(flat) == n_channels:
        notes.insert(0, "The signal is flat: no electrode ever leaves its baseline (a file of zeros, or nothing was "
                        "connected). There is nothing to analyse: check the recording.")
    elif flat:
        notes.append(f"{len(flat)} electrodes never leave the converter's baseline (a constant signal: "
                     "disconnected or switched off)")
    saturated: list[int] = []
    if saturated_samples is not None and n_samples > 0:
        saturated = [int(i) for i in np.flatnonzero(
            np.asarray(saturated_samples) / n_samples > params.saturated_max_fraction)]
        if saturated:
            notes.append(f"{len(saturated)} electrodes are clipped (> {100 * params.saturated_max_fraction:g} % of "
                         "samples at the converter's limits): check the gain or the reference")
    silenced_fraction = None
    if silenced_samples is not None and n_samples > 0 and n_channels > 0:
        silenced = np.asarray(silenced_samples, np.int64)
        silenced_fraction = float(silenced.sum()) / (n_samples * n_channels)
        if silenced_fraction >= SILENCED_NOTE_FRACTION:
            notes.append(f"Detection did not read {100 * silenced_fraction:.1f} % of the recording (on "
                         f"{int((silenced > 0).sum())} electrodes): around stimulation artefacts and clipped "
                         "samples, until each trace was quiet again. Spikes there are not counted.")
    stimuli = None
    if artefact_samples is not None:
        stimuli = [round(float(s) / sampling_rate_hz, 5) for s in np.asarray(artefact_samples, np.int64)]
        if len(stimuli) == 1:
            notes.append(f"1 stimulation artefact was found, at {stimuli[0]:.3f} s")
        elif stimuli:
            every = float(np.median(np.diff(stimuli)))
            notes.append(f"{len(stimuli)} stimulation artefacts were found (one every {every:.3g} s, median), from "
                         f"{stimuli[0]:.3f} s to {stimuli[-1]:.3f} s: marked on the raster, times in summary.json "
                         "(quality.stimulation_artefacts_s)")
    response = None
    if stimuli and duration_s > 0:
        response = stimulus_response(times, ch[order], np.asarray(artefact_samples, np.float64) / sampling_rate_hz,
                                     n_channels, duration_s, params)
    quality = Quality(silent_electrodes=silent, noisy_electrodes=noisy, saturated_electrodes=saturated,
                      flat_electrodes=flat, silenced_fraction=silenced_fraction, stimulation_artefacts_s=stimuli,
                      median_noise_uv=float(np.median(noise_uv)) if noise_uv is not None and noise_uv.size else None,
                      notes=notes)
    return Summary(
        recording_id=recording_id,
        recording_name=recording_name,
        format=format,
        n_channels=n_channels,
        sampling_rate_hz=sampling_rate_hz,
        duration_s=duration_s,
        total_spikes=int(counts.sum()),
        active_electrodes=int(active.sum()),
        mean_firing_rate_hz=float(rates[active].mean()) if active.any() else 0.0,
        mean_firing_rate_all_hz=float(rates.mean()) if n_channels else 0.0,
        bursting_electrodes=sum(1 for c in channels if c.bursts > 0),
        network=network,
        synchrony=sync,
        quality=quality,
        stimulus_response=response,
        parameters={"detection": detection_parameters, "metrics": params.model_dump()},
        channels=channels,
    )
