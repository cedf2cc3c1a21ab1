"""Detector: one shard -> its spike table on S3 -> ShardDetected.

Reads the window plus margins so spikes at shard borders are neither lost nor doubled,
and uses the noise of the whole recording (estimated once per parameter set and cached
beside the store), so every shard applies the same threshold."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import structlog

from neurocyte_shared import s3io, spikes, store
from neurocyte_shared.detection import DetectionParams, detect_spikes, estimate_noise, saturated_samples
from neurocyte_shared.events import Event, ShardDetected, ShardReady
from neurocyte_shared.layout import shard_spikes_key

log = structlog.get_logger()


@dataclass
class Deps:
    s3: Any
    data_bucket: str
    params: DetectionParams = field(default_factory=DetectionParams)


def recording_noise(array: Any, deps: Deps, prefix: str) -> np.ndarray:
    """Per-channel noise of the whole recording, computed once and kept at noise/<params>.json.
    Deterministic, so two workers racing to compute it write the same values."""
    key = f"{prefix}noise/{deps.params.cache_key()}.json"
    cached = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, key)
    if cached is not None:
        return np.asarray(json.loads(cached)["noise_uv"], dtype=np.float32)
    attrs = array.attrs
    fs, gain, offset = attrs["sampling_rate_hz"], attrs["gain_uv"], attrs["offset_uv"]
    noise = estimate_noise(lambda a, b: array[a:b], array.shape[0], fs, deps.params, gain, offset)
    s3io.put_json(deps.s3, deps.data_bucket, key,
                  {"params": deps.params.model_dump(), "noise_uv": noise.tolist()})
    return noise


def on_shard_ready(event: ShardReady, deps: Deps) -> list[Event]:
    started = time.perf_counter()
    prefix = event.recording.prefix
    key = shard_spikes_key(prefix, event.shard_index, deps.params.cache_key())
    done = _already_detected(deps, key)
    if done is not None:  # the output-exists gate: a redelivery or a resumed run reuses the work
        log.info("shard_already_detected", shard=event.shard_index, n_spikes=done)
        return [ShardDetected(correlation_id=event.correlation_id, recording=event.recording,
                              shard_index=event.shard_index, n_shards=event.n_shards, spikes_key=key,
                              n_spikes=done, n_samples=event.stop_sample - event.start_sample, seconds=0.0)]
    array = store.open_array(store.store_url(deps.data_bucket, event.store_key))
    attrs = array.attrs
    fs = float(attrs["sampling_rate_hz"])
    noise = recording_noise(array, deps, prefix)
    doc = s3io.get_json(deps.s3, deps.data_bucket, prefix + "recording.json")
    locations = np.asarray(doc["info"]["channel_locations_um"], dtype=np.float64)

    margin = deps.params.margin_samples(fs)
    lo = max(0, event.start_sample - margin)
    hi = min(array.shape[0], event.stop_sample + margin)
    raw = array[lo:hi]
    saturated = saturated_samples(raw[event.start_sample - lo : event.stop_sample - lo])
    table = detect_spikes(raw, fs, deps.params, gain_uv=attrs["gain_uv"], offset_uv=attrs["offset_uv"],
                          noise_uv=noise, channel_locations_um=locations,
                          valid=(event.start_sample - lo, event.stop_sample - lo)).shifted(lo)
    # Same key on redelivery: a second run overwrites with identical content.
    deps.s3.put_object(Bucket=deps.data_bucket, Key=key, Body=spikes.to_parquet_bytes(table, saturated))
    seconds = time.perf_counter() - started
    n = event.stop_sample - event.start_sample
    log.info("shard_detected", shard=event.shard_index, n_spikes=len(table), seconds=round(seconds, 3),
             samples_per_s=round(n * array.shape[1] / seconds))
    return [ShardDetected(correlation_id=event.correlation_id, recording=event.recording,
                          shard_index=event.shard_index, n_shards=event.n_shards, spikes_key=key,
                          n_spikes=len(table), n_samples=n, seconds=seconds)]


def _already_detected(deps: Deps, key: str) -> int | None:
    """Spike count of a shard table that is already written, else None. A table is written in
    one PUT, so one that exists is whole."""
    data = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, key)
    return None if data is None else len(spikes.from_parquet_bytes(data))


def build(settings) -> dict:
    import os

    from neurocyte_shared.service import s3

    overrides = json.loads(os.environ.get("NEUROCYTE_DETECTION_PARAMS", "{}"))
    deps = Deps(s3=s3(settings), data_bucket=settings.data_bucket, params=DetectionParams(**overrides))
    return {ShardReady: partial(on_shard_ready, deps=deps)}
