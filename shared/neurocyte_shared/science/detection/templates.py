"""Spike templates learned from a recording's isolated spikes, for peeling."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ..arrays import ranges
from . import _kernels
from .params import (
    CLUSTER_ROUNDS,
    ISOLATION_MS,
    ISOLATION_UM,
    PEEL_FIT_CHANNELS,
    PEEL_FIT_MS,
    PEEL_FOOTPRINT,
    PEEL_SCALE,
    TEMPLATE_MAX_CHANNELS,
    TEMPLATE_MAX_CLUSTERS,
    TEMPLATE_MERGE_STAT,
    TEMPLATE_MIN_MEMBERS,
    TEMPLATE_MIN_SHARE,
    TEMPLATE_MIN_SPIKES,
    TEMPLATE_SNIPPET_BUDGET,
    TEMPLATE_SPIKES_PER_CLUSTER,
    DetectionParams,
    _template_after,
    _template_before,
)
from .peaks import _distances_of, _rank_in_row, find_peaks


@dataclass(frozen=True)
class Templates:
    """Spike templates of a recording: waveforms[j] (width x the layout's support columns, at
    most TEMPLATE_MAX_CHANNELS; float32 uV, preprocessed) over channels
    support[j, :n_support[j]], sample `before` on the peak of peak channel anchor[j]."""

    waveforms: np.ndarray
    support: np.ndarray
    n_support: np.ndarray
    anchor: np.ndarray
    before: int
    # per channel, the matched filter's noise on the pooled traces (`matched.matched_noise`);
    # None: no matched search
    matched_noise: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.anchor.size)

    @staticmethod
    def empty(width: int = 1, before: int = 0) -> Templates:
        return Templates(np.zeros((0, width, TEMPLATE_MAX_CHANNELS), np.float32),
                         np.zeros((0, TEMPLATE_MAX_CHANNELS), np.int32), np.zeros(0, np.int32),
                         np.zeros(0, np.int32), before)

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        extra = {} if self.matched_noise is None else {"matched_noise": self.matched_noise}
        np.savez(buf, waveforms=self.waveforms, support=self.support, n_support=self.n_support,
                 anchor=self.anchor, before=np.int64(self.before), **extra)
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> Templates:
        import io

        z = np.load(io.BytesIO(data))
        return Templates(z["waveforms"].astype(np.float32), z["support"].astype(np.int32),
                         z["n_support"].astype(np.int32), z["anchor"].astype(np.int32), int(z["before"]),
                         z["matched_noise"].astype(np.float32) if "matched_noise" in z.files else None)

    def with_matched_noise(self, sampling_rate_hz: float, blocks: list, noise_uv: np.ndarray,
                           pool_noise: np.ndarray | None, pool) -> Templates:
        """These templates with the matched filter's noise measured on `blocks` (the learning
        chunks' `matched.learning_block`s); as they are where there is nothing to measure."""
        blocks = [b for b in blocks if b is not None]
        if len(self) == 0 or not blocks or pool_noise is None or pool is None:
            return self
        from .matched import matched_kernel, matched_noise

        kernel, _ = matched_kernel(self.waveforms[:, :, 0], self.before, sampling_rate_hz)
        return replace(self, matched_noise=matched_noise(blocks, noise_uv, pool, pool_noise, kernel))


@dataclass(frozen=True)
class _Layout:
    distances: np.ndarray  # channels x channels, um
    # channels x (at most TEMPLATE_MAX_CHANNELS: as many as the best-surrounded channel has):
    # nearest channels within the radius, nearest first
    support: np.ndarray
    n_support: np.ndarray


def _layout(channel_locations_um: np.ndarray | None, n_channels: int, radius_um: float) -> _Layout:
    if channel_locations_um is None:  # no geometry: every channel alone
        loc = np.stack([np.arange(n_channels) * 1e6, np.zeros(n_channels)], axis=1)
    else:
        loc = np.ascontiguousarray(channel_locations_um, dtype=np.float64).reshape(n_channels, -1)
    return _layout_of(loc.tobytes(), n_channels, float(radius_um))


