"""Bootstrap shared by every service's entrypoint: settings, logging, clients, the consumer."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from . import aws
from .bus import Consumer, EventPublisher, Handler
from .config import ConfigurationError, Settings
from .logs import configure_logging


def run_service(name: str, build_handlers: Callable[[Settings], Mapping[type, Handler]]) -> None:
    """Entrypoint body of every service: `python -m neurocyte_<name>`."""
    configure_logging(name)
    log = structlog.get_logger()
    try:
        settings = Settings.from_env()
        handlers = build_handlers(settings)
    except ConfigurationError as exc:
        log.error("configuration_error", error=str(exc))
        sys.exit(2)
    sqs = aws.client("sqs", settings.endpoint_url, settings.region)
    publisher = EventPublisher(aws.client("events", settings.endpoint_url, settings.region), settings.event_bus)
    consumer = Consumer(
        sqs=sqs,
        queue_url=settings.queue_url,
        handlers=handlers,
        publish=publisher.publish,
        wait_time_s=settings.wait_time_s,
        visibility_timeout_s=settings.visibility_timeout_s,
        heartbeat_s=settings.heartbeat_s,
    )
    consumer.install_signal_handlers()
    consumer.run()


def s3(settings: Settings) -> Any:
    return aws.client("s3", settings.endpoint_url, settings.region)
