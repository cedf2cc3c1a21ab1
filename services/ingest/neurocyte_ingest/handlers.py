"""Ingest: an upload's manifest arrived -> validate the recording -> RecordingValidated,
or RecordingRejected with a reason a person understands. Nothing is processed before the
manifest (uploaded last) says the upload is complete."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import Field, ValidationError

from neurocyte_shared.formats import InvalidRecording, Opener, check_all, identify
from neurocyte_shared.messaging.bus import Deferred
from neurocyte_shared.messaging.config import EnvSettings, Settings
from neurocyte_shared.messaging.events import (
    DuplicateUploadSkipped,
    Event,
    RecordingRef,
    RecordingRejected,
    RecordingValidated,
    S3ObjectCreated,
)
from neurocyte_shared.messaging.logs import redact_email
from neurocyte_shared.storage import claims, layout, s3io
from neurocyte_shared.storage.documents import RecordingDocument, UploadManifest, explain

log = structlog.get_logger()
MAX_MANIFEST_BYTES = 256 * 1024


@dataclass
class Deps:
    s3: Any
    upload_bucket: str
    data_bucket: str
    opener_for: Callable[[str, str], Opener]  # (bucket, prefix) -> opener
    upload_deadline_s: float = 1800.0  # how long files listed in a manifest may keep arriving
    recheck_s: int = 30


def on_object_created(event: S3ObjectCreated, deps: Deps) -> list[Event]:
    try:
        parsed = layout.parse_manifest_key(event.key)
    except layout.UnsafeKey as exc:
        log.warning("upload_key_refused", error=str(exc))
        return []
    if parsed is None:
        log.info("waiting_for_manifest", size=event.size)  # a data file; the manifest comes last
        return []
    tenant, recording_id = parsed
    structlog.contextvars.bind_contextvars(recording_id=recording_id, tenant=tenant)
    upload_prefix = layout.upload_prefix(tenant, recording_id)

    obj = deps.s3.get_object(Bucket=deps.upload_bucket, Key=event.key)
    raw = obj["Body"].read(MAX_MANIFEST_BYTES + 1)
    date = obj["LastModified"].astimezone(UTC).strftime("%Y-%m-%d")
    prefix = layout.recording_prefix(tenant, date, recording_id)

    def reject(reason: str, email: str | None, name: str | None = None) -> list[Event]:
        log.info("upload_rejected", reason=reason, uploader=redact_email(email))
        s3io.put_json(deps.s3, deps.data_bucket, layout.rejected_key(prefix),
                      {"recording_id": recording_id, "reason": reason, "upload_key": event.key})
        return [RecordingRejected(correlation_id=recording_id, tenant=tenant, upload_key=event.key,
                                  reason=reason, uploader_email=email, recording_name=name)]

    manifest, problem = _parse_manifest(raw)
    if manifest is None:
        return reject(problem, _email_if_valid(raw))
    email = str(manifest.uploader_email)
    name = manifest.recording_name or recording_id
    try:
        manifest.check_names()
    except layout.UnsafeKey as exc:
        return reject(str(exc), email, name)

    # The manifest is written last, so every file it lists should be there, whole. If not (a
    # tool that writes the manifest first, or files still copying), wait for them until the
    # deadline, checking again every few seconds; then refuse, naming what is missing.
    sizes: dict[str, int] = {}
    etags: dict[str, str] = {}
    problems: list[str] = []
    for f in manifest.files:
        meta = s3io.head(deps.s3, deps.upload_bucket, upload_prefix + f.name)
        if meta is None:
            problems.append(f"{f.name} was not uploaded")
        elif meta["ContentLength"] != f.size_bytes:
            problems.append(f"{f.name} is {meta['ContentLength']:,} bytes in storage but the manifest says "
                            f"{f.size_bytes:,} (interrupted, or the file changed)")
        else:
            sizes[f.name] = f.size_bytes
            etags[f.name] = str(meta.get("ETag", "")).strip('"')
    if problems:
        waited = (datetime.now(UTC) - obj["LastModified"]).total_seconds()
        if waited < deps.upload_deadline_s:
            log.info("upload_incomplete_waiting", problems=problems, waited_s=round(waited),
                     deadline_s=deps.upload_deadline_s)
            raise Deferred("; ".join(problems), max(1, min(deps.recheck_s, int(deps.upload_deadline_s - waited) + 1)))
        return reject(f"the upload was still incomplete {_duration(deps.upload_deadline_s)} after its manifest: "
                      + "; ".join(problems) + ". Upload the missing file(s) completely, then the manifest again "
                      "(neurocyte submit does both).", email, name)

    try:
        fmt, roles = identify([f.name for f in manifest.files])
        found = check_all(fmt, roles, deps.opener_for(deps.upload_bucket, upload_prefix), sizes)
    except InvalidRecording as exc:
        return reject(str(exc), email, name)

    parts = _recordings_in(recording_id, name, tuple(stream for stream, _ in found if stream))
    infos = [info for _, info in found]
    uploaded_at = obj["LastModified"].astimezone(UTC)
    record = {"upload_id": recording_id, "recording_name": name, "uploaded_at": uploaded_at.isoformat(),
              "recordings": [layout.recording_prefix(tenant, date, rid) for rid, _, _ in parts]}
    original = None if manifest.reprocess else _claim_content(deps, tenant, _fingerprint(manifest, etags), record)
    if original is not None:
        finished = any(k.endswith("/" + layout.SUMMARY_NAME) for p in original.get("recordings", [])
                       for k in s3io.list_keys(deps.s3, deps.data_bucket, p + "results/"))
        log.info("duplicate_upload_skipped", original=original.get("upload_id"), finished=finished)
        return [DuplicateUploadSkipped(
            correlation_id=recording_id, tenant=tenant, upload_key=event.key, uploader_email=email,
            recording_name=name, original_recording_id=str(original.get("upload_id")),
            original_recording_name=str(original.get("recording_name")),
            original_uploaded_at=original.get("uploaded_at"), original_finished=finished)]

    upload_keys = tuple(upload_prefix + roles[r] for r in sorted(roles))
    events: list[Event] = []
    for (rid, rname, stream), info in zip(parts, infos):
        rprefix = layout.recording_prefix(tenant, date, rid)
        doc = RecordingDocument(
            recording_id=rid, recording_name=rname, tenant=tenant, uploader_email=email,
            upload_bucket=deps.upload_bucket, upload_keys=upload_keys, info=info,
            stream=stream, upload_id=recording_id if rid != recording_id else None,
        )
        s3io.put_json(deps.s3, deps.data_bucket, layout.recording_document_key(rprefix), doc.model_dump_json(indent=1))
        log.info("recording_validated", format=fmt, stream=stream, recording=rid, n_channels=info.n_channels,
                 duration_s=round(info.duration_s, 3), sampling_rate_hz=info.sampling_rate_hz)
        events.append(RecordingValidated(
            correlation_id=rid, recording=RecordingRef(tenant=tenant, prefix=rprefix),
            upload_bucket=deps.upload_bucket, upload_keys=doc.upload_keys, format=fmt,
            uploader_email=email, n_channels=info.n_channels, n_samples=info.n_samples,
            sampling_rate_hz=info.sampling_rate_hz,
        ))
    return events


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def _fingerprint(manifest: UploadManifest, etags: dict[str, str]) -> str:
    """The identity of an upload's content: each file's SHA-256 (from the manifest) or else
    its S3 ETag (the same for the same bytes uploaded the same way), names ignored."""
    parts = sorted(f"sha256:{f.sha256}:{f.size_bytes}" if f.sha256 else f"etag:{etags[f.name]}:{f.size_bytes}"
                   for f in manifest.files)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _claim_content(deps: Deps, tenant: str, fingerprint: str, record: dict) -> dict | None:
    """Record this upload as the first with this content (of two identical uploads at once
    exactly one wins); return the earlier upload's record if there was one. A redelivery of
    the same upload finds its own record and goes on."""
    return claims.claim(deps.s3, deps.data_bucket, layout.fingerprint_key(tenant, fingerprint), record,
                        is_mine=lambda existing: existing.get("upload_id") == record["upload_id"])


def _recordings_in(recording_id: str, name: str, streams: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """(recording id, name, stream) of each recording an upload holds. A file with several
    (a MaxTwo plate's wells) becomes one recording per stream, `<upload id>-<stream>`."""
    if len(streams) <= 1:
        return [(recording_id, name, streams[0] if streams else None)]
    out = []
    for stream in streams:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", stream).strip("-")[:40] or "stream"
        out.append((layout.check_segment(f"{recording_id[:80]}-{slug}", "recording id"), f"{name} ({stream})", stream))
    return out


def _parse_manifest(raw: bytes) -> tuple[UploadManifest | None, str]:
    if len(raw) > MAX_MANIFEST_BYTES:
        return None, "manifest.json is larger than 256 KiB; it should list a few files"
    try:
        return UploadManifest.model_validate_json(raw), ""
    except ValidationError as exc:
        return None, explain(exc, "manifest.json")


def _email_if_valid(raw: bytes) -> str | None:
    """The address from a manifest that is otherwise broken, so the uploader still hears why."""
    try:
        candidate = json.loads(raw).get("uploader_email")
        UploadManifest.model_validate({"uploader_email": candidate, "files": [{"name": "x", "size_bytes": 0}]})
        return candidate
    except Exception:  # noqa: BLE001 - no usable address: the rejection is logged only
        return None


class IngestSettings(EnvSettings):
    upload_deadline_s: float = Field(1800.0, gt=0, alias="NEUROCYTE_UPLOAD_DEADLINE_S",
                                     description="ingest: how long files listed in a manifest may keep arriving (s)")
    recheck_s: int = Field(30, ge=1, alias="NEUROCYTE_UPLOAD_RECHECK_S",
                           description="ingest: how often an incomplete upload is checked again (s)")


def build(settings: Settings) -> dict:
    from functools import partial

    from neurocyte_shared.messaging.service import s3
    from neurocyte_shared.storage.s3io import S3Opener

    own = IngestSettings.from_env()
    deps = Deps(s3=s3(settings), upload_bucket=settings.upload_bucket, data_bucket=settings.data_bucket,
                opener_for=S3Opener, upload_deadline_s=own.upload_deadline_s, recheck_s=own.recheck_s)
    return {S3ObjectCreated: partial(on_object_created, deps=deps)}
