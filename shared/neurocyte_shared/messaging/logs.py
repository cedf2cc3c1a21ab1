"""One logging set-up for every process: structlog, JSON in containers, console on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(service: str, *, level: str | None = None, json: bool | None = None) -> None:
    level_name = (level or os.environ.get("NEUROCYTE_LOG_LEVEL", "INFO")).upper()
    if json is None:
        json = os.environ.get("NEUROCYTE_LOG_FORMAT", "json" if not sys.stderr.isatty() else "console") == "json"
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    logging.basicConfig(level=level_name, stream=sys.stderr, format="%(message)s")
    # botocore is chatty at INFO (credential lookups); keep it for real warnings.
    for noisy in ("botocore", "boto3", "urllib3", "s3fs", "aiobotocore", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def redact_email(address: str | None) -> str | None:
    """Logs never carry a full address: 'alice@lab.org' -> 'a***@lab.org'."""
    if not address or "@" not in address:
        return address
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def emf(name: str, value: float = 1.0, unit: str = "Count", **dimensions: str) -> dict:
    """Fields that make a log line a metric in CloudWatch's Embedded Metric Format: on ECS
    (awslogs) CloudWatch turns the line into a metric in the Neurocyte namespace, with no
    agent and no API call; locally it is an ordinary JSON log line.
    `log.error("dead_lettered", error=..., **emf("DeadLettered", Service="detector"))`."""
    import time

    return {name: value, **dimensions, "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [
        {"Namespace": "Neurocyte", "Dimensions": [sorted(dimensions)], "Metrics": [{"Name": name, "Unit": unit}]}]}}
