"""S3 object-created notifications from SQS, turned into Prefect events.

A self-hosted Prefect server has no webhooks, so S3 → SQS → this bridge → ``POST
/api/events`` is how an upload starts a deployment. Each created object becomes
one ``aws.s3.object.created`` event (resource ``aws.s3.bucket.<bucket>``, labels
``aws.s3.bucket`` and ``aws.s3.object.kind``; payload key (URL-decoded), size,
etag, event_name, event_time). Trigger ``match`` works on resource labels, not on
the payload, so the key's kind (``jobspec``, ``reasoner-log``, ``image``, ``other``)
is a label.

Delivery: ``prefect.events.emit_event`` sends over a websocket without any
acknowledgement, so the bridge posts to the REST endpoint through Prefect's own
client instead (``PREFECT_API_URL``, ``PREFECT_API_AUTH_STRING`` / ``PREFECT_API_KEY``,
its retries); the server answers 204 once it has taken the events. Only then is the
message deleted. A refused or unreachable API leaves the message on the queue
(visible again after the queue block's ``retry_delay_seconds``; the redrive policy
moves one that keeps being refused to the dead-letter queue). Test events and
other event names are deleted; a body that is not an S3 notification is set aside
to the dead-letter queue with its reason, exactly as the image queue source does.

Duplicates: event ids are derived from (bucket, key, version, sequencer) — or ETag
and event time where S3 sends no sequencer — so a redelivered message produces the
same id. The Prefect server (3.8) stores an id once and its triggers skip an id
they processed in the last 30 minutes (in memory, so not across a server restart):
a redelivery does not start a second flow run, while a new upload of the same key
(new sequencer) does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from botocore.exceptions import BotoCoreError
from prefect.events import Event
from prefect.exceptions import PrefectHTTPStatusError

from blocks.sqs import SqsQueue
from infergraph.aws.sqs_leases import QueueError, SqsLeases
from infergraph.inference.sources.base import IMAGE_SUFFIXES, SourceError
from infergraph.inference.sources.messages import MalformedMessage, S3Object, parse_body
from infergraph.logs import run_logger

EVENT = "aws.s3.object.created"
#: Object kinds, by key ending, copied into the ``aws.s3.object.kind`` label.
JOBSPEC_SUFFIX = ".rdfoxjob.json"
REASONER_LOG_SUFFIX = "/rdfox.log"
SESSION_END_SUFFIX = "/session.end"
#: ``<scenario>/run.json``: a request to run that scenario (the run-scenario deployment).
SCENARIO_RUN_SUFFIX = "/run.json"
#: Ids of the same object event are equal in every bridge process.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://infergraph.dev/events/" + EVENT)
#: Statuses that say this batch's content was refused; any other failure is the API's.
_REFUSED = {400, 413, 422}
T = TypeVar("T")


def object_kind(key: str) -> str:
    """``jobspec``, ``reasoner-log``, ``session-end``, ``scenario-run``, ``image`` or
    ``other``: what a trigger can match on."""
    if key.endswith(JOBSPEC_SUFFIX):
        return "jobspec"
    if key.endswith(REASONER_LOG_SUFFIX):
        return "reasoner-log"
    if key.endswith(SESSION_END_SUFFIX):
        return "session-end"
    if key.endswith(SCENARIO_RUN_SUFFIX):
        return "scenario-run"
    if key.lower().endswith(IMAGE_SUFFIXES):
        return "image"
    return "other"


def event_id(obj: S3Object) -> uuid.UUID:
    """The same id for every delivery of one S3 event, a new one for each new upload.

    The sequencer differs for every write of a key; without it (emulators, some
    producers) the ETag and event time tell uploads apart.
    """
    token = obj.sequencer or f"{obj.etag}@{obj.event_time}"
    return uuid.uuid5(_ID_NAMESPACE, "\n".join((obj.bucket, obj.key, obj.version_id, token)))


def object_event(obj: S3Object) -> Event:
    """The Prefect event for one created object."""
    return Event(
        id=event_id(obj),
        occurred=_occurred(obj.event_time),
        event=EVENT,
        resource={
            "prefect.resource.id": f"aws.s3.bucket.{obj.bucket}",
            "aws.s3.bucket": obj.bucket,
            "aws.s3.object.kind": object_kind(obj.key),
        },
        payload={
            "key": obj.key,
            "size": obj.size,
            "etag": obj.etag,
            "event_name": obj.event_name,
            "event_time": _event_time(obj.event_time),
        },
    )


def _event_time(value: Any) -> str:
    """S3's own time string where it sent one, else the time the event is dated."""
    return value if isinstance(value, str) and value else _occurred(value).isoformat()


