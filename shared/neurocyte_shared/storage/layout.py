"""Where things live in S3: one module, so no service invents a key.

uploads bucket:  uploads/<tenant>/<recording_id>/<file>...   and  .../manifest.json (last)
data bucket:     recordings/tenant=<t>/date=<YYYY-MM-DD>/<recording_id>/
                     recording.json        what ingest validated (metadata, uploader)
                     rejected.json         why it was refused (ingest, or a changed upload later)
                     failed.json           a stage gave up on it (dead-lettered), and why
                     raw.zarr/             the recording, sharded Zarr v3
                     noise/<hash>.json     per-channel noise for one set of detection params
                     spikes/d=<detection>/shard-NNNNN.parquet   per detection parameter set
                     results/v=<detection>-<metrics>/           one version per parameter set:
                         spikes.parquet, *.png, report.html     written first,
                         summary.json                           last, once (conditional write):
                                                                its presence publishes the version
                     templates/<hash>.npz  spike templates for peeling, same key
                 upload-claims/tenant=<t>/<recording_id>.json   the manifest that took the id
                 refused-uploads/<hash>.json   a key ingest could not parse, and why
                 fingerprints/tenant=<t>/<sha256>.json   the first upload of each content
                     (recognises the same files uploaded again)
                 web/users/<hash of address>.json, web/labs/<lab>.json, web/sessions/<id>.json,
                 web/used-links/<id>.json   the web front-end's users, labs, sessions
                 notifications/<tenant>/<recording_id>/<kind>.json   one per email: claimed,
                     then state "done" once SNS took it (a claim: storage/claims.py)
                 usage/tenant=<t>/settings.json   a lab's own limits and raw-upload choice, where set
                 usage/tenant=<t>/month=<YYYY-MM>/<recording_id>~<seconds>   each recording
                     validated that month (its length in the name: a listing sums the month)
                 usage/tenant=<t>/in-flight/<recording_id>   validated, not yet emailed
                 usage/tenant=<t>/waiting/<recording_id>.json   an upload waiting for a slot
Versions are named by the hashes of the parameters, so reprocessing with other parameters
writes beside a published result, never over it or mixed with it. The tenant/date
partitions let Athena query spike tables across recordings.
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


def parse_upload_key(key: str) -> tuple[str, str, str] | None:
    """'uploads/<tenant>/<recording_id>/<file>' -> (tenant, recording_id, file); None for keys
    outside uploads/. UnsafeKey, with a sentence a person can act on, for any other shape."""
    if not key.startswith("uploads/"):
        return None
    parts = key.split("/")
    if len(parts) != 4:
        raise UnsafeKey(f"{key!r} is not uploads/<tenant>/<recording id>/<file>: put each file directly in its "
                        "recording's folder")
    _, tenant, recording_id, name = parts
    check_segment(tenant, "tenant")
    check_segment(recording_id, "recording id")
    check_segment(name, "file name")
    if name.lower() == MANIFEST_NAME and name != MANIFEST_NAME:
        raise UnsafeKey(f"{name!r}: the manifest must be named {MANIFEST_NAME} (lower case)")
    return tenant, recording_id, name


def recording_prefix(tenant: str, date: str, recording_id: str) -> str:
    return f"recordings/tenant={tenant}/date={date}/{recording_id}/"


def shard_spikes_key(prefix: str, shard_index: int, detection_version: str) -> str:
    return f"{shard_spikes_prefix(prefix, detection_version)}shard-{shard_index:05d}.parquet"


def detection_version_of(spikes_key: str) -> str:
    """'.../spikes/d=<version>/shard-N.parquet' -> version."""
    folder = spikes_key.rsplit("/", 2)[-2]
    if not folder.startswith("d="):
        raise ValueError(f"not a versioned shard key: {spikes_key}")
    return check_segment(folder[2:], "detection version")


def results_prefix(prefix: str, detection_version: str, metrics_version: str) -> str:
    return f"{prefix}results/v={detection_version}-{metrics_version}/"


def fingerprint_key(tenant: str, fingerprint: str) -> str:
    return f"fingerprints/tenant={check_segment(tenant, 'tenant')}/{check_segment(fingerprint, 'fingerprint')}.json"


SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"
SPIKES_NAME = "spikes.parquet"


def tenant_for_email(email: str) -> str:
    """Default tenant of an uploader: their address as a safe key segment."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", email.lower()).strip("-")
    return slug[:128] or "anonymous"


