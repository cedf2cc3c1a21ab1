"""The kernels compiled ahead of time (`make setup`) against numba's JIT kernels: the same
spikes to the bit, the GIL released (what `--jobs N` relies on), and arrays checked rather
than misread. Arrays and small files only: no AWS."""

import shutil
import threading
import time

import numpy as np
import pytest

from neurocyte_shared.science.detection import _kernels, filters
from neurocyte_shared.science.detection.windows import LocalRecording, detect_recording
from neurocyte_shared.science.kernels import aot as kernels_aot
from neurocyte_shared.science.kernels import jit
from neurocyte_shared.science.kernels.aot import compiled, module_name
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording


@pytest.fixture(scope="module")
def aot():
    fast = compiled()
    if fast is None:
        if shutil.which("cc") is None:
            pytest.skip("no C compiler here: neurocyte runs numba's JIT kernels (make setup says so)")
        pytest.fail(f"{module_name()} is not built for the current kernels.py: run `make setup`")
    return fast


def test_the_detection_core_runs_the_compiled_kernels_once_built(aot):
    assert type(_kernels.kernels) is type(aot)


def _spikes(recording, kernels, monkeypatch):
    monkeypatch.setattr(_kernels, "kernels", kernels)
    tables = list(detect_recording(recording, window_s=0.5))
    return (np.concatenate([t.sample_index for t in tables]), np.concatenate([t.channel_index for t in tables]),
            np.concatenate([t.amplitude_uv for t in tables]))


def test_compiled_and_jit_kernels_find_the_same_spikes(aot, tmp_path, monkeypatch):
    # network bursts: overlapping spikes, so peeling subtracts and finds hidden ones
    spec = SyntheticSpec(n_channels=32, duration_s=6.0, n_units=20, network_burst_every_s=1.0, seed=3)
    bin_path, json_path, _ = write_recording(tmp_path, "r", spec)
    recording = LocalRecording((bin_path, json_path))
    fast = _spikes(recording, aot, monkeypatch)
    slow = _spikes(recording, jit, monkeypatch)
    assert fast[0].size > 500
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.float32, np.float64, np.int8])
def test_every_sample_type_filters_as_the_jit_does(aot, dtype):
    rng = np.random.default_rng(0)
    raw = (rng.standard_normal((3_000, 24)) * 40 + (100 if dtype in (np.uint16,) else 0)).astype(dtype)
    raw = raw[:, ::-1]  # not contiguous: the wrapper makes it so, as the JIT accepts any layout
    sos = filters._sos(20_000.0, 300.0, 6_000.0, 5)
    for reference in (jit.REF_NONE, jit.REF_MEDIAN, jit.REF_MEAN):
        for net in (filters.median_network(24), filters.median_network(1_000)):  # network, select
            fast, slow = np.empty(raw.shape, np.float32), np.empty(raw.shape, np.float32)
            ref_fast, ref_slow = np.empty(raw.shape[0], np.float32), np.empty(raw.shape[0], np.float32)
            gains = np.linspace(0.8, 1.2, raw.shape[1]).astype(np.float32)
            aot.bandpass_reference(raw, 0.195, 1.5, sos, reference, net, gains, ref_fast, fast)
            jit.bandpass_reference(np.ascontiguousarray(raw), 0.195, 1.5, sos, reference, net, gains, ref_slow, slow)
            np.testing.assert_array_equal(fast, slow)
            np.testing.assert_array_equal(ref_fast, ref_slow)


