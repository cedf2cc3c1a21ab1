"""MaxWell `.raw.h5`, both layouts.

Legacy (MaxOne, format version 20160704): /sig (rows x samples, uint16; rows are amplifier
channels, some unrouted), /mapping (channel, electrode, x, y in um; only these rows are
electrodes), /settings/lsb (volts per bit), 20 kHz.

New (MaxOne and MaxTwo, versions after 20160704): /wells/wellNNN/recNNNN/ holding
settings/{sampling, lsb, mapping} and the data in groups/routed/raw (routed channels x
samples). Every (well, recording) is its own recording in Neurocyte: its stream id is
`wellNNN`, or `wellNNN-recNNNN` when a well holds several recordings. The rows of
routed/raw are the amplifier channels listed in groups/routed/channels when the file has
that dataset, else the /mapping rows in file order (neo's reading).

Read with h5py rather than neo because neo returns every /sig row of legacy files,
including unrouted ones, while declaring only the mapped count; h5py also lets us read a
column range from a file-like S3 object. Channel order: mapped electrodes sorted by
amplifier channel; channel ids are `ch<channel>-el<electrode>`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from neurocyte_shared.formats import InvalidRecording
from neurocyte_shared.formats.hdf5 import (
    Hdf5Reader,
    check_complete,
    check_readable,
    file_size,
    pick_stream,
)
from neurocyte_shared.formats.info import RecordingInfo

LEGACY_RATE_HZ = 20_000.0


def _stream_groups(h5: Any) -> dict[str, str]:
    """Stream id -> its group, for every (well, recording) with routed data; {} for legacy."""
    if "wells" not in h5:
        return {}
    out = {}
    for well in sorted(h5["wells"]):
        recs = sorted(r for r in h5["wells"][well] if "groups" in h5["wells"][well][r])
        for rec in recs:
            out[well if len(recs) == 1 else f"{well}-{rec}"] = f"/wells/{well}/{rec}"
    return out


def streams(h5: Any) -> tuple[str, ...]:
    """Stream ids of a new-layout file; () for a legacy file."""
    return tuple(_stream_groups(h5))


class MaxwellReader(Hdf5Reader):
    kind = "MaxWell"

    def _open(self, name: str, stream: str | None) -> None:
        h5 = self._h5
        if "McsHdf5ProtocolType" in h5.attrs:
            raise InvalidRecording(
                f"{name} is a Multi Channel Systems file, not MaxWell: the extension disagrees with the "
                "content. Rename it to end in .h5 (not .raw.h5) and upload it again."
            )
        groups = _stream_groups(h5)
        self.streams = tuple(groups)
        if "wells" in h5:
            sig, mapping, lsb_v, rate, rows_of, where = self._new_layout(name, stream, groups)
        else:
            if stream is not None:
                raise InvalidRecording(
                    f"{name} is a legacy MaxWell file with one recording; it has no stream {stream!r}"
                )
            for path in ("sig", "mapping", "settings/lsb"):
                if path not in h5:
                    raise InvalidRecording(
                        f"{name} is HDF5 but not a MaxWell recording: it has neither /wells (new layout) "
                        f"nor /{path} (legacy layout)"
                    )
            sig, mapping, where = h5["sig"], h5["mapping"][()], "/sig"
            lsb_v = float(np.asarray(h5["settings/lsb"][()]).ravel()[0])
            rate, rows_of = LEGACY_RATE_HZ, None
        if sig.ndim != 2 or sig.dtype.kind not in "ui":
            raise InvalidRecording(f"{name}: {where} should be a 2-D integer array, found {sig.shape} {sig.dtype}")
        names = mapping.dtype.names or ()
        if not {"channel", "x", "y"} <= set(names):
            raise InvalidRecording(f"{name}: the mapping lacks channel/x/y columns (has {names})")
        if rows_of is None:  # legacy: /sig row = amplifier channel number
            rows_of = {int(c): int(c) for c in mapping["channel"] if c >= 0}
        keep = np.array([int(c) in rows_of for c in mapping["channel"]], dtype=bool)
        mapping = mapping[keep]
        mapping = mapping[np.argsort(mapping["channel"], kind="stable")]
        if len(mapping) == 0:
            raise InvalidRecording(f"{name}: the mapping lists no routed electrodes")
        rows = np.array([rows_of[int(c)] for c in mapping["channel"]], dtype=np.int64)
        if rows.min() < 0 or rows.max() >= sig.shape[0]:
            raise InvalidRecording(
                f"{name}: the mapping names channel {int(mapping['channel'].max())} but {where} has only "
                f"{sig.shape[0]} rows"
            )
        if not math.isfinite(lsb_v) or lsb_v <= 0:
            raise InvalidRecording(f"{name}: lsb is {lsb_v}, not a positive volts-per-bit gain")
        if not math.isfinite(rate) or rate <= 0 or rate > 1e6:
            raise InvalidRecording(f"{name}: sampling rate {rate} Hz is not plausible")
        xy = np.stack([mapping["x"], mapping["y"]], axis=1).astype(np.float64)
        if not np.all(np.isfinite(xy)):
            raise InvalidRecording(f"{name}: the mapping has electrodes without a finite x/y position")
        check_readable(
            sig,
            name,
            where,
            "MaxWell recordings compressed by MaxLab need MaxWell's HDF5 plugin; "
            "export the recording uncompressed or install the plugin (HDF5_PLUGIN_PATH).",
        )
        check_complete(sig, file_size(self._raw), name, where)
        self._sig, self._rows = sig, rows
        electrode = mapping["electrode"] if "electrode" in names else mapping["channel"]
        self.info = RecordingInfo(
            format="maxwell_legacy" if "wells" not in h5 else "maxwell",
            sampling_rate_hz=float(rate),
            n_channels=len(rows),
            n_samples=int(sig.shape[1]),
            dtype=str(sig.dtype),
            gain_uv=lsb_v * 1e6,
            offset_uv=0.0,
            channel_ids=tuple(f"ch{int(c)}-el{int(e)}" for c, e in zip(mapping["channel"], electrode)),
            channel_locations_um=tuple((float(x), float(y)) for x, y in xy),
        )

    def _new_layout(self, name: str, stream: str | None, groups: dict[str, str]):
        if not self.streams:
            raise InvalidRecording(f"{name}: /wells holds no recording with routed data (groups/routed/raw)")
        stream = pick_stream(name, stream, self.streams, self.streams, "stream", "recordings", "well")
        base = groups[stream]
        g = self._h5[base]
        for path in ("settings/sampling", "settings/lsb", "settings/mapping", "groups/routed/raw"):
            if path not in g:
                raise InvalidRecording(f"{name}: {base}/{path} is missing")
        mapping = g["settings/mapping"][()]
        lsb_v = float(np.asarray(g["settings/lsb"][()]).ravel()[0])
        rate = float(np.asarray(g["settings/sampling"][()]).ravel()[0])
        routed = g["groups/routed"]
        if "channels" in routed:
            listed = np.asarray(routed["channels"][()]).ravel()
            rows_of = {int(c): i for i, c in enumerate(listed)}
        else:
            chans = [int(c) for c in mapping["channel"] if c >= 0]
            rows_of = {c: i for i, c in enumerate(chans)}
        self.stream = stream
        return routed["raw"], mapping, lsb_v, rate, rows_of, f"{base}/groups/routed/raw"

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.info.n_samples)
        block = self._sig[:, start:stop]  # whole rows of the window: h5py reads chunk by chunk
        return np.ascontiguousarray(block[self._rows].T)
