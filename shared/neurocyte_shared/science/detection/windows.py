"""Detection over a whole recording file on one machine, in bounded memory: the executor
around the pure `detection` core (the detector service runs the same core per shard).

Windows are read with margins, detected, and yielded in order. With jobs > 1 the windows
run in threads: the compiled kernels release the GIL, so threads use the cores without
copying data between processes; each thread opens the file itself. Memory is bounded by
the window (at most `MAX_WINDOW_VALUES` samples x channels each) times the windows in
flight (2 per job), whatever the recording's length."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurocyte_shared.formats import RecordingReader, identify, open_reader
from neurocyte_shared.science.detection.detect import detect_spikes, learn_recording
from neurocyte_shared.science.detection.filters import saturated_samples
from neurocyte_shared.science.detection.params import DetectionParams
from neurocyte_shared.science.detection.peaks import neighbours
from neurocyte_shared.science.detection.templates import Templates
from neurocyte_shared.science.table import SpikeTable
from neurocyte_shared.science.waveforms import Waveforms

# 8 M values: 32 MB of float32 per window (plus the raw), e.g. 0.4 s of 1024 channels at 20 kHz.
# Smaller windows spend more on their margins (16.7 ms each side is 19 % of a 0.2 s window).
MAX_WINDOW_VALUES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Unread:
    """Per channel, a window's samples detection could not read: at the converter's rails
    (clipped), and silenced around those and around stimulation artefacts (silenced); and the
    first sample (from the recording's start) of each stimulation artefact that begins in the
    window (artefacts)."""

    clipped: np.ndarray
    silenced: np.ndarray
    artefacts: list[int] = field(default_factory=list)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse instead of handing them back to the
    kernel, for a process that allocates the same large arrays window after window.
    Why: by default a block above an adaptive threshold (128 KB at first) is mapped afresh and
    unmapped when freed, and free memory at the top of the heap is trimmed; each window's
    arrays were then faulted in page by page again, one fault per 4 KB, three times as many
    faults in all (slower still with two threads faulting into one address space).
    Peak memory is what the windows in flight need either way; it is simply not returned
    until the process exits. Process-wide, so called by the commands, not by the library.
    False where the C library has no mallopt (macOS, musl's stub): nothing to tune there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # 32 MB is the largest threshold glibc accepts; larger blocks (a 1024-channel window) are
    # still mapped per use, but they are few.
    mapped = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    trimmed = mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    return bool(mapped and trimmed)  # mallopt returns 1 on success


@dataclass(frozen=True)
class LocalRecording:
    """A recording as local file(s)."""

    paths: tuple[Path, ...]
    stream: str | None = None  # one recording of a file that holds several (a MaxWell well)

    def open(self) -> RecordingReader:
        files = {p.name: p for p in self.paths}
        fmt, roles = identify(list(files))
        return open_reader(fmt, roles, lambda n: open(files[n], "rb"),
                           {n: p.stat().st_size for n, p in files.items()}, self.stream)


def window_samples(window_s: float, sampling_rate_hz: float, n_channels: int, margin: int) -> int:
    """Samples per window: window_s, capped so a window holds at most MAX_WINDOW_VALUES values,
    and never so short that the margins dominate."""
    step = int(window_s * sampling_rate_hz)
    step = min(step, MAX_WINDOW_VALUES // max(1, n_channels))
    return max(step, 8 * margin, 1)


def detect_window(read: Callable[[int, int], np.ndarray], start: int, stop: int, n_samples: int,
                  sampling_rate_hz: float, params: DetectionParams, *, gain_uv: float, offset_uv: float,
                  noise_uv: np.ndarray, channel_locations_um: np.ndarray | None, templates: Templates | None,
                  reference_gains: np.ndarray | None = None, pool_noise: np.ndarray | None = None,
                  count_saturated: bool = True,
                  gather_waveforms: bool = True) -> tuple[SpikeTable, Unread | None, Waveforms | None]:
    """One window [start, stop) of a recording: read with margins (so its spikes equal the
    whole recording's), detected with what was learned from the whole recording, sample
    indices from the recording's start; per channel, the window's clipped and silenced samples,
    and its stimulation artefacts (`Unread`); and the sums of its spikes' waveforms (for the report).
    `read(a, b)` returns raw samples a..b x channels. The detector service runs it per shard,
    `detect_recording` per window."""
    margin = params.margin_samples(sampling_rate_hz)
    lo, hi = max(0, start - margin), min(n_samples, stop + margin)
    raw = read(lo, hi)
    unread = Unread(saturated_samples(raw[start - lo : stop - lo]), np.zeros(raw.shape[1], np.int64)) \
        if count_saturated else None
    waveforms = Waveforms.empty(raw.shape[1], sampling_rate_hz) if gather_waveforms else None
    table = detect_spikes(raw, sampling_rate_hz, params, gain_uv=gain_uv, offset_uv=offset_uv, noise_uv=noise_uv,
                          channel_locations_um=channel_locations_um, valid=(start - lo, stop - lo),
                          templates=templates, first_sample=lo, waveforms=waveforms, reference_gains=reference_gains,
                          pool_noise=pool_noise,
                          silenced=unread.silenced if unread else None,
                          artefacts=unread.artefacts if unread else None)
    return table.shifted(lo), unread, waveforms


def detect_recording(recording: LocalRecording, params: DetectionParams = DetectionParams(), *,
                     window_s: float = 1.0, jobs: int = 1,
                     on_progress: Callable[[int, int], None] | None = None,
                     on_noise: Callable[[np.ndarray], None] | None = None,
                     on_unread: Callable[[Unread], None] | None = None,
                     on_waveforms: Callable[[Waveforms], None] | None = None) -> Iterator[SpikeTable]:
    """Spike tables of successive windows, in order, with sample indices from the recording start.
    on_noise receives the per-channel noise (uV) once it is estimated; on_unread each
    window's `Unread` (clipped and silenced samples, stimulation artefacts); on_waveforms each window's
    waveform sums."""
    local = threading.local()
    opened: list[RecordingReader] = []
    lock = threading.Lock()

    def reader() -> RecordingReader:
        r = getattr(local, "reader", None)
        if r is None:
            r = local.reader = recording.open()
            with lock:
                opened.append(r)
        return r

    info = reader().info
    fs = info.sampling_rate_hz
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="detect") if jobs > 1 else None
    locations = np.asarray(info.channel_locations_um, dtype=np.float64)
    neighbours(locations, info.n_channels, params.radius_um)  # fail early on bad positions
    noise, templates, gains, pooled = learn_recording(lambda a, b: reader().read(a, b), info.n_samples, fs, params,
                                              info.gain_uv, info.offset_uv, channel_locations_um=locations,
                                              map_=pool.map if pool else map)
    if on_noise:
        on_noise(noise)
    margin = params.margin_samples(fs)

    def window(start: int, stop: int) -> tuple[SpikeTable, Unread | None, Waveforms | None]:
        return detect_window(lambda a, b: reader().read(a, b), start, stop, info.n_samples, fs, params,
                             gain_uv=info.gain_uv, offset_uv=info.offset_uv, noise_uv=noise,
                             channel_locations_um=locations, templates=templates, reference_gains=gains,
                             pool_noise=pooled,
                             count_saturated=on_unread is not None, gather_waveforms=on_waveforms is not None)

    step = window_samples(window_s, fs, info.n_channels, margin)
    windows = [(s, min(s + step, info.n_samples)) for s in range(0, info.n_samples, step)]
    done = 0
    try:
        for n, (table, unread, waveforms) in _run(window, windows, pool, jobs):
            done += n
            if on_unread and unread is not None:
                on_unread(unread)  # here, in the caller's thread, in window order
            if on_waveforms and waveforms is not None:
                on_waveforms(waveforms)
            if on_progress:
                on_progress(done, info.n_samples)
            yield table
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        for r in opened:
            r.close()


def _run(window, windows, pool, jobs) -> Iterator[tuple[int, SpikeTable]]:
    """(window length, its spikes) in window order."""
    if pool is None:
        for start, stop in windows:
            yield stop - start, window(start, stop)
        return
    # At most 2 windows per worker in flight: bounded memory, results in order.
    pending = []
    for start, stop in windows:
        pending.append((stop - start, pool.submit(window, start, stop)))
        if len(pending) >= 2 * jobs:
            n, fut = pending.pop(0)
            yield n, fut.result()
    for n, fut in pending:
        yield n, fut.result()