@lru_cache(maxsize=8)
def _layout_of(locations: bytes, n_channels: int, radius_um: float) -> _Layout:
    distances = _distances_of(locations, n_channels)  # the one copy detection uses too
    rows, cols = np.nonzero(distances <= radius_um)
    order = np.lexsort((cols, distances[rows, cols], rows))  # per channel: nearest first, ties by index
    rows, cols = rows[order], cols[order]
    rank = _rank_in_row(rows)
    kept = rank < TEMPLATE_MAX_CHANNELS
    # no wider than needed: snippets and templates take this many columns (a 2-column probe
    # has far fewer channels within the radius than a dense grid)
    support = np.zeros((n_channels, int(rank[kept].max(initial=0)) + 1), np.int32)
    support[rows[kept], rank[kept]] = cols[kept]
    n_support = np.bincount(rows[kept], minlength=n_channels).astype(np.int32)
    return _Layout(distances, support, n_support)


def learn_templates(chunks, sampling_rate_hz: float, params: DetectionParams, noise_uv: np.ndarray,
                    channel_locations_um: np.ndarray | None, pool_noise: np.ndarray | None = None) -> Templates:
    """Templates from preprocessed chunks (samples x channels arrays) of one recording; with
    pool_noise (`peaks.pooled_noise`), the matched filter's noise too."""
    from .detect import noise_chunk_starts
    from .matched import learning_block, wanted

    per_chunk = [_snippets(x, sampling_rate_hz, params, noise_uv, channel_locations_um) for x in chunks]
    n_channels = chunks[0].shape[1] if per_chunk else 1
    templates = _templates(per_chunk, sampling_rate_hz, params, channel_locations_um, n_channels, noise_uv)
    pool = wanted(params, channel_locations_um, n_channels)
    # where `learn_recording` would take its chunks of an array this long: the same blocks
    blocks = [learning_block(x[s:], pool) for x in chunks for s in noise_chunk_starts(x.shape[0], sampling_rate_hz,
                                                                                       params)]
    return templates.with_matched_noise(sampling_rate_hz, blocks, noise_uv, pool_noise, pool)


@dataclass(frozen=True)
class ChunkSnippets:
    """One chunk's isolated spikes: how many each channel has (up to `_snippet_cap`), and the
    snippets gathered of them, the first ones in time (all, unless `_Room` said fewer)."""

    counts: np.ndarray  # per channel
    snippets: dict[int, np.ndarray]  # peak channel -> spikes x width x its support (float16)


class _Room:
    """What the chunks of one recording still need to gather, chunk i knowing the counts of
    the chunks done so far (in any order: a thread pool's). The snippets kept are each
    channel's first `level` in chunk order (`_water_level`), and the level only falls as
    counts grow: once the chunks done exceed the budget, their level bounds the final one,
    and a channel's spikes past that bound (counting its spikes in the done chunks before i)
    are never kept. Not gathering them changes nothing learned; on the bench's 1,024
    channels 21,857 snippets are gathered of the 38,130 counted."""

    def __init__(self, n_chunks: int) -> None:
        self.counts: list[np.ndarray | None] = [None] * n_chunks
        self.lock = threading.Lock()

    def left(self, i: int) -> np.ndarray | None:
        with self.lock:
            done = [c for c in self.counts if c is not None]
            if sum(int(c.sum()) for c in done) <= TEMPLATE_SNIPPET_BUDGET:
                return None
            bound = _water_level(np.sum(done, axis=0), TEMPLATE_SNIPPET_BUDGET)
            before = [c for c in self.counts[:i] if c is not None]
            return np.maximum(bound - np.sum(before, axis=0), 0) if before else np.full(done[0].size, bound)

    def add(self, i: int, counts: np.ndarray) -> None:
        with self.lock:
            self.counts[i] = counts


