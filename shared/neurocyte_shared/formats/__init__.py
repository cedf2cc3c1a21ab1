"""Readers for the recording formats Neurocyte accepts.

Every reader takes file-like objects (a local file or an S3 object opened with s3fs, so
reads are ranged and a recording is never held whole in memory) and exposes:

    info: RecordingInfo                 rate, channels, gain, electrode positions
    read(start, stop) -> ndarray        raw integers, shape (stop - start, n_channels)

Channel order is the documented order of each format (see docs/formats.md) and is the
`channel_index` of every spike table and summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, Protocol

import numpy as np

from neurocyte_shared.formats.info import RecordingInfo


class InvalidRecording(ValueError):
    """The upload cannot be processed; the message says why and how to fix it."""


class RecordingReader(Protocol):
    info: RecordingInfo

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def close(self) -> None: ...


Opener = Callable[[str], BinaryIO]

SUPPORTED = (
    "raw binary: NAME.bin + NAME.json sidecar (int16, samples x channels)",
    "MaxWell MaxOne/MaxTwo: NAME.raw.h5 (legacy or the multi-well layout; each well is a recording)",
    "Multi Channel Systems HDF5: NAME.h5 (exported by Multi Channel Experimenter or DataManager)",
    "SpikeGLX: NAME.bin + NAME.meta (Neuropixels AP or LF stream, or NI-DAQ)",
    "3Brain BioCAM: NAME.brw (version 4, full raw)",
    "NWB: NAME.nwb (an ElectricalSeries in /acquisition, with its electrodes table)",
)

# Spikes last about a millisecond and the detector's band reaches 6 kHz: below this rate a
# recording (an LFP export, a downsampled file) holds no spikes to find.
MIN_SPIKE_RATE_HZ = 5_000.0


def identify(names: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Which format a set of uploaded file names is, and each file's role."""
    lower = {n.lower(): n for n in names}
    bins = [n for n in names if n.lower().endswith(".bin")]
    h5s = [n for n in names if n.lower().endswith(".raw.h5")]
    if len(bins) == 1 and len(names) == 2 and lower.get(bins[0][:-4].lower() + ".meta"):
        return "spikeglx", {"data": bins[0], "meta": lower[bins[0][:-4].lower() + ".meta"]}
    if len(bins) == 1 and len(names) == 2:
        stem = bins[0][: -len(".bin")]
        sidecar = lower.get(stem.lower() + ".json")
        if sidecar is None:
            raise InvalidRecording(
                f"{bins[0]} needs its JSON sidecar {stem}.json beside it (sampling_rate_hz, n_channels, "
                "dtype, gain_uv, offset_uv, layout, channel_locations_um); see docs/formats.md"
            )
        return "raw_binary", {"data": bins[0], "sidecar": sidecar}
    if len(bins) == 1 and len(names) == 1:
        raise InvalidRecording(
            f"{bins[0]} came without its JSON sidecar {bins[0][:-4]}.json (or, from SpikeGLX, its "
            f"{bins[0][:-4]}.meta): a raw binary file does not say "
            "its sampling rate, channel count or gain. Upload both (neurocyte submit NAME.bin NAME.json)."
        )
    if len(h5s) == 1 and len(names) == 1:
        return "maxwell", {"data": h5s[0]}
    nwbs = [n for n in names if n.lower().endswith(".nwb")]
    if len(nwbs) == 1 and len(names) == 1:
        return "nwb", {"data": nwbs[0]}
    brws = [n for n in names if n.lower().endswith(".brw")]
    if len(brws) == 1 and len(names) == 1:
        return "brw4", {"data": brws[0]}
    plain_h5 = [n for n in names if n.lower().endswith(".h5") and not n.lower().endswith(".raw.h5")]
    if len(plain_h5) == 1 and len(names) == 1:
        return "mcs_h5", {"data": plain_h5[0]}
    raise InvalidRecording(
        f"unsupported upload ({', '.join(sorted(names))}). Neurocyte accepts one recording per upload, as "
        + "; or ".join(SUPPORTED)
    )


