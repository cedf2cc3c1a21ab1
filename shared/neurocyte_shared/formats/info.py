"""What a reader found in a recording: the one type every format reader returns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RecordingInfo(BaseModel):
    """What a reader found in a recording: written as recording.json by ingest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str
    sampling_rate_hz: float
    n_channels: int
    n_samples: int
    dtype: str
    gain_uv: float
    offset_uv: float
    channel_ids: tuple[str, ...]
    channel_locations_um: tuple[tuple[float, float], ...]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sampling_rate_hz