def _occurred(value: Any) -> datetime:
    """S3's ISO time (EventBridge in moto sends epoch seconds); now if there is none."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


# -- posting -------------------------------------------------------------------------


class EventsRefused(Exception):
    """The API answered and refused these events (400/413/422): a problem of this batch."""


class ApiUnavailable(Exception):
    """The events did not reach the API, or it failed as a whole (down, 5xx, auth)."""


def post_events(client: Any, events: Sequence[Event]) -> None:
    """``POST /api/events``; returns only once the server has accepted every event."""
    body = [e.model_dump(mode="json") for e in events]
    try:
        client.request("POST", "/events", json=body)
    except PrefectHTTPStatusError as exc:
        status = exc.response.status_code
        what = f"HTTP {status} from {exc.request.url}: {exc.response.text[:500]}"
        if status in _REFUSED:
            raise EventsRefused(what) from None
        hint = " (check PREFECT_API_AUTH_STRING / PREFECT_API_KEY)" if status in (401, 403) else ""
        raise ApiUnavailable(what + hint) from None
    except httpx.HTTPError as exc:
        url = getattr(client, "api_url", "the Prefect API")
        raise ApiUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None


# -- the queue -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """One received message and the created objects it reports."""

    message_id: str
    objects: list[S3Object]


class S3EventQueue:
    """The notifications queue: receives notifications, holds them through ``SqsLeases``.

    ``receive`` hands out notifications; ``ack`` deletes the messages whose events were
    accepted; ``nack`` releases them after the retry delay (warning on the last receive
    before the dead-letter queue); ``close`` releases whatever is still held.
    """

    def __init__(self, queue: SqsQueue, name: str | None = None, max_messages: int = 10) -> None:
        self.queue = queue
        self.description = f"sqs://{name or queue.queue_name}"
        self.max_messages = max(1, min(max_messages, queue.max_messages, 10))
        self.received = 0
        self.ignored = 0
        self.set_aside = 0
        self._log = run_logger(__name__)
        try:
            self.leases = SqsLeases(queue, self.description)
        except QueueError as exc:
            raise SourceError(str(exc)) from exc

    @property
    def problems(self) -> list[str]:
        return self.leases.problems

    @property
    def max_receive_count(self) -> int | None:
        return self.leases.max_receive_count

    def receive(self, wait: int, limit: int | None = None) -> list[Notification] | None:
        """One long poll: notifications to emit; None when no message came."""
        count = self.max_messages if limit is None else max(1, min(limit, self.max_messages))
        try:
            messages = self.leases.receive(count, wait)
        except QueueError as exc:
            raise SourceError(str(exc)) from exc
        except BotoCoreError as exc:  # no answer at all: the service loop backs off and retries
            raise SourceError(f"cannot receive from {self.description}: {exc}") from exc
        if not messages:
            return None
        self.received += len(messages)
        return [n for m in messages if (n := self._notification(m)) is not None]

    def _notification(self, message: dict[str, Any]) -> Notification | None:
        mid = message["MessageId"]
        if self.leases.renew_if_held(message):  # redelivered while still held: keep one copy
            return None
        try:
            parsed = parse_body(message.get("Body", ""), suffixes=())
            objects = [r.s3 for r in parsed.requests if r.s3 is not None]
            if len(objects) != len(parsed.requests):
                raise MalformedMessage(
                    "body is not an S3 event notification (no Records[].s3, no EventBridge "
                    "'aws.s3' event); send image requests to an image queue instead"
                )
        except MalformedMessage as exc:
            self.set_aside += 1
            self.leases.set_aside(message, str(exc))
            return None
        if not objects:
            self.ignored += 1
            self._log.info("message %s: %s; deleting it", mid, parsed.ignored)
            self.leases.delete_one(mid, message["ReceiptHandle"])
            return None
        self.leases.hold(mid, self.leases.lease_of(message))
        return Notification(mid, objects)

    def ack(self, groups: Sequence[str]) -> int:
        """Delete these messages (their events were accepted); return how many went."""
        deleted, failed = self.leases.delete(groups)
        for mid, reason in failed:
            self.leases.problem(
                f"message {mid}: its events were accepted but it could not be deleted "
                f"({reason}); a redelivery re-sends the same event ids, which the "
                "server skips"
            )
        return deleted

    def nack(self, groups: Sequence[str], reason: str) -> None:
        self.leases.release(groups, reason)

    def close(self) -> None:
        self.leases.release_all()


# -- the bridge ----------------------------------------------------------------------


@dataclass(slots=True)
class BridgeCounts:
    """What one bridge run did, message by message."""

    received: int = 0  # messages received
    events: int = 0  # events the API accepted
    deleted: int = 0  # messages deleted after their events were accepted
    ignored: int = 0  # test events and other event names: deleted
    set_aside: int = 0  # not S3 notifications: moved to the dead-letter queue
    failed: int = 0  # messages whose events were not accepted: left on the queue

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Stopper:
    """Stop requests (SIGTERM, SIGINT) that also cut short a long poll or a wait.

    The handler only interrupts the interruptible calls (receiving, waiting,
    posting: a post cut short is sent again with the same ids); deleting and
    setting aside always finish.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._interruptible = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        logging.getLogger(__name__).info(
            "%s: stopping after the current step", signal.Signals(signum).name
        )
        self.event.set()
        if self._interruptible:
            raise _Interrupted

    def call(self, function: Callable[[], T], default: T) -> T:
        """``function()``, or ``default`` if a stop request interrupted it."""
        if self.event.is_set():
            return default
        self._interruptible = True
        try:
            return function()
        except _Interrupted:
            return default
        finally:
            self._interruptible = False

    def wait(self, seconds: float) -> None:
        self.call(lambda: self.event.wait(seconds), False)