def _snippets(x: np.ndarray, sampling_rate_hz: float, params: DetectionParams, noise_uv: np.ndarray,
              channel_locations_um: np.ndarray | None, left: np.ndarray | None = None) -> ChunkSnippets:
    """Isolated spikes of one preprocessed chunk, per peak channel: the first few (in time) as
    an array spikes x width x support, at most left[channel] of them. Gathered at once, not
    spike by spike in Python: that held the GIL for a seventh of the time on 1024 channels,
    time no other thread could use."""
    before, after = _template_before(sampling_rate_hz), _template_after(sampling_rate_hz)
    n_samples, n_channels = x.shape
    layout = _layout(channel_locations_um, n_channels, params.peel_radius_um)
    found = find_peaks(x, sampling_rate_hz, params, noise_uv=noise_uv, channel_locations_um=channel_locations_um,
                       valid=(before, n_samples - after))
    alone = _isolated(found.sample_index, found.channel_index, layout.distances,
                      int(round(ISOLATION_MS * 1e-3 * sampling_rate_hz)))
    t, c = found.sample_index[alone], found.channel_index[alone]
    by_channel = np.argsort(c, kind="stable")  # time order kept within a channel
    t, c = t[by_channel], c[by_channel]
    rank = np.arange(c.size) - np.searchsorted(c, c, "left")
    kept = rank < _snippet_cap(n_channels)
    counts = np.bincount(c[kept], minlength=n_channels)
    if left is not None:
        kept &= rank < left[c]
    t, c = t[kept], c[kept]
    if not t.size:
        return ChunkSnippets(counts, {})
    # spikes x width x support, then each channel's own support. float16: a template is a
    # mean of these, and half the memory (the budget of snippets is 16 K x at most 64 channels
    # x the width: 285 MB at 30 kHz, not 570); clipped: an artefact, not inf.
    snippets = np.empty((t.size, before + after + 1, layout.support.shape[1]), np.float16)
    _kernels.kernels.gather_snippets(np.ascontiguousarray(x, np.float32).view(np.uint32), t, c, layout.support,
                                     layout.n_support, before, snippets.view(np.uint16))
    channels, starts = np.unique(c, return_index=True)
    stops = np.append(starts[1:], c.size)
    return ChunkSnippets(counts, {int(ch): snippets[a:b, :, : layout.n_support[ch]]
                                  for ch, a, b in zip(channels, starts, stops)})


