"""Detector: one shard -> its spike table on S3 -> ShardDetected.

Reads the window plus margins so spikes at shard borders are neither lost nor doubled,
and uses what is learned from the whole recording (its noise and, for peeling, its spike
templates; once per parameter set, cached beside the store), so every shard applies the
same threshold and subtracts the same templates."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import structlog
from pydantic import Field, Json, ValidationError

from neurocyte_shared.errors import explain
from neurocyte_shared.messaging.config import EnvSettings, Settings
from neurocyte_shared.messaging.events import Event, ShardDetected, ShardReady
from neurocyte_shared.science.detection import DetectionParams, Templates, learn_recording
from neurocyte_shared.science.detection.windows import detect_window
from neurocyte_shared.storage import layout, s3io, spikes, store

log = structlog.get_logger()


@dataclass
class Deps:
    s3: Any
    data_bucket: str
    params: DetectionParams = field(default_factory=DetectionParams)


def recording_model(array: Any, deps: Deps, params: DetectionParams, prefix: str, locations: np.ndarray
                    ) -> tuple[np.ndarray, Templates | None]:
    """Per-channel noise and spike templates of the whole recording, computed once and kept at
    noise/<params>.json and templates/<params>.npz. Deterministic, so two workers racing to
    compute them write the same values; the templates are written first, so a worker that
    finds the noise finds them too."""
    key = params.cache_key()
    noise_key, templates_key = layout.noise_key(prefix, key), layout.templates_key(prefix, key)
    cached = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, noise_key)
    if cached is not None:
        noise = np.asarray(json.loads(cached)["noise_uv"], dtype=np.float32)
        if not params.peel:
            return noise, None
        data = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, templates_key)
        if data is not None:
            return noise, Templates.from_bytes(data)
    attrs = array.attrs
    fs, gain, offset = attrs["sampling_rate_hz"], attrs["gain_uv"], attrs["offset_uv"]
    noise, templates = learn_recording(lambda a, b: array[a:b], array.shape[0], fs, params, gain, offset,
                                       channel_locations_um=locations)
    if templates is not None:
        deps.s3.put_object(Bucket=deps.data_bucket, Key=templates_key, Body=templates.to_bytes())
        log.info("templates_learned", n_templates=len(templates))
    s3io.put_json(deps.s3, deps.data_bucket, noise_key,
                  {"params": params.model_dump(), "noise_uv": noise.tolist()})
    return noise, templates


def on_shard_ready(event: ShardReady, deps: Deps) -> list[Event]:
    started = time.perf_counter()
    prefix = event.recording.prefix
    # A rerun names its own parameters; otherwise this service's (NEUROCYTE_DETECTION_PARAMS).
    params = deps.params if event.detection_params is None else DetectionParams(**event.detection_params)
    key = layout.shard_spikes_key(prefix, event.shard_index, params.cache_key())
    done = _already_detected(deps, key)
    if done is not None:  # the output-exists gate: a redelivery or a resumed run reuses the work
        log.info("shard_already_detected", shard=event.shard_index, n_spikes=done)
        return [ShardDetected(correlation_id=event.correlation_id, recording=event.recording,
                              shard_index=event.shard_index, n_shards=event.n_shards, spikes_key=key,
                              n_spikes=done, n_samples=event.stop_sample - event.start_sample, seconds=0.0,
                              metrics_params=event.metrics_params)]
    array = store.open_array(store.store_url(deps.data_bucket, event.store_key))
    attrs = array.attrs
    fs = float(attrs["sampling_rate_hz"])
    doc = s3io.get_json(deps.s3, deps.data_bucket, layout.recording_document_key(prefix))
    locations = np.asarray(doc["info"]["channel_locations_um"], dtype=np.float64)
    noise, templates = recording_model(array, deps, params, prefix, locations)

    table, saturated, waveforms = detect_window(
        lambda a, b: array[a:b], event.start_sample, event.stop_sample, array.shape[0], fs, params,
        gain_uv=attrs["gain_uv"], offset_uv=attrs["offset_uv"], noise_uv=noise, channel_locations_um=locations,
        templates=templates)
    # Same key on redelivery: a second run overwrites with identical content.
    deps.s3.put_object(Bucket=deps.data_bucket, Key=key, Body=spikes.to_parquet_bytes(table, saturated, waveforms))
    seconds = time.perf_counter() - started
    n = event.stop_sample - event.start_sample
    log.info("shard_detected", shard=event.shard_index, n_spikes=len(table), seconds=round(seconds, 3),
             samples_per_s=round(n * array.shape[1] / seconds))
    return [ShardDetected(correlation_id=event.correlation_id, recording=event.recording,
                          shard_index=event.shard_index, n_shards=event.n_shards, spikes_key=key,
                          n_spikes=len(table), n_samples=n, seconds=seconds,
                          metrics_params=event.metrics_params)]


def _already_detected(deps: Deps, key: str) -> int | None:
    """Spike count of a shard table that is already written, else None. A table is written in
    one PUT, so one that exists is whole."""
    data = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, key)
    return None if data is None else len(spikes.from_parquet_bytes(data))


class DetectorSettings(EnvSettings):
    detection_params: Json[dict[str, Any]] = Field(
        default_factory=dict, alias="NEUROCYTE_DETECTION_PARAMS",
        description='detector: detection parameters as JSON, e.g. {"threshold_mad": 6} (defaults otherwise)')


def build(settings: Settings) -> dict:
    from neurocyte_shared.messaging.config import ConfigurationError
    from neurocyte_shared.messaging.service import s3

    try:
        params = DetectionParams(**DetectorSettings.from_env().detection_params)
    except ValidationError as exc:
        raise ConfigurationError(f"NEUROCYTE_DETECTION_PARAMS: {explain(exc, 'detection parameters')}") from None
    deps = Deps(s3=s3(settings), data_bucket=settings.data_bucket, params=params)
    return {ShardReady: partial(on_shard_ready, deps=deps)}
