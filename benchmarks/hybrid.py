"""The real noise of `make bench`'s hybrid family, from a Multi Channel Systems recording
(real-data/ at the top of the repository, with its licence): written as NAME.background.npy (samples x channels,
float32 uV), into which si_tasks.py injects known templates.

The file holds 8 channels for 6.5 s after its amplifier settles (and a 2 ms artefact at the
rail every 1.25 s, kept: real recordings have them). To reach a bench's size it is
mirror-tiled in time (forward, backward, forward...: no step where copies meet, which a
filter would ring at) and each block of 8 channels starts 0.9 s later in that sequence than
the block before, so no two electrodes carry the same noise at the same time. Its spikes stay
in: the bench counts a detection that a method also makes on the background alone as the
recording's own spike, neither right nor wrong.

Scale: the file states 381469e-9 V per step, which puts its noise at 10 mV, a thousand times
what an MEA electrode shows; read as 381469e-12 V (0.38 uV per step) the noise is the usual
~10 uV. The shape of the noise is what the bench needs, and it is real either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "real-data" / "mcs-w8-spikes-rawdata.h5"
SETTLING = 28_300  # samples at the start where the amplifier sits at the rail (1.4 s)
UV_PER_STEP = 0.381469
BLOCK_SHIFT_S = 0.9


def real_noise() -> tuple[np.ndarray, float]:
    """(samples x 8 float64 uV, sampling rate) of the file after its settling."""
    from neurocyte_shared.formats import identify, open_reader

    fmt, roles = identify([DATA.name])
    reader = open_reader(fmt, roles, lambda n: open(DATA.parent / n, "rb"), {DATA.name: DATA.stat().st_size})
    codes = reader.read(SETTLING, reader.info.n_samples).astype(np.float64)
    reader.close()
    return (codes - np.median(codes, axis=0)) * UV_PER_STEP, reader.info.sampling_rate_hz


def write_background(path: Path, channels: int, seconds: float, rate: float) -> None:
    real, real_rate = real_noise()
    if real_rate != rate or channels % real.shape[1]:
        raise SystemExit(f"the hybrid family needs {real_rate:g} Hz and a multiple of {real.shape[1]} channels")
    n = int(seconds * rate)
    shift = int(BLOCK_SHIFT_S * rate)
    blocks = channels // real.shape[1]
    need = n + shift * (blocks - 1)
    tiles = [real if k % 2 == 0 else real[::-1] for k in range(need // real.shape[0] + 1)]
    long = np.concatenate(tiles)[:need]
    out = np.concatenate([long[b * shift : b * shift + n] for b in range(blocks)], axis=1)
    np.save(path, out.astype(np.float32))
