"""Upload in, email out, against a real LocalStack over HTTP and the five services as processes."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from neurocyte_shared.messaging.bus import encode
from neurocyte_shared.messaging.events import ShardDetected
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording
from neurocyte_shared.storage import spikes

from .conftest import mail_body as _body
from .conftest import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    spec = SyntheticSpec(n_channels=32, duration_s=20.0, n_units=16, seed=7)
    folder = tmp_path_factory.mktemp("rec")
    bin_path, json_path, gt = write_recording(folder, "gt", spec)
    return {"gt.bin": bin_path.read_bytes(), "gt.json": json_path.read_bytes()}, gt


@pytest.fixture(scope="module")
def processed(stack, recording):
    files, gt = recording
    email, rid = "alice@example.org", f"gt-{uuid.uuid4().hex[:8]}"
    stack.upload(files, email=email, tenant="alice", rid=rid)
    mail = wait_for(lambda: [m for m in stack.mail_to(email) if rid in json.dumps(m)], 240, "the result email")
    prefix = next(k for k in stack.keys("recordings/tenant=alice/") if f"/{rid}/" in k).split(f"/{rid}/")[0]
    return {"rid": rid, "email": email, "mail": mail, "prefix": f"{prefix}/{rid}/", "gt": gt}


def _result(stack, prefix: str) -> str:
    """The one published result version of a recording: its folder."""
    found = [k for k in stack.keys(prefix + "results/") if k.endswith("/summary.json")]
    assert len(found) == 1, found
    return found[0][: -len("summary.json")]


def test_result_email_carries_the_headline_figures(processed):
    assert len(processed["mail"]) == 1
    body = _body(processed["mail"][0])
    for words in ("Total spikes:", "Active electrodes:", "Mean firing rate:", "Duration:            20.0 s",
                  "Channels:            32", "Network bursts:", "Synchrony (STTC):", processed["rid"],
                  "This link works until"):
        assert words in body


def test_email_links_to_the_report_which_opens(stack, processed):
    """The pre-signed link in the email opens the HTML report, pictures inlined; the version
    folder holds summary, spike table, report and the four pictures."""
    import re

    import requests

    body = _body(processed["mail"][0])
    url = re.search(r"(https?://\S+report\.html\S*)", body).group(1)
    page = requests.get(url, timeout=30)
    assert page.status_code == 200, page.text[:300]
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Parameters used" in page.text and page.text.count("data:image/png;base64,") == 5
    assert "Reproducibility receipt" in page.text and "detection_parameters_hash" in page.text
    # The link opens that one object: pointed at another object, or tampered, it is refused.
    other = url.replace("report.html", "summary.json", 1)
    assert requests.get(other, timeout=30).status_code == 403
    forged = url.replace("alice", "bob", 1)  # the same path in another tenant's results
    assert forged != url and requests.get(forged, timeout=30).status_code == 403
    folder = _result(stack, processed["prefix"])
    names = {k[len(folder):] for k in stack.keys(folder)}
    assert names == {"summary.json", "spikes.parquet", "report.html", "activity_map.png", "waveforms.png",
                     "raster.png", "population_rate.png", "isi_histogram.png"}


def test_spike_counts_per_channel_match_the_planted_spikes(stack, processed):
    """Tolerance: on each unit's channel, within 5 % + 3 spikes of what was planted. Planted
    spikes are lost only when two units near each other fire within the 1 ms dead time
    (rates of 1-12 Hz give a few per cent at most); channels without a unit may see a few
    detections where two neighbouring units' waveforms overlap, fewer than 1 % of the total."""
    from neurocyte_shared.storage import s3io

    gt = processed["gt"]
    folder = _result(stack, processed["prefix"])
    summary = s3io.get_json(stack.s3, stack.data, folder + "summary.json")
    got = np.array([c["spike_count"] for c in summary["channels"]])
    want = gt.spikes_per_channel()
    units = want > 0
    assert np.all(np.abs(got[units] - want[units]) <= 0.05 * want[units] + 3), np.c_[want, got][units]
    assert got[~units].sum() <= 0.01 * want.sum()
    assert summary["total_spikes"] == got.sum()
    table = spikes.from_parquet_bytes(s3io.get_bytes(stack.s3, stack.data, folder + "spikes.parquet"))
    assert len(table) == summary["total_spikes"]
    assert np.all(np.diff(table.sample_index) >= 0)
    body = _body(processed["mail"][0])
    assert f"Total spikes:        {summary['total_spikes']:,}" in body


