"""An upload is immutable from its manifest on: ingest pins the version of every file it
validated, every later read names that version, and the stages check before they go on that
no file was written over since. SHA-256 is computed from the bytes as they are read.

The upload bucket is versioned (deploy/template.yaml): a file written over keeps its old
version, so a pinned read always sees exactly what ingest validated."""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

from neurocyte_shared.storage import s3io

CHANGED = ("your upload changed while it was processed ({what}). Nothing was published. Upload the "
           "recording again, and leave its files alone until the result email arrives.")


def latest_versions(s3: Any, bucket: str, prefix: str) -> dict[str, dict]:
    """Key -> {"version", "size", "etag"} of the newest version of every object under prefix,
    from one listing (not a request per file)."""
    out: dict[str, dict] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            if v.get("IsLatest"):
                out[v["Key"]] = {"version": v.get("VersionId") or "null", "size": int(v["Size"]),
                                 "etag": str(v.get("ETag", "")).strip('"')}
        for marker in page.get("DeleteMarkers", []):
            if marker.get("IsLatest"):
                out.pop(marker["Key"], None)
    return out


def changed_files(s3: Any, bucket: str, pinned: dict[str, str]) -> list[str]:
    """The pinned keys whose newest version is no longer the pinned one (written over,
    truncated, deleted)."""
    if not pinned:
        return []
    prefix = _common_prefix(list(pinned))
    now = latest_versions(s3, bucket, prefix)
    return sorted(k.rsplit("/", 1)[1] for k, v in pinned.items() if now.get(k, {}).get("version") != v)


def _common_prefix(keys: list[str]) -> str:
    first = min(keys)
    return first[: first.rfind("/") + 1]


class HashingFile:
    """A read-only file over a pinned object that hashes the bytes it serves while they are read
    in order from the start (a raw binary file, chunked front to back, is hashed for free);
    `sha256()` reads whatever was not served in order, once, and returns the digest."""

    def __init__(self, raw: BinaryIO, s3: Any, bucket: str, key: str, version: str | None) -> None:
        self._raw, self._s3, self._bucket, self._key, self._version = raw, s3, bucket, key, version
        self._hash, self._hashed = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        at = self._raw.tell()
        data = self._raw.read(n)
        if at <= self._hashed < at + len(data):
            self._hash.update(data[self._hashed - at:])
            self._hashed = at + len(data)
        return data

    def sha256(self) -> str:
        if self._hashed < self.size:
            extra: dict[str, Any] = {"VersionId": self._version} if self._version not in (None, "null") else {}
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={self._hashed}-",
                                       **extra)["Body"]
            for chunk in iter(lambda: body.read(8 * 1024 * 1024), b""):
                self._hash.update(chunk)
                self._hashed += len(chunk)
        return self._hash.hexdigest()

    @property
    def size(self) -> int:
        return int(getattr(self._raw, "size", 0) or s3io.head(self._s3, self._bucket, self._key)["ContentLength"])

    def __getattr__(self, name: str) -> Any:  # seek, tell, close, readinto..., as the file has them
        return getattr(self._raw, name)

    def __enter__(self) -> HashingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._raw.close()


class HashingOpener:
    """An opener (name -> file) whose files hash what they serve (`HashingFile`), at their pinned
    versions; `mismatches()` compares the digests with what the manifest claimed."""

    def __init__(self, opener: Any, s3: Any, bucket: str, prefix: str, versions: dict[str, str]) -> None:
        self._opener, self._s3, self._bucket, self._prefix, self._versions = opener, s3, bucket, prefix, versions
        self.files: dict[str, HashingFile] = {}

    def __call__(self, name: str) -> HashingFile:
        key = self._prefix + name
        f = HashingFile(self._opener(name), self._s3, self._bucket, key, self._versions.get(key))
        self.files.setdefault(name, f)  # the first opening reads from the start
        return f

    def mismatches(self, claimed: dict[str, str]) -> list[str]:
        """Names whose bytes do not have the SHA-256 the manifest claimed for them."""
        out = []
        for key, digest in sorted(claimed.items()):
            name = key[len(self._prefix):]
            f = self.files.get(name) or self(name)
            if f.sha256() != digest:
                out.append(name)
        return out


def open_pinned(s3: Any, doc: Any, opener_for: Any) -> tuple[HashingOpener, Any]:
    """A reader of a RecordingDocument's upload at the versions ingest validated, its files
    hashed as they are read. `opener_for(bucket, prefix, versions)` opens files by name
    (S3Opener in the services)."""
    from neurocyte_shared.formats import identify, open_reader

    upload_prefix = doc.upload_keys[0].rsplit("/", 1)[0] + "/"
    names = [k.rsplit("/", 1)[1] for k in doc.upload_keys]
    fmt, roles = identify(names)
    versions = doc.upload_versions
    sizes = {}
    for n in names:
        version = versions.get(upload_prefix + n)
        extra = {"VersionId": version} if version not in (None, "null") else {}
        sizes[n] = int(s3.head_object(Bucket=doc.upload_bucket, Key=upload_prefix + n, **extra)["ContentLength"])
    opener = HashingOpener(opener_for(doc.upload_bucket, upload_prefix, versions), s3, doc.upload_bucket,
                           upload_prefix, versions)
    return opener, open_reader(fmt, roles, opener, sizes, doc.stream)


def refusal(s3: Any, data_bucket: str, doc: Any, prefix: str, reason: str) -> Any:
    """End a recording that must not be analysed: rejected.json (its status) and the event that
    tells its uploader. Nothing of it is published."""
    from neurocyte_shared.messaging.events import RecordingRejected
    from neurocyte_shared.storage import layout

    s3io.put_json(s3, data_bucket, layout.rejected_key(prefix),
                  {"recording_id": doc.recording_id, "reason": reason, "upload_key": doc.upload_keys[0]})
    return RecordingRejected(correlation_id=doc.recording_id, tenant=doc.tenant, upload_key=doc.upload_keys[0],
                             reason=reason, uploader_email=doc.uploader_email, recording_name=doc.recording_name)
