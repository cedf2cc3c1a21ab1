"""The message bus, once: publish events to EventBridge; consume them from a service's SQS queue.

The consumer loop long-polls, decodes the EventBridge envelope into our pydantic event,
dispatches to the handler registered for its type, publishes what the handler returns,
and deletes the message only then. A handler that is a generator has each event published
as it is yielded (the chunker announces a shard while it writes the next), still before
the message is deleted: a crash part-way re-runs the handler and repeats events, which
every consumer tolerates (the output-exists gates). A handler that raises leaves its message on the
queue: it becomes visible again after the visibility timeout and, after the queue's
maxReceiveCount, the redrive policy moves it to the dead-letter queue. While a handler
works, a heartbeat thread extends the message's visibility so a slow shard is never
handed to a second worker.

A worker that dies on a message's last delivery (killed, out of memory) runs no code to say
so: SQS moves the message to the dead-letter queue in silence. So the consumer also looks into
its dead-letter queue now and then (`dead_letter_sweep_s`) and hands each message it finds to
`on_dead_letter`, which tells the uploader unless someone already did. The messages stay
there for `neurocyte dlq redrive`.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from neurocyte_shared.messaging import health
from neurocyte_shared.messaging.events import EVENT_TYPES, Event, S3ObjectCreated
from neurocyte_shared.messaging.logs import emf

SOURCE = "neurocyte"
log = structlog.get_logger()

Message = Event | S3ObjectCreated
Handler = Callable[[Any], Sequence[Event] | Iterator[Event] | None]


class Deferred(Exception):
    """Raised by a handler that cannot act yet (an email address not yet confirmed, an upload
    whose files are still arriving): the message comes back after `retry_after_s`. It is sent
    again as a new message (SQS delays up to 15 min) and the old one deleted, so waiting
    never counts towards the dead-letter limit; the handler decides when to stop waiting."""

    def __init__(self, reason: str, retry_after_s: int = 300) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


MAX_SQS_DELAY_S = 900


class UndecodableMessage(Exception):
    """The message is not an event we know: it can never succeed, the DLQ will keep it."""


def encode(event: Event, bus_name: str) -> dict[str, Any]:
    return {
        "Source": SOURCE,
        "DetailType": type(event).__name__,
        "Detail": event.model_dump_json(),
        "EventBusName": bus_name,
    }


def decode(body: str) -> Message:
    """SQS body (an EventBridge event) -> our event model, or S3's Object Created detail."""
    try:
        envelope = json.loads(body)
        detail_type = envelope["detail-type"]
        source = envelope["source"]
        detail = envelope["detail"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UndecodableMessage(f"not an EventBridge event: {exc}") from exc
    try:
        if source == "aws.s3":
            return S3ObjectCreated.model_validate(detail)
        model = EVENT_TYPES.get(detail_type)
        if model is None:
            raise UndecodableMessage(f"unknown event type {detail_type!r}")
        return model.model_validate(detail)
    except ValidationError as exc:
        raise UndecodableMessage(f"{detail_type} does not match its schema: {exc}") from exc


class EventPublisher:
    """Publishes events to the Neurocyte EventBridge bus (PutEvents takes 10 at a time)."""

    def __init__(self, events_client: Any, bus_name: str) -> None:
        self._client = events_client
        self._bus = bus_name

    def publish(self, events: Iterable[Event]) -> None:
        batch = [encode(e, self._bus) for e in events]
        for i in range(0, len(batch), 10):
            entries = batch[i : i + 10]
            response = self._client.put_events(Entries=entries)
            if response.get("FailedEntryCount"):
                failed = [r for r in response["Entries"] if r.get("ErrorCode")]
                raise RuntimeError(f"EventBridge refused {len(failed)} event(s): {failed[:3]}")
            for entry in entries:
                log.info("event_published", type=entry["DetailType"])


@dataclass
class Consumer:
    """Polls one SQS queue and dispatches each message to the handler for its type."""

    sqs: Any
    queue_url: str
    handlers: Mapping[type[BaseModel], Handler]
    publish: Callable[[Sequence[Event]], None]
    wait_time_s: int = 20
    visibility_timeout_s: int = 120
    heartbeat_s: int = 30
    max_messages: int = 1
    # Called when a message fails on its last delivery (it goes to the dead-letter queue
    # next): returns events to publish, e.g. ProcessingFailed so the uploader hears of it.
    on_give_up: Callable[[Message, str], Sequence[Event]] | None = None
    max_receive_count: int | None = None  # read from the queue's redrive policy when None
    # Dead-lettered messages nobody announced (the worker died on their last delivery): each is
    # passed to on_dead_letter every dead_letter_sweep_s, which returns events to publish.
    on_dead_letter: Callable[[Message, str], Sequence[Event]] | None = None
    dead_letter_sweep_s: float = 60.0
    dead_letter_url: str | None = None  # read from the queue's redrive policy when None
    _next_sweep: float = 0.0
    _swept: set[str] = field(default_factory=set)  # letters already looked at, by message id
    _stop: threading.Event = field(default_factory=threading.Event)
    _busy: bool = False
    _base_context: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the message in hand, then exit; when idle, exit at once."""

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("stopping", signal=signal.Signals(signum).name, busy=self._busy)
            self._stop.set()
            if not self._busy:
                raise SystemExit(0)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self, *, max_idle_polls: int | None = None) -> None:
        self._base_context = structlog.contextvars.get_contextvars()
        if self.max_receive_count is None or (self.on_dead_letter and self.dead_letter_url is None):
            self._read_redrive_policy()
        log.info("consumer_started", queue=self.queue_url.rsplit("/", 1)[-1], max_receive_count=self.max_receive_count)
        idle = 0
        while not self._stop.is_set():
            if self.on_dead_letter and self.dead_letter_url and time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self.dead_letter_sweep_s
                self.sweep_dead_letters()
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.max_messages,
                WaitTimeSeconds=self.wait_time_s,
                VisibilityTimeout=self.visibility_timeout_s,
                AttributeNames=["ApproximateReceiveCount"],
            )
            health.touch()
            messages = response.get("Messages", [])
            if not messages:
                idle += 1
                if max_idle_polls is not None and idle >= max_idle_polls:
                    return
                continue
            idle = 0
            for message in messages:
                self.process(message)

    def process(self, message: Mapping[str, Any]) -> bool:
        """Handle one SQS message; True if it was acknowledged (deleted)."""
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        self._context(message_id=message["MessageId"], receive_count=receive_count)
        self._busy = True
        heartbeat = _Heartbeat(self.sqs, self.queue_url, message["ReceiptHandle"],
                               self.visibility_timeout_s, self.heartbeat_s)
        try:
            event = decode(message["Body"])
            self._bind(event)
            handler = self.handlers.get(type(event))
            if handler is None:
                # Routed here by mistake (a rule too wide): acknowledge, it is not ours.
                log.warning("no_handler", type=type(event).__name__)
            else:
                heartbeat.start()
                started = time.perf_counter()
                result = handler(event) or ()
                if isinstance(result, Iterator):  # published as they come, while the handler works on
                    n = 0
                    for produced_event in result:
                        self.publish([produced_event])
                        n += 1
                    heartbeat.stop()
                else:
                    produced = list(result)
                    heartbeat.stop()
                    if produced:
                        self.publish(produced)
                    n = len(produced)
                log.info("handled", seconds=round(time.perf_counter() - started, 3), produced=n)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            return True
        except Deferred as exc:
            heartbeat.stop()
            delay = max(0, min(int(exc.retry_after_s), MAX_SQS_DELAY_S))
            log.info("deferred", reason=str(exc), retry_after_s=delay)
            # Send the copy first: a crash between the two leaves a duplicate, never a loss.
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=message["Body"], DelaySeconds=delay)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            return True
        except UndecodableMessage as exc:
            heartbeat.stop()
            log.error("undecodable_message", error=str(exc)[:2000])
            return False
        except Exception as exc:
            heartbeat.stop()
            # Left on the queue: retried after the visibility timeout, then dead-lettered.
            log.exception("handler_failed")
            if self.max_receive_count and receive_count >= self.max_receive_count:
                self._gave_up(message, exc)
            return False
        finally:
            heartbeat.stop()
            self._busy = False
            if self._stop.is_set():
                raise SystemExit(0)

    def _read_redrive_policy(self) -> None:
        try:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"])
            policy = json.loads(attrs["Attributes"]["RedrivePolicy"])
            if self.max_receive_count is None:
                self.max_receive_count = int(policy["maxReceiveCount"])
            if self.on_dead_letter and self.dead_letter_url is None:
                name = policy["deadLetterTargetArn"].rsplit(":", 1)[-1]
                self.dead_letter_url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except Exception as exc:  # no policy, or no permission: no give-up notice, still safe
            log.warning("no_redrive_policy", error=str(exc)[:300])

    def sweep_dead_letters(self) -> int:
        """Pass the dead-lettered messages in view (up to 10 a sweep; SQS shows a sample of
        a larger queue, a different one each time) to on_dead_letter. Returns how many events
        that produced. They are looked at, not taken: VisibilityTimeout=0."""
        assert self.on_dead_letter is not None and self.dead_letter_url is not None
        self._context()
        try:
            found = self.sqs.receive_message(QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=0, WaitTimeSeconds=0).get("Messages", [])
        except Exception as exc:  # the queue's own work goes on; the next sweep tries again
            log.warning("dead_letter_sweep_failed", error=str(exc)[:300])
            return 0
        deliveries = self.max_receive_count or "all its"
        reason = (f"the worker stopped without finishing on each of {deliveries} deliveries "
                  "(it was killed, or ran out of memory)")
        produced: list[Event] = []
        for message in found:
            if message["MessageId"] in self._swept:  # a letter stays for days: one look is enough
                continue
            self._context(message_id=message["MessageId"])
            try:
                event = decode(message["Body"])
                self._bind(event)
                events = list(self.on_dead_letter(event, reason))
            except UndecodableMessage as exc:
                self._swept.add(message["MessageId"])
                log.error("undecodable_message", error=str(exc)[:2000])
                continue
            except Exception:  # e.g. S3 did not answer: looked at again next sweep
                log.exception("dead_letter_notice_failed")
                continue
            self._swept.add(message["MessageId"])
            if events:
                self._dead_lettered(reason, found_by="sweep")
                self.publish(events)
                produced.extend(events)
        self._context()
        return len(produced)

    def _context(self, **extra: Any) -> None:
        """The log context for what comes next: the service's, and `extra`; nothing of the
        previous message leaks."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**self._base_context, **extra)

    def _dead_lettered(self, error: str, **extra: Any) -> None:
        """The loud line: an error that is also a CloudWatch metric (embedded metric format)."""
        service = self._base_context.get("service", "unknown")
        log.error("dead_lettered", error=error, **extra, **emf("DeadLettered", Service=service))

    def _gave_up(self, message: Mapping[str, Any], exc: Exception) -> None:
        """The last delivery failed: the queue's redrive policy moves the message to the DLQ.
        Say so loudly: an error line that is also a CloudWatch metric (embedded metric
        format), and, when the handler's owner can tell whom, an event for the uploader."""
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        self._dead_lettered(reason)
        if self.on_give_up is None:
            return
        try:
            event = decode(message["Body"])
            produced = list(self.on_give_up(event, reason))
            if produced:
                self.publish(produced)
        except Exception:  # the notice is best effort; the message itself is safe in the DLQ
            log.exception("give_up_notice_failed")

    @staticmethod
    def _bind(event: Message) -> None:
        if isinstance(event, Event):
            structlog.contextvars.bind_contextvars(
                recording_id=event.correlation_id, event_type=type(event).__name__, event_id=event.event_id
            )
        else:
            structlog.contextvars.bind_contextvars(event_type="S3ObjectCreated", key=event.key)


class _Heartbeat:
    """Extends a message's visibility while its handler works."""

    def __init__(self, sqs: Any, queue_url: str, receipt: str, visibility_s: int, every_s: int) -> None:
        self._sqs, self._queue_url, self._receipt = sqs, queue_url, receipt
        self._visibility_s, self._every_s = visibility_s, every_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._every_s > 0:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
            self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(self._every_s):
            try:
                self._sqs.change_message_visibility(
                    QueueUrl=self._queue_url, ReceiptHandle=self._receipt, VisibilityTimeout=self._visibility_s
                )
                log.debug("heartbeat", visibility_s=self._visibility_s)
            except Exception as exc:  # a failed beat must not kill the work; the next one may pass
                log.warning("heartbeat_failed", error=str(exc))

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
            self._thread = None
