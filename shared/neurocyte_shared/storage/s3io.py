"""Small S3 helpers shared by the services: JSON documents, existence, conditional writes,
and file-like readers (ranged GETs through s3fs) for the format readers."""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from neurocyte_shared.messaging.aws import is_missing, s3fs_options


def get_bytes(s3: Any, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if max_bytes is not None:
        kwargs["Range"] = f"bytes=0-{max_bytes - 1}"
    return s3.get_object(**kwargs)["Body"].read()


def get_bytes_if_exists(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object, or None when it does not exist: one request, not a HEAD then a GET."""
    try:
        return get_bytes(s3, bucket, key)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def get_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(get_bytes(s3, bucket, key))


def put_json(s3: Any, bucket: str, key: str, doc: Any, *, if_none_match: bool = False) -> None:
    body = doc if isinstance(doc, (bytes, str)) else json.dumps(doc, indent=1, default=str)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body, "ContentType": "application/json"}
    if if_none_match:
        kwargs["IfNoneMatch"] = "*"  # only the first writer wins: exactly-once publication
    s3.put_object(**kwargs)


def head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


class S3Opener:
    """opener(name) -> a seekable file-like object over s3://bucket/prefix+name (ranged reads).
    With `versions` (key -> version id), each file is read at its pinned version (storage/pins.py)."""

    def __init__(self, bucket: str, prefix: str, block_size: int = 8 * 1024 * 1024,
                 versions: dict[str, str] | None = None) -> None:
        import s3fs

        self._versions = {k: v for k, v in (versions or {}).items() if v and v != "null"}
        self._fs = s3fs.S3FileSystem(version_aware=bool(self._versions), **s3fs_options())
        self._bucket, self._prefix, self._block = bucket, prefix, block_size

    def __call__(self, name: str) -> BinaryIO:
        key = self._prefix + name
        version = {"version_id": self._versions[key]} if key in self._versions else {}
        return self._fs.open(f"{self._bucket}/{key}", "rb", block_size=self._block, **version)
