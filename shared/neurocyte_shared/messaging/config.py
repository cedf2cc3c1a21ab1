"""Settings from the environment: the same variables locally, in compose and on ECS.

One pydantic model per scope: `Settings` (every service: the bus, the buckets, the AWS
endpoint) and, in each service, its own model of what only it reads. Each field's alias is
the variable's name and its description is the README's line for it
(`tests/unit/test_settings.py` checks the README lists every one). boto3 itself honours
AWS_ENDPOINT_URL (LocalStack) and the usual credential variables, so nothing here
special-cases the local stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T", bound="EnvSettings")


class ConfigurationError(RuntimeError):
    """A setting is missing or wrong: fail fast with a message, never retry."""


class EnvSettings(BaseModel):
    """Settings read from environment variables named by the fields' aliases."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_env(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if v.strip()}
        try:
            return cls.model_validate(env)
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                name = e["loc"][0] if e["loc"] else "?"
                problems.append(f"environment variable {name} is not set" if e["type"] == "missing"
                                else f"environment variable {name}: {e['msg']}")
            raise ConfigurationError("; ".join(problems) + " (see deploy/README.md)") from None

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Variable name -> its description, for the README and the deployment checks."""
        out = {}
        for field in cls.model_fields.values():
            alias = field.validation_alias
            names = alias.choices if isinstance(alias, AliasChoices) else [field.alias]
            for name in names:
                out[str(name)] = field.description or ""
        return out

    @classmethod
    def required(cls) -> set[str]:
        return {str(f.alias) for f in cls.model_fields.values() if f.is_required()}


class Settings(EnvSettings):
    """What every service reads."""

    queue_url: str = Field(alias="NEUROCYTE_QUEUE_URL", description="the service's SQS queue")
    event_bus: str = Field(alias="NEUROCYTE_EVENT_BUS", description="the EventBridge bus events are put on")
    upload_bucket: str = Field(alias="NEUROCYTE_UPLOAD_BUCKET", description="where uploads arrive")
    data_bucket: str = Field(alias="NEUROCYTE_DATA_BUCKET", description="stores, spike tables, results")
    endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL", description="AWS endpoint (LocalStack)")
    region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION"),
                        description="AWS region")
    wait_time_s: int = Field(20, ge=0, le=20, alias="NEUROCYTE_WAIT_TIME_S", description="SQS long poll (s)")
    visibility_timeout_s: int = Field(120, ge=1, alias="NEUROCYTE_VISIBILITY_TIMEOUT_S",
                                      description="how long a received message is hidden from other workers (s)")
    heartbeat_s: int = Field(30, ge=1, alias="NEUROCYTE_HEARTBEAT_S",
                             description="a worker extends its message's visibility this often while it works (s)")
    dead_letter_sweep_s: float = Field(
        60.0, gt=0, alias="NEUROCYTE_DEAD_LETTER_SWEEP_S",
        description="a stage looks into its dead-letter queue this often for messages nobody announced, "
                    "e.g. a worker killed on the last delivery (s)")
