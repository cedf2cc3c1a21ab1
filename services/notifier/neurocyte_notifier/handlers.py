"""Notifier: email the uploader through SNS, once per recording and kind.

SNS email needs each address to confirm its subscription before it receives anything, and
every subscriber of a topic would receive every message. So: subscribe an address on first
use with a filter policy on the `recipient` message attribute (each address receives only
its own mail), and defer a message while the address has not confirmed yet.
(LocalStack delivers without confirmation.)

Exactly one email: a marker object notifications/<tenant>/<recording>/<kind>.json is
claimed with a conditional write. A redelivery of the same event after a crash finds its
own claim and sends; any other duplicate finds someone else's and stops.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from botocore.exceptions import ClientError

from neurocyte_shared import s3io
from neurocyte_shared.aws import is_precondition_failed
from neurocyte_shared.bus import Deferred
from neurocyte_shared.events import (DuplicateUploadSkipped, Event, ProcessingFailed, RecordingRejected,
                                     RecordingSummarized)
from neurocyte_shared.logs import redact_email

from .messages import duplicate_email, failure_email, rejection_email, summary_email

log = structlog.get_logger()


@dataclass
class Deps:
    sns: Any
    s3: Any
    topic_arn: str
    data_bucket: str
    confirm_retry_s: int = 900
    # LocalStack reports email subscriptions as pending yet delivers to them: the local
    # stack sets NEUROCYTE_SNS_DELIVERS_UNCONFIRMED=1. Never set it on AWS.
    delivers_unconfirmed: bool = False
    _confirmed: set[str] = field(default_factory=set)


def ensure_subscribed(deps: Deps, email: str) -> bool:
    """Subscribe `email` (filtered to its own mail) if needed; True once it can receive."""
    if email in deps._confirmed:
        return True
    arn = _subscription_arn(deps, email)
    if arn is None:
        log.info("subscribing", recipient=redact_email(email))
        deps.sns.subscribe(
            TopicArn=deps.topic_arn, Protocol="email", Endpoint=email, ReturnSubscriptionArn=True,
            Attributes={"FilterPolicy": json.dumps({"recipient": [email]})},
        )
        arn = _subscription_arn(deps, email)
    confirmed = deps.delivers_unconfirmed
    if arn and arn != "PendingConfirmation":
        attrs = deps.sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
        confirmed = confirmed or attrs.get("PendingConfirmation", "false") == "false"
    if confirmed:
        deps._confirmed.add(email)
    return confirmed


def _subscription_arn(deps: Deps, email: str) -> str | None:
    for page in deps.sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=deps.topic_arn):
        for sub in page.get("Subscriptions", []):
            if sub["Protocol"] == "email" and sub["Endpoint"].lower() == email.lower():
                return sub["SubscriptionArn"]
    return None


def _send(deps: Deps, event: Event, *, kind: str, tenant: str, email: str, subject: str, body: str) -> list[Event]:
    marker = f"notifications/{tenant}/{event.correlation_id}/{kind}.json"
    claim = {"event_id": event.event_id, "sent": False}
    try:
        s3io.put_json(deps.s3, deps.data_bucket, marker, claim, if_none_match=True)
    except ClientError as exc:
        if not is_precondition_failed(exc):
            raise
        current = s3io.get_json(deps.s3, deps.data_bucket, marker)
        if current.get("sent") or current.get("event_id") != event.event_id:
            log.info("already_notified", kind=kind)
            return []
    if not ensure_subscribed(deps, email):
        raise Deferred(f"{redact_email(email)} has not confirmed its subscription yet", deps.confirm_retry_s)
    deps.sns.publish(
        TopicArn=deps.topic_arn, Subject=subject[:99], Message=body,
        MessageAttributes={"recipient": {"DataType": "String", "StringValue": email}},
    )
    s3io.put_json(deps.s3, deps.data_bucket, marker, {**claim, "sent": True, "subject": subject})
    log.info("email_sent", kind=kind, recipient=redact_email(email))
    return []


def on_recording_summarized(event: RecordingSummarized, deps: Deps) -> list[Event]:
    subject, body = summary_email(event)
    return _send(deps, event, kind="summary", tenant=event.recording.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def on_recording_rejected(event: RecordingRejected, deps: Deps) -> list[Event]:
    if event.uploader_email is None:
        # Nobody to tell: kept in the log (and rejected.json) for an operator.
        log.warning("rejection_without_address", reason=event.reason, upload_key=event.upload_key)
        return []
    subject, body = rejection_email(event)
    return _send(deps, event, kind="rejection", tenant=event.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def on_duplicate_upload(event: DuplicateUploadSkipped, deps: Deps) -> list[Event]:
    subject, body = duplicate_email(event)
    return _send(deps, event, kind="duplicate", tenant=event.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def on_processing_failed(event: ProcessingFailed, deps: Deps) -> list[Event]:
    subject, body = failure_email(event)
    return _send(deps, event, kind="failure", tenant=event.recording.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def build(settings) -> dict:
    from neurocyte_shared import aws
    from neurocyte_shared.config import ConfigurationError
    from neurocyte_shared.service import s3

    if not settings.topic_arn:
        raise ConfigurationError("environment variable NEUROCYTE_TOPIC_ARN is not set")
    deps = Deps(sns=aws.client("sns", settings.endpoint_url, settings.region), s3=s3(settings),
                topic_arn=settings.topic_arn, data_bucket=settings.data_bucket,
                delivers_unconfirmed=os.environ.get("NEUROCYTE_SNS_DELIVERS_UNCONFIRMED") == "1")
    return {
        RecordingSummarized: partial(on_recording_summarized, deps=deps),
        RecordingRejected: partial(on_recording_rejected, deps=deps),
        ProcessingFailed: partial(on_processing_failed, deps=deps),
        DuplicateUploadSkipped: partial(on_duplicate_upload, deps=deps),
    }
