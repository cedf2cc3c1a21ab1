"""Bootstrap shared by every service's entrypoint: settings, logging, clients, the consumer."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import structlog

from neurocyte_shared.messaging import aws
from neurocyte_shared.messaging.bus import Consumer, EventPublisher, Handler
from neurocyte_shared.messaging.config import ConfigurationError, Settings
from neurocyte_shared.messaging.logs import configure_logging


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
    if name not in ("notifier", "ingest"):  # the stages that work on a recording
        consumer.on_give_up = notice = _failure_notice(settings, name)
        consumer.on_dead_letter = partial(notice, unless_settled=True)
        consumer.dead_letter_sweep_s = settings.dead_letter_sweep_s
    consumer.install_signal_handlers()
    consumer.run()


def s3(settings: Settings) -> Any:
    return aws.client("s3", settings.endpoint_url, settings.region)


def _failure_notice(settings: Settings, stage: str):
    """ProcessingFailed for a recording whose message is about to be dead-lettered: the
    uploader's address comes from the recording's recording.json. `unless_settled`, for a
    message found in the dead-letter queue later: nothing when the recording already failed
    loudly (failed.json) or has a published summary (the letter was a duplicate's)."""
    from neurocyte_shared.messaging.events import ProcessingFailed
    from neurocyte_shared.storage.documents import RecordingDocument
    from neurocyte_shared.storage.layout import failed_key, recording_document_key
    from neurocyte_shared.storage.s3io import get_bytes, head, list_keys, put_json

    client = s3(settings)

    def settled(prefix: str) -> bool:
        return head(client, settings.data_bucket, failed_key(prefix)) is not None or any(
            k.endswith("/summary.json") for k in list_keys(client, settings.data_bucket, prefix + "results/"))

    def notice(event: Any, reason: str, *, unless_settled: bool = False) -> list:
        ref = getattr(event, "recording", None)
        if ref is None or (unless_settled and settled(ref.prefix)):
            return []
        doc = RecordingDocument.model_validate_json(
            get_bytes(client, settings.data_bucket, recording_document_key(ref.prefix))
        )
        # For `status` and the web: "failed in <stage>: <reason>" until a retry publishes a result.
        put_json(client, settings.data_bucket, failed_key(ref.prefix), {"stage": stage, "reason": reason})
        return [
            ProcessingFailed(
                correlation_id=event.correlation_id,
                recording=ref,
                recording_name=doc.recording_name,
                uploader_email=doc.uploader_email,
                stage=stage,
                reason=reason,
            )
        ]

    return notice