def upload_claim_key(tenant: str, recording_id: str) -> str:
    """Which manifest took a recording id: one recording id, one upload."""
    return f"upload-claims/tenant={check_segment(tenant, 'tenant')}/{check_segment(recording_id, 'recording id')}.json"


def refused_upload_key(upload_key: str) -> str:
    """Why ingest refused a key it cannot even parse (kept for `status`)."""
    import hashlib

    return f"{REFUSED_UPLOADS}{hashlib.sha256(upload_key.encode()).hexdigest()[:24]}.json"


REFUSED_UPLOADS = "refused-uploads/"


def failed_key(prefix: str) -> str:
    """Why a stage gave up on the recording (its message was dead-lettered)."""
    return f"{prefix}{FAILED_NAME}"


FAILED_NAME = "failed.json"


def recording_document_key(prefix: str) -> str:
    return f"{prefix}{RECORDING_NAME}"


def rejected_key(prefix: str) -> str:
    return f"{prefix}{REJECTED_NAME}"


def store_key(prefix: str) -> str:
    """The recording's sharded Zarr store (a folder of objects)."""
    return f"{prefix}raw.zarr"


def noise_key(prefix: str, detection_version: str) -> str:
    return f"{prefix}noise/{detection_version}.json"


def templates_key(prefix: str, detection_version: str) -> str:
    return f"{prefix}templates/{detection_version}.npz"


def learning_claim_key(prefix: str, detection_version: str) -> str:
    """Who learns the recording's noise and templates for one parameter set (one worker does)."""
    return f"{prefix}noise/{detection_version}.learning.json"


def shard_spikes_prefix(prefix: str, detection_version: str) -> str:
    return f"{prefix}spikes/d={detection_version}/"


def notification_prefix(tenant: str, recording_id: str) -> str:
    return f"notifications/{tenant}/{recording_id}/"


def notification_key(tenant: str, recording_id: str, kind: str) -> str:
    return f"{notification_prefix(tenant, recording_id)}{kind}.json"


def tenant_recordings_prefix(tenant: str) -> str:
    return f"recordings/tenant={tenant}/"


def web_user_key(email: str) -> str:
    return f"web/users/{_digest(email)}.json"


def web_lab_key(lab: str) -> str:
    return f"web/labs/{check_segment(lab, 'lab')}.json"


def web_session_key(session_id: str) -> str:
    return f"web/sessions/{check_segment(session_id, 'session')}.json"


def web_used_link_key(token_id: str) -> str:
    return f"web/used-links/{check_segment(token_id, 'link')}.json"


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:32]


RECORDING_NAME = "recording.json"
REJECTED_NAME = "rejected.json"


# Experiments: `experiments/tenant=<t>/name=<experiment>/` holds the plate map as last uploaded,
# one member object per recording that is a row of it, and each published report under
# `results/<id>/` (id: a digest of the plate map and the summaries it was made from).
def experiment_prefix(tenant: str, name: str) -> str:
    return f"experiments/tenant={tenant}/name={check_segment(name, 'experiment name')}/"


def experiment_plate_map_key(tenant: str, name: str) -> str:
    return experiment_prefix(tenant, name) + "plate_map.csv"


def experiment_member_key(tenant: str, name: str, file: str, stream: str | None) -> str:
    return experiment_prefix(tenant, name) + f"members/{_digest(file + chr(0) + (stream or ''))}.json"


def experiment_results_prefix(tenant: str, name: str, result_id: str) -> str:
    return experiment_prefix(tenant, name) + f"results/{result_id}/"


EXPERIMENT_NAME = "experiment.json"


def tenant_settings_key(tenant: str) -> str:
    return f"usage/tenant={tenant}/settings.json"


def usage_month_prefix(tenant: str, month: str) -> str:
    return f"usage/tenant={tenant}/month={month}/"


def usage_key(tenant: str, month: str, recording_id: str, seconds: float) -> str:
    return f"{usage_month_prefix(tenant, month)}{recording_id}~{seconds:.3f}"


def in_flight_prefix(tenant: str) -> str:
    return f"usage/tenant={tenant}/in-flight/"


def in_flight_key(tenant: str, recording_id: str) -> str:
    return f"{in_flight_prefix(tenant)}{recording_id}"


def waiting_key(tenant: str, recording_id: str) -> str:
    """An upload held back by its lab's in-flight limit, and why (what the web page shows)."""
    return f"usage/tenant={tenant}/waiting/{recording_id}.json"