def test_snippets_are_gathered_as_numpy_rounds_to_float16(aot):
    """The snippet kernel converts to float16 itself (numba has none): every sampled float32 bit
    pattern, subnormals, ties and values past the largest float16 (clipped to it) as numpy."""
    rng = np.random.default_rng(1)
    patterns = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([np.float32([0.0, -0.0, 65504, 65505, 65519, 65520, 1e9, -1e9, 2**-25, 3 * 2**-26]),
                             rng.standard_normal(10_000).astype(np.float32) * 10.0 ** rng.integers(-8, 6, 10_000),
                             patterns[np.isfinite(patterns)]]).astype(np.float32)
    x = values[: values.size // 4 * 4].reshape(-1, 4)  # 4 channels; spike i is row i on channels 3, 1 (then padding)
    times = np.arange(x.shape[0], dtype=np.int64)
    channels = np.zeros(times.size, np.int32)
    support, n_support = np.array([[3, 1, 0]], np.int32), np.array([2], np.int32)
    want = np.clip(x[:, [3, 1]], -65504, 65504).astype(np.float16)
    for kernels in (aot, jit):
        out = np.full((times.size, 1, 3), 7, np.uint16)
        kernels.gather_snippets(x.view(np.uint32), times, channels, support, n_support, 0, out)
        np.testing.assert_array_equal(out[:, 0, :2], want.view(np.uint16))
        assert not out[:, 0, 2].any()  # past the channel's support: zero


def test_a_wrong_output_array_is_refused_not_misread(aot):
    x = np.zeros((100, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        aot.median_abs_deviation(x, np.empty(4, np.float64))
    with pytest.raises(TypeError, match="C-contiguous"):
        aot.bandpass_reference(x, 1.0, 0.0, filters._sos(20_000.0, 300.0, 6_000.0, 5), 0,
                               filters.median_network(4), np.ones(4, np.float32), np.empty(100, np.float32),
                               np.empty((4, 100), np.float32).T)


def _turns_until(event: threading.Event) -> tuple[int, float]:
    """Turns of a Python loop until event is set, and the seconds they took."""
    turns, started = 0, time.perf_counter()
    while not event.is_set():
        turns += 1
    return turns, time.perf_counter() - started


def test_compiled_kernels_release_the_gil(aot):
    """While one thread filters, the main thread keeps running Python. With the GIL held it
    would get no turn during the call but a switch interval's (5 ms) worth before and after:
    under a tenth of the call's time. The rate of turns is measured, not assumed (a 5 ms
    timer that fires late on a busy machine made a fixed count fail)."""
    tick = threading.Event()
    threading.Timer(0.05, tick.set).start()
    alone, alone_s = _turns_until(tick)
    per_second = alone / alone_s

    raw = np.random.default_rng(0).standard_normal((400_000, 64)).astype(np.float32)
    out = np.empty_like(raw)
    gains, ref = np.ones(raw.shape[1], np.float32), np.empty(raw.shape[0], np.float32)
    sos = filters._sos(20_000.0, 300.0, 6_000.0, 5)
    started, done = threading.Event(), threading.Event()
    call_s = []

    def work():
        started.set()
        t0 = time.perf_counter()  # timed here: a thread kept off the GIL would not see the call
        for _ in range(3):  # 0.1-0.5 s, so that two switch intervals are a small part of it
            aot.bandpass_reference(raw, 1.0, 0.0, sos, jit.REF_MEDIAN, filters.median_network(64), gains, ref, out)
        call_s.append(time.perf_counter() - t0)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    started.wait(10)
    turns, _ = _turns_until(done)
    worker.join()
    assert turns > 0.3 * per_second * call_s[0]


def test_kernels_can_be_chosen_and_a_required_compiled_module_is_never_replaced_silently(aot, monkeypatch):
    monkeypatch.setenv("NEUROCYTE_KERNELS", "jit")
    assert kernels_aot.load() is jit
    monkeypatch.setenv("NEUROCYTE_KERNELS", "aot")
    assert type(kernels_aot.load()) is type(aot)
    monkeypatch.setattr(kernels_aot, "compiled", lambda: None)  # as after an edit of jit.py
    with pytest.raises(RuntimeError, match="make setup"):
        kernels_aot.load()
    monkeypatch.delenv("NEUROCYTE_KERNELS")
    assert kernels_aot.load() is jit
