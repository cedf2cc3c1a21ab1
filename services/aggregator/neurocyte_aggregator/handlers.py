"""Aggregator: when every shard of a recording is in, merge the spike tables, compute the
metrics and publish summary.json exactly once (S3 conditional write: the first writer wins).

Redelivered or duplicated ShardDetected events are harmless: until all shards are present
nothing is written; afterwards the summary already exists and is re-announced unchanged
(the notifier keeps the email to one)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from botocore.exceptions import ClientError

from neurocyte_shared import s3io, spikes
from neurocyte_shared.aws import is_precondition_failed
from neurocyte_shared.detection import SpikeTable
from neurocyte_shared.events import Event, RecordingSummarized, ShardDetected
from neurocyte_shared.layout import shard_spikes_key
from neurocyte_shared.manifest import RecordingDocument
from neurocyte_shared.metrics import Summary, summarize

log = structlog.get_logger()


@dataclass
class Deps:
    s3: Any
    data_bucket: str


def on_shard_detected(event: ShardDetected, deps: Deps) -> list[Event]:
    prefix = event.recording.prefix
    wanted = {shard_spikes_key(prefix, i) for i in range(event.n_shards)}
    present = wanted & set(s3io.list_keys(deps.s3, deps.data_bucket, prefix + "spikes/"))
    if len(present) < event.n_shards:
        log.info("waiting_for_shards", present=len(present), n_shards=event.n_shards)
        return []
    summary_key, spikes_key = prefix + "summary/summary.json", prefix + "summary/spikes.parquet"
    doc = RecordingDocument.model_validate_json(
        s3io.get_bytes(deps.s3, deps.data_bucket, prefix + "recording.json"))

    if s3io.head(deps.s3, deps.data_bucket, summary_key) is None:
        tables = [spikes.from_parquet_bytes(s3io.get_bytes(deps.s3, deps.data_bucket, k)) for k in sorted(wanted)]
        merged = SpikeTable.concat(tables)
        noise = s3io.list_keys(deps.s3, deps.data_bucket, prefix + "noise/")
        params = s3io.get_json(deps.s3, deps.data_bucket, noise[0])["params"] if noise else {}
        info = doc.info
        summary = summarize(
            merged, recording_id=doc.recording_id, recording_name=doc.recording_name, format=info.format,
            n_channels=info.n_channels, sampling_rate_hz=info.sampling_rate_hz, n_samples=info.n_samples,
            channel_ids=info.channel_ids, channel_locations_um=info.channel_locations_um,
            detection_parameters=params,
        )
        # The full table first, the summary last: a reader who sees summary.json sees it all.
        deps.s3.put_object(Bucket=deps.data_bucket, Key=spikes_key, Body=spikes.to_parquet_bytes(merged))
        try:
            s3io.put_json(deps.s3, deps.data_bucket, summary_key, summary.model_dump_json(indent=1),
                          if_none_match=True)
            log.info("summary_published", total_spikes=summary.total_spikes,
                     active_electrodes=summary.active_electrodes)
            _mark_uploads_processed(deps, doc)
        except ClientError as exc:
            if not is_precondition_failed(exc):
                raise
            log.info("summary_already_published")  # another worker won the race
    summary = Summary.model_validate_json(s3io.get_bytes(deps.s3, deps.data_bucket, summary_key))
    return [RecordingSummarized(
        correlation_id=event.correlation_id, recording=event.recording, recording_name=doc.recording_name,
        uploader_email=doc.uploader_email, summary_key=summary_key, spikes_key=spikes_key,
        total_spikes=summary.total_spikes, active_electrodes=summary.active_electrodes,
        n_channels=summary.n_channels, mean_firing_rate_hz=summary.mean_firing_rate_hz,
        duration_s=summary.duration_s,
    )]


def _mark_uploads_processed(deps: Deps, doc: RecordingDocument) -> None:
    """Tag the raw upload so the bucket's lifecycle rule moves it to Deep Archive."""
    for key in doc.upload_keys:
        deps.s3.put_object_tagging(Bucket=doc.upload_bucket, Key=key, Tagging={
            "TagSet": [{"Key": "neurocyte-processed", "Value": "true"}]})


def build(settings) -> dict:
    from neurocyte_shared.service import s3

    deps = Deps(s3=s3(settings), data_bucket=settings.data_bucket)
    return {ShardDetected: partial(on_shard_detected, deps=deps)}
