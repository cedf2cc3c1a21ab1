"""The notifier's handler against in-memory S3 and SNS: one email per recording and kind."""

from neurocyte_notifier.handlers import Deps, on_recording_rejected, on_recording_summarized
from neurocyte_shared.messaging.events import RecordingRef, RecordingRejected, RecordingSummarized

from .conftest import DATA

TOPIC = "arn:aws:sns:us-east-1:000000000000:mail"


def deps(s3, sns):
    return Deps(sns=sns, s3=s3, topic_arn=TOPIC, data_bucket=DATA)


def summarized(**kw):
    return RecordingSummarized(correlation_id="r1", recording=RecordingRef(tenant="lab", prefix="recordings/x/r1/"),
                               recording_name="slice 3", uploader_email="ana@lab.org", summary_key="s",
                               spikes_key="p", total_spikes=10, active_electrodes=2, n_channels=8,
                               mean_firing_rate_hz=1.0, duration_s=2.0, **kw)


def test_one_email_for_duplicates_and_the_claim_is_marked_done(s3, sns):
    event = summarized()
    on_recording_summarized(event, deps(s3, sns))
    on_recording_summarized(summarized(), deps(s3, sns))  # another event for the same recording
    assert len(sns.published) == 1
    assert sns.published[0]["MessageAttributes"]["recipient"]["StringValue"] == "ana@lab.org"
    (marker,) = s3.keys(DATA, "notifications/lab/r1/")
    assert marker.endswith("summary.json")
    import json

    assert json.loads(s3.objects[(DATA, marker)].body)["state"] == "done"


def test_a_redelivery_after_a_crash_before_the_send_still_sends(s3, sns):
    event = summarized()
    s3.put(DATA, "notifications/lab/r1/summary.json", f'{{"event_id": "{event.event_id}", "state": "claimed"}}')
    on_recording_summarized(event, deps(s3, sns))
    assert len(sns.published) == 1


def test_each_address_is_subscribed_once_with_a_filter_on_its_own_mail(s3, sns):
    on_recording_summarized(summarized(), deps(s3, sns))
    on_recording_rejected(RecordingRejected(correlation_id="r2", tenant="lab", upload_key="k", reason="bad",
                                            uploader_email="ana@lab.org"), deps(s3, sns))
    assert len(sns.subscriptions) == 1 and len(sns.published) == 2
    assert '"ana@lab.org"' in sns.subscriptions[0]["Attributes"]["FilterPolicy"]


def test_a_rejection_without_an_address_sends_nothing(s3, sns):
    event = RecordingRejected(correlation_id="r3", tenant="lab", upload_key="k", reason="unreadable manifest")
    assert on_recording_rejected(event, deps(s3, sns)) == [] and sns.published == []


def test_the_last_email_of_a_recording_frees_its_labs_slot_and_a_refused_retry_does_not(s3, sns):
    from neurocyte_shared.storage import usage

    for rid in ("r1", "r2"):
        usage.record(s3, DATA, "lab", "2026-12", rid, 2.0)
    on_recording_summarized(summarized(), deps(s3, sns))
    # A second upload under r2's id was refused: r2 itself is still being processed.
    on_recording_rejected(RecordingRejected(correlation_id="r2", tenant="lab", upload_key="k", reason="id taken",
                                            uploader_email="ana@lab.org", attempt="v2"), deps(s3, sns))
    from datetime import UTC, datetime

    assert usage.in_flight(s3, DATA, "lab", datetime.now(UTC)) == ["r2"]
    assert usage.hours_used(s3, DATA, "lab", "2026-12") * 3600 == 4.0  # the month's usage stays


def test_the_email_states_the_response_to_stimulation_when_there_were_stimuli():
    from neurocyte_notifier.messages import summary_email

    assert "Stimulation" not in summary_email(summarized())[1]
    few = summary_email(summarized(stimuli=3))[1]
    assert "3 stimuli (too few to measure a response)" in few
    body = summary_email(summarized(stimuli=60, responding_electrodes=12, response_latency_ms=11.94))[1]
    assert "Stimulation:         12 electrodes respond to 60 stimuli, median latency 11.9 ms" in body
