"""A real LocalStack process on its own port, the stack from deploy/template.yaml, and the five
services as processes: the same path as `neurocyte up`, isolated from a developer's stack."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests

from neurocyte_cli import local as L


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.5):
    """Poll `condition` until it returns something truthy, or fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def mail_body(message: dict) -> str:
    """The text of a message LocalStack's SES/SNS mailbox holds (SNS wraps it in JSON)."""
    text = message["Body"].get("text_part") or ""
    try:
        return json.loads(text)["Message"]
    except (ValueError, KeyError):
        return text


class Stack:
    def __init__(self, local: L.Local, outputs: dict[str, str]):
        from neurocyte_shared.messaging import aws

        self.local, self.outputs = local, outputs
        self.s3, self.sqs, self.events = aws.client("s3"), aws.client("sqs"), aws.client("events")

    @property
    def uploads(self) -> str:
        return self.outputs["UploadBucketName"]

    @property
    def data(self) -> str:
        return self.outputs["DataBucketName"]

    def upload(self, files: dict[str, bytes], *, email: str, tenant: str, rid: str, **manifest_fields) -> None:
        """As a user would: data files first, the manifest last."""
        prefix = f"uploads/{tenant}/{rid}/"
        for name, body in files.items():
            self.s3.put_object(Bucket=self.uploads, Key=prefix + name, Body=body)
        manifest = {"uploader_email": email, "recording_name": rid,
                    "files": [{"name": n, "size_bytes": len(b)} for n, b in files.items()], **manifest_fields}
        self.s3.put_object(Bucket=self.uploads, Key=prefix + "manifest.json", Body=json.dumps(manifest))

    def mail_to(self, address: str) -> list[dict]:
        return L.mail_to(self.local, address)

    def keys(self, prefix: str) -> list[str]:
        from neurocyte_shared.storage import s3io

        return s3io.list_keys(self.s3, self.data, prefix)

    def dead_letters(self, name: str) -> int:
        url = self.outputs[f"{name}DeadLetterQueueUrl"]
        return int(self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
                   ["Attributes"]["ApproximateNumberOfMessages"])

    def queue_idle(self, name: str) -> bool:
        url = self.outputs[f"{name}QueueUrl"]
        a = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0"


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    home = tmp_path_factory.mktemp("neurocyte-home")
    port = os.environ.get("NEUROCYTE_TEST_PORT", "4599")
    local = L.Local(home=Path(home), endpoint=f"http://127.0.0.1:{port}", stack="nctest")
    if L.localstack_healthy(local):
        pytest.fail(f"something already answers on port {port}; set NEUROCYTE_TEST_PORT to a free port")
    # Small shards so the test recording crosses several shard borders.
    os.environ["NEUROCYTE_SHARD_S"] = "5"
    os.environ["NEUROCYTE_WAIT_TIME_S"] = "2"
    # Short visibility (the heartbeat keeps long work covered) so retries happen in seconds.
    os.environ["NEUROCYTE_VISIBILITY_TIMEOUT_S"] = "8"
    os.environ["NEUROCYTE_HEARTBEAT_S"] = "2"
    os.environ["NEUROCYTE_DEAD_LETTER_SWEEP_S"] = "2"
    # An upload whose manifest came before its files: checked every 2 s, refused after 15 s.
    os.environ["NEUROCYTE_UPLOAD_DEADLINE_S"] = "15"
    os.environ["NEUROCYTE_UPLOAD_RECHECK_S"] = "2"
    os.environ.setdefault("NEUROCYTE_WEB_PORT", "8099")  # beside a developer's own stack on 8080
    try:
        L.start_localstack(local)
        outputs = L.deploy_stack(local)
        L.start_services(local, outputs, detectors=2)
        yield Stack(local, outputs)
    finally:
        L.stop_all(local)
        for log in sorted(Path(home, "logs").glob("*.log")):  # kept for a failing run's post-mortem
            errors = [ln for ln in log.read_text(errors="replace").splitlines() if '"level": "error"' in ln]
            if errors:
                print(f"\n{log.name}: {len(errors)} error line(s), last: {errors[-1][:1500]}")


@pytest.fixture(scope="session")
def http_ok(stack) -> None:
    assert requests.get(f"{stack.local.endpoint}/_localstack/health", timeout=5).ok
