"""The detection function on arrays: no AWS, no files."""

import numpy as np
import pytest
import scipy.signal

from neurocyte_shared.science.detection import (
    DetectionParams,
    SpikeTable,
    butter_bandpass_sos,
    detect_spikes,
    estimate_noise,
    noise_levels,
    preprocess,
)
from neurocyte_shared.science.detection.params import REFERENCE_CHUNKS
from neurocyte_shared.science.synthetic import SyntheticSpec, grid_locations, write_recording

FS = 20_000.0


# At least 16 channels: a median reference over very few channels leaves residuals whose MAD
# underestimates their spread (the middle channels cancel), which no real array has.
def _noise(n_ch, n, seed=0, sigma=6.0):
    """White noise, samples x channels (time-major, as recorded), in microvolts."""
    noise = np.random.default_rng(seed).standard_normal((n_ch, n)) * sigma
    return np.ascontiguousarray(noise.T, dtype=np.float32)


def _plant(x, channel, sample, amp):
    t = np.arange(40)
    w = -np.exp(-(((t - 12) / 2.6) ** 2)) * amp
    x[sample - 12 : sample + 28, channel] += w
    return x


def test_finds_planted_spikes_at_their_time_and_channel():
    x = _noise(16, 40_000)
    times = [5_000, 12_345, 20_000, 33_333]
    for i, t in enumerate(times):
        _plant(x, i % 4, t, 120.0)
    table = detect_spikes(x, FS)
    assert len(table) == 4
    assert np.all(np.abs(table.sample_index - np.array(times)) <= 2)
    assert table.channel_index.tolist() == [0, 1, 2, 3]
    assert np.all(table.amplitude_uv < -80)


def test_noise_alone_gives_almost_nothing():
    x = _noise(16, 200_000)  # 10 s of white noise, 16 channels
    table = detect_spikes(x, FS)
    # 5 x MAD noise: a Gaussian peak crosses it ~3e-7 of the time; the median reference makes the
    # residual tails slightly heavier. Far below any firing rate: < 0.1 Hz per channel.
    assert len(table) <= 16


def test_dead_time_keeps_one_peak_per_spike():
    x = _noise(16, 20_000)
    _plant(x, 0, 10_000, 150.0)
    _plant(x, 0, 10_010, 60.0)  # a smaller wiggle 0.5 ms later: inside the dead time
    table = detect_spikes(x, FS, DetectionParams(dead_time_ms=1.0))
    assert table.sample_index.tolist() == [10_000] or abs(int(table.sample_index[0]) - 10_000) <= 2
    assert len(table) == 1


def test_spatial_deduplication_keeps_the_peak_channel_only():
    loc = np.array([[0, 0], [20, 0], [40, 0], [500, 0]] + [[1000 + 200 * i, 0] for i in range(12)], float)
    x = _noise(16, 20_000)
    _plant(x, 0, 8_000, 80.0)
    _plant(x, 1, 8_000, 150.0)  # the same spike, largest here
    _plant(x, 2, 8_000, 90.0)
    _plant(x, 3, 8_000, 100.0)  # far away: a different neuron firing at the same time
    table = detect_spikes(x, FS, channel_locations_um=loc)
    assert sorted(table.channel_index.tolist()) == [1, 3]
    per_channel = detect_spikes(x, FS, DetectionParams(radius_um=0), channel_locations_um=loc)
    per_channel = SpikeTable(*(a[per_channel.sample_index == 8_000] for a in
                               (per_channel.sample_index, per_channel.channel_index, per_channel.amplitude_uv)))
    assert sorted(per_channel.channel_index.tolist()) == [0, 1, 2, 3]


