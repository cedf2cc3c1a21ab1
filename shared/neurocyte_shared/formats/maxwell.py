"""MaxWell MaxOne legacy `.raw.h5` (format version 20160704).

Layout: /sig (rows x samples, uint16; rows are amplifier channels, some unrouted),
/mapping (channel, electrode, x, y in um; only these rows are electrodes),
/settings/lsb (volts per bit), 20 kHz. Read with h5py rather than neo because neo
returns every /sig row, including unrouted ones, while declaring only the mapped count;
h5py also lets us read a column range of /sig from a file-like S3 object.
Channel order: /mapping rows sorted by amplifier channel number.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np

from ..manifest import RecordingInfo
from . import InvalidRecording
from .hdf5 import check_complete, file_size, open_file

SAMPLING_RATE_HZ = 20_000.0


class MaxwellLegacyReader:
    def __init__(self, f: BinaryIO, name: str) -> None:
        self._raw = f
        self._h5 = open_file(f, name)
        h5 = self._h5
        try:
            if "McsHdf5ProtocolType" in h5.attrs:
                raise InvalidRecording(
                    f"{name} is a Multi Channel Systems file, not MaxWell: the extension disagrees with the "
                    "content. Rename it to end in .h5 (not .raw.h5) and upload it again."
                )
            for path in ("sig", "mapping", "settings/lsb"):
                if path not in h5:
                    raise InvalidRecording(
                        f"{name} is HDF5 but not a MaxWell legacy recording: /{path} is missing"
                    )
            sig = h5["sig"]
            if sig.ndim != 2 or sig.dtype.kind not in "ui":
                raise InvalidRecording(f"{name}: /sig should be a 2-D integer array, found {sig.shape} {sig.dtype}")
            mapping = h5["mapping"][()]
            names = mapping.dtype.names or ()
            if not {"channel", "x", "y"} <= set(names):
                raise InvalidRecording(f"{name}: /mapping lacks channel/x/y columns (has {names})")
            order = np.argsort(mapping["channel"], kind="stable")
            mapping = mapping[order]
            rows = mapping["channel"].astype(np.int64)
            if len(rows) == 0:
                raise InvalidRecording(f"{name}: /mapping lists no routed electrodes")
            if rows.min() < 0 or rows.max() >= sig.shape[0]:
                raise InvalidRecording(
                    f"{name}: /mapping names channel {int(rows.max())} but /sig has only {sig.shape[0]} rows"
                )
            lsb_v = float(np.asarray(h5["settings/lsb"][()]).ravel()[0])
            if not math.isfinite(lsb_v) or lsb_v <= 0:
                raise InvalidRecording(f"{name}: /settings/lsb is {lsb_v}, not a positive volts-per-bit gain")
            self._check_readable(sig, name)
            check_complete(sig, file_size(f), name, "/sig")
        except InvalidRecording:
            h5.close()
            raise
        self._sig = sig
        self._rows = rows
        electrode = mapping["electrode"] if "electrode" in names else rows
        self.info = RecordingInfo(
            format="maxwell_legacy",
            sampling_rate_hz=SAMPLING_RATE_HZ,
            n_channels=len(rows),
            n_samples=int(sig.shape[1]),
            dtype=str(sig.dtype),
            gain_uv=lsb_v * 1e6,
            offset_uv=0.0,
            channel_ids=tuple(f"ch{int(c)}-el{int(e)}" for c, e in zip(rows, electrode)),
            channel_locations_um=tuple((float(x), float(y)) for x, y in zip(mapping["x"], mapping["y"])),
        )

    @staticmethod
    def _check_readable(sig: object, name: str) -> None:
        """Read one small block now so a missing compression plugin is a clear refusal."""
        try:
            sig[:1, :1]  # type: ignore[index]
        except OSError as exc:
            filters = []
            try:
                plist = sig.id.get_create_plist()  # type: ignore[attr-defined]
                for i in range(plist.get_nfilters()):
                    code, _flags, _vals, fname = plist.get_filter(i)
                    filters.append(f"{fname.decode(errors='replace') or 'unnamed'} (id {code})")
            except Exception:  # noqa: BLE001 - best effort to name the plugin
                pass
            what = ", ".join(filters) or "unknown"
            raise InvalidRecording(
                f"{name}: /sig cannot be decompressed: it uses the HDF5 filter {what}, which is not "
                "installed here. MaxWell recordings compressed by MaxLab need MaxWell's HDF5 plugin; "
                "export the recording uncompressed or install the plugin (HDF5_PLUGIN_PATH)."
            ) from exc

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.info.n_samples)
        block = self._sig[:, start:stop]  # whole rows of the window: h5py reads chunk by chunk
        return np.ascontiguousarray(block[self._rows].T)

    def close(self) -> None:
        self._h5.close()
        self._raw.close()
