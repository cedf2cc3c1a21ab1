"""Detection over a whole recording file on one machine, in bounded memory: the executor
around the pure `detection` core (the detector service runs the same core per shard).

Windows of `window_s` are read with margins, detected, and yielded in order; with jobs > 1
windows run in worker processes, each opening the file itself (nothing big is pickled)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detection import DetectionParams, SpikeTable, detect_spikes, estimate_noise, to_microvolts
from .formats import RecordingReader, identify, open_reader


@dataclass(frozen=True)
class LocalRecording:
    """A recording as local file(s); picklable, so workers can open it themselves."""

    paths: tuple[Path, ...]

    def open(self) -> RecordingReader:
        files = {p.name: p for p in self.paths}
        fmt, roles = identify(list(files))
        return open_reader(fmt, roles, lambda n: open(files[n], "rb"), {n: p.stat().st_size for n, p in files.items()})


def _window(recording: LocalRecording, params: DetectionParams, noise: np.ndarray, start: int, stop: int) -> SpikeTable:
    reader = _reader_cache.get(recording)
    if reader is None:
        reader = _reader_cache[recording] = recording.open()
    info = reader.info
    margin = params.margin_samples(info.sampling_rate_hz)
    lo, hi = max(0, start - margin), min(info.n_samples, stop + margin)
    x = to_microvolts(reader.read(lo, hi), info.gain_uv, info.offset_uv)
    return detect_spikes(x, info.sampling_rate_hz, params, noise_uv=noise,
                         channel_locations_um=np.asarray(info.channel_locations_um),
                         valid=(start - lo, stop - lo)).shifted(lo)


_reader_cache: dict[LocalRecording, RecordingReader] = {}


def detect_recording(recording: LocalRecording, params: DetectionParams = DetectionParams(), *,
                     window_s: float = 10.0, jobs: int = 1,
                     on_progress: Callable[[int, int], None] | None = None) -> Iterator[SpikeTable]:
    reader = recording.open()
    info = reader.info
    noise = estimate_noise(lambda a, b: to_microvolts(reader.read(a, b), info.gain_uv, info.offset_uv),
                           info.n_samples, info.sampling_rate_hz, params)
    reader.close()
    step = max(1, int(window_s * info.sampling_rate_hz))
    windows = [(s, min(s + step, info.n_samples)) for s in range(0, info.n_samples, step)]
    done = 0
    for n, table in _run(recording, params, noise, windows, jobs):
        done += n
        if on_progress:
            on_progress(done, info.n_samples)
        yield table


def _run(recording, params, noise, windows, jobs) -> Iterator[tuple[int, SpikeTable]]:
    """(window length, its spikes) in window order."""
    if jobs <= 1:
        for start, stop in windows:
            yield stop - start, _window(recording, params, noise, start, stop)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        # At most 2 windows per worker in flight: bounded memory, results in order.
        pending = []
        for start, stop in windows:
            pending.append((stop - start, pool.submit(_window, recording, params, noise, start, stop)))
            if len(pending) >= 2 * jobs:
                n, fut = pending.pop(0)
                yield n, fut.result()
        for n, fut in pending:
            yield n, fut.result()
