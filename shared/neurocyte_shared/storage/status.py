"""Which stage each recording is in, read from what the services wrote to S3 (no database:
the outputs themselves are the state)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from neurocyte_shared.storage import layout, s3io


@dataclass
class RecordingStatus:
    recording_id: str
    tenant: str
    stage: str
    detail: str = ""
    done: bool = False
    failed: bool = False


def uploads(s3, upload_bucket: str, prefix: str = "uploads/") -> list[tuple[str, str]]:
    """(tenant, recording id) of every upload with a manifest under `prefix`."""
    out = []
    for key in s3io.list_keys(s3, upload_bucket, prefix):
        try:
            parsed = layout.parse_manifest_key(key)
        except layout.UnsafeKey:
            continue
        if parsed:
            out.append(parsed)
    return out


def status_of(s3, outputs: dict[str, str], tenant: str, recording_id: str,
              tenant_keys: list[str] | None = None) -> RecordingStatus:
    """The stage of one recording. `tenant_keys`: the tenant's keys if the caller has listed
    them already (the web lists them once for a whole page of recordings)."""
    data = outputs["DataBucketName"]
    if tenant_keys is None:
        tenant_keys = s3io.list_keys(s3, data, layout.tenant_recordings_prefix(tenant))
    keys = [k for k in tenant_keys if f"/{recording_id}/" in k]
    notified = s3io.list_keys(s3, data, layout.notification_prefix(tenant, recording_id))
    names = {k.split(f"/{recording_id}/", 1)[1] for k in keys}
    prefix = keys[0].split(f"/{recording_id}/", 1)[0] + f"/{recording_id}/" if keys else ""
    st = RecordingStatus(recording_id, tenant, "uploaded", "waiting for ingest")
    sent = [k for k in notified if json.loads(s3io.get_bytes(s3, data, k)).get("state") == "done"]
    if layout.REJECTED_NAME in names:
        reason = s3io.get_json(s3, data, layout.rejected_key(prefix))["reason"]
        st = RecordingStatus(recording_id, tenant, "rejected", reason, failed=True)
        if sent:
            st.stage, st.done = "rejected, emailed", True
        return st
    if not keys:  # held back by the lab's in-flight limit?
        from neurocyte_shared.storage import usage

        reason = usage.waiting_reason(s3, data, tenant, recording_id)
        if reason:
            st = RecordingStatus(recording_id, tenant, "queued", reason)
    if layout.RECORDING_NAME in names:
        st = RecordingStatus(recording_id, tenant, "validated", "waiting for the chunker")
    if "raw.zarr/zarr.json" in names:
        meta = json.loads(s3io.get_bytes(s3, data, prefix + "raw.zarr/zarr.json"))
        n_samples = meta["shape"][0]
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        n_shards = math.ceil(n_samples / shard)
        written = sum(1 for n in names if n.startswith("raw.zarr/c/"))
        per_version: dict[str, int] = {}  # a rerun detects the same shards again, as another version
        for n in names:
            if n.startswith("spikes/d=") and "/shard-" in n:
                per_version[n.split("/", 2)[1]] = per_version.get(n.split("/", 2)[1], 0) + 1
        detected = max(per_version.values(), default=0)
        if detected:
            st = RecordingStatus(recording_id, tenant, "detecting", f"{detected}/{n_shards} shards")
        else:
            st = RecordingStatus(recording_id, tenant, "chunking", f"{written}/{n_shards} shards written")
    summarized = any(n.startswith("results/") and n.endswith("/summary.json") for n in names)
    if summarized:
        st = RecordingStatus(recording_id, tenant, "summarized", "sending the email")
    kinds = {k.rsplit("/", 1)[1].split("-", 1)[0].removesuffix(".json") for k in sent}
    if layout.FAILED_NAME in names and not summarized:  # a stage gave up, and no retry has finished since
        failed = s3io.get_json(s3, data, layout.failed_key(prefix))
        told = "; the uploader was emailed" if "failure" in kinds else ""
        return RecordingStatus(recording_id, tenant, f"failed in {failed['stage']}",
                               f"{failed['reason']} (kept for a retry{told})", failed=True)
    if kinds - {"failure"}:
        st = RecordingStatus(recording_id, tenant, "emailed", "done", done=True)
    return st


def refused_keys(s3, data_bucket: str) -> list[dict]:
    """Upload keys ingest could not parse, with why (`layout.refused_upload_key`)."""
    return [s3io.get_json(s3, data_bucket, k) for k in s3io.list_keys(s3, data_bucket, layout.REFUSED_UPLOADS)]
