"""The aggregator's handler against in-memory S3: nothing until every shard is in, then one
version published with summary.json last, and the same answer for a duplicate."""

import json

import numpy as np

from neurocyte_aggregator.handlers import Deps, on_shard_detected
from neurocyte_shared.formats.info import RecordingInfo
from neurocyte_shared.messaging.events import RecordingRef, RecordingSummarized, ShardDetected
from neurocyte_shared.science.table import SpikeTable
from neurocyte_shared.science.waveforms import Waveforms
from neurocyte_shared.storage import layout, spikes
from neurocyte_shared.storage.documents import RecordingDocument

from .conftest import DATA, UPLOADS

PREFIX = "recordings/tenant=lab/date=2026-12-03/r1/"


def setup_recording(s3) -> None:
    info = RecordingInfo(format="binary", sampling_rate_hz=1000.0, n_channels=2, n_samples=20_000, dtype="int16",
                         gain_uv=1.0, offset_uv=0.0, channel_ids=("a", "b"),
                         channel_locations_um=((0.0, 0.0), (0.0, 20.0)))
    doc = RecordingDocument(recording_id="r1", recording_name="slice", tenant="lab", uploader_email="ana@lab.org",
                            upload_bucket=UPLOADS, upload_keys=("uploads/lab/r1/rec.bin",), info=info)
    s3.put(DATA, layout.recording_document_key(PREFIX), doc.model_dump_json())
    s3.put(UPLOADS, "uploads/lab/r1/rec.bin", b"x")


def shard(s3, i: int, waveforms: bool = False, verified: bool = False,
          artefacts: list[int] | None = None) -> ShardDetected:
    t = np.arange(i * 10_000, (i + 1) * 10_000, 50, dtype=np.int64)
    table = SpikeTable(t, (t // 50 % 2).astype(np.int32), np.full(t.size, -60.0, np.float32))
    key = layout.shard_spikes_key(PREFIX, i, "abc")
    sums = None
    if waveforms:  # what the detector writes: each electrode's waveform sums
        sums = Waveforms.empty(2, 1000.0)
        sums.add(np.linspace(-60, 0, 10_000, dtype=np.float32)[:, None].repeat(2, 1), t - i * 10_000,
                 table.channel_index)
    s3.put(DATA, key, spikes.to_parquet_bytes(table, None, sums, artefacts=artefacts, samples_verified=verified))
    return ShardDetected(correlation_id="r1", recording=RecordingRef(tenant="lab", prefix=PREFIX), shard_index=i,
                         n_shards=2, spikes_key=key, n_spikes=len(table), n_samples=10_000, seconds=0.1)


def test_waits_for_every_shard_then_publishes_one_version_with_the_summary_last(s3):
    setup_recording(s3)
    deps = Deps(s3=s3, data_bucket=DATA)
    assert on_shard_detected(shard(s3, 0), deps) == []
    assert not any(k.endswith("summary.json") for k in s3.keys(DATA))
    (done,) = on_shard_detected(shard(s3, 1), deps)
    assert isinstance(done, RecordingSummarized) and done.total_spikes == 400
    results = [k for k in s3.keys(DATA, PREFIX + "results/")]
    assert {k.rsplit("/", 1)[1] for k in results} >= {"summary.json", "report.html", "spikes.parquet"}
    assert not any(k.endswith("waveforms.png") for k in results)  # shards without waveform sums
    written = [k for b, k in s3.objects if k.startswith(PREFIX + "results/")]  # in the order first written
    assert written[-1].endswith("summary.json")
    assert s3.objects[(UPLOADS, "uploads/lab/r1/rec.bin")].tags == {"neurocyte-processed": "true"}
    again = on_shard_detected(shard(s3, 1), deps)  # a duplicate: the same answer, nothing rewritten
    assert again[0].summary_key == done.summary_key and again[0].total_spikes == 400


def test_the_waveforms_the_detector_summed_are_drawn_only_when_every_shard_has_them(s3):
    setup_recording(s3)
    deps = Deps(s3=s3, data_bucket=DATA)
    on_shard_detected(shard(s3, 0, waveforms=True), deps)
    (done,) = on_shard_detected(shard(s3, 1, waveforms=True), deps)
    names = {k.rsplit("/", 1)[1] for k in s3.keys(DATA, done.summary_key.rsplit("/", 1)[0])}
    assert "waveforms.png" in names and "raster.png" in names


def test_the_stimulation_artefacts_of_every_shard_are_in_the_summary(s3):
    setup_recording(s3)
    deps = Deps(s3=s3, data_bucket=DATA)
    on_shard_detected(shard(s3, 1, artefacts=[12_000]), deps)  # shards arrive in any order
    (done,) = on_shard_detected(shard(s3, 0, artefacts=[2_000, 7_000]), deps)
    quality = json.loads(s3.objects[(DATA, done.summary_key)].body)["quality"]
    assert quality["stimulation_artefacts_s"] == [2.0, 7.0, 12.0]
    assert any("3 stimulation artefacts were found (one every 5 s" in n for n in quality["notes"])
    assert done.stimuli == 3 and done.responding_electrodes is None  # too few to measure a response


def test_with_five_stimuli_or_more_the_response_is_measured_drawn_and_emailed(s3):
    setup_recording(s3)
    deps = Deps(s3=s3, data_bucket=DATA)
    on_shard_detected(shard(s3, 0, artefacts=[1_000, 3_000, 5_000]), deps)
    (done,) = on_shard_detected(shard(s3, 1, artefacts=[11_000, 13_000, 15_000]), deps)
    summary = json.loads(s3.objects[(DATA, done.summary_key)].body)
    # electrode a fires on every stimulus (its regular firing falls on them), b 50 ms after: a responds
    response = summary["stimulus_response"]
    assert response["stimuli"] == 6 and [e["channel_index"] for e in response["electrodes"]] == [0]
    assert response["electrodes"][0]["median_latency_ms"] == 0.0
    assert done.stimuli == 6 and done.responding_electrodes == 1 and done.response_latency_ms == 0.0
    names = {k.rsplit("/", 1)[1] for k in s3.keys(DATA, done.summary_key.rsplit("/", 1)[0])}
    assert "stimulus_response.png" in names


def test_a_raw_upload_is_released_only_when_every_shard_was_checked_against_it(s3):
    """Archive (the default) or delete (the lab's choice) only once every shard's decoded
    samples matched the upload's digest; one unchecked shard keeps the raw files as they are."""
    import json

    setup_recording(s3)
    deps = Deps(s3=s3, data_bucket=DATA)
    on_shard_detected(shard(s3, 0, verified=True), deps)
    on_shard_detected(shard(s3, 1, verified=False), deps)
    assert s3.objects[(UPLOADS, "uploads/lab/r1/rec.bin")].tags == {"neurocyte-processed": "true"}

    for choice, expected in ((None, "archive"), ("delete", "delete")):
        s3.objects = {k: v for k, v in s3.objects.items() if not k[1].startswith(PREFIX + "results/")}
        if choice:
            s3.put(DATA, "usage/tenant=lab/settings.json", json.dumps({"raw_upload": choice}))
        shard(s3, 0, verified=True)
        on_shard_detected(shard(s3, 1, verified=True), deps)
        assert s3.objects[(UPLOADS, "uploads/lab/r1/rec.bin")].tags == {"neurocyte-processed": "true",
                                                                      "neurocyte-raw": expected}
