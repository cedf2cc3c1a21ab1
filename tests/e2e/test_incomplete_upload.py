"""A manifest that arrives before its files: ingest waits for them (re-checking, never counting
the wait as a failure), processes the upload once they are whole, and refuses it with the list
of what is missing once the deadline (15 s in the tests) has passed."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

from .conftest import mail_body as _body
from .conftest import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("late")
    bin_path, json_path, _ = write_recording(folder, "late", SyntheticSpec(n_channels=16, duration_s=4.0, n_units=6,
                                                                          seed=21))
    return {"late.bin": bin_path.read_bytes(), "late.json": json_path.read_bytes()}


def _manifest_first(stack, files, tenant, rid, email):
    prefix = f"uploads/{tenant}/{rid}/"
    manifest = {"uploader_email": email, "recording_name": rid,
                "files": [{"name": n, "size_bytes": len(b)} for n, b in files.items()]}
    stack.s3.put_object(Bucket=stack.uploads, Key=prefix + "manifest.json", Body=json.dumps(manifest))
    return prefix


def test_files_arriving_after_the_manifest_are_waited_for(stack, files):
    email, rid = "dave@example.org", f"late-{uuid.uuid4().hex[:8]}"
    prefix = _manifest_first(stack, files, "dave", rid, email)
    time.sleep(5)  # the slow copy this test is about: the files land 5 s after the manifest
    for name, body in files.items():
        stack.s3.put_object(Bucket=stack.uploads, Key=prefix + name, Body=body)
    mail = wait_for(lambda: [m for m in stack.mail_to(email) if rid in json.dumps(m)], 180, "the result email")
    assert len(mail) == 1 and "Total spikes:" in _body(mail[0])


def test_an_upload_still_incomplete_after_the_deadline_is_refused_naming_the_missing_file(stack, files):
    email, rid = "erin@example.org", f"partial-{uuid.uuid4().hex[:8]}"
    prefix = _manifest_first(stack, files, "erin", rid, email)
    stack.s3.put_object(
        Bucket=stack.uploads, Key=prefix + "late.bin", Body=files["late.bin"]
    )  # the sidecar never comes
    started = time.monotonic()
    mail = wait_for(lambda: [m for m in stack.mail_to(email) if rid in json.dumps(m)], 120, "the rejection email")
    assert time.monotonic() - started >= 10  # not refused before the deadline
    body = _body(mail[0])
    assert "still incomplete 15 s after its manifest" in body and "late.json was not uploaded" in body, body
    assert "late.bin" not in body.split("reason:")[1].split("Nothing was analysed")[0]  # the whole file is not blamed
    assert not [k for k in stack.keys("recordings/tenant=erin/") if k.endswith("recording.json")]
    assert stack.dead_letters("Ingest") == 0  # waiting is not failing
