"""Each electrode's mean waveform, summed window by window and merged, and the spike table's
peeled column: both survive the shard files the pipeline passes on, and the report draws them."""

import numpy as np

from neurocyte_shared.science.detection import DetectionParams
from neurocyte_shared.science.detection.windows import detect_window
from neurocyte_shared.science.table import SpikeTable
from neurocyte_shared.science.waveforms import PER_WINDOW, Waveforms
from neurocyte_shared.storage import spikes

FS = 20_000.0


def _planted(n=200_000, channels=4, amp=200.0, seed=0):
    """White noise (6 uV) and one cell per channel firing every 100 ms, a known shape."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, channels)) * 6.0).astype(np.float32)
    t = np.arange(40)
    shape = -np.exp(-(((t - 12) / 2.6) ** 2)) + 0.3 * np.exp(-(((t - 22) / 5.0) ** 2))
    times = np.arange(1_000, n - 1_000, 2_000)
    for c in range(channels):
        for s in times + 37 * c:
            x[s - 12 : s + 28, c] += amp * (c + 2) / (channels + 1) * shape
    return x, times


def test_means_from_windows_merged_equal_the_shape_of_the_planted_spikes_and_their_size():
    x, times = _planted()
    locations = np.column_stack([np.arange(4) * 200.0, np.zeros(4)])
    params = DetectionParams(peel=False)
    noise = np.full(4, 6.0, np.float32)
    parts = []
    for start in range(0, x.shape[0], 50_000):
        _, _, w = detect_window(lambda a, b: x[a:b], start, start + 50_000, x.shape[0], FS, params, gain_uv=1.0,
                                offset_uv=0.0, noise_uv=noise, channel_locations_um=locations, templates=None)
        parts.append(Waveforms.from_bytes(w.to_bytes()))  # as the shards pass it on
    merged = Waveforms.merged(parts)
    assert PER_WINDOW >= 25 and merged.count.tolist() == [times.size] * 4  # at most 25 a window: every one
    peak = merged.mean_uv()[:, merged.before]
    # the filtered peak is smaller than the raw one, and in proportion across channels
    np.testing.assert_allclose(peak / peak[-1], [0.4, 0.6, 0.8, 1.0], atol=0.03)
    assert (merged.std_uv()[:, merged.before] < 0.2 * np.abs(peak)).all()  # the noise, not the spike
    assert Waveforms.merged([parts[0], None]) is None  # an older shard without sums: no picture


def test_the_peeled_column_and_the_waveforms_survive_a_shard_file():
    table = SpikeTable(np.array([5, 9, 12], np.int64), np.array([0, 1, 0], np.int32),
                       np.array([-50, -60, -70], np.float32), np.array([False, True, False]))
    w = Waveforms.empty(2, FS)
    w.add(np.ones((100, 2), np.float32), np.array([50]), np.array([1]))
    data = spikes.to_parquet_bytes(table, np.array([3, 0]), w)
    back = spikes.from_parquet_bytes(data)
    assert back.peeled.tolist() == [False, True, False]
    assert spikes.waveforms_from_parquet_bytes(data).count.tolist() == [0, 1]
    assert spikes.saturation_from_parquet_bytes(data).tolist() == [3, 0]
    plain = spikes.to_parquet_bytes(SpikeTable(table.sample_index, table.channel_index, table.amplitude_uv))
    assert spikes.from_parquet_bytes(plain).peeled.tolist() == [False] * 3
    assert spikes.waveforms_from_parquet_bytes(plain) is None
    merged = SpikeTable.concat([back, SpikeTable(np.array([7]), np.array([1], np.int32), np.array([-9], np.float32))])
    assert merged.sample_index.tolist() == [5, 7, 9, 12] and merged.peeled.tolist() == [False, False, True, False]
