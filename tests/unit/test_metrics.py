import numpy as np

from neurocyte_shared.detection import SpikeTable
from neurocyte_shared.metrics import summarize


def _summary(samples, channels, n_channels=3, duration_s=60.0):
    t = SpikeTable(np.asarray(samples, np.int64), np.asarray(channels, np.int32), np.zeros(len(samples), np.float32))
    return summarize(t, recording_id="r", recording_name="r", format="raw_binary", n_channels=n_channels,
                     sampling_rate_hz=1000.0, n_samples=int(duration_s * 1000), channel_ids=("a", "b", "c"),
                     channel_locations_um=((0, 0), (1, 0), (2, 0)), detection_parameters={})


def test_poisson_train_rate_is_recovered():
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 60_000, rng.poisson(8.0 * 60))).astype(np.int64)
    s = _summary(times, np.zeros(times.size))
    assert abs(s.channels[0].firing_rate_hz - 8.0) < 1.0
    assert s.total_spikes == times.size


def test_active_electrodes_need_five_spikes_per_minute():
    s = _summary([1, 2, 3, 4, 5] + [10, 20, 30, 40], [0] * 5 + [1] * 4)
    assert [c.active for c in s.channels] == [True, False, False]
    assert s.active_electrodes == 1
    assert s.mean_firing_rate_hz == 5 / 60.0  # mean over active electrodes only
