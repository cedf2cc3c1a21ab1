"""Ingest: an upload's manifest arrived -> validate the recording -> RecordingValidated,
or RecordingRejected with a reason a person understands. Nothing is processed before the
manifest (uploaded last) says the upload is complete."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import ClientError
from pydantic import Field, ValidationError

from neurocyte_shared.errors import human_size
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
from neurocyte_shared.messaging.logs import emf, redact_email
from neurocyte_shared.storage import claims, layout, pins, s3io, usage
from neurocyte_shared.storage.documents import (
    MAX_FILES,
    ExperimentMember,
    ManifestExperiment,
    RecordingDocument,
    UploadManifest,
    explain,
)

log = structlog.get_logger()
MAX_MANIFEST_BYTES = 256 * 1024


@dataclass
class Deps:
    s3: Any
    upload_bucket: str
    data_bucket: str
    opener_for: Callable[..., Opener]  # (bucket, prefix, versions) -> opener of the pinned versions
    upload_deadline_s: float = 1800.0  # how long files listed in a manifest may keep arriving
    recheck_s: int = 30
    limits: usage.Limits = field(default_factory=usage.Limits)  # a lab's own (settings.json) override these


def on_object_created(event: S3ObjectCreated, deps: Deps) -> list[Event]:
    try:
        parsed = layout.parse_upload_key(event.key)
    except layout.UnsafeKey as exc:
        return _refuse_key(event, deps, str(exc))
    if parsed is None:
        return []  # not an upload
    tenant, recording_id, name = parsed
    if name != layout.MANIFEST_NAME:
        log.info("waiting_for_manifest", size=event.size)  # a data file; the manifest comes last
        return []
    structlog.contextvars.bind_contextvars(recording_id=recording_id, tenant=tenant)
    upload_prefix = layout.upload_prefix(tenant, recording_id)

    # The manifest version this event announced (another may have been written since).
    version = {"VersionId": event.version_id} if event.version_id else {}
    obj = deps.s3.get_object(Bucket=deps.upload_bucket, Key=event.key, **version)
    this_manifest = str(obj.get("VersionId") or obj.get("ETag", "")).strip('"')
    raw = obj["Body"].read(MAX_MANIFEST_BYTES + 1)
    date = obj["LastModified"].astimezone(UTC).strftime("%Y-%m-%d")
    prefix = layout.recording_prefix(tenant, date, recording_id)
    claim_key = layout.upload_claim_key(tenant, recording_id)

    def refuse(reason: str, email: str | None, name: str | None = None, *, attempt: str | None = None) -> list[Event]:
        log.info("upload_rejected", reason=reason, uploader=redact_email(email))
        if attempt is None:  # a refusal of this id's own upload; a taken id's folder is not ours to write
            s3io.put_json(deps.s3, deps.data_bucket, layout.rejected_key(prefix),
                          {"recording_id": recording_id, "reason": reason, "upload_key": event.key})
        return [RecordingRejected(correlation_id=recording_id, tenant=tenant, upload_key=event.key,
                                  reason=reason, uploader_email=email, recording_name=name, attempt=attempt)]

    manifest, problem = _parse_manifest(raw)
    email = str(manifest.uploader_email) if manifest else _email_if_valid(raw)
    name = (manifest.recording_name if manifest else None) or recording_id
    taken = s3io.get_bytes_if_exists(deps.s3, deps.data_bucket, claim_key)
    if taken is not None and json.loads(taken).get("manifest") != this_manifest:
        return _id_taken(json.loads(taken), recording_id, email, name, this_manifest, refuse)
    if manifest is None:
        return refuse(problem, email)
    try:
        manifest.check_names()
    except layout.UnsafeKey as exc:
        return refuse(str(exc), email, name)

    # The manifest is written last, so every file it lists should be there, whole: checked with
    # one listing. If not (a tool that writes the manifest first, or files still copying), wait
    # for them until the deadline, checking again less often the longer it takes.
    present = pins.latest_versions(deps.s3, deps.upload_bucket, upload_prefix)
    problems: list[str] = []
    for f in manifest.files:
        meta = present.get(upload_prefix + f.name)
        if meta is None:
            problems.append(f"{f.name} was not uploaded")
        elif meta["size"] != f.size_bytes:
            problems.append(f"{f.name} is {meta['size']:,} bytes in storage but the manifest says "
                            f"{f.size_bytes:,} (interrupted, or the file changed)")
    if problems:
        waited = (datetime.now(UTC) - obj["LastModified"]).total_seconds()
        if waited < deps.upload_deadline_s:
            log.info("upload_incomplete_waiting", problems=problems[:5], missing=len(problems), waited_s=round(waited),
                     deadline_s=deps.upload_deadline_s)
            again = min(max(deps.recheck_s, waited / 4), 300, deps.upload_deadline_s - waited + 1)
            raise Deferred(_some(problems), max(1, int(again)))
        return refuse(f"the upload was still incomplete {_duration(deps.upload_deadline_s)} after its manifest: "
                      + _some(problems) + ". Upload the missing file(s) completely, then the manifest again "
                      "(neurocyte submit does both).", email, name)

    limits = usage.limits_for(deps.s3, deps.data_bucket, tenant, deps.limits)
    total_bytes = sum(f.size_bytes for f in manifest.files)
    if total_bytes > limits.max_upload_gb * 1e9:
        log.info("limit_reached", **emf("LimitReached", limit="max_upload_gb"))
        return refuse(f"this upload is {human_size(total_bytes)}, over your lab's limit of "
                      f"{human_size(limits.max_upload_gb * 1e9)} per upload. Nothing was processed. Upload the "
                      "recording in shorter files, or ask your Neurocyte administrator to raise the limit.",
                      email, name)

    sizes = {f.name: f.size_bytes for f in manifest.files}
    versions = {upload_prefix + f.name: present[upload_prefix + f.name]["version"] for f in manifest.files}
    try:
        fmt, roles = identify([f.name for f in manifest.files])
        found = check_all(fmt, roles, deps.opener_for(deps.upload_bucket, upload_prefix, versions), sizes)
    except InvalidRecording as exc:
        return refuse(str(exc), email, name)

    members: dict[str | None, str] = {}
    if manifest.experiment is not None:
        members, problem = _experiment_rows(manifest.experiment, [f.name for f in manifest.files],
                                            [stream for stream, _ in found if stream])
        if problem:
            return refuse(problem, email, name)

    parts = _recordings_in(recording_id, name, tuple(stream for stream, _ in found if stream))
    ours = {rid for rid, _, _ in parts}  # a redelivery must not count its own recordings against it
    month = usage.month_of(obj["LastModified"])
    hours = sum(info.duration_s for _, info in found) / 3600.0
    used = usage.hours_used(deps.s3, deps.data_bucket, tenant, month, excluding=ours)
    if used + hours > limits.max_recording_hours_per_month:
        log.info("limit_reached", **emf("LimitReached", limit="max_recording_hours_per_month"))
        return refuse(f"this upload holds {hours:,.2f} recording-hours, and your lab has used {used:,.2f} of its "
                      f"{limits.max_recording_hours_per_month:,.0f} for {month} (UTC). Nothing was processed. "
                      "Upload it again next month, or ask your Neurocyte administrator to raise the limit.",
                      email, name)
    now = datetime.now(UTC)
    busy = usage.in_flight(deps.s3, deps.data_bucket, tenant, now, excluding=ours)
    if len(busy) + len(ours) > limits.max_in_flight and busy:
        waited = (now - obj["LastModified"]).total_seconds()
        log.info("limit_reached", **emf("LimitReached", limit="max_in_flight"))
        if waited < usage.IN_FLIGHT_EXPIRY_S:  # its turn comes when one of them is emailed
            log.info("waiting_for_a_slot", in_flight=len(busy), limit=limits.max_in_flight, waited_s=round(waited))
            usage.waiting(deps.s3, deps.data_bucket, tenant, recording_id, len(busy), limits.max_in_flight)
            raise Deferred(f"{len(busy)} recordings of this lab are in progress (limit {limits.max_in_flight})",
                           min(300, max(deps.recheck_s, int(waited / 10))))
        usage.not_waiting(deps.s3, deps.data_bucket, tenant, recording_id)
        return refuse(f"your lab has had {len(busy)} recordings in progress (its limit is {limits.max_in_flight}) "
                      f"for the {_duration(usage.IN_FLIGHT_EXPIRY_S)} this upload waited for its turn. Nothing "
                      "was processed. Upload it again, or ask your Neurocyte administrator.", email, name)

    # One recording id, one upload: the first valid manifest takes the id (a redelivery of the
    # same manifest finds its own claim); another, even at the same moment, is refused.
    earlier = claims.claim(deps.s3, deps.data_bucket, claim_key,
                           {"manifest": this_manifest, "uploader_email": email, "claimed_at": datetime.now(UTC)},
                           is_mine=lambda existing: existing.get("manifest") == this_manifest)
    if earlier is not None:
        return _id_taken(earlier, recording_id, email, name, this_manifest, refuse)

    usage.not_waiting(deps.s3, deps.data_bucket, tenant, recording_id)  # if it waited for a slot
    infos = [info for _, info in found]
    uploaded_at = obj["LastModified"].astimezone(UTC)
    record = {"upload_id": recording_id, "recording_name": name, "uploaded_at": uploaded_at.isoformat(),
              "recordings": [layout.recording_prefix(tenant, date, rid) for rid, _, _ in parts]}
    etags = {f.name: present[upload_prefix + f.name]["etag"] for f in manifest.files}
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
    claimed = {upload_prefix + f.name: f.sha256 for f in manifest.files if f.sha256}
    events: list[Event] = []
    for (rid, rname, stream), info in zip(parts, infos):
        rprefix = layout.recording_prefix(tenant, date, rid)
        doc = RecordingDocument(
            recording_id=rid, recording_name=rname, tenant=tenant, uploader_email=email,
            upload_bucket=deps.upload_bucket, upload_keys=upload_keys, info=info,
            stream=stream, upload_id=recording_id if rid != recording_id else None,
            upload_versions={k: versions[k] for k in upload_keys}, claimed_sha256=claimed,
            experiment=ExperimentMember(name=manifest.experiment.name, file=manifest.experiment.file, stream=stream)
            if stream in members else None,
        )
        deps.s3.delete_object(Bucket=deps.data_bucket, Key=layout.rejected_key(rprefix))  # an earlier refusal
        s3io.put_json(deps.s3, deps.data_bucket, layout.recording_document_key(rprefix), doc.model_dump_json(indent=1))
        if doc.experiment is not None:  # a row of the experiment's plate map: the aggregator looks for it there
            exp = manifest.experiment
            s3io.put_json(deps.s3, deps.data_bucket, layout.experiment_member_key(tenant, exp.name, exp.file, stream),
                          json.dumps({"file": exp.file, "stream": stream, "prefix": rprefix, "recording_id": rid}))
            deps.s3.put_object(Bucket=deps.data_bucket, Key=layout.experiment_plate_map_key(tenant, exp.name),
                               Body=exp.plate_map.encode(), ContentType="text/csv")
        usage.record(deps.s3, deps.data_bucket, tenant, month, rid, info.duration_s)
        log.info("recording_validated", format=fmt, stream=stream, recording=rid, n_channels=info.n_channels,
                 duration_s=round(info.duration_s, 3), sampling_rate_hz=info.sampling_rate_hz)
        events.append(RecordingValidated(
            correlation_id=rid, recording=RecordingRef(tenant=tenant, prefix=rprefix),
            upload_bucket=deps.upload_bucket, upload_keys=doc.upload_keys, format=fmt,
            uploader_email=email, n_channels=info.n_channels, n_samples=info.n_samples,
            sampling_rate_hz=info.sampling_rate_hz,
        ))
    return events


def _experiment_rows(exp: ManifestExperiment, names: list[str], streams: list[str]) -> tuple[dict, str | None]:
    """({stream or None: the row's line} for this upload's rows of the plate map, or a reason to
    refuse). The map is checked as far as this upload can: its own consistency, and the wells
    of this upload's file."""
    from neurocyte_shared.science.experiments.platemap import PlateMapError, parse

    if exp.file not in names:
        return {}, f"the experiment's file {exp.file} is not one of the files uploaded ({', '.join(names)})"
    try:
        plate = parse(exp.plate_map, streams=lambda f: streams if f == exp.file else None)
    except PlateMapError as exc:
        return {}, f"the plate map of experiment {exp.name} cannot be used: " + "; ".join(exc.problems)
    rows = {r.stream: f"line {r.line}" for r in plate.rows if r.file == exp.file}
    if not rows:
        return {}, f"the plate map of experiment {exp.name} has no row for {exp.file}"
    if streams and None in rows:
        return {}, (f"the plate map names {exp.file} ({rows[None]}) without a stream, but it holds "
                    f"{len(streams)} wells ({', '.join(streams)}): one row per well, with its stream")
    if not streams and any(k is not None for k in rows):
        return {}, f"the plate map gives {exp.file} a stream, but it holds one recording: leave stream empty"
    return rows, None


def _id_taken(taken: dict, recording_id: str, email: str | None, name: str, this_manifest: str,
              refuse: Callable[..., list[Event]]) -> list[Event]:
    when = str(taken.get("claimed_at", ""))[:16].replace("T", " ")
    return refuse(f"the recording id {recording_id!r} already belongs to an upload (taken {when} UTC); this manifest "
                  "was not used and nothing of that upload was changed. Upload the recording again under a new "
                  "name (neurocyte submit chooses one).", email, name, attempt=_short(this_manifest))


def _short(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()[:12]


def _some(problems: list[str]) -> str:
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


def _refuse_key(event: S3ObjectCreated, deps: Deps, reason: str) -> list[Event]:
    """A key ingest cannot use: kept for `status`, and its uploader told when a manifest names one."""
    key = event.key
    log.warning("upload_key_refused", error=reason)
    s3io.put_json(deps.s3, deps.data_bucket, layout.refused_upload_key(key),
                  {"upload_key": key, "reason": reason, "refused_at": datetime.now(UTC)})
    if not key.lower().endswith("/" + layout.MANIFEST_NAME):
        return []
    try:
        raw = deps.s3.get_object(Bucket=deps.upload_bucket, Key=key)["Body"].read(MAX_MANIFEST_BYTES + 1)
    except ClientError:
        return []
    email = _email_if_valid(raw)
    if email is None:
        return []
    return [RecordingRejected(correlation_id="refused-" + layout.refused_upload_key(key).rsplit("/", 1)[1][:12],
                              tenant="refused", upload_key=key, reason=f"the upload's path cannot be used: {reason}",
                              uploader_email=email)]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def _fingerprint(manifest: UploadManifest, etags: dict[str, str]) -> str:
    """The identity of an upload's content, from what S3 computed over the bytes it holds (each
    file's ETag: the same for the same bytes uploaded the same way) and never from what the
    manifest claims (a claimed SHA-256 is checked by the chunker instead). Names ignored."""
    parts = sorted(f"etag:{etags[f.name]}:{f.size_bytes}" for f in manifest.files)
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
        return None, f"manifest.json is larger than 256 KiB: it lists the files of one upload, at most {MAX_FILES}"
    try:
        return UploadManifest.model_validate_json(raw), ""
    except ValidationError as exc:
        return None, explain(exc, "manifest.json")


def _email_if_valid(raw: bytes) -> str | None:
    """The address from a manifest that is otherwise broken (even cut short at the size limit),
    so the uploader still hears why."""
    try:
        try:
            candidate = json.loads(raw).get("uploader_email")
        except ValueError:  # not JSON as a whole (too long, or broken further on): the field alone
            found = re.search(rb'"uploader_email"\s*:\s*"([^"\\]{1,254})"', raw)
            candidate = found.group(1).decode() if found else None
        checked = UploadManifest.model_validate({"uploader_email": candidate,
                                                 "files": [{"name": "x", "size_bytes": 0}]})
        return str(checked.uploader_email)
    except Exception:  # noqa: BLE001 - no usable address: the rejection is logged only
        return None


class IngestSettings(EnvSettings):
    upload_deadline_s: float = Field(1800.0, gt=0, alias="NEUROCYTE_UPLOAD_DEADLINE_S",
                                     description="ingest: how long files listed in a manifest may keep arriving (s)")
    recheck_s: int = Field(30, ge=1, alias="NEUROCYTE_UPLOAD_RECHECK_S",
                           description="ingest: how often an incomplete upload is checked again (s)")
    max_upload_gb: float = Field(250.0, gt=0, alias="NEUROCYTE_MAX_UPLOAD_GB",
                                 description="ingest: a lab's largest upload, all files (GB; per lab in settings.json)")
    max_in_flight: int = Field(20, ge=1, alias="NEUROCYTE_MAX_IN_FLIGHT",
                               description="ingest: a lab's recordings in progress at once; more wait their turn")
    max_recording_hours_per_month: float = Field(
        200.0, gt=0, alias="NEUROCYTE_MAX_RECORDING_HOURS_PER_MONTH",
        description="ingest: recording-hours a lab may have processed per calendar month (UTC)")


def build(settings: Settings) -> dict:
    from functools import partial

    from neurocyte_shared.messaging.service import s3
    from neurocyte_shared.storage.s3io import S3Opener

    own = IngestSettings.from_env()
    deps = Deps(s3=s3(settings), upload_bucket=settings.upload_bucket, data_bucket=settings.data_bucket,
                opener_for=lambda bucket, prefix, versions=None: S3Opener(bucket, prefix, versions=versions),
                upload_deadline_s=own.upload_deadline_s, recheck_s=own.recheck_s,
                limits=usage.Limits(max_upload_gb=own.max_upload_gb, max_in_flight=own.max_in_flight,
                                    max_recording_hours_per_month=own.max_recording_hours_per_month))
    return {S3ObjectCreated: partial(on_object_created, deps=deps)}
