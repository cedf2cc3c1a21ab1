"""Operating the pipeline: status, the local inbox, dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from rich.table import Table

from neurocyte_cli.ui import L, _fail, _outputs, console, out, status_of, uploads

# --------------------------------------------------------------------------- dead letters


@click.group()
def dlq() -> None:
    """Messages that failed every delivery: look at them, and retry them after a fix."""


def _dead_letter_queues(outputs: dict[str, str], service: str | None) -> list[tuple[str, str, str]]:
    """(service, queue url, dead-letter queue url) for one service or all."""
    from neurocyte_cli.local import SERVICES

    names = [service] if service else list(SERVICES)
    if service and service not in SERVICES:
        _fail(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    return [(n, outputs[f"{n.capitalize()}QueueUrl"], outputs[f"{n.capitalize()}DeadLetterQueueUrl"]) for n in names]


@dlq.command("list")
@click.option("--service", default=None, help="one service (default: all)")
def dlq_list(service: str | None) -> None:
    """Count and show dead-lettered messages per service (they stay where they are)."""
    from neurocyte_shared.messaging import aws

    outputs = _outputs(L.Local.from_env())
    sqs = aws.client("sqs")
    table = Table("service", "messages", "event", "recording", "sent (UTC)")
    total = 0
    for name, _, dead in _dead_letter_queues(outputs, service):
        count = int(sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["ApproximateNumberOfMessages"])
                    ["Attributes"]["ApproximateNumberOfMessages"])
        total += count
        # A peek: visibility 0 leaves each message where it was, for the next look or redrive.
        peeked = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                     AttributeNames=["SentTimestamp"]).get("Messages", []) if count else []
        if not peeked:
            table.add_row(name, str(count), "", "", "")
        for i, m in enumerate(peeked):
            kind, rid = _describe(m["Body"])
            sent = datetime.fromtimestamp(int(m["Attributes"]["SentTimestamp"]) / 1000, UTC)
            table.add_row(name if i == 0 else "", str(count) if i == 0 else "", kind, rid, f"{sent:%Y-%m-%d %H:%M:%S}")
    out.print(table)
    out.print(f"{total} dead-lettered message(s)." + (" Retry after a fix: neurocyte dlq redrive" if total else ""))


def _describe(body: str) -> tuple[str, str]:
    try:
        doc = json.loads(body)
        return str(doc.get("detail-type", "?")), str(doc.get("detail", {}).get("correlation_id", "?"))
    except (ValueError, AttributeError):
        return "undecodable", "?"


@dlq.command("redrive")
@click.option("--service", default=None, help="one service (default: all)")
def dlq_redrive(service: str | None) -> None:
    """Move dead-lettered messages back to their service's queue to be processed again.
    Work already done is reused: shards and results that exist are not redone."""
    from neurocyte_shared.messaging import aws

    outputs = _outputs(L.Local.from_env())
    sqs = aws.client("sqs")
    moved = 0
    for name, queue, dead in _dead_letter_queues(outputs, service):
        while True:
            batch = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                        WaitTimeSeconds=1).get("Messages", [])
            if not batch:
                break
            for m in batch:  # send first, then delete: a crash in between duplicates, never loses
                sqs.send_message(QueueUrl=queue, MessageBody=m["Body"])
                sqs.delete_message(QueueUrl=dead, ReceiptHandle=m["ReceiptHandle"])
                moved += 1
                out.print(f"{name}: {' '.join(_describe(m['Body']))} -> back on the queue")
    out.print(f"{moved} message(s) redriven.")


# --------------------------------------------------------------------------- status / inbox


@click.command()
@click.argument("recording", required=False)
def status(recording: str | None) -> None:
    """Which stage each recording (or one) is in."""
    from neurocyte_shared.messaging import aws
    from neurocyte_shared.storage.status import refused_keys

    local = L.Local.from_env()
    outputs = _outputs(local)
    s3 = aws.client("s3")
    found = [(t, r) for t, r in uploads(s3, outputs["UploadBucketName"]) if recording in (None, r)]
    if recording and not found:
        _fail(f"no recording {recording!r}")
    table = Table("recording", "tenant", "stage", "detail")
    for tenant, rid in found:
        st = status_of(s3, outputs, tenant, rid)
        colour = "red" if st.failed else "green" if st.done else "yellow"
        table.add_row(rid, tenant, f"[{colour}]{st.stage}[/{colour}]", st.detail)
    if recording is None:  # keys ingest could not even parse: no recording id to list them under
        for refused in refused_keys(s3, outputs["DataBucketName"]):
            table.add_row(refused["upload_key"], "-", "[red]refused[/red]", refused["reason"])
    out.print(table)


@click.command()
@click.option("--to", "to", default=None, help="only mail to this address")
@click.option("--json", "as_json", is_flag=True, help="raw JSON as LocalStack keeps it")
def inbox(to: str | None, as_json: bool) -> None:
    """Mail sent by the local stack (LocalStack keeps it instead of sending it)."""
    local = L.Local.from_env()
    messages = L.mail_to(local, to) if to else L.inbox(local)
    if as_json:
        out.print_json(data=messages)
        return
    if not messages:
        console.print("No mail.")
    for m in messages:
        print_mail(m)


def print_mail(m: dict) -> None:
    body = m.get("Body", {})
    text = body.get("text_part") or body.get("html_part") or ""
    try:  # SNS email deliveries carry the published message as the text
        text = json.loads(text).get("Message", text)
    except (ValueError, AttributeError):
        pass
    out.print(f"[bold]From:[/bold] {m.get('Source')}\n[bold]To:[/bold] "
              f"{', '.join(m.get('Destination', {}).get('ToAddresses', []))}\n"
              f"[bold]Date:[/bold] {m.get('Timestamp')}\n[bold]Subject:[/bold] {m.get('Subject')}\n")
    out.print(text, markup=False, highlight=False, soft_wrap=True)
    out.print("-" * 72)