def test_duplicate_shard_detected_gives_one_summary_and_one_email(stack, processed):
    from neurocyte_shared.messaging.events import RecordingRef

    prefix = processed["prefix"]
    summary_key = _result(stack, prefix) + "summary.json"
    before = stack.s3.head_object(Bucket=stack.data, Key=summary_key)["ETag"]
    tenant = "alice"
    shard_keys = sorted(stack.keys(prefix + "spikes/"))
    event = ShardDetected(correlation_id=processed["rid"], recording=RecordingRef(tenant=tenant, prefix=prefix),
                          shard_index=0, n_shards=len(shard_keys), spikes_key=shard_keys[0],
                          n_spikes=1, n_samples=1, seconds=0.0)
    for _ in range(2):  # the same event, delivered twice more
        stack.events.put_events(Entries=[encode(event, stack.outputs["EventBusName"])])
    wait_for(lambda: stack.queue_idle("Aggregator") and stack.queue_idle("Notifier"), 60,
             "the aggregator and notifier to drain their queues")
    # The duplicates really went through: the notifier saw them and declined a second email.
    wait_for(lambda: sum(1 for ln in (stack.local.logs / "notifier-0.log").read_text().splitlines()
                         if "already_notified" in ln and processed["rid"] in ln) >= 2, 30,
             "the notifier to decline both duplicates")
    after = stack.s3.head_object(Bucket=stack.data, Key=summary_key)["ETag"]
    assert after == before
    assert len([m for m in stack.mail_to(processed["email"]) if processed["rid"] in json.dumps(m)]) == 1


@pytest.mark.parametrize("case", ["truncated", "sidecar_disagrees"])
def test_malformed_upload_gets_a_rejection_email_and_no_summary(stack, recording, case):
    files, _ = recording
    files = dict(files)
    if case == "truncated":
        files["gt.bin"] = files["gt.bin"][:-37]  # an interrupted upload: a partial last frame
        expected = "not a whole number of frames"
    else:
        sidecar = json.loads(files["gt.json"])
        sidecar["channel_locations_um"] = sidecar["channel_locations_um"][:-1]
        files["gt.json"] = json.dumps(sidecar).encode()
        expected = "channel_locations_um lists 31 positions but n_channels is 32"
    email, rid = f"bob.{case.replace('_', '')}@example.org", f"bad-{case.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    stack.upload(files, email=email, tenant="bob", rid=rid)
    mail = wait_for(lambda: stack.mail_to(email), 120, "the rejection email")
    body = _body(mail[0])
    assert "could not be processed" in body or "was not processed" in body
    assert expected in body
    wait_for(lambda: stack.queue_idle("Ingest") and stack.queue_idle("Notifier"), 60, "queues to drain")
    keys = [k for k in stack.keys("recordings/tenant=bob/") if f"/{rid}/" in k]
    assert [k.rsplit("/", 1)[1] for k in keys] == ["rejected.json"]  # no recording, shards or summary
    assert len(stack.mail_to(email)) == 1


