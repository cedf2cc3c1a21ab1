"""Detector: one shard -> its spike table on S3 -> ShardDetected.

Reads the window plus margins so spikes at shard borders are neither lost nor doubled,
and uses what is learned from the whole recording (its noise and, for peeling, its spike
templates; once per parameter set, cached beside the store), so every shard applies the
same threshold and subtracts the same templates.

That model is learned once, by the worker that claims it first, from spread-out ranges of
the upload itself (at the versions ingest validated): shards arrive while the chunker is
still writing, so the store does not yet hold the whole recording. The other workers wait
for the result instead of repeating the work; a claim left by a worker that died is taken
over after LEARN_TIMEOUT_S. A rerun learns from the store, which is complete by then."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import structlog
from pydantic import Field, Json, ValidationError

from neurocyte_shared.errors import explain
from neurocyte_shared.messaging.config import EnvSettings, Settings
from neurocyte_shared.messaging.events import Event, ShardDetected, ShardReady
from neurocyte_shared.science.detection import DetectionParams, Learned, Templates, learn_recording
from neurocyte_shared.science.detection.windows import detect_window
from neurocyte_shared.storage import claims, layout, pins, s3io, spikes, store
from neurocyte_shared.storage.documents import RecordingDocument

log = structlog.get_logger()


# Eight times what learning takes on a 1,024-channel recording (about 15 s on one core); a
# claim older than this belongs to a worker that died, and a waiting worker learns itself.
LEARN_TIMEOUT_S = 120.0
LEARN_POLL_S = 0.5
WORKER = uuid.uuid4().hex


@dataclass
class Deps:
    s3: Any
    data_bucket: str
    params: DetectionParams = field(default_factory=DetectionParams)
    opener_for: Callable[..., Any] | None = None  # (bucket, prefix, versions) -> opener; None: learn from the store


def _cached_model(deps: Deps, params: DetectionParams, prefix: str) -> Learned | None:
    key = params.cache_key()
    cached = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, layout.noise_key(prefix, key))
    if cached is None:
        return None
    doc = json.loads(cached)
    noise = np.asarray(doc["noise_uv"], dtype=np.float32)
    gains, pooled = (None if doc.get(k) is None else np.asarray(doc[k], dtype=np.float32)
                     for k in ("reference_gains", "pool_noise"))
    if not params.peel:
        return Learned(noise, None, gains, pooled)
    data = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, layout.templates_key(prefix, key))
    return None if data is None else Learned(noise, Templates.from_bytes(data), gains, pooled)


def recording_model(array: Any, deps: Deps, params: DetectionParams, prefix: str, locations: np.ndarray,
                    doc: RecordingDocument | None = None) -> Learned:
    """Per-channel noise, gains on the common reference, the pooled traces' noise and spike
    templates of the whole recording, computed once and kept at
    noise/<params>.json and templates/<params>.npz. With `doc` (and an opener) they are learned
    from the upload, else from the store. Deterministic, so a worker that takes over a dead
    claim writes the same values; the templates are written first, so a worker that finds
    the noise finds them too."""
    model = _cached_model(deps, params, prefix)
    if model is not None:
        return model
    key = params.cache_key()
    claim_key = layout.learning_claim_key(prefix, key)
    holder = claims.claim(deps.s3, deps.data_bucket, claim_key, {"worker": WORKER, "at": time.time()},
                          is_mine=lambda existing: existing.get("worker") == WORKER)
    if holder is not None:
        log.info("waiting_for_model", learner=holder.get("worker"))
        while time.time() < float(holder.get("at", 0)) + LEARN_TIMEOUT_S:
            time.sleep(LEARN_POLL_S)  # a bounded wait on the other worker's result
            model = _cached_model(deps, params, prefix)
            if model is not None:
                return model
        log.warning("learning_claim_expired", learner=holder.get("worker"))
    attrs = array.attrs
    fs, gain, offset = attrs["sampling_rate_hz"], attrs["gain_uv"], attrs["offset_uv"]
    started = time.perf_counter()
    if doc is not None and deps.opener_for is not None:
        _, reader = pins.open_pinned(deps.s3, doc, deps.opener_for)
        try:
            model = learn_recording(reader.read, array.shape[0], fs, params, gain, offset,
                                    channel_locations_um=locations)
        finally:
            reader.close()
    else:
        model = learn_recording(lambda a, b: array[a:b], array.shape[0], fs, params, gain, offset,
                                channel_locations_um=locations)
    noise, templates, gains, pooled = model
    if templates is not None:
        deps.s3.put_object(Bucket=deps.data_bucket, Key=layout.templates_key(prefix, key), Body=templates.to_bytes())
        log.info("templates_learned", n_templates=len(templates), source="upload" if doc is not None else "store",
                 seconds=round(time.perf_counter() - started, 2))
    s3io.put_json(deps.s3, deps.data_bucket, layout.noise_key(prefix, key),
                  {"params": params.model_dump(), "noise_uv": noise.tolist(),
                   "reference_gains": None if gains is None else gains.tolist(),
                   "pool_noise": None if pooled is None else pooled.tolist()})
    return model


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
    doc = RecordingDocument.model_validate_json(
        s3io.get_bytes(deps.s3, deps.data_bucket, layout.recording_document_key(prefix)))
    locations = np.asarray(doc.info.channel_locations_um, dtype=np.float64)
    # The first run learns from the upload (the store may still be being written); a rerun from the store.
    noise, templates, gains, pooled = recording_model(array, deps, params, prefix, locations,
                                                      doc if event.detection_params is None else None)

    def read(a: int, b: int) -> np.ndarray:
        samples = array[a:b]
        if event.samples_digest is not None:  # the decoded store against what the chunker read
            same, got = store.digest_matches(samples[event.start_sample - a : event.stop_sample - a],
                                             event.samples_digest)
            if not same:
                raise store.StoreMismatch(f"shard {event.shard_index} decodes to other samples than the upload's "
                                          f"(digest {got}, chunker's {event.samples_digest})")
        return samples

    table, unread, waveforms = detect_window(
        read, event.start_sample, event.stop_sample, array.shape[0], fs, params,
        gain_uv=attrs["gain_uv"], offset_uv=attrs["offset_uv"], noise_uv=noise, channel_locations_um=locations,
        templates=templates, reference_gains=gains, pool_noise=pooled)
    # Same key on redelivery: a second run overwrites with identical content.
    deps.s3.put_object(Bucket=deps.data_bucket, Key=key, Body=spikes.to_parquet_bytes(
        table, unread.clipped, waveforms, silenced=unread.silenced, artefacts=unread.artefacts,
        samples_verified=event.samples_digest is not None))
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
    from neurocyte_shared.storage.s3io import S3Opener

    deps = Deps(s3=s3(settings), data_bucket=settings.data_bucket, params=params,
                opener_for=lambda bucket, prefix, versions=None: S3Opener(bucket, prefix, versions=versions))
    return {ShardReady: partial(on_shard_ready, deps=deps)}
