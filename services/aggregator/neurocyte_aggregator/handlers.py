"""Aggregator: when every shard of a recording is in, merge the spike tables, compute the
metrics, draw the pictures and the report, and publish them as one version of the result.

A version (`results/v=<detection>-<metrics>/`, named by the parameters' hashes) is written
file by file, summary.json last with a conditional write: the first writer wins, and a
reader that sees summary.json sees the whole version. Other parameters make another
version beside it, never over it. Redelivered or duplicated ShardDetected events are
harmless: until all shards are present nothing is written; afterwards the summary already
exists and is re-announced unchanged (the notifier keeps the email to one)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog
from pydantic import Field, Json, ValidationError

from neurocyte_aggregator import experiments
from neurocyte_shared.errors import explain
from neurocyte_shared.messaging.config import EnvSettings, Settings
from neurocyte_shared.messaging.events import Event, RecordingSummarized, ShardDetected
from neurocyte_shared.science import results
from neurocyte_shared.science.metrics import MetricsParams, Summary, summarize
from neurocyte_shared.science.table import SpikeTable
from neurocyte_shared.science.waveforms import Waveforms
from neurocyte_shared.storage import claims, layout, pins, s3io, spikes, usage
from neurocyte_shared.storage.documents import RecordingDocument
from neurocyte_shared.storage.layout import (
    REPORT_NAME,
    SPIKES_NAME,
    SUMMARY_NAME,
    detection_version_of,
    results_prefix,
    shard_spikes_key,
)

log = structlog.get_logger()

# SigV4 links live at most 7 days; with temporary (task role) credentials they end when the
# credentials do, whichever comes first (deploy/README.md).
DEFAULT_LINK_EXPIRY_S = 7 * 24 * 3600


@dataclass
class Deps:
    s3: Any
    data_bucket: str
    metrics: MetricsParams = field(default_factory=MetricsParams)
    link_expiry_s: int = DEFAULT_LINK_EXPIRY_S


def on_shard_detected(event: ShardDetected, deps: Deps) -> list[Event]:
    prefix = event.recording.prefix
    detection = detection_version_of(event.spikes_key)
    wanted = {shard_spikes_key(prefix, i, detection) for i in range(event.n_shards)}
    present = wanted & set(s3io.list_keys(deps.s3, deps.data_bucket, layout.shard_spikes_prefix(prefix, detection)))
    if len(present) < event.n_shards:
        log.info("waiting_for_shards", present=len(present), n_shards=event.n_shards)
        return []
    # A rerun names its own metrics parameters; otherwise this service's (NEUROCYTE_METRICS_PARAMS).
    rerun = event.metrics_params is not None
    metrics = MetricsParams(**event.metrics_params) if rerun else deps.metrics
    out = results_prefix(prefix, detection, metrics.cache_key())
    summary_key, spikes_key, report_key = out + SUMMARY_NAME, out + SPIKES_NAME, out + REPORT_NAME
    doc = RecordingDocument.model_validate_json(
        s3io.get_bytes(deps.s3, deps.data_bucket, layout.recording_document_key(prefix)))

    if s3io.head(deps.s3, deps.data_bucket, summary_key) is None:
        # A rerun reads the store chunked from the validated upload, whatever became of the upload since.
        changed = [] if rerun else pins.changed_files(deps.s3, doc.upload_bucket, doc.upload_versions)
        if changed:  # written over while it was detected: analysed as validated, but not published
            log.warning("upload_changed", files=changed)
            return [pins.refusal(deps.s3, deps.data_bucket, doc, prefix,
                                 pins.CHANGED.format(what=f"{', '.join(changed)} was written over"))]
        _publish(deps, doc, prefix, detection, sorted(wanted), out, metrics)
    summary = Summary.model_validate_json(s3io.get_bytes(deps.s3, deps.data_bucket, summary_key))
    expires = datetime.now(UTC) + timedelta(seconds=deps.link_expiry_s)
    url = deps.s3.generate_presigned_url(
        "get_object", Params={"Bucket": deps.data_bucket, "Key": report_key, "ResponseContentType": "text/html"},
        ExpiresIn=deps.link_expiry_s)
    version = out.rstrip("/").rsplit("/", 1)[1]
    return [RecordingSummarized(
        correlation_id=event.correlation_id, recording=event.recording, recording_name=doc.recording_name,
        uploader_email=doc.uploader_email, summary_key=summary_key, spikes_key=spikes_key,
        total_spikes=summary.total_spikes, active_electrodes=summary.active_electrodes,
        n_channels=summary.n_channels, mean_firing_rate_hz=summary.mean_firing_rate_hz,
        duration_s=summary.duration_s, bursting_electrodes=summary.bursting_electrodes,
        network_bursts=summary.network.count if summary.network else 0,
        sttc_mean=summary.synchrony.sttc_mean if summary.synchrony else None,
        **summary.stimulation(),
        report_key=report_key, report_url=url, report_url_expires_at=expires,
        quality_notes=tuple(summary.quality.notes) if summary.quality else (),
        version=version, rerun=rerun,
    ), *([] if rerun else experiments.after_summary(deps.s3, deps.data_bucket, doc, version,
                                                                      deps.link_expiry_s))]


class _S3Sink:
    """A result version's folder in the data bucket; summary.json is claimed (first writer wins)."""

    def __init__(self, deps: Deps, out: str) -> None:
        self.deps, self.out = deps, out

    def write(self, name: str, data: bytes, content_type: str) -> None:
        self.deps.s3.put_object(Bucket=self.deps.data_bucket, Key=self.out + name, Body=data, ContentType=content_type)

    def write_last(self, name: str, data: bytes, content_type: str) -> bool:
        return claims.claim(self.deps.s3, self.deps.data_bucket, self.out + name, data.decode()) is None


