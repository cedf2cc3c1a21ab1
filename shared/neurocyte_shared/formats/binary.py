"""Raw binary + JSON sidecar: the simplest format, documented in docs/formats.md.

NAME.bin holds int16 samples, samples x channels (frame-major), no header.
NAME.json holds:
    {"sampling_rate_hz": 20000, "n_channels": 64, "dtype": "int16", "gain_uv": 0.195,
     "offset_uv": 0.0, "layout": "samples_by_channels",
     "channel_locations_um": [[0, 0], [40, 0], ...]}
"""

from __future__ import annotations

import json
import math
from typing import BinaryIO, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neurocyte_shared.errors import explain
from neurocyte_shared.formats import InvalidRecording
from neurocyte_shared.formats.info import RecordingInfo

MAX_CHANNELS = 100_000
MAX_RATE_HZ = 1_000_000.0


class BinarySidecar(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sampling_rate_hz: float = Field(gt=0, le=MAX_RATE_HZ)
    n_channels: int = Field(ge=1, le=MAX_CHANNELS)
    dtype: Literal["int16"]
    gain_uv: float = Field(gt=0)
    offset_uv: float = 0.0
    layout: Literal["samples_by_channels"]
    channel_locations_um: list[tuple[float, float]]

    @field_validator("gain_uv", "offset_uv", "sampling_rate_hz")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _locations_match(self) -> BinarySidecar:
        if len(self.channel_locations_um) != self.n_channels:
            raise ValueError(
                f"channel_locations_um lists {len(self.channel_locations_um)} positions "
                f"but n_channels is {self.n_channels}"
            )
        if not all(math.isfinite(x) and math.isfinite(y) for x, y in self.channel_locations_um):
            raise ValueError("channel_locations_um holds a non-finite coordinate")
        return self


def parse_sidecar(raw: bytes, name: str) -> BinarySidecar:
    if len(raw) > 1_000_000:
        raise InvalidRecording(f"sidecar {name} is larger than 1 MB; it should be a small JSON document")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRecording(f"sidecar {name} is not valid JSON ({exc})") from exc
    try:
        return BinarySidecar.model_validate(doc)
    except ValidationError as exc:
        raise InvalidRecording(explain(exc, f"sidecar {name}")) from exc


class BinaryReader:
    def __init__(self, data: BinaryIO, sidecar_raw: bytes, data_size: int, sidecar_name: str) -> None:
        sc = parse_sidecar(sidecar_raw, sidecar_name)
        frame = sc.n_channels * np.dtype(sc.dtype).itemsize
        if data_size == 0:
            raise InvalidRecording("the binary file is empty (0 bytes)")
        if data_size % frame:
            raise InvalidRecording(
                f"the binary file is {data_size:,} bytes, which is not a whole number of frames of "
                f"{sc.n_channels} channels x 2 bytes ({frame} bytes): it is truncated, or the sidecar's "
                f"n_channels ({sc.n_channels}) or dtype ({sc.dtype}) is wrong"
            )
        self._f = data
        self._dtype = np.dtype(sc.dtype).newbyteorder("<")
        self._frame = frame
        n = sc.n_channels
        self.info = RecordingInfo(
            format="raw_binary",
            sampling_rate_hz=sc.sampling_rate_hz,
            n_channels=n,
            n_samples=data_size // frame,
            dtype=sc.dtype,
            gain_uv=sc.gain_uv,
            offset_uv=sc.offset_uv,
            channel_ids=tuple(str(i) for i in range(n)),
            channel_locations_um=tuple((float(x), float(y)) for x, y in sc.channel_locations_um),
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.info.n_samples)
        return read_frames(self._f, self._dtype, self.info.n_channels, start, stop)

    def close(self) -> None:
        self._f.close()


def read_frames(f: BinaryIO, dtype: np.dtype, n_columns: int, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of an interleaved samples x columns file: one ranged read."""
    frame = n_columns * dtype.itemsize
    f.seek(start * frame)
    want = (stop - start) * frame
    buf = f.read(want)
    if len(buf) != want:
        raise InvalidRecording(f"the file ended early: wanted {want:,} bytes at frame {start:,} (changed or truncated)")
    return np.frombuffer(buf, dtype=dtype).reshape(stop - start, n_columns)
