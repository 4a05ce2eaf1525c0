"""Image requests from an SQS queue, with per-message acknowledgement.

Each message is one acknowledgement group: it is deleted only after every
record it carried was written to every sink (``ack``); a message whose records
failed in a way a retry may fix is made visible again after the queue block's
``retry_delay_seconds`` — that message alone, never its whole receive batch
(``nack``); messages still being worked on have their visibility extended
(``heartbeat``), never past SQS's 12-hour limit. A message that keeps failing is
moved to the dead-letter queue by the queue's redrive policy; a message that
cannot be read at all is moved there at once, with the reason attached.

Spec: ``sqs://<SqsQueue block name>?image_keys=s3_uri,image.uri&suffixes=.png&
idle_polls=1&message_limit=1000``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from blocks.sqs import MAX_VISIBILITY_TIMEOUT, SqsQueue, clamp_visibility
from infergraph.aws.errors import describe_aws_error
from infergraph.blockref import resolve_block
from infergraph.inference.records import ImageRecord
from infergraph.inference.sources.base import IMAGE_SUFFIXES, Source, SourceError
from infergraph.inference.sources.messages import DEFAULT_IMAGE_KEYS, MalformedMessage, parse_body
from infergraph.inference.specs import parse_spec
from infergraph.logs import run_logger

OPTIONS = {
    "image_keys": "request keys that may hold the image URI, in order; dotted paths allowed",
    "suffixes": "key endings kept from S3 event notifications; empty keeps every object",
    "idle_polls": "stop after this many empty long polls in a row; 0 never stops (default 1)",
    "message_limit": "stop after receiving this many messages",
}
#: What a claim decides for a received message (see ``SqsSource.claim``).
PROCESS, FINISHED, BUSY = "process", "finished", "busy"
Claim = Callable[[Mapping[str, Sequence[ImageRecord]], float], dict[str, str]]
#: Seconds kept in hand below SQS's 12-hour visibility limit.
LIMIT_MARGIN = 60
MAX_PROBLEMS = 200
#: SQS allows at most 10 message attributes; the aside copy adds two.
MAX_ATTRIBUTES = 10


@dataclass(slots=True)
class InFlight:
    handle: str
    first_received: float  # epoch seconds, SQS's ApproximateFirstReceiveTimestamp
    visible_until: float  # monotonic
    receive_count: int
    lost: bool = False  # the receipt handle stopped working (redelivered elsewhere)


class SqsSource(Source):
    """Receives messages by long polling and turns each into records of one group.

    ``claim``, when set (the flow sets it to the requests table's), is asked about
    every received message before its records are handed out, with the
    visibility timeout as the lease: ``process`` it; ``finished`` (a late
    duplicate of requests already done: the message is deleted unprocessed); or
    ``busy`` (another run holds its requests: the copy is left alone, hidden,
    and that run deletes the message).
    """

    def __init__(
        self,
        queue: SqsQueue,
        name: str | None = None,
        image_keys: tuple[str, ...] = DEFAULT_IMAGE_KEYS,
        suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
        idle_polls: int = 1,
        message_limit: int | None = None,
    ) -> None:
        self.queue = queue
        self.credentials = queue.credentials
        self.image_keys = image_keys
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.idle_polls = idle_polls
        self.message_limit = message_limit
        self.description = f"sqs://{name or queue.queue_name}"
        self.problems: list[str] = []
        self.received = 0
        self.skipped = 0
        self.claim: Claim | None = None
        self._client = queue.client()
        self._log = run_logger(__name__)
        self._lock = threading.Lock()
        self._inflight: dict[str, InFlight] = {}
        self._last_beat = 0.0
        self._warned_limit: set[str] = set()
        self.dead_letter_url, self.max_receive_count = self._redrive()

    @property
    def redelivers(self) -> bool:
        return True

    # -- receiving -----------------------------------------------------------------

    def records(self) -> Iterator[ImageRecord]:
        for batch in self.batches(100):
            yield from batch

    def batches(self, batch_size: int) -> Iterator[list[ImageRecord]]:
        """Full batches while messages keep coming; a partial batch as soon as they pause.

        Only an empty batch waits on a long poll, so a lone message is processed at
        once instead of waiting for company.
        """
        pending: deque[ImageRecord] = deque()
        batch: list[ImageRecord] = []
        idle = 0
        while True:
            while pending and len(batch) < batch_size:
                batch.append(pending.popleft())
            if len(batch) >= batch_size:
                yield batch
                batch = []
                continue
            if self.message_limit is not None and self.received >= self.message_limit:
                break
            got = self._poll(0 if batch else self.queue.wait_time_seconds)
            if got is None:
                if batch:
                    yield batch
                    batch = []
                    continue
                idle += 1
                if self.idle_polls and idle >= self.idle_polls:
                    break
                continue
            idle = 0
            pending.extend(got)
        if batch:
            yield batch

    def receive_messages(self, count: int, wait: int) -> list[dict[str, Any]]:
        """One long poll of up to ``count`` messages, hidden for the queue's visibility timeout."""
        try:
            response = self._client.receive_message(
                QueueUrl=self.queue.queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=wait,
                VisibilityTimeout=self.queue.visibility_timeout,
                MessageSystemAttributeNames=[
                    "ApproximateReceiveCount",
                    "ApproximateFirstReceiveTimestamp",
                ],
                MessageAttributeNames=["All"],
            )
        except ClientError as exc:
            raise SourceError(
                f"cannot receive from {self.description}: {describe_aws_error(exc)}"
            ) from exc
        return response.get("Messages", [])

    def _poll(self, wait: int) -> list[ImageRecord] | None:
        """One receive: the records of its messages, or None if no message came."""
        count = self.queue.max_messages
        if self.message_limit is not None:
            count = min(count, self.message_limit - self.received)
        messages = self.receive_messages(count, wait)
        if not messages:
            return None
        self.received += len(messages)
        accepted = {m["MessageId"]: got for m in messages if (got := self._accept(m))}
        decisions = {}
        if self.claim is not None and accepted:
            groups = {mid: records for mid, (_, records) in accepted.items()}
            decisions = self.claim(groups, self.queue.visibility_timeout)
        records: list[ImageRecord] = []
        for mid, (entry, group) in accepted.items():
            decision = decisions.get(mid, PROCESS)
            if decision == PROCESS:
                with self._lock:
                    self._inflight[mid] = entry
                records.extend(group)
                continue
            self.skipped += 1
            if decision == FINISHED:
                self._log.info("message %s: its requests are already finished; deleting it", mid)
                self._delete(mid, entry.handle)
            else:
                self._log.info("message %s: another run is processing its requests", mid)
        return records

    def _accept(self, message: dict[str, Any]) -> tuple[InFlight, list[ImageRecord]] | None:
        """The message's records and lease, or None if it was handled here already."""
        mid = message["MessageId"]
        attributes = message.get("Attributes", {})
        now = time.monotonic()
        entry = InFlight(
            handle=message["ReceiptHandle"],
            first_received=int(attributes.get("ApproximateFirstReceiveTimestamp", 0)) / 1000
            or time.time(),
            visible_until=now + self.queue.visibility_timeout,
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        )
        with self._lock:
            known = self._inflight.get(mid)
            if known is not None:
                # Delivered again while we still work on it: keep the newest handle,
                # never process it twice in one run.
                known.handle, known.visible_until, known.lost = (
                    entry.handle,
                    entry.visible_until,
                    False,
                )
                return None
        try:
            parsed = parse_body(message.get("Body", ""), self.image_keys, self.suffixes)
        except MalformedMessage as exc:
            self.set_message_aside(message, str(exc))
            return None
        if not parsed.requests:
            self._log.info("message %s: %s; deleting it", mid, parsed.ignored)
            self._delete(mid, entry.handle)
            return None
        size = len(parsed.requests)
        return entry, [
            ImageRecord(
                uri=r.uri,
                fields=r.fields,
                record_id=r.record_id or f"{mid}#{i + 1}",
                group=mid,
                group_size=size,
                error=f"message {mid}: {r.error}" if r.error else None,
            )
            for i, r in enumerate(parsed.requests)
        ]

    # -- acknowledging -------------------------------------------------------------

    def ack(self, groups: Sequence[str]) -> None:
        """Delete these messages: everything they carried is written."""
        for chunk in in_tens(self._take(groups)):
            entries = [{"Id": str(i), "ReceiptHandle": e.handle} for i, (_, e) in enumerate(chunk)]
            failed = self._batch_call("delete_message_batch", entries, chunk)
            for mid, reason in failed:
                self._problem(
                    f"message {mid} was written but could not be deleted ({reason}); it will "
                    "be delivered again and its results rewritten in place"
                )

    def nack(self, groups: Sequence[str], reason: str) -> None:
        """Make these messages visible again after the retry delay; the others are untouched."""
        taken = self._take(groups)
        if not taken:
            return
        delay = self.queue.retry_delay_seconds
        for chunk in in_tens(taken):
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": e.handle,
                    "VisibilityTimeout": self._allowed(e, delay),
                }
                for i, (_, e) in enumerate(chunk)
            ]
            self._batch_call("change_message_visibility_batch", entries, chunk)
        last = [
            mid
            for mid, e in taken
            if self.max_receive_count and e.receive_count >= self.max_receive_count
        ]
        self._log.warning(
            "%d message(s) will be retried in %ds (%s): %s",
            len(taken),
            delay,
            reason,
            ", ".join(mid for mid, _ in taken[:20]),
        )
        if last:
            self._problem(
                f"message(s) {', '.join(last[:20])} failed on receive {self.max_receive_count} "
                f"of {self.max_receive_count} ({reason}); the redrive policy moves them to "
                "the dead-letter queue"
            )

    def heartbeat(self) -> None:
        """Extend the visibility of messages still in work, at most every few seconds."""
        now = time.monotonic()
        timeout = self.queue.visibility_timeout
        if now - self._last_beat < max(1.0, min(timeout / 4, 60.0)):
            return
        self._last_beat = now
        with self._lock:
            due = [
                (mid, e)
                for mid, e in self._inflight.items()
                if not e.lost and e.visible_until - now < timeout / 2 + 5
            ]
        extend: list[tuple[str, InFlight]] = []
        for mid, entry in due:
            allowed = self._allowed(entry, timeout)
            if allowed <= entry.visible_until - now:
                if mid not in self._warned_limit:
                    self._warned_limit.add(mid)
                    self._problem(
                        f"message {mid} is near SQS's 12-hour visibility limit; it may be "
                        "delivered again while this run still works on it"
                    )
                continue
            extend.append((mid, entry))
        for chunk in in_tens(extend):
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": e.handle,
                    "VisibilityTimeout": self._allowed(e, timeout),
                }
                for i, (_, e) in enumerate(chunk)
            ]
            failed = dict(self._batch_call("change_message_visibility_batch", entries, chunk))
            for (mid, entry), sent in zip(chunk, entries, strict=True):
                if mid in failed:
                    entry.lost = True
                    self._log.warning("cannot extend message %s: %s", mid, failed[mid])
                else:
                    entry.visible_until = now + sent["VisibilityTimeout"]

    def close(self) -> None:
        """Release messages received but never finished, so another consumer can take them."""
        with self._lock:
            left = list(self._inflight)
        if left:
            self._log.warning("releasing %d unfinished message(s) to the queue", len(left))
            for chunk in in_tens(self._take(left)):
                entries = [
                    {"Id": str(i), "ReceiptHandle": e.handle, "VisibilityTimeout": 0}
                    for i, (_, e) in enumerate(chunk)
                ]
                self._batch_call("change_message_visibility_batch", entries, chunk)

    def in_flight(self) -> list[str]:
        """Ids of messages received and not yet acknowledged."""
        with self._lock:
            return list(self._inflight)

    # -- helpers -------------------------------------------------------------------

    def _take(self, groups: Sequence[str]) -> list[tuple[str, InFlight]]:
        with self._lock:
            return [(g, self._inflight.pop(g)) for g in groups if g in self._inflight]

    def _allowed(self, entry: InFlight, wanted: int) -> int:
        """``wanted`` seconds of visibility, clamped to what SQS still allows this message."""
        used = time.time() - entry.first_received
        return clamp_visibility(min(wanted, MAX_VISIBILITY_TIMEOUT - LIMIT_MARGIN - used))

    def _batch_call(
        self, method: str, entries: list[dict[str, Any]], chunk: list[tuple[str, InFlight]]
    ) -> list[tuple[str, str]]:
        """Call a 10-entry batch API; return (message id, reason) for entries that failed."""
        try:
            response = getattr(self._client, method)(QueueUrl=self.queue.queue_url, Entries=entries)
        except ClientError as exc:
            return [(mid, describe_aws_error(exc)) for mid, _ in chunk]
        return [
            (chunk[int(f["Id"])][0], f"{f.get('Code')}: {f.get('Message', '')}".strip())
            for f in response.get("Failed", [])
        ]

    def _delete(self, mid: str, handle: str) -> None:
        try:
            self._client.delete_message(QueueUrl=self.queue.queue_url, ReceiptHandle=handle)
        except ClientError as exc:
            self._problem(f"message {mid}: cannot delete ({describe_aws_error(exc)})")

    def set_message_aside(self, message: dict[str, Any], reason: str) -> None:
        """Move an unreadable message to the dead-letter queue with its reason; never drop it."""
        mid = message["MessageId"]
        if not self.dead_letter_url:
            self._hide(message["ReceiptHandle"])
            self._problem(
                f"message {mid}: {reason}; no dead-letter queue is configured, so it stays "
                "on the queue, hidden for 12 hours (set a redrive policy or the block's "
                "dead_letter_queue_url)"
            )
            return
        attributes = _sendable(message.get("MessageAttributes", {}))
        extra = {
            "infergraph_error": {"DataType": "String", "StringValue": reason[:1024]},
            "infergraph_source": {
                "DataType": "String",
                "StringValue": f"{self.queue.queue_url} message {mid}",
            },
        }
        if len(attributes) + len(extra) <= MAX_ATTRIBUTES:
            attributes.update(extra)
        params: dict[str, Any] = {
            "QueueUrl": self.dead_letter_url,
            "MessageBody": message.get("Body", ""),
            "MessageAttributes": attributes,
        }
        if self.dead_letter_url.endswith(".fifo"):
            params.update(MessageGroupId="infergraph-aside", MessageDeduplicationId=mid)
        try:
            self._client.send_message(**params)
        except ClientError as exc:
            self._problem(
                f"message {mid}: {reason}; moving it to the dead-letter queue failed "
                f"({describe_aws_error(exc)}), so it stays on the queue"
            )
            return
        self._delete(mid, message["ReceiptHandle"])
        name = self.dead_letter_url.rstrip("/").rsplit("/", 1)[-1]
        self._problem(f"message {mid}: {reason}; moved to dead-letter queue {name}")

    def _hide(self, handle: str) -> None:
        try:
            self._client.change_message_visibility(
                QueueUrl=self.queue.queue_url,
                ReceiptHandle=handle,
                VisibilityTimeout=MAX_VISIBILITY_TIMEOUT - LIMIT_MARGIN,
            )
        except ClientError as exc:
            self._log.warning("cannot hide an unreadable message: %s", describe_aws_error(exc))

    def _problem(self, text: str) -> None:
        self._log.warning(text)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def _redrive(self) -> tuple[str | None, int | None]:
        """The dead-letter queue URL and maxReceiveCount, from the block or the redrive policy."""
        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=self.queue.queue_url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
        except ClientError as exc:
            raise SourceError(
                f"cannot use queue {self.description}: {describe_aws_error(exc)}"
            ) from exc
        policy = json.loads(attributes.get("RedrivePolicy") or "{}")
        max_count = int(policy["maxReceiveCount"]) if "maxReceiveCount" in policy else None
        if self.queue.dead_letter_queue_url or "deadLetterTargetArn" not in policy:
            return self.queue.dead_letter_queue_url, max_count
        *_, account, name = policy["deadLetterTargetArn"].split(":")
        try:
            url = self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        except ClientError as exc:
            self._log.warning("cannot find dead-letter queue %s: %s", name, describe_aws_error(exc))
            return None, max_count
        return url["QueueUrl"], max_count


def _sendable(attributes: dict[str, Any]) -> dict[str, Any]:
    """Received message attributes in the shape ``send_message`` accepts."""
    keep = ("DataType", "StringValue", "BinaryValue")
    return {k: {f: v[f] for f in keep if f in v} for k, v in attributes.items()}


def in_tens(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), 10):
        yield items[start : start + 10]


def open_sqs(spec: str, options: dict[str, Any]) -> SqsSource:
    """The ``sqs://<SqsQueue block name>`` source factory."""
    parsed = parse_spec(spec, "source", OPTIONS)
    if not parsed.target or "/" in parsed.target:
        raise parsed.error("expected sqs://<name of an SqsQueue block>")
    image_keys = parsed.strings("image_keys", DEFAULT_IMAGE_KEYS)
    if not image_keys:
        raise parsed.error("image_keys= names no key")
    queue = resolve_block(parsed.target, SqsQueue)
    return SqsSource(
        queue,
        name=parsed.target,
        image_keys=image_keys,
        suffixes=parsed.strings("suffixes", IMAGE_SUFFIXES),
        idle_polls=parsed.integer("idle_polls", 1) or 0,
        message_limit=parsed.integer("message_limit", None, minimum=1),
    )
