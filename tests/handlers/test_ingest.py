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
