"""Settings from the environment: the same variables locally, in compose and on ECS.

boto3 itself honours AWS_ENDPOINT_URL (LocalStack) and the usual credential variables,
so nothing here special-cases the local stack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigurationError(RuntimeError):
    """A setting is missing or wrong: fail fast with a message, never retry."""


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set (see deploy/README.md)")
    return value


@dataclass(frozen=True)
class Settings:
    queue_url: str
    event_bus: str
    upload_bucket: str
    data_bucket: str
    topic_arn: str | None
    endpoint_url: str | None
    region: str
    wait_time_s: int
    visibility_timeout_s: int
    heartbeat_s: int

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            queue_url=_required("NEUROCYTE_QUEUE_URL"),
            event_bus=_required("NEUROCYTE_EVENT_BUS"),
            upload_bucket=_required("NEUROCYTE_UPLOAD_BUCKET"),
            data_bucket=_required("NEUROCYTE_DATA_BUCKET"),
            topic_arn=os.environ.get("NEUROCYTE_TOPIC_ARN") or None,
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            wait_time_s=int(os.environ.get("NEUROCYTE_WAIT_TIME_S", "20")),
            visibility_timeout_s=int(os.environ.get("NEUROCYTE_VISIBILITY_TIMEOUT_S", "120")),
            heartbeat_s=int(os.environ.get("NEUROCYTE_HEARTBEAT_S", "30")),
        )
