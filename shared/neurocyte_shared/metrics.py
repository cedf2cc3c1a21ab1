"""Recording metrics from a spike table: pure numpy, no AWS.

Definitions (design.md section 4, EPA/Axion conventions):
- firing rate of an electrode = spikes / recording duration (Hz);
- active electrode: at least `active_min_spikes_per_min` spikes per minute (default 5);
- mean firing rate: mean of the firing rates of the active electrodes (0 when none).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .detection import SpikeTable


class MetricsParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    active_min_spikes_per_min: float = Field(5.0, ge=0)


class ChannelMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)
    channel_index: int
    channel_id: str
    x_um: float
    y_um: float
    spike_count: int
    firing_rate_hz: float
    active: bool


class Summary(BaseModel):
    """summary.json: the recording's headline figures and per-electrode metrics."""

    model_config = ConfigDict(frozen=True)
    schema_version: int = 1
    recording_id: str
    recording_name: str
    format: str
    n_channels: int
    sampling_rate_hz: float
    duration_s: float
    total_spikes: int
    active_electrodes: int
    mean_firing_rate_hz: float
    parameters: dict
    channels: list[ChannelMetrics]


def summarize(
    spikes: SpikeTable,
    *,
    recording_id: str,
    recording_name: str,
    format: str,
    n_channels: int,
    sampling_rate_hz: float,
    n_samples: int,
    channel_ids: tuple[str, ...],
    channel_locations_um: tuple[tuple[float, float], ...],
    detection_parameters: dict,
    params: MetricsParams = MetricsParams(),
) -> Summary:
    duration_s = n_samples / sampling_rate_hz
    counts = np.bincount(spikes.channel_index, minlength=n_channels)[:n_channels]
    rates = counts / duration_s if duration_s > 0 else np.zeros(n_channels)
    active = counts / (duration_s / 60.0) >= params.active_min_spikes_per_min if duration_s > 0 else counts > 0
    channels = [
        ChannelMetrics(
            channel_index=i, channel_id=channel_ids[i], x_um=channel_locations_um[i][0],
            y_um=channel_locations_um[i][1], spike_count=int(counts[i]),
            firing_rate_hz=float(rates[i]), active=bool(active[i]),
        )
        for i in range(n_channels)
    ]
    return Summary(
        recording_id=recording_id,
        recording_name=recording_name,
        format=format,
        n_channels=n_channels,
        sampling_rate_hz=sampling_rate_hz,
        duration_s=duration_s,
        total_spikes=int(counts.sum()),
        active_electrodes=int(active.sum()),
        mean_firing_rate_hz=float(rates[active].mean()) if active.any() else 0.0,
        parameters={"detection": detection_parameters, "metrics": params.model_dump()},
        channels=channels,
    )
