import json

import pytest
from pydantic import ValidationError

from neurocyte_shared.messaging.bus import UndecodableMessage, decode, encode
from neurocyte_shared.messaging.events import RecordingRef, ShardDetected, ShardReady

REF = RecordingRef(tenant="t", prefix="recordings/tenant=t/date=2026-01-01/r1/")


def _wire(event):
    entry = encode(event, "bus")
    return json.dumps({"version": "0", "id": "x", "detail-type": entry["DetailType"], "source": entry["Source"],
                       "account": "0", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
                       "resources": [], "detail": json.loads(entry["Detail"])})


def test_round_trip_through_the_eventbridge_envelope():
    e = ShardReady(correlation_id="r1", recording=REF, store_key="k", shard_index=1, n_shards=3,
                   start_sample=10, stop_sample=20)
    back = decode(_wire(e))
    assert back == e and type(back) is ShardReady
    assert back.recording_id == "r1" and back.schema_version == 1


def test_events_are_immutable_and_strict():
    e = ShardDetected(correlation_id="r1", recording=REF, shard_index=0, n_shards=1, spikes_key="k",
                      n_spikes=3, n_samples=10, seconds=0.1)
    with pytest.raises(ValidationError):
        e.n_spikes = 4  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ShardDetected(correlation_id="r1", recording=REF, shard_index=0, n_shards=1, spikes_key="k",
                      n_spikes=3, n_samples=10, seconds=0.1, surprise=1)


def test_unknown_or_broken_messages_are_undecodable():
    with pytest.raises(UndecodableMessage):
        decode("not json")
    with pytest.raises(UndecodableMessage):
        decode(json.dumps({"detail-type": "Nope", "source": "neurocyte", "detail": {}}))
    with pytest.raises(UndecodableMessage):
        decode(json.dumps({"detail-type": "ShardReady", "source": "neurocyte", "detail": {"x": 1}}))


def test_recording_name_cannot_inject_lines_into_an_email():
    import pytest
    from pydantic import ValidationError

    from neurocyte_shared.storage.documents import UploadManifest

    files = [{"name": "a.bin", "size_bytes": 1}]
    with pytest.raises(ValidationError):
        UploadManifest(uploader_email="a@example.org", recording_name="x\r\nBcc: victim@example.org", files=files)
    with pytest.raises(ValidationError):
        UploadManifest(uploader_email="a@example.org\nBcc: b@example.org", files=files)
    assert UploadManifest(uploader_email="a@example.org", recording_name="slice 3, DIV 21", files=files)


def test_upload_fingerprint_is_what_s3_holds_never_what_the_manifest_claims():
    from neurocyte_ingest.handlers import _fingerprint
    from neurocyte_shared.storage.documents import UploadManifest

    def manifest(*files):
        return UploadManifest(uploader_email="a@b.org", files=files)

    one = manifest({"name": "a.bin", "size_bytes": 10, "sha256": "ab" * 32}, {"name": "a.json", "size_bytes": 3})
    renamed = manifest({"name": "b.json", "size_bytes": 3}, {"name": "b.bin", "size_bytes": 10})
    claims_other = manifest({"name": "a.bin", "size_bytes": 10, "sha256": "cd" * 32},
                            {"name": "a.json", "size_bytes": 3})
    fp = _fingerprint(one, {"a.bin": "x", "a.json": "e1"})
    assert fp == _fingerprint(renamed, {"b.bin": "x", "b.json": "e1"})  # names ignored
    assert fp == _fingerprint(claims_other, {"a.bin": "x", "a.json": "e1"})  # a claimed hash is not evidence
    assert fp != _fingerprint(one, {"a.bin": "y", "a.json": "e1"})  # other bytes in S3
    assert fp != _fingerprint(one, {"a.bin": "x", "a.json": "e2"})  # the sidecar's ETag differs


def test_names_refuse_invisible_and_line_breaking_characters_and_addresses_have_one_form():
    from pydantic import ValidationError

    from neurocyte_shared.storage.documents import UploadManifest

    files = [{"name": "a.nwb", "size_bytes": 1}]
    for bad in ("slice\u2028three", "slice\u0085three", "evil\u202etxt.exe", "zero\u200bwidth"):
        with pytest.raises(ValidationError):
            UploadManifest(uploader_email="a@b.org", recording_name=bad, files=files)
    m = UploadManifest(uploader_email="CaseTest@Lab.ORG", recording_name="Ünïcode names are fine", files=files)
    assert m.uploader_email == "CaseTest@lab.org"  # the domain lower-cased, the local part as given
    with pytest.raises(ValidationError, match="at most 64"):
        UploadManifest(uploader_email="a@b.org", files=[{"name": f"f{i}.bin", "size_bytes": 1} for i in range(65)])
