"""Messages held from an SQS queue until they are deleted, released or set aside.

The one consumer both the image source and the S3 events bridge use (by composition):
it receives, keeps each message's receipt handle and visibility ("lease"), deletes
and releases in batches of ten, extends visibility while work goes on (never past
SQS's 12-hour limit), and moves unreadable messages to the dead-letter queue with
the reason attached instead of dropping them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

from infergraph.aws.errors import describe_aws_error
from infergraph.logs import run_logger

#: SQS's largest visibility timeout (12 hours).
MAX_VISIBILITY_TIMEOUT = 43_200
#: Seconds kept in hand below SQS's 12-hour visibility limit.
LIMIT_MARGIN = 60
MAX_PROBLEMS = 200
#: SQS allows at most 10 message attributes; the aside copy adds two.
MAX_ATTRIBUTES = 10


def queue_depth(client: Any, url: str) -> tuple[int, int]:
    """(waiting, in flight) messages of a queue, as SQS approximates them."""
    attributes = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


class QueueError(RuntimeError):
    """The queue cannot be used (missing, no permission, unreachable)."""


class QueueSettings(Protocol):
    """What the consumer needs of a queue (the ``SqsQueue`` block has it)."""

    queue_url: str
    visibility_timeout: int
    retry_delay_seconds: int
    dead_letter_queue_url: str | None

    def client(self) -> Any: ...


def clamp_visibility(seconds: float) -> int:
    """A visibility timeout SQS accepts: 0 to 12 hours."""
    return int(max(0, min(MAX_VISIBILITY_TIMEOUT, seconds)))


@dataclass(slots=True)
class InFlight:
    handle: str
    first_received: float  # epoch seconds, SQS's ApproximateFirstReceiveTimestamp
    visible_until: float  # monotonic
    receive_count: int
    lost: bool = False  # the receipt handle stopped working (redelivered elsewhere)


def in_tens(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), 10):
        yield items[start : start + 10]


class SqsLeases:
    """The messages this process holds from one queue, keyed by message id."""

    def __init__(self, queue: QueueSettings, description: str) -> None:
        self.queue = queue
        self.description = description
        self.problems: list[str] = []
        self._client = queue.client()
        self._log = run_logger(__name__)
        self._lock = threading.Lock()
        self._held: dict[str, InFlight] = {}
        self._last_beat = 0.0
        self._warned_limit: set[str] = set()
        self.dead_letter_url, self.max_receive_count = self._redrive()

    # -- receiving and holding -----------------------------------------------------------

    def receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        """One long poll of up to ``count`` messages, hidden for the visibility timeout."""
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
            raise QueueError(
                f"cannot receive from {self.description}: {describe_aws_error(exc)}"
            ) from exc
        return response.get("Messages", [])

    def others_left(self) -> int:
        """Messages the queue reports besides those this process holds (approximate).

        Visible and delayed ones, and invisible ones held elsewhere (they may come back);
        on an error, one, so a caller keeps waiting rather than stopping early.
        """
        names = ["ApproximateNumberOf" + n for n in ("Messages", "MessagesNotVisible")]
        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=self.queue.queue_url,
                AttributeNames=[*names, "ApproximateNumberOfMessagesDelayed"],
            ).get("Attributes", {})
        except ClientError as exc:
            self._log.warning("cannot count %s: %s", self.description, describe_aws_error(exc))
            return 1
        visible, invisible = (int(attributes.get(n, 0)) for n in names)
        delayed = int(attributes.get("ApproximateNumberOfMessagesDelayed", 0))
        with self._lock:
            ours = len(self._held)
        return visible + delayed + max(0, invisible - ours)

    def lease_of(self, message: dict[str, Any]) -> InFlight:
        """The lease a just-received message carries: its handle and visibility."""
        attributes = message.get("Attributes", {})
        return InFlight(
            handle=message["ReceiptHandle"],
            first_received=int(attributes.get("ApproximateFirstReceiveTimestamp", 0)) / 1000
            or time.time(),
            visible_until=time.monotonic() + self.queue.visibility_timeout,
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        )

    def renew_if_held(self, message: dict[str, Any]) -> bool:
        """A message delivered again while still held: keep its newest handle, say so."""
        lease = self.lease_of(message)
        with self._lock:
            known = self._held.get(message["MessageId"])
            if known is None:
                return False
            known.handle, known.visible_until, known.lost = lease.handle, lease.visible_until, False
            return True

    def visible_until(self, mid: str) -> float:
        """When a held message becomes visible again (monotonic; 0 if not held)."""
        with self._lock:
            entry = self._held.get(mid)
            return entry.visible_until if entry else 0.0

    def hold(self, mid: str, lease: InFlight) -> None:
        with self._lock:
            self._held[mid] = lease

    def held(self) -> list[str]:
        """Ids of messages received and not yet deleted or released."""
        with self._lock:
            return list(self._held)

    def take(self, mids: Sequence[str]) -> list[tuple[str, InFlight]]:
        with self._lock:
            return [(m, self._held.pop(m)) for m in mids if m in self._held]

    # -- letting go ----------------------------------------------------------------------

    def delete(self, mids: Sequence[str]) -> tuple[int, list[tuple[str, str]]]:
        """Delete held messages; (how many went, [(message id, reason)] for those that did not)."""
        deleted, failures = 0, []
        for chunk in in_tens(self.take(mids)):
            entries = [{"Id": str(i), "ReceiptHandle": e.handle} for i, (_, e) in enumerate(chunk)]
            failed = self._batch_call("delete_message_batch", entries, chunk)
            deleted += len(chunk) - len(failed)
            failures.extend(failed)
        return deleted, failures

    def delete_one(self, mid: str, handle: str) -> None:
        """Delete a message that was never held (a finished duplicate, an ignored event)."""
        try:
            self._client.delete_message(QueueUrl=self.queue.queue_url, ReceiptHandle=handle)
        except ClientError as exc:
            self.problem(f"message {mid}: cannot delete ({describe_aws_error(exc)})")

    def release(self, mids: Sequence[str], reason: str) -> list[str]:
        """Make held messages visible again after the retry delay; the others are untouched."""
        taken = self.take(mids)
        if not taken:
            return []
        delay = self.queue.retry_delay_seconds
        for chunk in in_tens(taken):
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": e.handle,
                    "VisibilityTimeout": self.allowed(e, delay),
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
            self.problem(
                f"message(s) {', '.join(last[:20])} failed on receive {self.max_receive_count} "
                f"of {self.max_receive_count} ({reason}); the redrive policy moves them to "
                "the dead-letter queue"
            )
        return [mid for mid, _ in taken]

    def release_all(self) -> None:
        """Release everything still held at once, so another consumer can take it."""
        left = self.held()
        if not left:
            return
        self._log.warning("releasing %d unfinished message(s) to the queue", len(left))
        for chunk in in_tens(self.take(left)):
            entries = [
                {"Id": str(i), "ReceiptHandle": e.handle, "VisibilityTimeout": 0}
                for i, (_, e) in enumerate(chunk)
            ]
            self._batch_call("change_message_visibility_batch", entries, chunk)

    def heartbeat(self) -> dict[str, float]:
        """Extend the visibility of held messages, at most every few seconds.

        Returns the messages extended, each with its seconds of new invisibility, so
        whatever else is leased with them (the requests table) is renewed to match.
        """
        now = time.monotonic()
        timeout = self.queue.visibility_timeout
        if now - self._last_beat < max(1.0, min(timeout / 4, 60.0)):
            return {}
        self._last_beat = now
        with self._lock:
            due = [
                (mid, e)
                for mid, e in self._held.items()
                if not e.lost and e.visible_until - now < timeout / 2 + 5
            ]
        extend: list[tuple[str, InFlight]] = []
        for mid, entry in due:
            allowed = self.allowed(entry, timeout)
            if allowed <= entry.visible_until - now:
                if mid not in self._warned_limit:
                    self._warned_limit.add(mid)
                    self.problem(
                        f"message {mid} is near SQS's 12-hour visibility limit; it may be "
                        "delivered again while this run still works on it"
                    )
                continue
            extend.append((mid, entry))
        extended: dict[str, float] = {}
        for chunk in in_tens(extend):
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": e.handle,
                    "VisibilityTimeout": self.allowed(e, timeout),
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
                    extended[mid] = float(sent["VisibilityTimeout"])
        return extended

    def hide(self, mid: str, handle: str, seconds: float) -> None:
        """Set a message that is not held to come back in ``seconds`` (a busy duplicate)."""
        try:
            self._client.change_message_visibility(
                QueueUrl=self.queue.queue_url,
                ReceiptHandle=handle,
                VisibilityTimeout=clamp_visibility(seconds),
            )
        except ClientError as exc:
            reason = describe_aws_error(exc)
            self._log.warning("message %s: cannot change visibility: %s", mid, reason)

    def set_aside(self, message: dict[str, Any], reason: str) -> None:
        """Move an unreadable message to the dead-letter queue with its reason; never drop it."""
        mid = message["MessageId"]
        if not self.dead_letter_url:
            self._hide(message["ReceiptHandle"])
            self.problem(
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
            self.problem(
                f"message {mid}: {reason}; moving it to the dead-letter queue failed "
                f"({describe_aws_error(exc)}), so it stays on the queue"
            )
            return
        self.delete_one(mid, message["ReceiptHandle"])
        name = self.dead_letter_url.rstrip("/").rsplit("/", 1)[-1]
        self.problem(f"message {mid}: {reason}; moved to dead-letter queue {name}")

    # -- helpers -------------------------------------------------------------------------

    def allowed(self, entry: InFlight, wanted: int) -> int:
        """``wanted`` seconds of visibility, clamped to what SQS still allows this message."""
        used = time.time() - entry.first_received
        return clamp_visibility(min(wanted, MAX_VISIBILITY_TIMEOUT - LIMIT_MARGIN - used))

    def problem(self, text: str) -> None:
        self._log.warning(text)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

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

    def _hide(self, handle: str) -> None:
        try:
            self._client.change_message_visibility(
                QueueUrl=self.queue.queue_url,
                ReceiptHandle=handle,
                VisibilityTimeout=MAX_VISIBILITY_TIMEOUT - LIMIT_MARGIN,
            )
        except ClientError as exc:
            self._log.warning("cannot hide an unreadable message: %s", describe_aws_error(exc))

    def _redrive(self) -> tuple[str | None, int | None]:
        """The dead-letter queue URL and maxReceiveCount, from the block or the redrive policy."""
        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=self.queue.queue_url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
        except ClientError as exc:
            raise QueueError(
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
