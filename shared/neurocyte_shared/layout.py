"""Where things live in S3: one module, so no service invents a key.

uploads bucket:  uploads/<tenant>/<recording_id>/<file>...   and  .../manifest.json (last)
data bucket:     recordings/tenant=<t>/date=<YYYY-MM-DD>/<recording_id>/
                     recording.json        what ingest validated (metadata, uploader)
                     rejected.json         why ingest refused (instead of everything below)
                     raw.zarr/             the recording, sharded Zarr v3
                     noise/<hash>.json     per-channel noise for one set of detection params
                     spikes/shard-NNNNN.parquet
                     summary/summary.json  published last, once (conditional write)
                     summary/spikes.parquet
                     notified/<kind>.json  the email went out (dedup marker)
The tenant/date partitions let Athena query spike tables across recordings.
"""

from __future__ import annotations

import re

MANIFEST_NAME = "manifest.json"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnsafeKey(ValueError):
    pass


def check_segment(value: str, what: str) -> str:
    """A key segment we build paths from: no traversal, no control characters, no slashes."""
    if not _SAFE.match(value) or ".." in value:
        raise UnsafeKey(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def upload_prefix(tenant: str, recording_id: str) -> str:
    return f"uploads/{check_segment(tenant, 'tenant')}/{check_segment(recording_id, 'recording id')}/"


def parse_manifest_key(key: str) -> tuple[str, str] | None:
    """'uploads/<tenant>/<recording_id>/manifest.json' -> (tenant, recording_id), else None."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "uploads" or parts[3] != MANIFEST_NAME:
        return None
    return check_segment(parts[1], "tenant"), check_segment(parts[2], "recording id")


def recording_prefix(tenant: str, date: str, recording_id: str) -> str:
    return f"recordings/tenant={tenant}/date={date}/{recording_id}/"


def shard_spikes_key(prefix: str, shard_index: int) -> str:
    return f"{prefix}spikes/shard-{shard_index:05d}.parquet"


def tenant_for_email(email: str) -> str:
    """Default tenant of an uploader: their address as a safe key segment."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", email.lower()).strip("-")
    return slug[:128] or "anonymous"
