import json

import pytest
from pydantic import ValidationError

from neurocyte_shared.bus import UndecodableMessage, decode, encode
from neurocyte_shared.events import RecordingRef, ShardDetected, ShardReady

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

    from neurocyte_shared.manifest import UploadManifest

    files = [{"name": "a.bin", "size_bytes": 1}]
    with pytest.raises(ValidationError):
        UploadManifest(uploader_email="a@example.org", recording_name="x\r\nBcc: victim@example.org", files=files)
    with pytest.raises(ValidationError):
        UploadManifest(uploader_email="a@example.org\nBcc: b@example.org", files=files)
    assert UploadManifest(uploader_email="a@example.org", recording_name="slice 3, DIV 21", files=files)
