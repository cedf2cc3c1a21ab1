"""Ingest's handler against in-memory S3: what it decides for a given upload."""

import pytest

from neurocyte_ingest.handlers import Deps, on_object_created
from neurocyte_shared.messaging.bus import Deferred
from neurocyte_shared.messaging.events import DuplicateUploadSkipped, RecordingRejected, RecordingValidated

from .conftest import DATA, UPLOADS, opener_for, upload


def deps(s3, **kw):
    return Deps(s3=s3, upload_bucket=UPLOADS, data_bucket=DATA, opener_for=opener_for(s3), **kw)


def test_a_complete_upload_is_validated_and_its_document_written(s3, recording):
    data, sidecar = recording
    events = on_object_created(upload(s3, "lab", "r1", {"rec.bin": data, "rec.json": sidecar}), deps(s3))
    assert [type(e) for e in events] == [RecordingValidated]
    assert events[0].n_channels == 8 and events[0].uploader_email == "ana@lab.org"
    assert any(k.endswith("/r1/recording.json") for k in s3.keys(DATA))


def test_a_data_file_alone_does_nothing(s3, recording):
    s3.put(UPLOADS, "uploads/lab/r1/rec.bin", recording[0])
    from neurocyte_shared.messaging.events import S3ObjectCreated

    event = S3ObjectCreated(bucket={"name": UPLOADS}, object={"key": "uploads/lab/r1/rec.bin"})
    assert on_object_created(event, deps(s3)) == []
    assert s3.keys(DATA) == []


def test_a_missing_file_waits_then_is_refused_after_the_deadline(s3, recording):
    event = upload(s3, "lab", "r1", {"rec.bin": recording[0], "rec.json": recording[1]})
    s3.objects.pop((UPLOADS, "uploads/lab/r1/rec.json"))
    with pytest.raises(Deferred):
        on_object_created(event, deps(s3))
    events = on_object_created(event, deps(s3, upload_deadline_s=0.0))
    assert isinstance(events[0], RecordingRejected) and "rec.json was not uploaded" in events[0].reason
    assert any(k.endswith("/r1/rejected.json") for k in s3.keys(DATA))


def test_a_broken_manifest_is_refused_with_the_address_it_names(s3):
    s3.put(UPLOADS, "uploads/lab/r1/manifest.json", b'{"uploader_email": "ana@lab.org", "files": []}')
    from neurocyte_shared.messaging.events import S3ObjectCreated

    event = S3ObjectCreated(bucket={"name": UPLOADS}, object={"key": "uploads/lab/r1/manifest.json"})
    (rejected,) = on_object_created(event, deps(s3))
    assert isinstance(rejected, RecordingRejected) and rejected.uploader_email == "ana@lab.org"
    assert "files" in rejected.reason


def test_the_same_content_again_is_a_duplicate_and_a_redelivery_is_not(s3, recording):
    files = {"rec.bin": recording[0], "rec.json": recording[1]}
    first = upload(s3, "lab", "r1", files)
    assert isinstance(on_object_created(first, deps(s3))[0], RecordingValidated)
    assert isinstance(on_object_created(first, deps(s3))[0], RecordingValidated)  # redelivery: its own claim
    (dup,) = on_object_created(upload(s3, "lab", "r2", files), deps(s3))
    assert isinstance(dup, DuplicateUploadSkipped) and dup.original_recording_id == "r1"


def test_one_recording_id_one_upload_and_a_second_manifest_hears_why(s3, recording):
    files = {"rec.bin": recording[0], "rec.json": recording[1]}
    first = upload(s3, "lab", "r1", files, email="ana@lab.org")
    assert isinstance(on_object_created(first, deps(s3))[0], RecordingValidated)
    document = s3.objects[(DATA, next(k for k in s3.keys(DATA) if k.endswith("/r1/recording.json")))].body
    second = upload(s3, "lab", "r1", files, email="bo@lab.org", reprocess=True)
    (refused,) = on_object_created(second, deps(s3))
    assert isinstance(refused, RecordingRejected) and refused.uploader_email == "bo@lab.org"
    assert "already belongs to an upload" in refused.reason and refused.attempt
    assert not any(k.endswith("/r1/rejected.json") for k in s3.keys(DATA))  # the first upload's folder untouched
    assert s3.objects[(DATA, next(k for k in s3.keys(DATA) if k.endswith("/r1/recording.json")))].body == document
    assert isinstance(on_object_created(first, deps(s3))[0], RecordingValidated)  # the first one's redelivery


def test_the_manifest_version_the_event_names_is_the_one_read(s3, recording):
    files = {"rec.bin": recording[0], "rec.json": recording[1]}
    first = upload(s3, "lab", "r1", files, email="ana@lab.org")
    upload(s3, "lab", "r1", files, email="bo@lab.org")  # written over before ingest read it
    (validated,) = on_object_created(first, deps(s3))
    assert validated.uploader_email == "ana@lab.org"


