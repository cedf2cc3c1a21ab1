"""In-memory stand-ins for the few S3 and SNS calls the handlers make (cosmicpython's fakes):
a handler's logic is tested in milliseconds, without LocalStack. The behaviour that matters
is S3's: a conditional PUT fails with PreconditionFailed, a missing key with NoSuchKey."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError


def _error(code: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, op)


@dataclass
class _Object:
    body: bytes
    modified: datetime
    tags: dict[str, str] = field(default_factory=dict)
    version: str = ""


class FakeS3:
    """A versioned bucket: `objects` holds each key's newest version, `versions` all of them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], _Object] = {}
        self.versions: dict[tuple[str, str, str], _Object] = {}
        self._n = 0

    def put(self, bucket: str, key: str, body: bytes | str) -> None:
        self.put_object(Bucket=bucket, Key=key, Body=body)

    def put_object(self, *, Bucket: str, Key: str, Body: Any, IfNoneMatch: str | None = None, **_: Any) -> dict:
        data = Body.encode() if isinstance(Body, str) else bytes(Body)
        if IfNoneMatch == "*" and (Bucket, Key) in self.objects:
            raise _error("PreconditionFailed", "PutObject")
        self._n += 1
        obj = _Object(data, datetime.now(UTC), version=f"v{self._n}")
        self.objects[(Bucket, Key)] = self.versions[(Bucket, Key, obj.version)] = obj
        return {"ETag": f'"{hashlib.md5(data).hexdigest()}"', "VersionId": obj.version}

    def delete_object(self, *, Bucket: str, Key: str, **_: Any) -> dict:
        self.objects.pop((Bucket, Key), None)
        return {}

    def _get(self, bucket: str, key: str, op: str, version: str | None = None) -> _Object:
        obj = self.versions.get((bucket, key, version)) if version else self.objects.get((bucket, key))
        if obj is None:
            raise _error("NoSuchKey" if op == "GetObject" else "404", op)
        return obj

    def get_object(self, *, Bucket: str, Key: str, Range: str | None = None, VersionId: str | None = None,
                   **_: Any) -> dict:
        obj = self._get(Bucket, Key, "GetObject", VersionId)
        data = obj.body
        if Range:
            lo, hi = Range.removeprefix("bytes=").split("-")
            data = data[int(lo) : int(hi) + 1 if hi else None]
        return {"Body": io.BytesIO(data), "LastModified": obj.modified, "ContentLength": len(data),
                "VersionId": obj.version, "ETag": f'"{hashlib.md5(obj.body).hexdigest()}"'}

    def head_object(self, *, Bucket: str, Key: str, VersionId: str | None = None, **_: Any) -> dict:
        obj = self._get(Bucket, Key, "HeadObject", VersionId)
        return {"ContentLength": len(obj.body), "ETag": f'"{hashlib.md5(obj.body).hexdigest()}"',
                "LastModified": obj.modified, "VersionId": obj.version}

    def get_paginator(self, name: str) -> Any:
        assert name in ("list_objects_v2", "list_object_versions")
        fake = self

        class _Pages:
            def paginate(self, *, Bucket: str, Prefix: str = "") -> list[dict]:
                keys = sorted(k for b, k in fake.objects if b == Bucket and k.startswith(Prefix))
                if name == "list_objects_v2":
                    return [{"Contents": [{"Key": k, "Size": len(fake.objects[(Bucket, k)].body),
                                           "LastModified": fake.objects[(Bucket, k)].modified} for k in keys]}]
                return [{"Versions": [
                    {"Key": k, "VersionId": o.version, "IsLatest": fake.objects.get((b, k)) is o, "Size": len(o.body),
                     "ETag": f'"{hashlib.md5(o.body).hexdigest()}"'}
                    for (b, k, _), o in fake.versions.items() if b == Bucket and k.startswith(Prefix)]}]

        return _Pages()

    def put_object_tagging(self, *, Bucket: str, Key: str, Tagging: dict) -> None:
        self._get(Bucket, Key, "PutObjectTagging").tags = {t["Key"]: t["Value"] for t in Tagging["TagSet"]}

    def generate_presigned_url(self, op: str, Params: dict, ExpiresIn: int) -> str:
        return f"https://example.test/{Params['Bucket']}/{Params['Key']}?expires={ExpiresIn}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))


class FakeSNS:
    def __init__(self) -> None:
        self.subscriptions: list[dict] = []
        self.published: list[dict] = []

    def subscribe(self, *, TopicArn: str, Protocol: str, Endpoint: str, Attributes: dict, **_: Any) -> dict:
        arn = f"{TopicArn}:sub-{len(self.subscriptions)}"
        self.subscriptions.append({"SubscriptionArn": arn, "Protocol": Protocol, "Endpoint": Endpoint,
                                   "Attributes": Attributes})
        return {"SubscriptionArn": arn}

    def get_paginator(self, name: str) -> Any:
        fake = self

        class _Pages:
            def paginate(self, *, TopicArn: str) -> list[dict]:
                return [{"Subscriptions": list(fake.subscriptions)}]

        return _Pages()

    def get_subscription_attributes(self, *, SubscriptionArn: str) -> dict:
        return {"Attributes": {"PendingConfirmation": "false"}}

    def publish(self, **kwargs: Any) -> dict:
        self.published.append(kwargs)
        return {"MessageId": str(len(self.published))}
