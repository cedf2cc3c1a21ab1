"""3Brain BioCAM `.brw` version 4 (BrainWave 4/5), full raw recordings.

Layout: /ExperimentSettings (one JSON string: ValueConverter {MinAnalogValue, MaxAnalogValue,
MinDigitalValue, MaxDigitalValue, ScaleFactor}, TimeConverter {FrameRate}, MeaPlate),
/Well_A1/Raw (flat, frame-major: frame 0's channels, then frame 1's ...), /Well_A1/StoredChIdxs
(which electrodes of the chip were stored). Microvolts = digital x gain + offset, the
conversion neo's BiocamRawIO applies. Read with h5py: one window is one contiguous slice of
/Raw. Event-based ("compressed") recordings keep only snippets and are refused.

Channel order: StoredChIdxs order. Positions: electrode index i on the 64 x 64 chip is row
i // 64, column i % 64, at MeaPlate's ElectrodesPitch (um; 60 um when the file omits it).
"""

from __future__ import annotations

import json
import math

import numpy as np

from neurocyte_shared.formats import InvalidRecording
from neurocyte_shared.formats.hdf5 import Hdf5Reader, check_complete, file_size
from neurocyte_shared.formats.info import RecordingInfo

CHIP_COLUMNS = 64
DEFAULT_PITCH_UM = 60.0


class BrwReader(Hdf5Reader):
    kind = "3Brain .brw"

    def _open(self, name: str, stream: str | None) -> None:
        f = self._raw
        h5 = self._h5
        if "ExperimentSettings" not in h5:
            if "3BRecInfo" in h5:
                raise InvalidRecording(f"{name} is a BrainWave 3 (.brw v3) file; export it as .brw v4 (BrainWave 4+)")
            raise InvalidRecording(f"{name} is HDF5 but not a 3Brain .brw v4 recording (no /ExperimentSettings)")
        try:
            raw_settings = h5["ExperimentSettings"][()]
            text = raw_settings[0] if getattr(raw_settings, "ndim", 0) else raw_settings
            settings = json.loads(text.decode() if isinstance(text, bytes) else text)
            vc, rate = settings["ValueConverter"], float(settings["TimeConverter"]["FrameRate"])
            lo_a, hi_a = float(vc["MinAnalogValue"]), float(vc["MaxAnalogValue"])
            lo_d, hi_d = float(vc["MinDigitalValue"]), float(vc["MaxDigitalValue"])
            scale = float(vc.get("ScaleFactor", 1.0))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InvalidRecording(f"{name}: /ExperimentSettings is not the JSON BrainWave writes ({exc})") from exc
        if "DataSettings" in settings and "EventsBasedRawRanges" in settings["DataSettings"]:
            raise InvalidRecording(f"{name} is an event-based (compressed) recording that keeps only snippets; "
                                   "export the full raw signal from BrainWave")
        wells = sorted(k for k in h5 if k.startswith("Well_") and "Raw" in h5[k])
        if not wells:
            raise InvalidRecording(f"{name}: no well holds a full /Raw signal")
        if len(wells) > 1:
            raise InvalidRecording(f"{name} holds {len(wells)} wells ({', '.join(wells)}); upload one well per file")
        well = h5[wells[0]]
        raw, idx = well["Raw"], well["StoredChIdxs"][()] if "StoredChIdxs" in well else None
        if idx is None or idx.ndim != 1 or idx.size == 0:
            raise InvalidRecording(f"{name}: {wells[0]}/StoredChIdxs is missing or empty")
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise InvalidRecording(
                f"{name}: {wells[0]}/Raw should be a flat integer array, found {raw.shape} {raw.dtype}"
            )
        n = int(idx.size)
        if raw.shape[0] % n:
            raise InvalidRecording(
                f"{name}: {wells[0]}/Raw holds {raw.shape[0]:,} values, not a whole number of {n}-channel frames"
            )
        if not all(math.isfinite(v) for v in (rate, lo_a, hi_a, lo_d, hi_d, scale)) or hi_d <= lo_d or hi_a <= lo_a:
            raise InvalidRecording(f"{name}: /ExperimentSettings holds an impossible conversion or rate")
        gain = scale * (hi_a - lo_a) / (hi_d - lo_d)
        check_complete(raw, file_size(f), name, f"{wells[0]}/Raw")
        pitch = float(settings.get("MeaPlate", {}).get("ElectrodesPitch", DEFAULT_PITCH_UM) or DEFAULT_PITCH_UM)
        self._data, self._n = raw, n
        self.info = RecordingInfo(
            format="brw4",
            sampling_rate_hz=rate,
            n_channels=n,
            n_samples=raw.shape[0] // n,
            dtype=str(raw.dtype),
            gain_uv=gain,
            offset_uv=scale * lo_a - gain * lo_d,
            channel_ids=tuple(f"r{int(i) // CHIP_COLUMNS + 1}c{int(i) % CHIP_COLUMNS + 1}" for i in idx),
            channel_locations_um=tuple(
                ((int(i) % CHIP_COLUMNS) * pitch, (int(i) // CHIP_COLUMNS) * pitch) for i in idx
            ),
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.info.n_samples)
        return np.asarray(self._data[start * self._n : stop * self._n]).reshape(stop - start, self._n)