def test_every_event_replayed_out_of_order_changes_nothing(stack, processed):
    """All shard events of a finished recording delivered again, last shard first: the
    detector's output-exists gate reuses each table, the aggregator finds the result
    published, the notifier declines a second email. Nothing is rewritten."""
    from neurocyte_shared.messaging.events import RecordingRef, ShardReady
    from neurocyte_shared.storage import s3io

    prefix, rid = processed["prefix"], processed["rid"]
    ref = RecordingRef(tenant="alice", prefix=prefix)
    meta = s3io.get_json(stack.s3, stack.data, prefix + "raw.zarr/zarr.json")
    n, window = meta["shape"][0], meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    shards = sorted(stack.keys(prefix + "spikes/"))
    written = {k: stack.s3.head_object(Bucket=stack.data, Key=k)["LastModified"] for k in shards}
    summary_key = _result(stack, prefix) + "summary.json"
    before = stack.s3.head_object(Bucket=stack.data, Key=summary_key)["ETag"]
    events = [ShardReady(correlation_id=rid, recording=ref, store_key=prefix + "raw.zarr", shard_index=i,
                         n_shards=len(shards), start_sample=i * window, stop_sample=min(n, (i + 1) * window))
              for i in reversed(range(len(shards)))]
    for event in events:
        stack.events.put_events(Entries=[encode(event, stack.outputs["EventBusName"])])
    logs = lambda name: "".join(p.read_text() for p in stack.local.logs.glob(f"{name}-*.log"))  # noqa: E731
    wait_for(lambda: sum(1 for ln in logs("detector").splitlines()
                         if "shard_already_detected" in ln and rid in ln) >= len(shards), 120,
             "the detector to reuse every shard table")
    wait_for(lambda: all(stack.queue_idle(q) for q in ("Detector", "Aggregator", "Notifier")), 120, "queues to drain")
    assert {k: stack.s3.head_object(Bucket=stack.data, Key=k)["LastModified"] for k in shards} == written
    assert stack.s3.head_object(Bucket=stack.data, Key=summary_key)["ETag"] == before
    assert len([m for m in stack.mail_to(processed["email"]) if rid in json.dumps(m)]) == 1


def test_other_parameters_make_a_new_version_beside_the_published_one(stack, processed):
    """Reprocessing with other metrics parameters (the aggregator's handler, run here against
    the same LocalStack) writes a second complete version; the first is untouched."""
    from neurocyte_aggregator.handlers import Deps, on_shard_detected
    from neurocyte_shared.messaging.events import RecordingRef
    from neurocyte_shared.science.metrics import MetricsParams
    from neurocyte_shared.storage import s3io

    prefix = processed["prefix"]
    first = _result(stack, prefix)
    first_files = {k: stack.s3.head_object(Bucket=stack.data, Key=k)["ETag"] for k in stack.keys(first)}
    shards = sorted(stack.keys(prefix + "spikes/"))
    event = ShardDetected(correlation_id=processed["rid"], recording=RecordingRef(tenant="alice", prefix=prefix),
                          shard_index=0, n_shards=len(shards), spikes_key=shards[0], n_spikes=0, n_samples=1,
                          seconds=0.0)
    out = on_shard_detected(event, Deps(s3=stack.s3, data_bucket=stack.data,
                                        metrics=MetricsParams(burst_min_spikes=3)))
    assert out and out[0].summary_key.startswith(prefix + "results/") and not out[0].summary_key.startswith(first)
    versions = sorted(k for k in stack.keys(prefix + "results/") if k.endswith("/summary.json"))
    assert len(versions) == 2
    assert {k: stack.s3.head_object(Bucket=stack.data, Key=k)["ETag"] for k in stack.keys(first)} == first_files
    second = out[0].summary_key[: -len("summary.json")]
    assert len(stack.keys(second)) == len(first_files)  # complete: spikes, report, 4 pictures, summary
    assert s3io.get_json(stack.s3, stack.data, out[0].summary_key)["parameters"]["metrics"]["burst_min_spikes"] == 3


def test_the_same_content_uploaded_again_is_not_processed_twice_unless_asked(stack, recording, processed):
    """Same bytes, another upload: recognised by content, one email saying so, nothing processed.
    With "reprocess": true it goes through the whole pipeline again."""
    files, _ = recording
    email = processed["email"]
    again = f"again-{uuid.uuid4().hex[:8]}"
    stack.upload(files, email=email, tenant="alice", rid=again)
    mail = wait_for(lambda: [m for m in stack.mail_to(email) if again in json.dumps(m)], 120, "the duplicate email")
    body = _body(mail[0])
    assert "exactly the same content" in body and processed["rid"] in body, body
    assert "Its results were published then" in body and "--reprocess" in body
    assert not [k for k in stack.keys("recordings/tenant=alice/") if f"/{again}/" in k]  # nothing processed

    forced = f"forced-{uuid.uuid4().hex[:8]}"
    stack.upload(files, email=email, tenant="alice", rid=forced, reprocess=True)
    mail = wait_for(lambda: [m for m in stack.mail_to(email) if forced in json.dumps(m)], 240, "the result email")
    assert "Total spikes:" in _body(mail[0])
    assert len([m for m in stack.mail_to(email) if again in json.dumps(m)]) == 1
