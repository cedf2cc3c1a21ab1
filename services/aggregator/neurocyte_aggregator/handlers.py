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
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import structlog
from botocore.exceptions import ClientError

from neurocyte_shared import s3io, spikes
from neurocyte_shared.aws import is_precondition_failed
from neurocyte_shared.detection import SpikeTable
from neurocyte_shared.events import Event, RecordingSummarized, ShardDetected
from neurocyte_shared.layout import (REPORT_NAME, SPIKES_NAME, SUMMARY_NAME, detection_version_of, results_prefix,
                                     shard_spikes_key)
from neurocyte_shared.manifest import RecordingDocument
from neurocyte_shared.metrics import MetricsParams, Summary, summarize

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
    present = wanted & set(s3io.list_keys(deps.s3, deps.data_bucket, f"{prefix}spikes/d={detection}/"))
    if len(present) < event.n_shards:
        log.info("waiting_for_shards", present=len(present), n_shards=event.n_shards)
        return []
    out = results_prefix(prefix, detection, deps.metrics.cache_key())
    summary_key, spikes_key, report_key = out + SUMMARY_NAME, out + SPIKES_NAME, out + REPORT_NAME
    doc = RecordingDocument.model_validate_json(
        s3io.get_bytes(deps.s3, deps.data_bucket, prefix + "recording.json"))

    if s3io.head(deps.s3, deps.data_bucket, summary_key) is None:
        _publish(deps, doc, prefix, detection, sorted(wanted), out)
    summary = Summary.model_validate_json(s3io.get_bytes(deps.s3, deps.data_bucket, summary_key))
    expires = datetime.now(timezone.utc) + timedelta(seconds=deps.link_expiry_s)
    url = deps.s3.generate_presigned_url(
        "get_object", Params={"Bucket": deps.data_bucket, "Key": report_key, "ResponseContentType": "text/html"},
        ExpiresIn=deps.link_expiry_s)
    return [RecordingSummarized(
        correlation_id=event.correlation_id, recording=event.recording, recording_name=doc.recording_name,
        uploader_email=doc.uploader_email, summary_key=summary_key, spikes_key=spikes_key,
        total_spikes=summary.total_spikes, active_electrodes=summary.active_electrodes,
        n_channels=summary.n_channels, mean_firing_rate_hz=summary.mean_firing_rate_hz,
        duration_s=summary.duration_s, bursting_electrodes=summary.bursting_electrodes,
        network_bursts=summary.network.count if summary.network else 0,
        sttc_mean=summary.synchrony.sttc_mean if summary.synchrony else None,
        report_key=report_key, report_url=url, report_url_expires_at=expires,
    )]


def _publish(deps: Deps, doc: RecordingDocument, prefix: str, detection: str, shard_keys: list[str],
             out: str) -> None:
    import numpy as np

    from neurocyte_shared.report import figures, render_html

    blobs = [s3io.get_bytes(deps.s3, deps.data_bucket, k) for k in shard_keys]
    merged = SpikeTable.concat([spikes.from_parquet_bytes(b) for b in blobs])
    clipped = [spikes.saturation_from_parquet_bytes(b) for b in blobs]
    saturated = None if any(c is None for c in clipped) else np.sum(clipped, axis=0)
    noise_raw = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, f"{prefix}noise/{detection}.json")
    noise_doc = json.loads(noise_raw) if noise_raw is not None else {}
    info = doc.info
    summary = summarize(
        merged, recording_id=doc.recording_id, recording_name=doc.recording_name, format=info.format,
        n_channels=info.n_channels, sampling_rate_hz=info.sampling_rate_hz, n_samples=info.n_samples,
        channel_ids=info.channel_ids, channel_locations_um=info.channel_locations_um,
        detection_parameters=noise_doc.get("params", {}),
        noise_uv=np.asarray(noise_doc["noise_uv"], np.float32) if "noise_uv" in noise_doc else None,
        saturated_samples=saturated, params=deps.metrics,
    )
    pictures = figures(summary, merged)
    # Everything else first, the summary last: a reader who sees summary.json sees it all.
    deps.s3.put_object(Bucket=deps.data_bucket, Key=out + SPIKES_NAME, Body=spikes.to_parquet_bytes(merged))
    for name, data in pictures.items():
        deps.s3.put_object(Bucket=deps.data_bucket, Key=out + name, Body=data, ContentType="image/png")
    deps.s3.put_object(Bucket=deps.data_bucket, Key=out + REPORT_NAME, Body=render_html(summary, pictures).encode(),
                       ContentType="text/html; charset=utf-8")
    try:
        s3io.put_json(deps.s3, deps.data_bucket, out + SUMMARY_NAME, summary.model_dump_json(indent=1),
                      if_none_match=True)
        log.info("summary_published", version=out.rsplit("/", 2)[-2], total_spikes=summary.total_spikes,
                 active_electrodes=summary.active_electrodes)
        _mark_uploads_processed(deps, doc)
    except ClientError as exc:
        if not is_precondition_failed(exc):
            raise
        log.info("summary_already_published")  # another worker won the race


def _mark_uploads_processed(deps: Deps, doc: RecordingDocument) -> None:
    """Tag the raw upload so the bucket's lifecycle rule moves it to Deep Archive."""
    for key in doc.upload_keys:
        deps.s3.put_object_tagging(Bucket=doc.upload_bucket, Key=key, Tagging={
            "TagSet": [{"Key": "neurocyte-processed", "Value": "true"}]})


def build(settings) -> dict:
    from neurocyte_shared.service import s3

    from neurocyte_shared.config import ConfigurationError

    overrides = json.loads(os.environ.get("NEUROCYTE_METRICS_PARAMS", "{}"))
    expiry = int(os.environ.get("NEUROCYTE_LINK_EXPIRY_S", DEFAULT_LINK_EXPIRY_S))
    if not 60 <= expiry <= DEFAULT_LINK_EXPIRY_S:
        raise ConfigurationError(f"NEUROCYTE_LINK_EXPIRY_S must be 60..{DEFAULT_LINK_EXPIRY_S} seconds (SigV4 limit)")
    deps = Deps(s3=s3(settings), data_bucket=settings.data_bucket, metrics=MetricsParams(**overrides),
                link_expiry_s=expiry)
    return {ShardDetected: partial(on_shard_detected, deps=deps)}