def _publish(deps: Deps, doc: RecordingDocument, prefix: str, detection: str, shard_keys: list[str],
             out: str, metrics: MetricsParams) -> None:
    import numpy as np

    blobs = [s3io.get_bytes(deps.s3, deps.data_bucket, k) for k in shard_keys]
    merged = SpikeTable.concat([spikes.from_parquet_bytes(b) for b in blobs])
    clipped = [spikes.saturation_from_parquet_bytes(b) for b in blobs]
    quieted = [spikes.silenced_from_parquet_bytes(b) for b in blobs]
    stimuli = [spikes.artefacts_from_parquet_bytes(b) for b in blobs]
    waveforms = Waveforms.merged([spikes.waveforms_from_parquet_bytes(b) for b in blobs])
    saturated = None if any(c is None for c in clipped) else np.sum(clipped, axis=0)
    silenced = None if any(c is None for c in quieted) else np.sum(quieted, axis=0)  # shards of older runs: None
    artefacts = None if any(a is None for a in stimuli) else np.sort(np.concatenate(stimuli))
    noise_raw = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, layout.noise_key(prefix, detection))
    noise_doc = json.loads(noise_raw) if noise_raw is not None else {}
    info = doc.info
    summary = summarize(
        merged, recording_id=doc.recording_id, recording_name=doc.recording_name, format=info.format,
        n_channels=info.n_channels, sampling_rate_hz=info.sampling_rate_hz, n_samples=info.n_samples,
        channel_ids=info.channel_ids, channel_locations_um=info.channel_locations_um,
        detection_parameters=noise_doc.get("params", {}),
        noise_uv=np.asarray(noise_doc["noise_uv"], np.float32) if "noise_uv" in noise_doc else None,
        saturated_samples=saturated, silenced_samples=silenced, artefact_samples=artefacts, params=metrics,
    )
    inputs = {k.rsplit("/", 1)[-1]: doc.claimed_sha256.get(k) or f"version {v}"
              for k, v in sorted(doc.upload_versions.items())}
    if results.publish(summary, merged, _S3Sink(deps, out), waveforms, inputs):
        log.info("summary_published", version=out.rsplit("/", 2)[-2], total_spikes=summary.total_spikes,
                 active_electrodes=summary.active_electrodes)
        _mark_uploads_processed(deps, doc, verified=all(spikes.samples_verified(b) for b in blobs))
    else:
        log.info("summary_already_published")  # another worker won the race


def _mark_uploads_processed(deps: Deps, doc: RecordingDocument, verified: bool) -> None:
    """Tag the raw upload for the bucket's lifecycle rules. Once every shard's decoded samples
    matched the upload's (the store can give back the original samples), the raw files are
    kept only once more: Deep Archive at once, or deleted where the lab chose so
    (usage/tenant=<lab>/settings.json). Otherwise they stay, and only age into cheaper tiers."""
    tags = [{"Key": "neurocyte-processed", "Value": "true"}]
    if verified:
        choice = usage.limits_for(deps.s3, deps.data_bucket, doc.tenant, usage.Limits()).raw_upload
        tags.append({"Key": "neurocyte-raw", "Value": choice})
    for key in doc.upload_keys:
        deps.s3.put_object_tagging(Bucket=doc.upload_bucket, Key=key, Tagging={"TagSet": tags})
    log.info("upload_tagged", verified=verified, raw=tags[-1]["Value"] if verified else "kept")


class AggregatorSettings(EnvSettings):
    metrics_params: Json[dict[str, Any]] = Field(
        default_factory=dict, alias="NEUROCYTE_METRICS_PARAMS",
        description='aggregator: metrics parameters as JSON, e.g. {"burst_min_spikes": 3}')
    link_expiry_s: int = Field(DEFAULT_LINK_EXPIRY_S, ge=60, le=DEFAULT_LINK_EXPIRY_S, alias="NEUROCYTE_LINK_EXPIRY_S",
                               description="aggregator: lifetime of the emailed report link (s; at most 7 days, "
                                           "SigV4's limit)")


def build(settings: Settings) -> dict:
    from neurocyte_shared.messaging.config import ConfigurationError
    from neurocyte_shared.messaging.service import s3

    own = AggregatorSettings.from_env()
    try:
        metrics = MetricsParams(**own.metrics_params)
    except ValidationError as exc:
        raise ConfigurationError(f"NEUROCYTE_METRICS_PARAMS: {explain(exc, 'metrics parameters')}") from None
    deps = Deps(s3=s3(settings), data_bucket=settings.data_bucket, metrics=metrics, link_expiry_s=own.link_expiry_s)
    return {ShardDetected: partial(on_shard_detected, deps=deps)}