def _snippet_cap(n_channels: int) -> int:
    """Isolated spikes one chunk keeps per channel: an even share of the budget."""
    return max(TEMPLATE_MIN_SPIKES, TEMPLATE_SNIPPET_BUDGET // n_channels)


def _water_level(counts: np.ndarray, budget: int) -> int:
    """The largest per-channel cap L with sum(min(counts, L)) <= budget (at least
    TEMPLATE_MIN_SPIKES): channels with fewer spikes than L keep them all, and what they leave
    goes to the others."""
    counts = np.sort(counts)
    if counts.size == 0 or counts.sum() <= budget:
        return int(counts.max(initial=TEMPLATE_MIN_SPIKES))
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])  # spikes of the channels under counts[i]
    # with L = counts[i], the total is below[i] + L * (n - i); the level lies past the last
    # count that fits
    n = counts.size
    fits = below + counts * (n - np.arange(n)) <= budget
    i = int(np.argmin(fits))  # the first count that does not fit (one does: the sum exceeds budget)
    return max(TEMPLATE_MIN_SPIKES, int((budget - below[i]) // (n - i)))


def _templates(per_chunk, sampling_rate_hz: float, params: DetectionParams,
               channel_locations_um: np.ndarray | None, n_channels: int, noise_uv: np.ndarray) -> Templates:
    """Per peak channel, the means of up to TEMPLATE_MAX_CLUSTERS k-means clusters of its
    isolated spikes (the first ones in chunk order, up to a memory budget), each kept only if
    it explains its own spikes (`_invents`). Deterministic: every worker learns the same
    templates."""
    before, after = _template_before(sampling_rate_hz), _template_after(sampling_rate_hz)
    width = before + after + 1
    layout = _layout(channel_locations_um, n_channels, params.peel_radius_um)
    gathered: dict[int, list[np.ndarray]] = {}
    counts = np.zeros(n_channels, np.int64)
    for chunk in per_chunk:
        counts += chunk.counts
        for c, found in chunk.snippets.items():
            gathered.setdefault(c, []).append(found)
    # The budget is shared by the channels that have spikes to learn from, not split evenly
    # over all of them: on a 384-channel probe half the channels are no unit's peak, and an
    # even split left each busy channel 42 of the 85 it had gathered (too few to tell apart
    # two units that peak on it).
    level = _water_level(counts[counts > 0], TEMPLATE_SNIPPET_BUDGET)
    fit0, fit1 = _fit_window(before, sampling_rate_hz)
    waveforms, anchors = [], []
    rng = np.random.default_rng(0)
    for c in sorted(gathered):
        flat = np.concatenate(gathered[c])[:level]  # the first ones in chunk order
        if flat.shape[0] < TEMPLATE_MIN_SPIKES:
            continue
        k = max(1, min(TEMPLATE_MAX_CLUSTERS, flat.shape[0] // TEMPLATE_SPIKES_PER_CLUSTER))
        points = flat.reshape(flat.shape[0], -1).astype(np.float32)
        if k > 1:
            # k-means sees what peeling's fit sees (its window, its channels): a seventh of the
            # dimensions on a dense grid, and the part of a spike that tells two units apart
            features = flat[:, fit0:fit1, :PEEL_FIT_CHANNELS].reshape(flat.shape[0], -1).astype(np.float32)
            labels = _clusters(points, k, rng, features)
        else:
            labels = np.zeros(flat.shape[0], np.int64)
        for j in range(k):
            members = points[labels == j]
            if members.shape[0] >= max(TEMPLATE_MIN_MEMBERS, TEMPLATE_MIN_SHARE * points.shape[0]):
                mean = members.mean(0)
                noise = noise_uv[layout.support[c, : layout.n_support[c]]]
                if _invents(members.reshape(members.shape[0], width, -1), mean.reshape(width, -1), noise,
                            before, sampling_rate_hz, params):
                    continue
                w = np.zeros((width, layout.support.shape[1]), np.float32)
                w[:, : layout.n_support[c]] = mean.reshape(width, -1)
                waveforms.append(w)
                anchors.append(c)
    if not waveforms:
        return Templates.empty(width, before)
    anchor = np.array(anchors, np.int32)
    return Templates(np.stack(waveforms), layout.support[anchor].copy(), layout.n_support[anchor].copy(), anchor,
                     before)


def _invents(members: np.ndarray, mean: np.ndarray, noise_uv: np.ndarray, before: int, sampling_rate_hz: float,
             params: DetectionParams) -> bool:
    """A template learned badly: subtracted from its own spikes (isolated, so whatever remains
    is noise) as peeling would, it leaves a peak beyond the peel threshold on its footprint
    for more than params.peel_max_invented of them. Peeling with it would invent spikes, so it
    is not used: peeling backs off where it cannot explain what it sees.
    Nor is a mean that does not reach the detection threshold on its own channel at its peak:
    spikes found beyond it average below it only when they are not one shape, as noise
    crossings are. It would then "explain" any noise peak of its size. (The real Multi Channel
    Systems recording's one template, of 8 crossings, peaked at 4.9x the noise, and peeling
    added 2 spikes with it; every template learned on the bench peaks at 5.3x or more.)"""
    sign = {"neg": -1.0, "pos": 1.0}.get(params.peak_sign)
    peak = mean[before, 0] * sign if sign is not None else abs(mean[before, 0])
    if peak < params.threshold_mad * noise_uv[0]:
        return True
    fit0, fit1 = _fit_window(before, sampling_rate_hz)
    fit = mean[fit0:fit1, :PEEL_FIT_CHANNELS]
    tt = float((fit * fit).sum())
    if tt <= 0:
        return True
    a = np.clip((members[:, fit0:fit1, :PEEL_FIT_CHANNELS] * fit).sum(axis=(1, 2)) / tt, *PEEL_SCALE)
    reach = np.abs(mean).max(axis=0)
    footprint = reach >= PEEL_FOOTPRINT * reach.max()
    footprint[0] = False  # the spike's own channel: its leftover there is never a new spike (dead time)
    # within the fit window only: a leftover is where the spike was; another spike later in the
    # window (one that detection missed or merged) is not the template's fault
    residual = (members[:, fit0:fit1, footprint] - a[:, None, None] * mean[None, fit0:fit1, footprint]) \
        / noise_uv[footprint]
    score = residual * sign if sign is not None else np.abs(residual)
    invented = (score > params.peel_threshold_mad).any(axis=(1, 2))
    return float(invented.mean()) > params.peel_max_invented


def _fit_window(before: int, sampling_rate_hz: float) -> tuple[int, int]:
    """The samples of a template (peak at `before`) that peeling's fit looks at."""
    return (max(0, before - int(round(PEEL_FIT_MS[0] * 1e-3 * sampling_rate_hz))),
            before + int(round(PEEL_FIT_MS[1] * 1e-3 * sampling_rate_hz)) + 1)


def _clusters(points: np.ndarray, k: int, rng: np.random.Generator,
              features: np.ndarray | None = None) -> np.ndarray:
    """k-means labels of `features` (default: the points themselves), then `_merge_alike` on the
    points; -1 for outliers: points k-means put in clusters too small to be a template.
    k-means++ seeds far from the chosen centres, and the farthest snippets are those with
    another neuron's spike in the window: seeded there, k-means spent clusters on 1-4 such
    snippets and left two units in one cluster, whose mean then fits neither (on the
    384-channel probe, two units of 9 and 11x the noise got no template). Without the
    outliers k-means is run again, a few times at most."""
    kept = np.arange(points.shape[0])
    for _ in range(CLUSTER_ROUNDS):
        labels = _kmeans((points if features is None else features)[kept], k, rng)
        small = np.bincount(labels, minlength=k)[labels] < TEMPLATE_MIN_MEMBERS
        if small.all():
            return np.full(points.shape[0], -1, np.int64)
        kept, labels = kept[~small], labels[~small]
        if not small.any():
            break
    out = np.full(points.shape[0], -1, np.int64)
    out[kept] = _merge_alike(points[kept], labels)
    return out


def _merge_alike(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels with the clusters that are one unit merged, closest pair first: k-means splits one
    unit's spikes along the noise, and each part's mean is a noisier template than the whole.
    Per dimension, the squared difference of two means over what the noise gives for means of
    their sizes (the clusters' own pooled spread): about 1 for two halves of the same spikes
    drawn at random, 1.6-2.0 once k-means chooses the split."""
    labels = labels.copy()
    # per cluster: size, mean and sum of squared deviations per dimension, computed once and
    # again only for a merged cluster (each pair's pooled spread is (SS_a + SS_b) / (n_a + n_b))
    moments = {int(j): _moments(points[labels == j]) for j in np.unique(labels)}
    while len(moments) > 1:
        stats = []
        ids = sorted(moments)
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                (na, ma, ssa), (nb, mb, ssb) = moments[ids[a]], moments[ids[b]]
                if na < 2 or nb < 2:
                    continue
                spread = (ssa + ssb) / (na + nb) + 1e-12
                stat = float(((ma - mb) ** 2 / spread).mean() / (1 / na + 1 / nb))
                stats.append((stat, ids[a], ids[b]))
        if not stats:
            return labels
        stat, keep, gone = min(stats)
        if stat >= TEMPLATE_MERGE_STAT:
            return labels
        labels[labels == gone] = keep
        del moments[gone]
        moments[keep] = _moments(points[labels == keep])
    return labels


def _moments(points: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    mean = points.mean(0)
    return points.shape[0], mean, ((points - mean) ** 2).sum(0)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 20) -> np.ndarray:
    """Cluster labels of points (n x d) by k-means with k-means++ seeding. Written out rather
    than scipy.cluster.vq.kmeans2: importing scipy.cluster costs a large share of every command's
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
    # (spike, other spike) pairs close in time
    first, second = ranges(np.searchsorted(t, t - window, "left"), np.searchsorted(t, t + window, "right"))
    crowded = (first != second) & (distances[c[first], c[second]] <= ISOLATION_UM)
    alone = np.ones(t.size, bool)
    alone[first[crowded]] = False
    return alone