class _Interrupted(BaseException):
    """Raised by the signal handler; BaseException so that no library retry swallows it."""


def bridge_s3_events(
    queue: S3EventQueue,
    client: Any,
    idle_polls: int = 1,
    message_limit: int | None = None,
    wait_seconds: int | None = None,
    stopper: Stopper | None = None,
    log: Any = None,
) -> BridgeCounts:
    """Receive, emit and delete until ``idle_polls`` empty polls in a row (0: until stopped).

    When the API cannot be reached a draining run (``idle_polls`` > 0) stops at once,
    leaving the messages on the queue; a service run (``idle_polls=0``) waits for the
    API with backoff, receiving nothing meanwhile so no message uses up a receive of
    its redrive policy while the server is away. A service run also outlasts SQS
    errors (logged, retried with backoff); a draining run raises them.
    """
    stopper = stopper or Stopper()
    log = log or run_logger(__name__)
    counts = BridgeCounts()
    wait = queue.queue.wait_time_seconds if wait_seconds is None else wait_seconds
    idle, backoff, queue_backoff = 0, 0.0, 5.0
    try:
        while not stopper.event.is_set():
            if message_limit is not None and counts.received >= message_limit:
                break
            if backoff:
                if stopper.call(lambda: client.api_healthcheck(), "stopped") is not None:
                    log.warning("the Prefect API is still unavailable; next try in %.0fs", backoff)
                    stopper.wait(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                log.info("the Prefect API is back")
                backoff = 0.0
            before = queue.received
            limit = None if message_limit is None else message_limit - counts.received
            try:
                got = stopper.call(lambda limit=limit: queue.receive(wait, limit), None)
            except SourceError as exc:
                if idle_polls:
                    raise
                log.error("%s; trying again in %.0fs", exc, queue_backoff)
                stopper.wait(queue_backoff)
                queue_backoff = min(queue_backoff * 2, 60.0)
                continue
            queue_backoff = 5.0
            counts.received += queue.received - before
            if got is None:
                idle += 1
                if idle_polls and idle >= idle_polls:
                    break
                continue
            idle = 0
            if not got:
                continue  # every message was a test event or set aside
            events_before, deleted_before = counts.events, counts.deleted
            try:
                _emit(queue, client, got, counts, stopper)
                log.info(
                    "%d event(s) accepted by the Prefect API; %d message(s) deleted",
                    counts.events - events_before,
                    counts.deleted - deleted_before,
                )
            except ApiUnavailable as exc:
                log.error("events not accepted, messages left on the queue: %s", exc)
                if idle_polls:
                    break
                backoff = 5.0
    finally:
        queue.close()
        counts.ignored, counts.set_aside = queue.ignored, queue.set_aside
    return counts


def _emit(
    queue: S3EventQueue,
    client: Any,
    notifications: list[Notification],
    counts: BridgeCounts,
    stopper: Stopper,
) -> None:
    """Post the events of these messages, delete the accepted ones, release the rest.

    All messages of one receive go in one request; if the API refuses it, each
    message is posted alone so that one bad message holds back only itself.
    """
    events = {n.message_id: [object_event(o) for o in n.objects] for n in notifications}
    accepted: list[str] = []
    refused: list[str] = []
    try:
        try:
            _post(client, [e for group in events.values() for e in group], stopper)
            accepted = list(events)
        except EventsRefused as exc:
            if len(events) == 1:
                refused.append(next(iter(events)))
                queue.nack(refused, f"the Prefect API refused its events: {exc}")
            else:
                for mid, group in events.items():
                    try:
                        _post(client, group, stopper)
                    except EventsRefused as one:
                        refused.append(mid)
                        queue.nack([mid], f"the Prefect API refused its events: {one}")
                        continue
                    accepted.append(mid)
    except ApiUnavailable:
        left = [mid for mid in events if mid not in accepted and mid not in refused]
        queue.nack(left, "the Prefect API did not take their events")
        counts.failed += len(left)
        raise
    finally:
        counts.failed += len(refused)
        if accepted:
            counts.events += sum(len(events[mid]) for mid in accepted)
            counts.deleted += queue.ack(accepted)


def _post(client: Any, events: list[Event], stopper: Stopper) -> None:
    if not stopper.call(lambda: (post_events(client, events), True)[1], False):
        raise ApiUnavailable("stopped before the Prefect API answered")
