"""A lab's limits on a real LocalStack: an upload over a limit is refused by email with the
limit named and nothing processed; at the in-flight limit a recording waits its turn. Each
test sets its lab's own limits (usage/tenant=<lab>/settings.json), as an operator would."""

from __future__ import annotations

import json
import uuid

import pytest

from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

from .conftest import mail_body as _body
from .conftest import wait_for

pytestmark = pytest.mark.e2e


def _recording(tmp_path, seed: int, seconds: float = 4.0) -> dict[str, bytes]:
    b, j, _ = write_recording(tmp_path, f"r{seed}", SyntheticSpec(n_channels=8, duration_s=seconds, n_units=4,
                                                                  seed=seed))
    return {b.name: b.read_bytes(), j.name: j.read_bytes()}


def _lab_limits(stack, lab: str, **limits) -> None:
    stack.s3.put_object(Bucket=stack.data, Key=f"usage/tenant={lab}/settings.json", Body=json.dumps(limits))


def _only_refused(stack, lab: str, rid: str) -> None:
    wait_for(lambda: stack.queue_idle("Ingest") and stack.queue_idle("Notifier"), 60, "queues to drain")
    keys = [k for k in stack.keys(f"recordings/tenant={lab}/") if f"/{rid}/" in k]
    assert [k.rsplit("/", 1)[1] for k in keys] == ["rejected.json"]  # nothing validated, chunked or summarised


def test_an_upload_over_the_labs_size_limit_is_refused_by_email(stack, tmp_path):
    lab, rid, email = f"big-{uuid.uuid4().hex[:6]}", "too-big", f"big-{uuid.uuid4().hex[:6]}@example.org"
    _lab_limits(stack, lab, max_upload_gb=0.0001)  # 100 kB; the recording is 1.3 MB
    stack.upload(_recording(tmp_path, 1), email=email, tenant=lab, rid=rid)
    body = _body(wait_for(lambda: stack.mail_to(email), 120, "the refusal email")[0])
    assert "this upload is 1.3 MB, over your lab's limit of 100 kB per upload" in body
    assert "Nothing was processed" in body
    _only_refused(stack, lab, rid)


def test_a_lab_over_its_monthly_recording_hours_is_refused_by_email(stack, tmp_path):
    lab, email = f"hours-{uuid.uuid4().hex[:6]}", f"hours-{uuid.uuid4().hex[:6]}@example.org"
    _lab_limits(stack, lab, max_recording_hours_per_month=6.0 / 3600)  # one 4 s recording fits, two do not
    stack.upload(_recording(tmp_path, 2), email=email, tenant=lab, rid="first")
    wait_for(lambda: any("first" in json.dumps(m) for m in stack.mail_to(email)), 180, "the first result")
    stack.upload(_recording(tmp_path, 3), email=email, tenant=lab, rid="second")
    mails = wait_for(lambda: (m := stack.mail_to(email)) and len(m) >= 2 and m, 120, "the refusal email")
    body = _body(next(m for m in mails if "second" in json.dumps(m)))
    assert "recording-hours" in body and "used 0.00" in body and "Nothing was processed" in body
    _only_refused(stack, lab, "second")


def test_at_the_in_flight_limit_a_recording_waits_for_the_one_before(stack, tmp_path):
    lab, email = f"slots-{uuid.uuid4().hex[:6]}", f"slots-{uuid.uuid4().hex[:6]}@example.org"
    _lab_limits(stack, lab, max_in_flight=1)
    one, two = f"one-{uuid.uuid4().hex[:6]}", f"two-{uuid.uuid4().hex[:6]}"
    stack.upload(_recording(tmp_path, 4, seconds=12.0), email=email, tenant=lab, rid=one)
    wait_for(lambda: any(f"/{one}/recording.json" in k for k in stack.keys(f"recordings/tenant={lab}/")), 60,
             "the first recording to be validated")
    stack.upload(_recording(tmp_path, 5), email=email, tenant=lab, rid=two)
    mails = wait_for(lambda: (m := stack.mail_to(email)) and len(m) >= 2 and m, 300, "both result emails")
    order = [one if one in json.dumps(m) else two for m in mails]
    assert order == [one, two], order
    logs = "".join(p.read_text() for p in stack.local.logs.glob("ingest-*.log"))
    assert any('"waiting_for_a_slot"' in ln and '"limit": 1' in ln for ln in logs.splitlines())
    assert any('"LimitReached"' in ln and '"max_in_flight"' in ln for ln in logs.splitlines())
    assert stack.keys(f"usage/tenant={lab}/in-flight/") == []  # both emailed: the lab's slots are free
