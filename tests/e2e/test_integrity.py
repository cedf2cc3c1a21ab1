"""What was validated is what is analysed, and every uploader hears back (issue 26), against a
real LocalStack: uploads written over while they are processed, claimed hashes, a change of
letter case, a second and a concurrent manifest for one id, a huge manifest, odd keys, a flat
recording. Each as a careless or hostile uploader would do it, with plain boto3 calls."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import numpy as np
import pytest

from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording
from neurocyte_shared.storage import status

from .conftest import mail_body, wait_for

pytestmark = pytest.mark.e2e
CHANGED = "changed while it was processed"


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """16 channels x 100 s: 20 shards of 5 s, time to write over it while it is chunked."""
    folder = tmp_path_factory.mktemp("long")
    b, j, _ = write_recording(folder, "long", SyntheticSpec(n_channels=16, duration_s=100.0, n_units=8, seed=3))
    return {"long.bin": b.read_bytes(), "long.json": j.read_bytes()}


@pytest.fixture(scope="module")
def short_recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("short")
    b, j, _ = write_recording(folder, "short", SyntheticSpec(n_channels=16, duration_s=10.0, n_units=8, seed=4))
    return {"short.bin": b.read_bytes(), "short.json": j.read_bytes()}


def fresh(files: dict[str, bytes]) -> dict[str, bytes]:
    """The recording with its last sample changed: content no earlier test uploaded (the same
    bytes twice would be recognised as a duplicate and not processed again)."""
    out = dict(files)
    data = next(n for n in out if n.endswith(".bin"))
    out[data] = out[data][:-2] + uuid.uuid4().bytes[:2]
    return out


def _put(stack, files: dict[str, bytes], *, email: str, rid: str, tenant: str = "integrity",
         sha256: dict[str, str] | None = None, manifest: bool = True) -> str:
    """Data files, then (unless told not to) a manifest claiming each file's SHA-256."""
    prefix = f"uploads/{tenant}/{rid}/"
    for name, body in files.items():
        stack.s3.put_object(Bucket=stack.uploads, Key=prefix + name, Body=body)
    if manifest:
        put_manifest(stack, files, email=email, rid=rid, tenant=tenant, sha256=sha256)
    return prefix


