"""The shared consumer loop, with a fake SQS (a subclass-free stand-in holding real state)."""

import json

from neurocyte_shared.messaging.bus import Consumer, Deferred, encode
from neurocyte_shared.messaging.events import RecordingRef, ShardDetected, ShardReady

REF = RecordingRef(tenant="t", prefix="p/")


class FakeSQS:
    def __init__(self, bodies):
        self.queue = [{"MessageId": str(i), "ReceiptHandle": f"r{i}", "Body": b} for i, b in enumerate(bodies)]
        self.deleted, self.visibility, self.sent = [], {}, []

    def receive_message(self, **kw):
        return {"Messages": self.queue[:1]} if self.queue else {}

    def delete_message(self, QueueUrl, ReceiptHandle):
        self.deleted.append(ReceiptHandle)
        self.queue = [m for m in self.queue if m["ReceiptHandle"] != ReceiptHandle]

    def send_message(self, QueueUrl, MessageBody, DelaySeconds=0):
        self.sent.append((MessageBody, DelaySeconds))

    def change_message_visibility(self, QueueUrl, ReceiptHandle, VisibilityTimeout):
        self.visibility[ReceiptHandle] = VisibilityTimeout


def _body(event):
    e = encode(event, "bus")
    return json.dumps({"detail-type": e["DetailType"], "source": e["Source"], "detail": json.loads(e["Detail"])})


READY = ShardReady(correlation_id="r", recording=REF, store_key="k", shard_index=0, n_shards=1,
                   start_sample=0, stop_sample=1)


def _consumer(sqs, handler, published):
    return Consumer(sqs=sqs, queue_url="q", handlers={ShardReady: handler}, publish=published.extend,
                    wait_time_s=0, heartbeat_s=0)


def test_success_publishes_then_deletes():
    published = []
    out = ShardDetected(correlation_id="r", recording=REF, shard_index=0, n_shards=1, spikes_key="s",
                        n_spikes=1, n_samples=1, seconds=0.0)
    sqs = FakeSQS([_body(READY)])
    assert _consumer(sqs, lambda e: [out], published).process(sqs.queue[0])
    assert published == [out] and sqs.deleted == ["r0"]


def test_a_generator_handler_publishes_each_event_before_it_goes_on():
    outs = [ShardDetected(correlation_id="r", recording=REF, shard_index=i, n_shards=2, spikes_key="s",
                          n_spikes=1, n_samples=1, seconds=0.0) for i in range(2)]
    published, seen_while_working = [], []

    def handler(e):
        for out in outs:
            yield out
            seen_while_working.append(len(published))  # what was published when the handler resumed

    sqs = FakeSQS([_body(READY)])
    assert _consumer(sqs, handler, published).process(sqs.queue[0])
    assert seen_while_working == [1, 2] and published == outs and sqs.deleted == ["r0"]


def test_a_generator_that_fails_part_way_keeps_the_message():
    out = ShardDetected(correlation_id="r", recording=REF, shard_index=0, n_shards=2, spikes_key="s",
                        n_spikes=1, n_samples=1, seconds=0.0)

    def handler(e):
        yield out
        raise RuntimeError("killed")

    published = []
    sqs = FakeSQS([_body(READY)])
    assert not _consumer(sqs, handler, published).process(sqs.queue[0])
    assert published == [out] and sqs.deleted == []  # redelivered; the repeat is harmless downstream


def test_failure_leaves_the_message_for_redrive():
    def boom(e):
        raise RuntimeError("disk full")

    published = []
    sqs = FakeSQS([_body(READY)])
    assert not _consumer(sqs, boom, published).process(sqs.queue[0])
    assert sqs.deleted == [] and published == []


def test_deferred_comes_back_as_a_new_message_so_waiting_never_dead_letters():
    def later(e):
        raise Deferred("not yet", retry_after_s=3600)

    sqs = FakeSQS([_body(READY)])
    assert _consumer(sqs, later, []).process(sqs.queue[0])
    assert sqs.sent == [(_body(READY), 900)]  # SQS's longest delay; the handler defers again if need be
    assert sqs.deleted == ["r0"]


def test_poison_message_is_not_acknowledged():
    sqs = FakeSQS(["{garbage"])
    assert not _consumer(sqs, lambda e: [], []).process(sqs.queue[0])
    assert sqs.deleted == []


def test_a_dead_letter_nobody_announced_is_announced_and_left_in_its_queue():
    from neurocyte_shared.messaging.events import ProcessingFailed

    failed = ProcessingFailed(correlation_id="r", recording=REF, recording_name="n", uploader_email="a@b.org",
                              stage="detector", reason="x")
    dead = FakeSQS([_body(READY), "not an event"])
    dead.receive_message = lambda **kw: {"Messages": dead.queue}  # a sweep sees all of a small queue
    seen, published = [], []

    def on_dead_letter(event, reason):
        seen.append((event, reason))
        return [failed] if len(seen) == 1 else []  # the second look finds it already announced

    consumer = _consumer(dead, lambda e: [], published)
    consumer.on_dead_letter, consumer.dead_letter_url, consumer.max_receive_count = on_dead_letter, "dlq", 3
    assert consumer.sweep_dead_letters() == 1 and published == [failed]
    assert seen[0][0] == READY and "each of 3 deliveries" in seen[0][1] and "killed" in seen[0][1]
    assert consumer.sweep_dead_letters() == 0 and published == [failed]
    assert dead.deleted == [] and len(dead.queue) == 2  # kept for `neurocyte dlq redrive`