def test_windows_with_margins_equal_the_whole_recording():
    """Spikes planted on and near window borders are neither lost nor doubled."""
    n, window = 100_000, 25_000
    x = _noise(16, n, seed=3)
    loc = grid_locations(16, 30.0)
    border_spikes = [24_999, 25_000, 25_003, 49_990, 50_010, 74_998, 75_001]
    for i, t in enumerate(border_spikes):
        _plant(x, (3 * i) % 16, t, 110.0)
    params = DetectionParams()
    noise = estimate_noise(lambda a, b: x[a:b], n, FS, params)
    whole = detect_spikes(x, FS, params, noise_uv=noise, channel_locations_um=loc)
    margin = params.margin_samples(FS)
    parts = []
    for start in range(0, n, window):
        lo, hi = max(0, start - margin), min(n, start + window + margin)
        parts.append(detect_spikes(x[lo:hi], FS, params, noise_uv=noise, channel_locations_um=loc,
                                   valid=(start - lo, start + window - lo), first_sample=lo).shifted(lo))
    sharded = SpikeTable.concat(parts)
    assert len(whole) >= len(border_spikes)
    np.testing.assert_array_equal(sharded.sample_index, whole.sample_index)
    np.testing.assert_array_equal(sharded.channel_index, whole.channel_index)
    np.testing.assert_allclose(sharded.amplitude_uv, whole.amplitude_uv, rtol=1e-3, atol=1e-2)


def test_synthetic_recording_ground_truth(tmp_path):
    spec = SyntheticSpec(n_channels=32, duration_s=10.0, n_units=16)
    bin_path, json_path, gt = write_recording(tmp_path, "gt", spec)
    raw = np.fromfile(bin_path, dtype="<i2").reshape(-1, spec.n_channels)
    table = detect_spikes(raw, spec.sampling_rate_hz, gain_uv=spec.gain_uv,
                          channel_locations_um=grid_locations(32, spec.pitch_um))
    # Each planted spike is matched by a detection within 0.4 ms on its unit's channel.
    tol = int(0.4e-3 * spec.sampling_rate_hz)
    hits = total = 0
    for ch, train in zip(gt.unit_channel, gt.spike_samples):
        det = np.sort(table.sample_index[table.channel_index == ch])
        total += train.size
        if det.size:
            idx = np.clip(np.searchsorted(det, train), 1, det.size - 1)
            nearest = np.minimum(np.abs(det[idx] - train), np.abs(det[idx - 1] - train))
            hits += int((nearest <= tol).sum())
    assert total > 500
    assert hits / total >= 0.95
    assert len(table) <= total * 1.05


def test_parameters_carry_units_and_refuse_nonsense():
    with pytest.raises(ValueError):
        DetectionParams(threshold_mad=-1)
    with pytest.raises(ValueError):
        detect_spikes(_noise(2, 1000), 500.0)  # 300 Hz .. Nyquist 250 Hz is no band
    assert DetectionParams().margin_samples(FS) > DetectionParams().dead_time_samples(FS)


@pytest.mark.parametrize("order", [1, 2, 5, 8])
@pytest.mark.parametrize("fs", [10_000.0, 20_000.0, 30_000.0])
def test_filter_design_equals_scipy(order, fs):
    high = min(6000.0, 0.95 * fs / 2)
    ours = butter_bandpass_sos(order, 300.0, high, fs)
    theirs = scipy.signal.butter(order, [300.0, high], "bandpass", fs=fs, output="sos")
    _, h_ours = scipy.signal.sosfreqz(ours, 2048, fs=fs)
    _, h_theirs = scipy.signal.sosfreqz(theirs, 2048, fs=fs)
    np.testing.assert_allclose(h_ours, h_theirs, atol=1e-9)


@pytest.mark.parametrize("reference", ["none", "mean", "median"])
@pytest.mark.parametrize("n_channels", [1, 7, 64, 65])
def test_preprocessing_equals_scipy_and_numpy(reference, n_channels):
    """The fused kernel = scipy's sosfiltfilt, then np.median/np.mean across channels, away from
    the edges (whose transients the margins absorb)."""
    raw = (np.random.default_rng(n_channels).standard_normal((8_000, n_channels)) * 40 + 300).astype(np.int16)
    raw[:, 0] = 0  # a dead channel: ties in the median
    params = DetectionParams(reference=reference)
    ours = preprocess(raw, FS, params, gain_uv=0.195)
    sos = scipy.signal.butter(5, [300, 6000], "bandpass", fs=FS, output="sos")
    want = scipy.signal.sosfiltfilt(sos, raw.astype(np.float64) * 0.195, axis=0, padtype=None)
    if reference == "median" and n_channels > 1:
        want -= np.median(want, axis=1, keepdims=True)
    elif reference == "mean" and n_channels > 1:
        want -= want.mean(axis=1, keepdims=True)
    core = slice(1_000, -1_000)
    np.testing.assert_allclose(ours[core], want[core], atol=2e-3 * np.abs(want[core]).max())