def put_manifest(stack, files, *, email, rid, tenant="integrity", sha256=None, **fields) -> None:
    sha256 = sha256 or {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    doc = {"uploader_email": email, "recording_name": rid, **fields,
           "files": [{"name": n, "size_bytes": len(b), "sha256": sha256[n]} for n, b in files.items()]}
    stack.s3.put_object(Bucket=stack.uploads, Key=f"uploads/{tenant}/{rid}/manifest.json", Body=json.dumps(doc))


def mail_exactly_to(stack, address: str, *must: str) -> list[dict]:
    """Mail whose recipient is exactly `address` (letter case included) and whose text has `must`."""
    return [m for m in stack.mail_to(address) if address in m.get("Destination", {}).get("ToAddresses", [])
            and all(w in json.dumps(m) for w in must)]


def published(stack, rid: str, tenant: str = "integrity") -> list[str]:
    return [k for k in stack.keys(f"recordings/tenant={tenant}/") if f"/{rid}/results/" in k
            and k.endswith("/summary.json")]


def _stage(stack, rid: str, tenant: str = "integrity") -> str:
    return status.status_of(stack.s3, stack.outputs, tenant, rid).stage


@pytest.mark.parametrize("when", ["during chunking", "right after the manifest"])
def test_an_upload_written_over_is_refused_and_nothing_published(stack, long_recording, when):
    email, rid = f"over-{uuid.uuid4().hex[:6]}@lab.org", f"over-{uuid.uuid4().hex[:8]}"
    _put(stack, fresh(long_recording), email=email, rid=rid)
    zeros = bytes(len(long_recording["long.bin"]))
    if when == "during chunking":
        wait_for(lambda: any(f"/{rid}/raw.zarr/c/" in k for k in stack.keys("recordings/tenant=integrity/")), 120,
                 "the first shard in the store", interval_s=0.05)
    stack.s3.put_object(Bucket=stack.uploads, Key=f"uploads/integrity/{rid}/long.bin", Body=zeros)
    mail = wait_for(lambda: mail_exactly_to(stack, email, rid), 240, "the uploader's email")
    assert CHANGED in mail_body(mail[0]) and "Nothing was published" in mail_body(mail[0])
    assert published(stack, rid) == []
    assert _stage(stack, rid) in ("rejected", "rejected, emailed")


def test_a_file_truncated_during_chunking_is_a_refusal_not_a_retry(stack, long_recording):
    email, rid = f"trunc-{uuid.uuid4().hex[:6]}@lab.org", f"trunc-{uuid.uuid4().hex[:8]}"
    _put(stack, fresh(long_recording), email=email, rid=rid)
    wait_for(lambda: any(f"/{rid}/raw.zarr/c/" in k for k in stack.keys("recordings/tenant=integrity/")), 120,
             "the first shard in the store", interval_s=0.05)
    half = long_recording["long.bin"][: len(long_recording["long.bin"]) // 2]
    stack.s3.put_object(Bucket=stack.uploads, Key=f"uploads/integrity/{rid}/long.bin", Body=half)
    mail = wait_for(lambda: mail_exactly_to(stack, email, rid), 240, "the uploader's email")
    body = mail_body(mail[0])
    assert CHANGED in body and "retried" not in body
    assert published(stack, rid) == [] and stack.dead_letters("Chunker") == 0


def test_a_manifest_claiming_another_files_hash_is_not_a_duplicate_and_is_refused(stack, short_recording):
    owner, rid = f"owner-{uuid.uuid4().hex[:6]}@lab.org", f"orig-{uuid.uuid4().hex[:8]}"
    short_recording = fresh(short_recording)
    _put(stack, short_recording, email=owner, rid=rid)
    wait_for(lambda: mail_exactly_to(stack, owner, rid, "has been analysed"), 240, "the original's result")
    forger, rid2 = f"forger-{uuid.uuid4().hex[:6]}@lab.org", f"forged-{uuid.uuid4().hex[:8]}"
    other = dict(short_recording)
    other["short.bin"] = bytes(reversed(short_recording["short.bin"]))  # other bytes, the same size
    claims = {n: hashlib.sha256(b).hexdigest() for n, b in short_recording.items()}  # the original's hashes
    _put(stack, other, email=forger, rid=rid2, sha256=claims)
    mail = wait_for(lambda: mail_exactly_to(stack, forger, rid2), 240, "the forger's email")
    body = mail_body(mail[0])
    assert "uploaded before" not in body  # not taken for the original
    assert CHANGED in body and "SHA-256" in body and published(stack, rid2) == []


def test_a_change_of_letter_case_in_the_address_still_delivers(stack, short_recording):
    tag = uuid.uuid4().hex[:6]
    first, second = f"CaseTest{tag}@Lab.org", f"casetest{tag}@lab.org"
    for i, address in enumerate((first, second)):
        files = fresh(short_recording)
        rid = f"case{i}-{tag}"
        _put(stack, files, email=address, rid=rid)
        canonical = address.rsplit("@", 1)[0] + "@lab.org"
        wait_for(lambda: mail_exactly_to(stack, canonical, rid, "has been analysed"), 240,  # noqa: B023
                 f"the result mailed to exactly {canonical}")


def test_a_second_manifest_under_a_taken_id_is_refused_and_says_so(stack, short_recording):
    first, rid = f"first-{uuid.uuid4().hex[:6]}@lab.org", f"taken-{uuid.uuid4().hex[:8]}"
    short_recording = fresh(short_recording)
    _put(stack, short_recording, email=first, rid=rid)
    wait_for(lambda: mail_exactly_to(stack, first, rid, "has been analysed"), 240, "the first result")
    summary = published(stack, rid)
    second = f"second-{uuid.uuid4().hex[:6]}@lab.org"
    put_manifest(stack, short_recording, email=second, rid=rid, reprocess=True)
    mail = wait_for(lambda: mail_exactly_to(stack, second, rid), 120, "the second uploader's email")
    assert "already belongs to an upload" in mail_body(mail[0])
    assert published(stack, rid) == summary and _stage(stack, rid) == "emailed"
    doc = next(k for k in stack.keys("recordings/tenant=integrity/") if k.endswith(f"/{rid}/recording.json"))
    assert first in stack.s3.get_object(Bucket=stack.data, Key=doc)["Body"].read().decode()


def test_of_two_manifests_at_once_each_uploader_hears_which_was_taken(stack, short_recording):
    rid = f"race-{uuid.uuid4().hex[:8]}"
    a, b = f"ra-{uuid.uuid4().hex[:6]}@lab.org", f"rb-{uuid.uuid4().hex[:6]}@lab.org"
    files = fresh(short_recording)
    _put(stack, files, email=a, rid=rid, manifest=False)
    put_manifest(stack, files, email=a, rid=rid)
    put_manifest(stack, files, email=b, rid=rid)
    got = wait_for(lambda: (mail_exactly_to(stack, a, rid) and mail_exactly_to(stack, b, rid))
                   and (mail_exactly_to(stack, a, rid), mail_exactly_to(stack, b, rid)), 240, "both uploaders' email")
    bodies = sorted(mail_body(m[0]) for m in got)
    assert sum("has been analysed" in x for x in bodies) == 1
    assert sum("already belongs to an upload" in x for x in bodies) == 1


def test_a_manifest_of_thousands_of_files_is_refused_at_once_and_delays_nobody(stack, short_recording):
    email, rid = f"huge-{uuid.uuid4().hex[:6]}@lab.org", f"huge-{uuid.uuid4().hex[:8]}"
    doc = {"uploader_email": email, "files": [{"name": f"f{i:05d}.bin", "size_bytes": 1} for i in range(8000)]}
    started = time.monotonic()
    stack.s3.put_object(Bucket=stack.uploads, Key=f"uploads/integrity/{rid}/manifest.json", Body=json.dumps(doc))
    other, rid2 = f"bystander-{uuid.uuid4().hex[:6]}@lab.org", f"by-{uuid.uuid4().hex[:8]}"
    _put(stack, fresh(short_recording), email=other, rid=rid2)
    refusal = wait_for(lambda: mail_exactly_to(stack, email, rid), 60, "the refusal")
    assert "at most 64" in mail_body(refusal[0])
    wait_for(lambda: mail_exactly_to(stack, other, rid2, "has been analysed"), 120, "the bystander's result")
    assert time.monotonic() - started < 120


def test_keys_ingest_cannot_use_are_refused_visibly(stack):
    email = f"odd-{uuid.uuid4().hex[:6]}@lab.org"
    manifest = json.dumps({"uploader_email": email, "files": [{"name": "a.nwb", "size_bytes": 1}]})
    stack.s3.put_object(Bucket=stack.uploads, Key="uploads/integrity/rec one/manifest.json", Body=manifest)
    stack.s3.put_object(Bucket=stack.uploads, Key="uploads/integrity/r-odd/MANIFEST.json", Body=manifest)
    mail = wait_for(lambda: [m for m in mail_exactly_to(stack, email) if "rec one" in mail_body(m)], 60,
                    "the refusal of the key with a space")
    assert "cannot be used" in mail_body(mail[0])
    refused = wait_for(lambda: [r for r in status.refused_keys(stack.s3, stack.data)
                                if r["upload_key"].endswith("r-odd/MANIFEST.json")], 30, "the refused key's record")
    assert "lower case" in refused[0]["reason"]


def test_a_flat_recording_is_reported_as_flat(stack, short_recording):
    email, rid = f"flat-{uuid.uuid4().hex[:6]}@lab.org", f"flat-{uuid.uuid4().hex[:8]}"
    files = dict(short_recording)
    files["short.bin"] = np.zeros(len(files["short.bin"]) // 2, np.int16).tobytes()
    _put(stack, files, email=email, rid=rid)
    mail = wait_for(lambda: mail_exactly_to(stack, email, rid, "has been analysed"), 240, "the result")
    assert "The signal is flat" in mail_body(mail[0])


def test_a_store_that_does_not_give_back_the_upload_fails_loudly_and_publishes_nothing(stack, short_recording):
    """The chunker hands each shard's digest of the upload's samples to the detector, which
    checks what it decodes from the store. A shard object replaced by another (a store that
    no longer holds the upload) is a failure on every delivery, told to the uploader, and no
    spike table is written for it."""
    from neurocyte_shared.messaging.bus import encode
    from neurocyte_shared.messaging.events import RecordingRef, ShardReady
    from neurocyte_shared.storage import s3io, store

    files = fresh(short_recording)
    email, rid = f"corrupt-{uuid.uuid4().hex[:6]}@example.org", f"corrupt-{uuid.uuid4().hex[:6]}"
    _put(stack, files, email=email, rid=rid)
    wait_for(lambda: stack.mail_to(email), 240, "the result email")
    doc_key = next(k for k in stack.keys("recordings/tenant=integrity/") if f"/{rid}/recording.json" in k)
    prefix = doc_key.rsplit("/", 1)[0] + "/"
    meta = s3io.get_json(stack.s3, stack.data, prefix + "raw.zarr/zarr.json")
    window = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    samples = np.frombuffer(files["short.bin"], dtype=np.int16).reshape(-1, 16)
    shard_1 = s3io.get_bytes(stack.s3, stack.data, prefix + "raw.zarr/c/1/0")
    stack.s3.put_object(Bucket=stack.data, Key=prefix + "raw.zarr/c/0/0", Body=shard_1)
    event = ShardReady(correlation_id=rid, recording=RecordingRef(tenant="integrity", prefix=prefix),
                       store_key=prefix + "raw.zarr", shard_index=0, n_shards=2, start_sample=0, stop_sample=window,
                       detection_params={"threshold_mad": 5.25}, samples_digest=store.samples_digest(samples[:window]))
    dead_before = stack.dead_letters("Detector")
    stack.events.put_events(Entries=[encode(event, stack.outputs["EventBusName"])])
    failed = wait_for(lambda: s3io.get_bytes_if_exists(stack.s3, stack.data, prefix + "failed.json"), 180,
                      "the recording to be marked failed")
    assert "decodes to other samples than the upload's" in failed.decode()
    mails = wait_for(lambda: (m := stack.mail_to(email)) and len(m) >= 2 and m, 60, "the failure email")
    assert len(mails) == 2
    logs = "".join(p.read_text() for p in stack.local.logs.glob("detector-*.log"))
    assert sum(1 for ln in logs.splitlines() if '"handler_failed"' in ln and rid in ln) >= 2  # every delivery
    # Kept in the detector's dead-letter queue for an operator (and counted before later tests look).
    wait_for(lambda: stack.dead_letters("Detector") == dead_before + 1, 120, "the message in the dead-letter queue")
    new_tables = [k for k in stack.keys(prefix + "spikes/") if "/shard-00000" in k]
    assert len(new_tables) == 1  # the first run's table only: nothing written for the corrupt shard
