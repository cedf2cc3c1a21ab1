"""Every message on Neurocyte's bus, as small immutable pydantic models.

Events are named for what happened. The envelope (event id, time, correlation id,
schema version) lives once, in `Event`; the correlation id is always the recording id,
so a recording can be followed through every service's logs.

On the wire an event is the `detail` of an EventBridge event whose `detail-type` is the
class name (see `bus.py`). Large payloads (spike tables, shard lists) travel by S3 key,
never inline: EventBridge and SQS cap a message at 256 KiB.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope every Neurocyte event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = Field(default_factory=_now)
    correlation_id: str = Field(description="The recording id this event belongs to")

    @property
    def recording_id(self) -> str:
        return self.correlation_id


class RecordingRef(BaseModel):
    """Where a recording's processed data lives in the data bucket."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    prefix: str = Field(description="Key prefix in the data bucket, ending in '/'")

    def key(self, name: str) -> str:
        return self.prefix + name


class RecordingValidated(Event):
    """An upload was complete and readable; `recording.json` is written under `recording`."""

    recording: RecordingRef
    upload_bucket: str
    upload_keys: tuple[str, ...]
    format: str
    uploader_email: EmailStr
    n_channels: int
    n_samples: int
    sampling_rate_hz: float


class RecordingRejected(Event):
    """An upload was refused; `reason` is written for a person, not a program."""

    tenant: str
    upload_key: str
    reason: str
    uploader_email: EmailStr | None = None
    recording_name: str | None = None
    # Which attempt at this recording id was refused, when it is not the first: a second
    # manifest under a taken id gets its own email, not the first refusal's.
    attempt: str | None = None


class DuplicateUploadSkipped(Event):
    """An upload has the same content as one the tenant uploaded before; it was not processed
    again (the manifest can ask for that with "reprocess": true)."""

    tenant: str
    upload_key: str
    uploader_email: EmailStr
    recording_name: str
    original_recording_id: str
    original_recording_name: str
    original_uploaded_at: datetime
    original_finished: bool = Field(description="the original has a published summary")


class RerunRequested(Event):
    """A lab member asked for a recording to be analysed again with other parameters: a new
    result version beside the others (the chunker announces its shards again)."""

    recording: RecordingRef
    detection_params: dict[str, Any] = Field(default_factory=dict)
    metrics_params: dict[str, Any] = Field(default_factory=dict)
    requested_by: EmailStr


class ShardReady(Event):
    """One time window of the recording is in the Zarr store and can be detected."""

    recording: RecordingRef
    store_key: str
    shard_index: int
    n_shards: int
    start_sample: int
    stop_sample: int
    # A rerun's parameters (None: the services' own defaults); passed on to the aggregator.
    detection_params: dict[str, Any] | None = None
    metrics_params: dict[str, Any] | None = None
    # The chunker's digest of the samples it read from the upload for this shard
    # (storage/store.samples_digest); the detector checks the decoded store against it.
    samples_digest: str | None = None


class ShardDetected(Event):
    """The spike table of one shard is written to `spikes_key`."""

    recording: RecordingRef
    shard_index: int
    n_shards: int
    spikes_key: str
    n_spikes: int
    n_samples: int
    seconds: float
    metrics_params: dict[str, Any] | None = None  # a rerun's, else the aggregator's own


class RecordingSummarized(Event):
    """The recording's summary is published (exactly once) under `summary_key`."""

    recording: RecordingRef
    recording_name: str
    uploader_email: EmailStr
    summary_key: str
    spikes_key: str
    total_spikes: int
    active_electrodes: int
    n_channels: int
    mean_firing_rate_hz: float
    duration_s: float
    bursting_electrodes: int = 0
    network_bursts: int = 0
    sttc_mean: float | None = None
    stimuli: int = 0  # stimulation artefacts found; the response is measured from 5 on
    responding_electrodes: int | None = None
    response_latency_ms: float | None = None  # median over the responding electrodes
    report_key: str | None = None
    report_url: str | None = Field(None, repr=False)  # a pre-signed link: never logged
    report_url_expires_at: datetime | None = None
    quality_notes: tuple[str, ...] = ()  # what the summary found wrong with the signal, if anything
    version: str | None = None  # the result version (`v=<detection>-<metrics>`)
    rerun: bool = False  # a rerun with other parameters: emailed once per version, not once per recording


class ProcessingFailed(Event):
    """A message for this recording failed on every delivery and went to a dead-letter queue;
    the recording is kept and can be retried (`neurocyte dlq redrive`) after a fix."""

    recording: RecordingRef
    recording_name: str
    uploader_email: EmailStr
    stage: str
    reason: str


class ExperimentSummarized(Event):
    """Every recording of an experiment's plate map is summarised, and the experiment's report
    is published (correlation_id: the experiment's name)."""

    tenant: str
    experiment: str
    result_id: str = Field(description="the report's id: a digest of its plate map and the summaries it used")
    uploader_email: EmailStr
    recordings: int
    report_key: str
    report_url: str | None = Field(None, repr=False)  # a pre-signed link: never logged
    report_url_expires_at: datetime | None = None
    headline: tuple[str, ...] = ()


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RecordingValidated,
        RerunRequested,
        RecordingRejected,
        DuplicateUploadSkipped,
        ShardReady,
        ShardDetected,
        RecordingSummarized,
        ProcessingFailed,
        ExperimentSummarized,
    )
}


# ---------------------------------------------------------------------------
# AWS's own events that enter the system (not ours: field names as AWS sends them)


class S3ObjectCreated(BaseModel):
    """The `detail` of an EventBridge "Object Created" event from S3."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    bucket: dict[str, Any]
    object: dict[str, Any]
    reason: str | None = None

    @property
    def bucket_name(self) -> str:
        return str(self.bucket["name"])

    @property
    def key(self) -> str:
        """The object key, URL-decoded: EventBridge sends it encoded (`rec%20one`)."""
        from urllib.parse import unquote_plus

        return unquote_plus(str(self.object["key"]))

    @property
    def version_id(self) -> str | None:
        """The version this event is about (the upload bucket is versioned), else None."""
        v = self.object.get("version-id")
        return str(v) if v else None

    @property
    def size(self) -> int:
        return int(self.object.get("size", 0))
