"""NWB 2.x (`.nwb`, HDF5): an `ElectricalSeries` in /acquisition and its electrodes table.

Layout read: /acquisition/<series> with neurodata_type ElectricalSeries: `data` (time x
channels; attributes `conversion` to volts and `offset` in volts), optional
`channel_conversion` (per channel), `starting_time` (attribute `rate`) or `timestamps`,
and `electrodes`, row indices into /general/extracellular_ephys/electrodes whose columns
`rel_x`/`rel_y` (position on the probe) or else `x`/`y` give positions in um.

Every ElectricalSeries in /acquisition sampled fast enough for spikes is a stream (its
name): a file with two probes is two recordings. Channel order: the series' data columns.

Read with h5py rather than pynwb: pynwb loads the NWB schema and builds every container on
open (seconds, and pandas/hdmf in every service image), while the reader needs a handful of
datasets, read one window of `data` at a time from a file-like S3 object. The tests write
their files with pynwb, so the layout read here is the one pynwb writes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from neurocyte_shared.formats import MIN_SPIKE_RATE_HZ, InvalidRecording
from neurocyte_shared.formats.hdf5 import (
    Hdf5Reader,
    check_complete,
    check_readable,
    file_size,
    pick_stream,
)
from neurocyte_shared.formats.info import RecordingInfo

LINE_PITCH_UM = 200.0  # channels without positions: far enough apart never to be merged


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _series(h5: Any) -> dict[str, Any]:
    acq = h5.get("acquisition")
    if acq is None:
        return {}
    return {k: acq[k] for k in sorted(acq)
            if hasattr(acq[k], "attrs") and _text(acq[k].attrs.get("neurodata_type", "")) == "ElectricalSeries"}


def _rate(s: Any, name: str, key: str) -> float:
    if "starting_time" in s:
        return float(s["starting_time"].attrs.get("rate", float("nan")))
    if "timestamps" in s:
        ts = s["timestamps"]
        head = np.asarray(ts[: min(len(ts), 10_001)], dtype=np.float64)
        if len(head) < 2:
            raise InvalidRecording(f"{name}: {key} has fewer than 2 timestamps")
        step = np.diff(head)
        if np.any(step <= 0) or np.ptp(step) > 0.01 * np.median(step):
            raise InvalidRecording(f"{name}: {key} has irregular timestamps; spike detection needs a fixed rate")
        return float(1.0 / np.median(step))
    raise InvalidRecording(f"{name}: {key} has neither starting_time (with a rate) nor timestamps")


def streams(h5: Any, name: str) -> tuple[str, ...]:
    series = _series(h5)
    fast = tuple(k for k, s in series.items() if _safe_rate(s, name, k) >= MIN_SPIKE_RATE_HZ)
    return fast or tuple(series)


def _safe_rate(s: Any, name: str, key: str) -> float:
    try:
        return _rate(s, name, key)
    except InvalidRecording:
        return 0.0


class NwbReader(Hdf5Reader):
    kind = "NWB"

    def _open(self, name: str, stream: str | None) -> None:
        h5 = self._h5
        series = _series(h5)
        self.streams = streams(h5, name)
        if not series:
            raise InvalidRecording(
                f"{name} is HDF5 but holds no ElectricalSeries in /acquisition: Neurocyte needs the raw "
                "extracellular voltage (an NWB file with only spike times or LFP in /processing has no raw data)")
        # Any series may be asked for by name (an LFP one is then refused for its rate).
        stream = pick_stream(name, stream, self.streams, series, "ElectricalSeries", "ElectricalSeries", "series")
        self.stream = stream
        s = series[stream]
        where = f"/acquisition/{stream}/data"
        if "data" not in s:
            raise InvalidRecording(f"{name}: {where} is missing")
        data = s["data"]
        if data.ndim == 1:
            raise InvalidRecording(f"{name}: {where} is 1-D; expected time x channels")
        if data.ndim != 2 or data.dtype.kind not in "iuf":
            raise InvalidRecording(
                f"{name}: {where} should be 2-D numbers (time x channels), found {data.shape} {data.dtype}"
            )
        rate = _rate(s, name, stream)
        if not math.isfinite(rate) or rate <= 0 or rate > 1e6:
            raise InvalidRecording(f"{name}: {stream} has an implausible sampling rate ({rate} Hz)")
        n_ch = int(data.shape[1])
        conversion = float(data.attrs.get("conversion", 1.0))
        offset_v = float(data.attrs.get("offset", 0.0))
        if "channel_conversion" in s:
            cc = np.asarray(s["channel_conversion"][()], dtype=np.float64).ravel()
            if len(cc) != n_ch:
                raise InvalidRecording(f"{name}: {stream}/channel_conversion has {len(cc)} values for {n_ch} channels")
            if np.ptp(cc) > 1e-9 * np.abs(cc).max():
                raise InvalidRecording(
                    f"{name}: {stream} has a different gain per channel (channel_conversion from {cc.min():g} to "
                    f"{cc.max():g}); Neurocyte needs one gain per recording"
                )
            conversion *= float(cc[0])
        gain_uv, offset_uv = conversion * 1e6, offset_v * 1e6
        if not (math.isfinite(gain_uv) and gain_uv > 0 and math.isfinite(offset_uv)):
            raise InvalidRecording(
                f"{name}: {stream} has conversion {conversion} and offset {offset_v}: not a usable gain"
            )
        ids, xy = self._electrodes(s, name, stream, n_ch)
        check_readable(data, name, where)
        check_complete(data, file_size(self._raw), name, where)
        self._data = data
        self.info = RecordingInfo(
            format="nwb",
            sampling_rate_hz=rate,
            n_channels=n_ch,
            n_samples=int(data.shape[0]),
            dtype=str(data.dtype),
            gain_uv=gain_uv,
            offset_uv=offset_uv,
            channel_ids=ids,
            channel_locations_um=xy,
        )

    def _electrodes(self, s: Any, name: str, stream: str, n_ch: int):
        if "electrodes" not in s:
            raise InvalidRecording(f"{name}: {stream} has no electrodes reference; NWB requires one")
        rows = np.asarray(s["electrodes"][()], dtype=np.int64).ravel()
        if len(rows) != n_ch:
            raise InvalidRecording(
                f"{name}: {stream} references {len(rows)} electrodes but its data has {n_ch} columns"
            )
        table = self._h5.get("general/extracellular_ephys/electrodes")
        if table is None:
            raise InvalidRecording(f"{name}: /general/extracellular_ephys/electrodes is missing")
        n_rows = len(table["id"]) if "id" in table else 0
        if rows.min() < 0 or rows.max() >= n_rows:
            raise InvalidRecording(
                f"{name}: {stream} references electrode row {int(rows.max())} of a table of {n_rows}"
            )
        ids = np.asarray(table["id"][()]).ravel()[rows]
        label = next((c for c in ("channel_name", "label") if c in table), None)
        names = [_text(v) for v in np.asarray(table[label][()]).ravel()[rows]] if label else [f"e{int(i)}" for i in ids]
        for cx, cy in (("rel_x", "rel_y"), ("x", "y")):
            if cx in table and cy in table:
                x = np.asarray(table[cx][()], dtype=np.float64).ravel()[rows]
                y = np.asarray(table[cy][()], dtype=np.float64).ravel()[rows]
                if np.all(np.isfinite(x)) and np.all(np.isfinite(y)):
                    return tuple(names), tuple((float(a), float(b)) for a, b in zip(x, y))
        return tuple(names), tuple((i * LINE_PITCH_UM, 0.0) for i in range(n_ch))

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.info.n_samples)
        return np.ascontiguousarray(self._data[start:stop, :])
