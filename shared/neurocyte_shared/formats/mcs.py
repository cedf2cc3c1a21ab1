"""Multi Channel Systems `.h5` (MCS HDF5 protocol "RawData", as written by Multi Channel
Experimenter / DataManager).

Layout: /Data/Recording_0/AnalogStream/Stream_N/ChannelData (channels x samples, integer),
InfoChannel (one row per channel: Label, Exponent, ADZero, Tick in us, ConversionFactor).
Volts = (raw - ADZero) * ConversionFactor * 10**Exponent. The electrode stream read is the
analog stream of DataSubType "Electrode" with the highest sampling rate (most channels on a
tie). Read with h5py (McsPy, MCS's reader, loads whole streams and is not streaming-friendly);
a window of ChannelData is read chunk by chunk, never the whole recording.

Channel order: ChannelData rows (InfoChannel RowIndex). Positions: labels of MCS 8x8 MEAs
("12" .. "87", column then row) on a 200 um grid; other labels (e.g. "E1", wireless
headstages) have no layout in the file and are placed 200 um apart on a line, far enough
that spatial de-duplication never merges two of them.
"""

from __future__ import annotations

import math

import numpy as np

from neurocyte_shared.formats import InvalidRecording
from neurocyte_shared.formats.hdf5 import Hdf5Reader, check_complete, check_readable, file_size
from neurocyte_shared.formats.info import RecordingInfo

PITCH_UM = 200.0


def _text(v) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


class McsReader(Hdf5Reader):
    kind = "Multi Channel Systems"

    def _open(self, name: str, stream: str | None) -> None:
        h5 = self._h5
        if "sig" in h5 and "mapping" in h5:
            raise InvalidRecording(
                f"{name} is a MaxWell recording, not Multi Channel Systems: the extension disagrees with the "
                "content. Rename it to end in .raw.h5 and upload it again."
            )
        if _text(h5.attrs.get("McsHdf5ProtocolType", b"")) != "RawData":
            raise InvalidRecording(
                f"{name} is HDF5 but not a Multi Channel Systems recording (no McsHdf5ProtocolType "
                "'RawData'). Export it from Multi Channel DataManager as HDF5, or use another format."
            )
        streams = h5.get("Data/Recording_0/AnalogStream")
        if streams is None or not len(streams):
            raise InvalidRecording(f"{name}: the recording has no analog stream to read spikes from")
        candidates = []
        for key in streams:
            s = streams[key]
            if "ChannelData" not in s or "InfoChannel" not in s:
                continue
            info = s["InfoChannel"][()]
            ticks = set(int(t) for t in info["Tick"])
            if len(ticks) != 1 or min(ticks) <= 0:
                raise InvalidRecording(f"{name}: stream {key} has channels at different or invalid rates {ticks}")
            electrode = _text(s.attrs.get("DataSubType", b"")) == "Electrode"
            candidates.append((electrode, 1e6 / ticks.pop(), s["ChannelData"].shape[0], key))
        if not candidates:
            raise InvalidRecording(f"{name}: no analog stream holds ChannelData with its InfoChannel table")
        _, rate, _, key = max(candidates)
        stream = streams[key]
        data, info = stream["ChannelData"], stream["InfoChannel"][()]
        if data.ndim != 2 or data.dtype.kind not in "iu":
            raise InvalidRecording(f"{name}: ChannelData should be 2-D integers, found {data.shape} {data.dtype}")
        if data.shape[0] != len(info):
            raise InvalidRecording(
                f"{name}: ChannelData has {data.shape[0]} rows but InfoChannel describes {len(info)} channels")
        factor = info["ConversionFactor"].astype(np.float64) * 10.0 ** info["Exponent"].astype(np.float64)
        if not np.all(np.isfinite(factor)) or np.any(factor <= 0) or np.ptp(factor) > 1e-12 * factor.max():
            raise InvalidRecording(f"{name}: channels of stream {key} have different or invalid gains {set(factor)}")
        adzero = info["ADZero"].astype(np.int64)
        if np.ptp(adzero):
            raise InvalidRecording(f"{name}: channels of stream {key} have different ADZero values")
        order = np.argsort(info["RowIndex"], kind="stable")
        labels = [_text(v) for v in info["Label"][order]]
        gain_uv = float(factor[0]) * 1e6
        if not math.isfinite(gain_uv):
            raise InvalidRecording(f"{name}: gain is not a finite number")
        self._data, self._rows = data, info["RowIndex"][order].astype(np.int64)
        check_readable(data, name, f"stream {key}'s ChannelData")
        check_complete(data, file_size(self._raw), name, f"stream {key}'s ChannelData")
        self.info = RecordingInfo(
            format="mcs_h5",
            sampling_rate_hz=float(rate),
            n_channels=int(data.shape[0]),
            n_samples=int(data.shape[1]),
            dtype=str(data.dtype),
            gain_uv=gain_uv,
            offset_uv=-float(adzero[0]) * gain_uv,
            channel_ids=tuple(labels),
            channel_locations_um=_positions(labels),
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.info.n_samples)
        block = self._data[:, start:stop]
        return np.ascontiguousarray(block[self._rows].T)



def _positions(labels: list[str]) -> tuple[tuple[float, float], ...]:
    grid = all(len(s) == 2 and s.isdigit() and "1" <= s[0] <= "8" and "1" <= s[1] <= "8" for s in labels)
    if grid and len(set(labels)) == len(labels):
        return tuple(((int(s[0]) - 1) * PITCH_UM, (int(s[1]) - 1) * PITCH_UM) for s in labels)
    return tuple((i * PITCH_UM, 0.0) for i in range(len(labels)))
