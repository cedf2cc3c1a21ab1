"""AWS clients, built on demand (never at import time) with retries for transient errors."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# "standard" retry mode: exponential backoff with jitter on throttling, 5xx and timeouts.
_CONFIG = Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=70)


@cache
def client(service: str, endpoint_url: str | None = None, region: str | None = None) -> Any:
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return boto3.session.Session().client(
        service, endpoint_url=endpoint_url, region_name=region, config=_CONFIG
    )


def s3fs_options(endpoint_url: str | None = None) -> dict[str, Any]:
    """storage_options for s3fs (zarr's FsspecStore) pointing at the same endpoint as boto3."""
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    opts: dict[str, Any] = {"config_kwargs": {"retries": {"max_attempts": 8, "mode": "standard"}}}
    if endpoint_url:
        opts["endpoint_url"] = endpoint_url
    return opts


def is_missing(error: Exception) -> bool:
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


def is_precondition_failed(error: Exception) -> bool:
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict")
