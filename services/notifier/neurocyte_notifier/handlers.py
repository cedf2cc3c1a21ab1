"""Notifier: email the uploader through SNS, once per recording and kind.

SNS email needs each address to confirm its subscription before it receives anything, and
every subscriber of a topic would receive every message. So: subscribe an address on first
use with a filter policy on the `recipient` message attribute (each address receives only
its own mail), and defer a message while the address has not confirmed yet.
(LocalStack delivers without confirmation.)

Exactly one email: a marker object (layout.notification_key) is claimed with a conditional
write (storage/claims.py). A redelivery of the same event after a crash finds its
own claim and sends; any other duplicate finds someone else's and stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from pydantic import Field

from neurocyte_shared.messaging.bus import Deferred
from neurocyte_shared.messaging.config import EnvSettings, Settings
from neurocyte_shared.messaging.events import (
    DuplicateUploadSkipped,
    Event,
    ExperimentSummarized,
    ProcessingFailed,
    RecordingRejected,
    RecordingSummarized,
)
from neurocyte_shared.messaging.logs import redact_email
from neurocyte_shared.storage import claims, layout, usage
from neurocyte_shared.storage.documents import canonical_email

from .messages import duplicate_email, experiment_email, failure_email, rejection_email, summary_email

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
    email = canonical_email(email)
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
            # The canonical form on both sides (domain lower-cased, local part as given): a
            # subscription found for another spelling would filter on that spelling, not this.
            if sub["Protocol"] == "email" and canonical_email(sub["Endpoint"]) == email:
                return sub["SubscriptionArn"]
    return None


def _send(deps: Deps, event: Event, *, kind: str, tenant: str, email: str, subject: str, body: str) -> list[Event]:
    email = canonical_email(email)  # compared, filtered and sent in one form
    marker = layout.notification_key(tenant, event.correlation_id, kind)
    record = {"event_id": event.event_id, "state": "claimed"}
    # A redelivery of this very event after a crash may send again (SNS took it, the marker
    # was not yet done): at least once for the owner, never for a duplicate event.
    taken = claims.claim(deps.s3, deps.data_bucket, marker, record,
                         is_mine=lambda existing: existing.get("event_id") == event.event_id
                         and existing.get("state") != "done")
    if taken is not None:
        log.info("already_notified", kind=kind)
        return []
    if not ensure_subscribed(deps, email):
        raise Deferred(f"{redact_email(email)} has not confirmed its subscription yet", deps.confirm_retry_s)
    deps.sns.publish(
        TopicArn=deps.topic_arn, Subject=subject[:99], Message=body,
        MessageAttributes={"recipient": {"DataType": "String", "StringValue": email}},
    )
    claims.complete(deps.s3, deps.data_bucket, marker, {**record, "subject": subject})
    log.info("email_sent", kind=kind, recipient=redact_email(email))
    return []


def on_recording_summarized(event: RecordingSummarized, deps: Deps) -> list[Event]:
    usage.finished(deps.s3, deps.data_bucket, event.recording.tenant, event.correlation_id)  # its lab's slot is free
    subject, body = summary_email(event)
    kind = f"summary-{event.version}" if event.rerun and event.version else "summary"  # one email per version
    return _send(deps, event, kind=kind, tenant=event.recording.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def on_recording_rejected(event: RecordingRejected, deps: Deps) -> list[Event]:
    if event.attempt is None:  # a refused second attempt at a taken id leaves the first one counted
        usage.finished(deps.s3, deps.data_bucket, event.tenant, event.correlation_id)
    if event.uploader_email is None:
        # Nobody to tell: kept in the log (and rejected.json) for an operator.
        log.warning("rejection_without_address", reason=event.reason, upload_key=event.upload_key)
        return []
    subject, body = rejection_email(event)
    kind = f"rejection-{event.attempt}" if event.attempt else "rejection"  # each refused attempt hears back
    return _send(deps, event, kind=kind, tenant=event.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def on_duplicate_upload(event: DuplicateUploadSkipped, deps: Deps) -> list[Event]:
    subject, body = duplicate_email(event)
    return _send(deps, event, kind="duplicate", tenant=event.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def on_processing_failed(event: ProcessingFailed, deps: Deps) -> list[Event]:
    usage.finished(deps.s3, deps.data_bucket, event.recording.tenant, event.correlation_id)
    subject, body = failure_email(event)
    return _send(deps, event, kind="failure", tenant=event.recording.tenant, email=str(event.uploader_email),
                 subject=subject, body=body)


def on_experiment_summarized(event: ExperimentSummarized, deps: Deps) -> list[Event]:
    subject, body = experiment_email(event)
    # one email per report: a later upload that completes the map again (a new DIV) makes a new one
    return _send(deps, event, kind=f"experiment-{event.result_id}", tenant=event.tenant,
                 email=str(event.uploader_email), subject=subject, body=body)


class NotifierSettings(EnvSettings):
    topic_arn: str = Field(alias="NEUROCYTE_TOPIC_ARN", description="notifier: the SNS topic emails go through")
    delivers_unconfirmed: bool = Field(
        False, alias="NEUROCYTE_SNS_DELIVERS_UNCONFIRMED",
        description="notifier: 1 where SNS delivers to unconfirmed email subscriptions (LocalStack only; never on AWS)")


def build(settings: Settings) -> dict:
    from neurocyte_shared.messaging import aws
    from neurocyte_shared.messaging.service import s3

    own = NotifierSettings.from_env()
    deps = Deps(sns=aws.client("sns", settings.endpoint_url, settings.region), s3=s3(settings),
                topic_arn=own.topic_arn, data_bucket=settings.data_bucket,
                delivers_unconfirmed=own.delivers_unconfirmed)
    return {
        RecordingSummarized: partial(on_recording_summarized, deps=deps),
        RecordingRejected: partial(on_recording_rejected, deps=deps),
        ProcessingFailed: partial(on_processing_failed, deps=deps),
        DuplicateUploadSkipped: partial(on_duplicate_upload, deps=deps),
        ExperimentSummarized: partial(on_experiment_summarized, deps=deps),
    }
