"""A message that fails every time: dead-lettered after the configured receives, loudly (a
log line that is a metric), the uploader told once, and an operator can look and retry."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest
from click.testing import CliRunner

from neurocyte_cli import local as L
from neurocyte_cli.main import cli
from neurocyte_shared.messaging.bus import encode
from neurocyte_shared.messaging.events import RecordingRef, ShardReady
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording
from neurocyte_shared.storage import s3io
from neurocyte_shared.storage.documents import RecordingDocument

from .conftest import mail_body, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def poisoned(stack, tmp_path_factory):
    """A validated recording whose shard points at a store that does not exist: the detector
    fails on every delivery."""
    folder = tmp_path_factory.mktemp("poison")
    bin_path, json_path, _ = write_recording(folder, "p", SyntheticSpec(n_channels=16, duration_s=4.0, n_units=4))
    email, rid = "carol@example.org", f"poison-{uuid.uuid4().hex[:8]}"
    stack.upload({"p.bin": bin_path.read_bytes(), "p.json": json_path.read_bytes()}, email=email, tenant="carol",
                 rid=rid)
    wait_for(lambda: [m for m in stack.mail_to(email) if rid in json.dumps(m)], 240, "the first result email")
    # A second recording, copied from the first's document, whose only shard is poison.
    doc_key = next(k for k in stack.keys("recordings/tenant=carol/") if f"/{rid}/recording.json" in k)
    doc = RecordingDocument.model_validate_json(s3io.get_bytes(stack.s3, stack.data, doc_key))
    bad = f"poison-{uuid.uuid4().hex[:8]}"
    prefix = doc_key.replace(f"/{rid}/recording.json", f"/{bad}/")
    s3io.put_json(stack.s3, stack.data, prefix + "recording.json",
                  json.loads(doc.model_copy(update={"recording_id": bad}).model_dump_json()))
    event = ShardReady(correlation_id=bad, recording=RecordingRef(tenant="carol", prefix=prefix),
                       store_key=prefix + "missing.zarr", shard_index=0, n_shards=1, start_sample=0,
                       stop_sample=1000)
    before = stack.dead_letters("Detector")
    stack.events.put_events(Entries=[encode(event, stack.outputs["EventBusName"])])
    return {"rid": bad, "email": email, "dlq_before": before}


def test_poison_message_is_dead_lettered_and_the_uploader_told_once(stack, poisoned):
    wait_for(lambda: stack.dead_letters("Detector") == poisoned["dlq_before"] + 1, 180,
             "the poison message in the detector's dead-letter queue")
    mail = wait_for(lambda: [m for m in stack.mail_to(poisoned["email"]) if poisoned["rid"] in json.dumps(m)], 60,
                    "the failure email")
    body = json.dumps(mail)
    assert "processing failed" in body and "are kept" in body and "detector stage" in body
    logs = "".join(p.read_text() for p in stack.local.logs.glob("detector-*.log"))
    dead = [json.loads(ln) for ln in logs.splitlines() if '"dead_lettered"' in ln and poisoned["rid"] in ln]
    assert dead and dead[0]["DeadLettered"] == 1 and dead[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Neurocyte"
    # Receives before dead-lettering = the queue's maxReceiveCount (3): one handler_failed each.
    failures = [ln for ln in logs.splitlines() if '"handler_failed"' in ln and poisoned["rid"] in ln]
    assert len(failures) == 3


def test_a_dead_lettered_recording_says_in_which_stage_and_why_it_failed(stack, poisoned):
    from neurocyte_shared.storage.status import status_of

    found = wait_for(lambda: [st for st in [status_of(stack.s3, stack.outputs, "carol", poisoned["rid"])] if st.failed],
                     180, "the recording's status to say it failed")
    assert found[0].stage == "failed in detector" and "kept for a retry" in found[0].detail
    assert "ArrayNotFoundError" in found[0].detail  # the reason itself, not only the promise


def test_operator_lists_and_redrives_dead_letters(stack, poisoned, monkeypatch):
    wait_for(lambda: stack.dead_letters("Detector") == poisoned["dlq_before"] + 1, 180, "the poison message")
    monkeypatch.setenv("NEUROCYTE_HOME", str(stack.local.home))
    monkeypatch.setenv("NEUROCYTE_ENDPOINT", stack.local.endpoint)
    monkeypatch.setenv("NEUROCYTE_STACK", stack.local.stack)
    listed = CliRunner().invoke(cli, ["dlq", "list", "--service", "detector"])
    assert listed.exit_code == 0, listed.output
    assert "ShardReady" in listed.output and poisoned["rid"] in listed.output
    redriven = CliRunner().invoke(cli, ["dlq", "redrive", "--service", "detector"])
    assert redriven.exit_code == 0, redriven.output
    assert f"{poisoned['dlq_before'] + 1} message(s) redriven" in redriven.output
    # Still poison: processed again (three more failures), back in the DLQ, no second email.
    logs = lambda: "".join(p.read_text() for p in stack.local.logs.glob("detector-*.log"))  # noqa: E731
    wait_for(lambda: sum(1 for ln in logs().splitlines() if '"handler_failed"' in ln and poisoned["rid"] in ln) >= 6,
             180, "the redriven message to be retried")
    wait_for(lambda: stack.dead_letters("Detector") >= 1 and stack.queue_idle("Detector"), 120,
             "the message back in the dead-letter queue")
    wait_for(lambda: stack.queue_idle("Notifier"), 60, "the notifier to drain")
    assert len([m for m in stack.mail_to(poisoned["email"]) if poisoned["rid"] in json.dumps(m)]) == 1


def test_a_worker_killed_on_every_delivery_still_tells_the_uploader(stack, tmp_path, monkeypatch):
    """SIGKILL (or the kernel's out-of-memory killer) leaves a worker no moment to say anything:
    after the last delivery SQS moves the message to the dead-letter queue in silence. The stage
    finds it there, the uploader is told once, and a redrive finishes the recording."""
    bin_path, json_path, _ = write_recording(tmp_path, "k", SyntheticSpec(n_channels=16, duration_s=4.0, n_units=4))
    email, rid = "dave@example.org", f"killed-{uuid.uuid4().hex[:8]}"
    queue = stack.outputs["ChunkerQueueUrl"]
    before = stack.dead_letters("Chunker")
    os.killpg(L._read_pid(stack.local, "chunker-0"), signal.SIGKILL)
    try:
        stack.upload({"k.bin": bin_path.read_bytes(), "k.json": json_path.read_bytes()}, email=email,
                     tenant="dave", rid=rid)
        # This test plays the worker that dies: it takes the message up to its third delivery
        # (the queue's maxReceiveCount) and never deletes it; the next receive moves it to the
        # dead-letter queue. (The killed chunker's own long poll may have taken the first.)
        delivered = 0
        while delivered < 3:
            got = wait_for(lambda: stack.sqs.receive_message(QueueUrl=queue, VisibilityTimeout=1, WaitTimeSeconds=2,
                                                             AttributeNames=["ApproximateReceiveCount"])
                           .get("Messages"), 60, f"delivery {delivered + 1} of the chunker's message")
            assert rid in got[0]["Body"]
            delivered = int(got[0]["Attributes"]["ApproximateReceiveCount"])
        wait_for(lambda: not stack.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2).get("Messages")
                 and stack.dead_letters("Chunker") == before + 1, 60, "SQS to dead-letter the message")
        assert not [m for m in stack.mail_to(email) if rid in json.dumps(m)], "told before anyone looked"
    finally:
        L.start_services(stack.local, stack.outputs, detectors=2, say=lambda *_: None)

    told = wait_for(lambda: [m for m in stack.mail_to(email) if rid in json.dumps(m)], 120, "the failure email")
    body = mail_body(told[0])
    assert "processing failed" in body and "chunker stage" in body and "killed, or ran out of memory" in body
    logs = stack.local.logs.joinpath("chunker-0.log").read_text()
    assert any('"found_by": "sweep"' in ln and rid in ln for ln in logs.splitlines())

    # Nothing lost: the operator's redrive finishes it; the sweeps in between told nobody again.
    monkeypatch.setenv("NEUROCYTE_HOME", str(stack.local.home))
    monkeypatch.setenv("NEUROCYTE_ENDPOINT", stack.local.endpoint)
    monkeypatch.setenv("NEUROCYTE_STACK", stack.local.stack)
    redriven = CliRunner().invoke(cli, ["dlq", "redrive", "--service", "chunker"])
    assert redriven.exit_code == 0, redriven.output
    mails = wait_for(lambda: [m for m in stack.mail_to(email) if rid in json.dumps(m)][1:] or None, 240,
                     "the result email after the redrive")
    assert "could not be processed" not in json.dumps(mails[0])
    wait_for(lambda: stack.queue_idle("Notifier"), 60, "the notifier to drain")
    assert len([m for m in stack.mail_to(email) if rid in json.dumps(m)]) == 2  # the failure, then the result
