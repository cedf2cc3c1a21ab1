"""SpikeGLX `NAME.bin` + `NAME.meta` (Neuropixels imec streams, and NI-DAQ streams).

The .meta is `key=value` text: `imSampRate` / `niSampRate`, `nSavedChans`, `fileSizeBytes`,
`imAiRangeMax` and `imMaxInt` (volts and counts at full scale), `~imroTbl` (per-channel AP
gain on Neuropixels 1.0; 2.0 probes have a fixed gain of 80), `snsApLfSy` (how many saved
channels are AP, LF and sync), `~snsGeomMap` or `~snsShankMap` (x and z of each site, um).
The .bin is int16, samples x channels, little-endian. Only the neural (AP or LF) channels
are electrodes: the sync channel is dropped. Read directly (as neo's SpikeGLXRawIO does, but
with ranged reads of one window at a time); a window is never more than asked for.
"""

from __future__ import annotations

import math
import re
from typing import BinaryIO

import numpy as np

from neurocyte_shared.formats import InvalidRecording
from neurocyte_shared.formats.info import RecordingInfo

NP2_GAIN = 80.0


def parse_meta(raw: bytes, name: str) -> dict[str, str]:
    if len(raw) > 2_000_000:
        raise InvalidRecording(f"{name} is larger than 2 MB; a SpikeGLX .meta file is small text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecording(f"{name} is not a SpikeGLX .meta text file ({exc})") from exc
    meta = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k.strip().lstrip("~")] = v.strip()
    return meta


def _number(meta: dict, key: str, name: str) -> float:
    try:
        v = float(meta[key])
    except KeyError:
        raise InvalidRecording(f"{name} lacks {key}=; it is not a complete SpikeGLX .meta file") from None
    except ValueError:
        raise InvalidRecording(f"{name}: {key}={meta[key]!r} is not a number") from None
    if not math.isfinite(v):
        raise InvalidRecording(f"{name}: {key} is not a finite number")
    return v


class SpikeGlxReader:
    def __init__(self, data: BinaryIO, meta_raw: bytes, data_size: int, data_name: str, meta_name: str) -> None:
        meta = parse_meta(meta_raw, meta_name)
        imec = "imSampRate" in meta
        rate = _number(meta, "imSampRate" if imec else "niSampRate", meta_name)
        n_saved = int(_number(meta, "nSavedChans", meta_name))
        if rate <= 0 or n_saved < 1 or n_saved > 100_000:
            raise InvalidRecording(f"{meta_name}: sampling rate {rate:g} Hz or {n_saved} saved channels is impossible")
        frame = 2 * n_saved
        if data_size == 0 or data_size % frame:
            raise InvalidRecording(
                f"{data_name} is {data_size:,} bytes, not a whole number of {n_saved}-channel int16 frames: "
                "it is truncated, or it does not belong with this .meta")
        declared = meta.get("fileSizeBytes")
        if declared is not None and declared.isdigit() and int(declared) != data_size:
            raise InvalidRecording(
                f"{data_name} is {data_size:,} bytes but its .meta says fileSizeBytes={int(declared):,}: "
                "the upload is incomplete or the files do not match")
        key = "snsApLfSy" if imec else "snsMnMaXaDw"
        try:  # imec: AP, LF, sync counts; NI: multiplexed neural, analog, ..., digital
            counts = [int(x) for x in meta.get(key, str(n_saved)).split(",") if x.strip()]
        except ValueError:
            raise InvalidRecording(f"{meta_name}: {key}={meta.get(key)!r} is not a list of channel counts") from None
        n_neural = (counts[0] + (counts[1] if len(counts) > 1 else 0)) if imec else counts[0]
        if not 1 <= n_neural <= n_saved:
            raise InvalidRecording(f"{meta_name}: {n_neural} neural channels of {n_saved} saved: nothing to detect on")
        if imec:
            vmax = _number(meta, "imAiRangeMax", meta_name)
            maxint = float(meta.get("imMaxInt", "512"))
            gains = self._ap_gains(meta.get("imroTbl", ""), n_neural)
        else:
            vmax = _number(meta, "niAiRangeMax", meta_name)
            maxint = float(meta.get("niMaxInt", "32768"))
            gains = {float(meta.get("niMNGain", "1"))}
        if len(gains) != 1 or min(gains) <= 0 or vmax <= 0 or maxint <= 0:
            raise InvalidRecording(f"{meta_name}: channels have different or invalid gains {sorted(gains)}")
        gain_uv = vmax / maxint / gains.pop() * 1e6
        self._f, self._frame, self._n_saved, self._n = data, frame, n_saved, n_neural
        self.info = RecordingInfo(
            format="spikeglx",
            sampling_rate_hz=rate,
            n_channels=n_neural,
            n_samples=data_size // frame,
            dtype="int16",
            gain_uv=gain_uv,
            offset_uv=0.0,
            channel_ids=tuple(f"{'AP' if imec else 'MN'}{i}" for i in range(n_neural)),
            channel_locations_um=self._positions(meta, n_neural),
        )

    @staticmethod
    def _ap_gains(imro: str, n: int) -> set[float]:
        entries = re.findall(r"\(([^()]*)\)", imro)[1:]  # the first entry is the header
        gains = set()
        for e in entries[:n]:
            fields = e.split()
            gains.add(float(fields[3]) if len(fields) >= 6 else NP2_GAIN)  # NP1.0: chan bank ref apgain lfgain hp
        return gains or {NP2_GAIN}

    @staticmethod
    def _positions(meta: dict, n: int) -> tuple[tuple[float, float], ...]:
        for key in ("snsGeomMap", "snsShankMap"):
            entries = re.findall(r"\(([^()]*)\)", meta.get(key, ""))[1:]
            if len(entries) >= n:
                pos = []
                for e in entries[:n]:
                    f = [float(x) for x in e.split(":")]
                    # geom map: shank:x:z:used; shank map: shank:col:row:used (col 32 um, row 20 um apart)
                    x, z = (f[1], f[2]) if key == "snsGeomMap" else (f[1] * 32.0, f[2] * 20.0)
                    pos.append((x + 250.0 * f[0], z))  # shanks 250 um apart
                return tuple(pos)
        return tuple((0.0, 20.0 * i) for i in range(n))  # no map: a single column, as the sites are numbered

    def read(self, start: int, stop: int) -> np.ndarray:
        from neurocyte_shared.formats.binary import read_frames

        start, stop = max(0, start), min(stop, self.info.n_samples)
        block = read_frames(self._f, np.dtype("<i2"), self._n_saved, start, stop)
        return np.ascontiguousarray(block[:, : self._n])

    def close(self) -> None:
        self._f.close()