@contextmanager
def _refusing(name: str, fmt: str) -> Iterator[None]:
    """A malformed file that a reader did not foresee is still a refusal naming the format,
    not a crash."""
    try:
        yield
    except InvalidRecording:
        raise
    except Exception as exc:
        raise InvalidRecording(f"{name} could not be read as {fmt.replace('_', ' ')}: it is malformed "
                               f"({type(exc).__name__}: {str(exc)[:200]})") from exc


def list_streams(fmt: str, roles: dict[str, str], opener: Opener) -> tuple[str, ...]:
    """The recordings one file holds when it can hold several (MaxWell wells, NWB series):
    each is processed as its own recording. () for single-recording formats."""
    if fmt not in ("maxwell", "nwb"):
        return ()
    from neurocyte_shared.formats import maxwell, nwb
    from neurocyte_shared.formats.hdf5 import open_file

    name = roles["data"]
    with _refusing(name, fmt), opener(name) as f:
        h5 = open_file(f, name)
        try:
            return maxwell.streams(h5) if fmt == "maxwell" else nwb.streams(h5, name)
        finally:
            h5.close()


def open_reader(fmt: str, roles: dict[str, str], opener: Opener, sizes: dict[str, int],
                stream: str | None = None) -> RecordingReader:
    """A reader of one recording; `stream` picks one of a multi-recording file (list_streams)."""
    with _refusing(roles["data"], fmt):
        reader = _open(fmt, roles, opener, sizes, stream)
    try:
        _check_usable(reader, roles["data"])
    except InvalidRecording:
        reader.close()
        raise
    return reader


def check_all(fmt: str, roles: dict[str, str], opener: Opener,
              sizes: dict[str, int]) -> list[tuple[str | None, RecordingInfo]]:
    """What ingest checks: every recording the upload holds is opened, so none is processed
    unless all are usable. (stream, info) of each; stream is None for single-recording files."""
    found = []
    for stream in list_streams(fmt, roles, opener) or (None,):
        reader = open_reader(fmt, roles, opener, sizes, stream)
        reader.close()
        found.append((stream, reader.info))
    return found


def _check_usable(reader: RecordingReader, name: str) -> None:
    """What every format must satisfy, whatever its reader accepted."""
    info = reader.info
    if info.sampling_rate_hz < MIN_SPIKE_RATE_HZ:
        raise InvalidRecording(
            f"{name} is sampled at {info.sampling_rate_hz:g} Hz; spike detection needs at least "
            f"{MIN_SPIKE_RATE_HZ:g} Hz (20-30 kHz is usual). This looks like a filtered or downsampled "
            "export (e.g. LFP): upload the raw electrode data instead."
        )
    if info.n_samples <= 0:
        raise InvalidRecording(f"{name} holds no samples")


def _open(fmt: str, roles: dict[str, str], opener: Opener, sizes: dict[str, int],
          stream: str | None) -> RecordingReader:
    if stream is not None and fmt not in ("maxwell", "maxwell_legacy", "nwb"):
        raise InvalidRecording(f"{roles['data']} holds one recording; it has no stream {stream!r}")
    if fmt == "raw_binary":
        from neurocyte_shared.formats.binary import BinaryReader

        with opener(roles["sidecar"]) as f:
            sidecar = f.read(1_000_000 + 1)
        return BinaryReader(opener(roles["data"]), sidecar, sizes[roles["data"]], roles["sidecar"])
    if fmt in ("maxwell", "maxwell_legacy"):
        from neurocyte_shared.formats.maxwell import MaxwellReader

        return MaxwellReader(opener(roles["data"]), roles["data"], stream)
    if fmt == "nwb":
        from neurocyte_shared.formats.nwb import NwbReader

        return NwbReader(opener(roles["data"]), roles["data"], stream)
    if fmt == "spikeglx":
        from neurocyte_shared.formats.spikeglx import SpikeGlxReader

        with opener(roles["meta"]) as f:
            meta = f.read(2_000_000 + 1)
        return SpikeGlxReader(opener(roles["data"]), meta, sizes[roles["data"]], roles["data"], roles["meta"])
    if fmt == "brw4":
        from neurocyte_shared.formats.brw import BrwReader

        return BrwReader(opener(roles["data"]), roles["data"])
    if fmt == "mcs_h5":
        from neurocyte_shared.formats.mcs import McsReader

        return McsReader(opener(roles["data"]), roles["data"])
    raise InvalidRecording(f"unknown format {fmt!r}")
