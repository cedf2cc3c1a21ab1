"""A lab's limits and what it has used: the largest upload, recordings in flight (validated,
not yet emailed) and recording-hours per calendar month (UTC).

Defaults come from the ingest service's settings (and the template's parameters); an
operator can set a lab's own in usage/tenant=<t>/settings.json (any of the fields, and
`raw_upload`: what becomes of the raw files once the store is verified).
Usage is kept as one small object per recording (layout.py), written by ingest when it
validates the recording; the notifier removes the in-flight marker when it sends the
recording's last email. Two uploads validated at the same instant can both pass a limit
they reach together: limits are for budgets, not for exact quotas.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurocyte_shared.storage import layout, s3io

# A marker older than this is a recording that never reached its email (a lost event):
# it stops counting as in flight rather than blocking the lab for ever.
IN_FLIGHT_EXPIRY_S = 24 * 3600


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_upload_gb: float = Field(250.0, gt=0, description="largest upload (all its files), GB")
    max_in_flight: int = Field(20, ge=1, description="recordings being processed at once; more wait their turn")
    max_recording_hours_per_month: float = Field(200.0, gt=0, description="recording-hours validated per month")
    # Not a limit but the lab's choice, kept beside its limits: once every shard of the store
    # has been checked against the upload, the raw files go to Deep Archive or are deleted.
    raw_upload: Literal["archive", "delete"] = Field(
        "archive", description="what becomes of a raw upload once its Zarr store is verified")


def limits_for(s3: Any, bucket: str, tenant: str, defaults: Limits) -> Limits:
    raw = s3io.get_bytes_if_exists(s3, bucket, layout.tenant_settings_key(tenant))
    if raw is None:
        return defaults
    return defaults.model_copy(update=Limits.model_validate({**defaults.model_dump(), **json.loads(raw)}).model_dump())


def month_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m")


def hours_used(s3: Any, bucket: str, tenant: str, month: str, *, excluding: set[str] = frozenset()) -> float:
    total = 0.0
    for key in s3io.list_keys(s3, bucket, layout.usage_month_prefix(tenant, month)):
        rid, _, seconds = key.rsplit("/", 1)[1].rpartition("~")
        if rid not in excluding:
            total += float(seconds)
    return total / 3600.0


def in_flight(s3: Any, bucket: str, tenant: str, now: datetime, *, excluding: set[str] = frozenset()) -> list[str]:
    """Recording ids of this lab validated in the last day and not yet emailed."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=layout.in_flight_prefix(tenant)):
        for obj in page.get("Contents", []):
            rid = obj["Key"].rsplit("/", 1)[1]
            if rid not in excluding and (now - obj["LastModified"]).total_seconds() < IN_FLIGHT_EXPIRY_S:
                out.append(rid)
    return out


def record(s3: Any, bucket: str, tenant: str, month: str, recording_id: str, seconds: float) -> None:
    """Count one validated recording (idempotent: the same key on a redelivery)."""
    s3.put_object(Bucket=bucket, Key=layout.usage_key(tenant, month, recording_id, seconds), Body=b"")
    s3.put_object(Bucket=bucket, Key=layout.in_flight_key(tenant, recording_id), Body=b"")


def finished(s3: Any, bucket: str, tenant: str, recording_id: str) -> None:
    s3.delete_object(Bucket=bucket, Key=layout.in_flight_key(tenant, recording_id))


def waiting(s3: Any, bucket: str, tenant: str, recording_id: str, in_flight_now: int, limit: int) -> None:
    s3io.put_json(s3, bucket, layout.waiting_key(tenant, recording_id),
                  {"in_flight": in_flight_now, "limit": limit, "checked_at": datetime.now(UTC).isoformat()})


def not_waiting(s3: Any, bucket: str, tenant: str, recording_id: str) -> None:
    s3.delete_object(Bucket=bucket, Key=layout.waiting_key(tenant, recording_id))


def waiting_reason(s3: Any, bucket: str, tenant: str, recording_id: str) -> str | None:
    raw = s3io.get_bytes_if_exists(s3, bucket, layout.waiting_key(tenant, recording_id))
    if raw is None:
        return None
    w = json.loads(raw)
    return (f"waiting for its turn: {w['in_flight']} of your lab's recordings are in progress "
            f"(its limit is {w['limit']}); it starts when one of them is emailed")