@pytest.mark.parametrize("n_channels", [2, 3, 7, 60, 64, 65, 130])
def test_the_median_reference_is_numpys_median_exactly(n_channels):
    """Up to 64 channels the median comes from a sorting network over 64 samples at a time,
    beyond from a bracketed select: both must be np.median to the bit, ties included, on
    every sample (blocks of 64 and the last partial one)."""
    raw = (np.random.default_rng(n_channels).standard_normal((1_000 + 37, n_channels)) * 40).astype(np.int16)
    raw[:, 0] = 0  # a dead channel
    raw[:, -1] = raw[:, n_channels // 2]  # a shorted pair: equal values
    filtered = preprocess(raw, FS, DetectionParams(reference="none"), gain_uv=0.195)
    referenced = preprocess(raw, FS, DetectionParams(reference="median"), gain_uv=0.195)
    np.testing.assert_array_equal(referenced, filtered - np.median(filtered, axis=1, keepdims=True))


def test_noise_is_mad_over_0_6745():
    x = _noise(16, 10_001, seed=4)
    want = np.median(np.abs(x - np.median(x, axis=0)), axis=0) / 0.6744897501960817
    np.testing.assert_allclose(noise_levels(x), want, rtol=1e-6)


def test_after_wave_of_a_large_spike_is_not_a_second_spike():
    """A big spike's slow recovery phase crosses the threshold again ~2 ms later on the same
    electrode: that is the same spike (echo_ratio), while a real second spike of similar size
    at the same delay is kept."""
    x = _noise(16, 20_000)
    _plant(x, 0, 5_000, 600.0)
    _plant(x, 0, 5_040, 40.0)  # 2 ms later, 15x smaller (10x once filtered): the after-wave
    _plant(x, 5, 12_000, 150.0)
    _plant(x, 5, 12_040, 120.0)  # 2 ms later, similar size: another spike
    table = detect_spikes(x, FS)
    assert table.sample_index.tolist() == [5_000, 12_000, 12_040]
    off = detect_spikes(x, FS, DetectionParams(echo_window_ms=0))
    assert 5_040 in off.sample_index.tolist()


def test_neighbours_firing_half_a_millisecond_apart_are_two_spikes():
    loc = grid_locations(16, 20.0)
    x = _noise(16, 20_000)
    _plant(x, 0, 8_000, 150.0)
    _plant(x, 1, 8_010, 90.0)  # a neighbour 20 um away, 0.5 ms later: another neuron
    table = detect_spikes(x, FS, channel_locations_um=loc)
    assert sorted(zip(table.sample_index.tolist(), table.channel_index.tolist())) == [(8_000, 0), (8_010, 1)]


def test_a_neighbour_spike_on_the_flank_of_a_larger_one_is_kept():
    """A smaller spike on a neighbouring electrode 0.3 ms after a large one: within the spatial
    window the large spike's electrode is still far down its flank, but its own peak lies
    outside the window, so the small spike is another neuron, not the large one's footprint.
    The footprint itself (same time, smaller, next electrode) is still merged."""
    loc = grid_locations(16, 20.0)
    x = _noise(16, 20_000)
    _plant(x, 0, 8_000, 400.0)
    _plant(x, 1, 8_000, 150.0)  # the large spike's footprint on the neighbour
    _plant(x, 2, 8_006, 120.0)  # another neuron, 0.3 ms later, beside the flank of channel 1
    table = detect_spikes(x, FS, channel_locations_um=loc)
    got = sorted(zip(table.sample_index.tolist(), table.channel_index.tolist()))
    assert got == [(8_000, 0), (8_006, 2)]


def test_each_channel_takes_its_own_share_of_strong_common_mode_noise():
    """Common-mode noise reaches each electrode with its own gain (here 0.85-1.15): the median
    subtracted whole leaves up to 15 % of it, which buries spikes near the threshold. The
    gains are measured from the recording and the reference scaled by them; where there is
    no common mode to speak of, nothing is measured and the plain median is used."""
    from neurocyte_shared.science.detection import learn_recording, noise_chunk_starts

    n_ch, n = 32, 200_000
    rng = np.random.default_rng(3)
    gains = rng.uniform(0.85, 1.15, n_ch).astype(np.float32)
    quiet = _noise(n_ch, n, seed=4, sigma=5.0)
    loud = quiet + (rng.standard_normal(n).astype(np.float32) * 40.0)[:, None] * gains
    times = np.arange(1_000, n - 1_000, 997)
    for k, t in enumerate(times):
        _plant(loud, k % n_ch, t, 35.0)  # 7x the electrode's own noise
        _plant(quiet, k % n_ch, t, 35.0)
    params = DetectionParams(peel=False)
    reads = []

    def read(traces):
        return lambda a, b: reads.append(a) or traces[a:b]

    learned = learn_recording(read(loud), n, FS, params)
    assert learned.reference_gains is not None
    assert np.abs(learned.reference_gains / np.median(learned.reference_gains) - gains / np.median(gains)).max() < 0.02
    # the chunks that measure the gains decide, so only they are read twice
    chunks = len(noise_chunk_starts(n, FS, params))
    assert len(reads) == chunks + REFERENCE_CHUNKS
    reads.clear()
    assert learn_recording(read(quiet), n, FS, params).reference_gains is None
    assert len(reads) == chunks

    def found(gains_used):
        table = detect_spikes(loud, FS, params, noise_uv=None if gains_used is None else learned.noise_uv,
                              reference_gains=gains_used)
        near = np.abs(table.sample_index[:, None] - (times + 0)[None, :]) <= 4
        return int(near.any(axis=0).sum()), int((~near.any(axis=1)).sum())

    plain_hits, _ = found(None)
    hits, false = found(learned.reference_gains)  # 199 of 199 (plain: 189); 7 noise peaks at 5x
    assert hits >= 0.97 * times.size and hits > plain_hits and false <= 0.05 * hits


# --------------------------------------------------------------------------- pooled detection

PITCH_UM = 17.5  # a MaxWell-like grid
NO_POOL = DetectionParams(pool_threshold_mad=0, peel_pool_threshold_mad=0)  # pooled detection off, in both searches


def _grid(side: int) -> np.ndarray:
    return np.array([[PITCH_UM * (c % side), PITCH_UM * (c // side)] for c in range(side * side)], float)


def _plant_blob(x, loc, centre, sample, peak_mad, sigma_um=20.0):
    """A spike on every electrode, falling off with distance from `centre` (a Gaussian of
    sigma_um), whose filtered trough reaches peak_mad times the noise on the nearest electrode."""
    filtered = preprocess(_plant(np.zeros((200, 1), np.float32), 0, 100, 1.0), FS, DetectionParams(reference="none"))
    noise = noise_levels(preprocess(x, FS, DetectionParams()))
    share = np.exp(-np.linalg.norm(loc - centre, axis=1) ** 2 / (2 * sigma_um**2))
    amp = peak_mad * float(np.median(noise)) / -float(filtered.min()) * share / share.max()
    for c in np.flatnonzero(share > 0.05):
        _plant(x, c, sample, amp[c])
    return x


def test_a_spike_below_the_threshold_on_every_electrode_is_found_where_several_see_it():
    loc = _grid(8)
    x = _noise(64, 200_000, seed=1)  # 10 s
    centre = np.array([3.5, 3.5]) * PITCH_UM  # between four electrodes
    times = np.arange(2_000, 198_000, 2_000)
    for t in times:
        _plant_blob(x, loc, centre, int(t), peak_mad=3.5)  # under the 5x threshold but where noise adds to it

    def found(params):
        table = detect_spikes(x.copy(), FS, params, channel_locations_um=loc)
        near = np.linalg.norm(loc[table.channel_index] - centre, axis=1) <= 2 * PITCH_UM
        hit = np.abs(table.sample_index[near][:, None] - times[None, :]).min(axis=0) <= 10
        return hit.mean(), len(table)

    pooled, n_pooled = found(DetectionParams())
    alone, n_alone = found(NO_POOL)
    assert pooled >= 0.8 and alone <= 0.4
    assert n_pooled <= n_alone + len(times) + 3  # nothing but the planted spikes comes with them


def test_what_remains_after_peeling_is_searched_with_pooling_too():
    # A unit whose spikes mostly stay under the threshold on every electrode, and pooled short
    # of pool_threshold_mad: its larger spikes teach peeling its template, and what remains is
    # searched with pooling at peel_pool_threshold_mad, where the template must explain a spike.
    loc = _grid(8)
    x = _noise(64, 200_000, seed=1)  # 10 s
    centre = np.array([3.5, 3.5]) * PITCH_UM
    spike = (_plant_blob(x.copy(), loc, centre, 100, peak_mad=1.0) - x)[:200]  # once, at 1x the noise
    times = np.arange(2_000, 198_000, 1_000)
    large = np.arange(times.size) % 3 == 0
    for t, is_large in zip(times, large):
        x[t - 100 : t + 100] += spike * (5.5 if is_large else 3.0)

    def found(params):
        table = detect_spikes(x.copy(), FS, params, channel_locations_um=loc)
        near = np.linalg.norm(loc[table.channel_index] - centre, axis=1) <= 2 * PITCH_UM
        hit = np.abs(table.sample_index[near][:, None] - times[None, :]).min(axis=0) <= 10
        return hit, len(table)

    on = DetectionParams(matched_threshold_mad=0)  # the matched search would find them too (below)
    (both, n_both), (first, n_first) = found(on), found(on.model_copy(update={"peel_pool_threshold_mad": 0}))
    assert both[large].all() and first[large].all()
    assert both[~large].mean() >= first[~large].mean() + 0.15
    assert n_both - n_first <= int(both.sum() - first.sum()) + 2  # what it adds is the planted spikes


def test_a_pooled_spike_is_weighed_against_the_spikes_found_before_it_was_searched_for():
    # Peeling searches what remains with the spikes found first taken out, but not their far
    # field beyond the template's electrodes: a pooled spike there is dropped where one of those
    # (`earlier`) within 2 ms and 300 um is earlier_ratio times as large as it, or more.
    from neurocyte_shared.science.detection.peaks import find_peaks, pooled_noise

    loc = _grid(8)
    x = _noise(64, 40_000, seed=4)
    centre = np.array([3.5, 3.5]) * PITCH_UM
    times = np.arange(2_000, 38_000, 2_000)
    for t in times:
        _plant_blob(x, loc, centre, int(t), peak_mad=3.5)
    params = DetectionParams()
    y = preprocess(x, FS, params)
    noise = noise_levels(y)
    pool = pooled_noise(y, noise, loc, params)

    def hits(earlier_mad, pooled=True):
        earlier = None
        if earlier_mad:  # a spike 1 ms before each, 120 um away (nothing of it in these traces)
            far = int(np.argmin(np.linalg.norm(loc - (centre + [120.0, 0.0]), axis=1)))
            earlier = SpikeTable(times - 20, np.full(times.size, far, np.int32),
                                 np.full(times.size, -earlier_mad * noise[far], np.float32))
        table = find_peaks(y.copy(), FS, params.model_copy(update={"pool_threshold_mad": 5.0}), noise_uv=noise,
                           channel_locations_um=loc, pool_noise=pool if pooled else None, earlier=earlier,
                           earlier_ratio=0.07)
        near = np.linalg.norm(loc[table.channel_index] - centre, axis=1) <= 2 * PITCH_UM
        return (np.abs(table.sample_index[near][:, None] - times[None, :]).min(axis=0) <= 10).mean()

    alone, crossing = hits(0), hits(0, pooled=False)
    assert alone >= 0.8 and crossing <= 0.4
    assert hits(30.0) == alone  # 30 x 0.07 = 2.1: smaller than the pooled spikes (3-5x on their own electrode)
    assert hits(100.0) == crossing  # 7x: their far field; what crosses the threshold on its own stays


def test_a_spike_12x_smaller_than_one_180_um_away_a_millisecond_before_is_its_far_field():
    # Beyond radius_um neither de-duplication nor the after-wave rule sees the large spike: what
    # crosses the threshold there within 2 ms, 12x smaller or more (FAR_ECHO_RATIO), is its far
    # field; a crossing larger than that, or one with no large spike near it, is a spike.
    loc = _grid(16)
    x = _noise(256, 80_000, seed=5)
    big, small = np.array([2.5, 2.5]) * PITCH_UM, np.array([11.5, 7.5]) * PITCH_UM  # 180 um apart

    def shape(centre):  # once: planting measures the noise each time
        return (_plant_blob(x.copy(), loc, centre, 100, peak_mad=1.0, sigma_um=8.0) - x)[:200]

    big_spike, small_spike = shape(big), shape(small)
    times = np.arange(2_000, 78_000, 2_000)
    kind = np.arange(times.size) % 4  # 0, 1: beside a large spike; 0, 2: 6.5x the noise, 1, 3: 16x
    for t, k in zip(times, kind):
        x[t - 80 : t + 120] += small_spike * (6.5 if k % 2 == 0 else 16.0)  # peaks 20 samples after t
        if k < 2:
            x[t - 100 : t + 100] += big_spike * 120.0  # its far field: what is 1 / 12 of it, 10x, or less

    table = detect_spikes(x, FS, DetectionParams(peel=False), channel_locations_um=loc)
    near = np.linalg.norm(loc[table.channel_index] - small, axis=1) <= 2 * PITCH_UM
    hit = np.abs(table.sample_index[near][:, None] - (times[None, :] + 20)).min(axis=0) <= 10
    assert not hit[kind == 0].any()  # the large one's far field
    assert hit[kind > 0].all()


def test_pooling_finds_nothing_in_noise_alone():
    loc = _grid(8)
    x = _noise(64, 200_000, seed=2)
    n_pooled = len(detect_spikes(x.copy(), FS, channel_locations_um=loc))
    n_alone = len(detect_spikes(x, FS, NO_POOL, channel_locations_um=loc))
    assert n_pooled - n_alone <= 3  # 64 electrodes x 10 s of noise


def test_the_far_field_of_a_large_spike_is_not_a_pooled_spike():
    # What 150 um and 1 ms away from a spike 40x the noise looks like a small one (its far field
    # and late phase) is not taken for one; the same small one alone is.
    loc = _grid(16)
    x = _noise(256, 60_000, seed=3)
    near, far = np.array([2.5, 2.5]) * PITCH_UM, np.array([11.5, 7.5]) * PITCH_UM
    times = np.arange(2_000, 58_000, 4_000)
    for i, t in enumerate(times):
        _plant_blob(x, loc, far, int(t) + 20, peak_mad=3.5)
        if i % 2 == 0:
            _plant_blob(x, loc, near, int(t), peak_mad=40.0, sigma_um=10.0)

    def hits(params):
        table = detect_spikes(x.copy(), FS, params, channel_locations_um=loc)
        small = np.linalg.norm(loc[table.channel_index] - far, axis=1) <= 2 * PITCH_UM
        return np.abs(table.sample_index[small][:, None] - (times[None, :] + 20)).min(axis=0) <= 10

    pooled, alone = hits(DetectionParams()), hits(NO_POOL)
    assert pooled[1::2].mean() >= 0.8 and alone[1::2].mean() <= 0.5
    # beside the large spike, only what crosses the threshold on its own (noise on top of it)
    np.testing.assert_array_equal(pooled[0::2], alone[0::2])


@pytest.mark.parametrize(("size", "gain"), [(2.5, 0.2), (3.0, 0.1)])
def test_what_remains_is_searched_with_the_matched_filter(size, gain):
    # A unit `size` x the noise on the four electrodes around it: under the threshold and,
    # mostly, under both pooled thresholds (its larger spikes, a third of them, teach peeling a
    # template and the mean spike shape). The pooled traces through a filter of that shape show
    # most of the rest; with the matched search off, pooling finds few.
    loc = _grid(8)
    x = _noise(64, 200_000, seed=2)  # 10 s
    centre = np.array([3.5, 3.5]) * PITCH_UM
    spike = (_plant_blob(x.copy(), loc, centre, 100, peak_mad=1.0) - x)[:200]
    times = np.arange(2_000, 198_000, 1_000)
    large = np.arange(times.size) % 3 == 0
    for t, is_large in zip(times, large):
        x[t - 100 : t + 100] += spike * (8.0 if is_large else size)

    def found(params):
        table = detect_spikes(x.copy(), FS, params, channel_locations_um=loc)
        near = np.linalg.norm(loc[table.channel_index] - centre, axis=1) <= 2 * PITCH_UM
        hit = np.abs(table.sample_index[near][:, None] - times[None, :]).min(axis=0) <= 10
        return hit, len(table)

    (on, n_on), (off, n_off) = found(DetectionParams()), found(DetectionParams(matched_threshold_mad=0))
    assert on[large].all() and off[large].all()
    assert on[~large].mean() >= off[~large].mean() + gain  # 0.61 against 0.35 at 2.5x, 0.94 against 0.79 at 3x
    assert n_on - n_off <= int(on.sum() - off.sum()) + 2  # what it adds is the planted spikes