def test_keys_that_cannot_be_used_are_recorded_and_their_uploader_told(s3):
    import json

    from neurocyte_shared.messaging.events import S3ObjectCreated

    s3.put(UPLOADS, "uploads/lab/rec one/manifest.json", json.dumps({"uploader_email": "ana@lab.org"}))
    event = S3ObjectCreated(bucket={"name": UPLOADS}, object={"key": "uploads/lab/rec+one/manifest.json"})
    (refused,) = on_object_created(event, deps(s3))  # the key arrives URL-encoded and is decoded first
    assert refused.uploader_email == "ana@lab.org" and "rec one" in refused.reason
    for key in ("uploads/lab/r1/MANIFEST.json", "uploads/lab/r1/sub/x.bin", "uploads/" + "x" * 900 + "/r/x.bin"):
        assert on_object_created(S3ObjectCreated(bucket={"name": UPLOADS}, object={"key": key}), deps(s3)) == []
    assert len(s3.keys(DATA, "refused-uploads/")) == 4


# --- a lab's limits (storage/usage.py) ---

def _files(recording):
    return {"rec.bin": recording[0], "rec.json": recording[1]}  # 8 channels x 2 s


def test_an_upload_over_the_size_limit_is_refused_before_anything_is_read(s3, recording):
    from neurocyte_shared.storage.usage import Limits

    size_gb = sum(map(len, recording)) / 1e9
    (refused,) = on_object_created(upload(s3, "lab", "r1", _files(recording)),
                                   deps(s3, limits=Limits(max_upload_gb=size_gb / 2)))
    assert isinstance(refused, RecordingRejected)
    assert "over your lab's limit" in refused.reason and "Nothing was processed" in refused.reason
    assert not any(k.endswith("recording.json") for k in s3.keys(DATA))


def test_recording_hours_are_counted_per_month_and_a_lab_over_its_budget_is_refused(s3, recording):
    import json

    from neurocyte_shared.storage.usage import Limits, hours_used

    budget = Limits(max_recording_hours_per_month=3.0 / 3600)  # room for one 2 s recording, not two
    assert isinstance(on_object_created(upload(s3, "lab", "r1", _files(recording)), deps(s3, limits=budget))[0],
                      RecordingValidated)
    month = next(k for k in s3.keys(DATA, "usage/tenant=lab/month=")).split("month=")[1][:7]
    assert hours_used(s3, DATA, "lab", month) == pytest.approx(2.0 / 3600)
    first = upload(s3, "lab", "r2", {"other.bin": recording[0][::-1], "other.json": recording[1]})
    (refused,) = on_object_created(first, deps(s3, limits=budget))
    assert isinstance(refused, RecordingRejected) and "recording-hours" in refused.reason
    assert f"used 0.00 of its 0 for {month}" in refused.reason
    # Another lab has its own budget; a lab's settings.json overrides the default.
    assert isinstance(on_object_created(upload(s3, "lab2", "r3", _files(recording)), deps(s3, limits=budget))[0],
                      RecordingValidated)
    s3.put(DATA, "usage/tenant=lab/settings.json", json.dumps({"max_recording_hours_per_month": 1.0}))
    assert isinstance(on_object_created(first, deps(s3, limits=budget))[0], RecordingValidated)


def test_a_lab_at_its_in_flight_limit_waits_until_a_recording_is_emailed(s3, recording):
    from neurocyte_shared.storage import usage

    one = usage.Limits(max_in_flight=1)
    assert isinstance(on_object_created(upload(s3, "lab", "r1", _files(recording)), deps(s3, limits=one))[0],
                      RecordingValidated)
    second = upload(s3, "lab", "r2", {"other.bin": recording[0][::-1], "other.json": recording[1]})
    with pytest.raises(Deferred, match="1 recordings of this lab are in progress"):
        on_object_created(second, deps(s3, limits=one))
    # What the web page and `neurocyte status` show meanwhile.
    from neurocyte_shared.storage.status import status_of

    queued = status_of(s3, {"DataBucketName": DATA}, "lab", "r2")
    assert queued.stage == "queued" and "1 of your lab's recordings are in progress" in queued.detail
    usage.finished(s3, DATA, "lab", "r1")  # the notifier, once r1's email is sent
    assert isinstance(on_object_created(second, deps(s3, limits=one))[0], RecordingValidated)
    assert usage.waiting_reason(s3, DATA, "lab", "r2") is None
    # A redelivery of a validated manifest does not wait behind itself.
    assert isinstance(on_object_created(second, deps(s3, limits=one))[0], RecordingValidated)
