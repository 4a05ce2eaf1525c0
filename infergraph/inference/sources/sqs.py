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
idle_polls=1&message_limit=1000&each_key=false``; a queue URL in place of the block
name (``sqs://https://sqs.eu-west-1.amazonaws.com/123456789012/requests``) makes a
queue with the default settings and the flow's credentials.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prefect_aws import AwsCredentials

from blocks.sqs import SqsQueue
from infergraph.aws.sqs_leases import InFlight, QueueError, SqsLeases
from infergraph.blockref import resolve_block
from infergraph.inference.batch_sizing import BatchSize, sizer
from infergraph.inference.records import LEASE_MARGIN, Claim, ImageRecord
from infergraph.inference.sources.base import IMAGE_SUFFIXES, Source, SourceError
from infergraph.inference.sources.messages import DEFAULT_IMAGE_KEYS, MalformedMessage, parse_body
from infergraph.inference.specs import Spec, parse_spec
from infergraph.logs import run_logger

OPTIONS = {
    "image_keys": "request keys that may hold the image URI, in order; dotted paths allowed",
    "suffixes": "key endings kept from S3 event notifications; empty keeps every object",
    "idle_polls": "1 (default): stop once the queue is drained; N: after N empty long polls "
    "in a row; 0 never stops",
    "message_limit": "stop after receiving this many messages",
    "each_key": "one image per key of image_keys (all required), not the first one found",
}
#: A run that got messages looks this long for more before asking the queue if it is drained.
DRAIN_WAIT_SECONDS = 1
#: Asked about received messages before their records run (see ``SqsSource.claim``).
Claimer = Callable[[Mapping[str, Sequence[ImageRecord]], float], dict[str, Claim]]
#: Told when held messages' invisibility was extended, with the new lease in seconds.
Renewer = Callable[[Mapping[str, Sequence[ImageRecord]], float], None]
#: Seconds until the lease that made a message busy ends (None: unknown).
BusyFor = Callable[[str], float | None]


class SqsSource(Source):
    """Receives messages by long polling and turns each into records of one group.

    ``claim``, when set (the flow sets it to the requests table's), is asked about
    every received message before its records are handed out, with the
    message's remaining invisibility (less ``LEASE_MARGIN``) as the lease:
    ``process`` it; ``finished`` (a late duplicate of requests already done: the
    message is deleted unprocessed); or ``busy`` (another run holds its requests:
    the copy is hidden until that lease ends, per ``busy_for``, else for the
    visibility timeout, and comes back then). ``renew`` is told whenever the heartbeat
    extends held messages, so the leases never end later than the invisibility.
    """

    grouped = True

    def __init__(
        self,
        queue: SqsQueue,
        name: str | None = None,
        image_keys: tuple[str, ...] = DEFAULT_IMAGE_KEYS,
        suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
        idle_polls: int = 1,
        message_limit: int | None = None,
        each_key: bool = False,
    ) -> None:
        self.queue = queue
        self.each_key = each_key
        self.credentials = queue.credentials
        self.image_keys = image_keys
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.idle_polls = idle_polls
        self.message_limit = message_limit
        self.description = f"sqs://{name or queue.queue_name}"
        self.received = 0
        self.skipped = 0
        #: Receives that waited the full long poll for nothing, and the seconds spent waiting.
        self.empty_long_polls = 0
        self.idle_seconds = 0.0
        self.claim: Claimer | None = None
        self.renew: Renewer | None = None
        self.busy_for: BusyFor | None = None
        self._groups: dict[str, list[ImageRecord]] = {}
        self._groups_lock = threading.Lock()
        self._log = run_logger(__name__)
        try:
            self.leases = SqsLeases(queue, self.description)
        except QueueError as exc:
            raise SourceError(str(exc)) from exc

    # -- receiving -----------------------------------------------------------------

    def records(self) -> Iterator[ImageRecord]:
        for batch in self.batches(100):
            yield from batch

    def batches(self, batch_size: BatchSize) -> Iterator[list[ImageRecord]]:
        """Full batches while messages keep coming; a partial batch as soon as they pause.

        Only an empty batch waits on a long poll, so a lone message is processed at
        once instead of waiting for company. With ``idle_polls=1`` a run that got
        messages looks for more only briefly, and stops as soon as the queue reports
        nothing left but what it holds, not after a whole empty long poll.
        """
        self._log.info("receiving from %s", self.description)
        pending: deque[ImageRecord] = deque()
        batch: list[ImageRecord] = []
        idle = 0
        size = sizer(batch_size)
        wanted = size()
        while True:
            while pending and len(batch) < wanted:
                batch.append(pending.popleft())
            if len(batch) >= wanted:
                yield batch
                batch, wanted = [], size()
                continue
            if self.message_limit is not None and self.received >= self.message_limit:
                break
            wait = 0 if batch else self._wait()
            got = self._poll(wait)
            if got is None and batch:
                yield batch
                batch, wanted = [], size()
                continue
            if got is None and wait < self.queue.wait_time_seconds:  # a short look came empty
                if self._drained():
                    break
                got = self._poll(self.queue.wait_time_seconds)
            if got is None:
                self.empty_long_polls += 1
                idle += 1
                if self.idle_polls and idle >= self.idle_polls:
                    break
                continue
            idle = 0
            pending.extend(got)
        if batch:
            yield batch

    def _wait(self) -> int:
        """Long poll for the first message; once some came, a short look (then ``_drained``)."""
        if self.idle_polls == 1 and self.received:
            return min(DRAIN_WAIT_SECONDS, self.queue.wait_time_seconds)
        return self.queue.wait_time_seconds

    def _drained(self) -> bool:
        """Whether the queue has no message left besides those this run holds."""
        started = time.perf_counter()
        try:
            return self.leases.others_left() == 0
        finally:
            self.idle_seconds += time.perf_counter() - started

    def _poll(self, wait: int) -> list[ImageRecord] | None:
        """One receive: the records of its messages, or None if no message came."""
        count = self.queue.max_messages
        if self.message_limit is not None:
            count = min(count, self.message_limit - self.received)
        started = time.perf_counter()
        try:
            messages = self.leases.receive(count, wait)
        except QueueError as exc:
            raise SourceError(str(exc)) from exc
        if not messages:
            if wait:
                self.idle_seconds += time.perf_counter() - started
            return None
        self.received += len(messages)
        accepted = {m["MessageId"]: got for m in messages if (got := self._accept(m))}
        decisions = {}
        if self.claim is not None and accepted:
            groups = {mid: records for mid, (_, records) in accepted.items()}
            soonest = min(entry.visible_until for entry, _ in accepted.values())
            decisions = self.claim(groups, soonest - time.monotonic() - LEASE_MARGIN)
        records: list[ImageRecord] = []
        for mid, (entry, group) in accepted.items():
            decision = decisions.get(mid, Claim.PROCESS)
            if decision == Claim.PROCESS:
                self.leases.hold(mid, entry)
                if self.renew is not None:
                    with self._groups_lock:
                        self._groups[mid] = group
                records.extend(group)
                continue
            self.skipped += 1
            if decision == Claim.FINISHED:
                self._log.info("message %s: its requests are already finished; deleting it", mid)
                self.leases.delete_one(mid, entry.handle)
            else:
                wait = self.busy_for(mid) if self.busy_for else None
                self._log.info("message %s: another run holds its requests", mid)
                if wait is not None:  # back when that lease ends, not a whole timeout later
                    seconds = min(float(self.queue.visibility_timeout), wait + LEASE_MARGIN)
                    self.leases.hide(mid, entry.handle, seconds)
        return records

    def _accept(self, message: dict[str, Any]) -> tuple[InFlight, list[ImageRecord]] | None:
        """The message's records and lease, or None if it was handled here already."""
        mid = message["MessageId"]
        if self.leases.renew_if_held(message):
            # Delivered again while we still work on it: never process it twice in one run.
            return None
        entry = self.leases.lease_of(message)
        try:
            parsed = parse_body(
                message.get("Body", ""), self.image_keys, self.suffixes, self.each_key
            )
        except MalformedMessage as exc:
            self.leases.set_aside(message, str(exc))
            return None
        if not parsed.requests:
            self._log.info("message %s: %s; deleting it", mid, parsed.ignored)
            self.leases.delete_one(mid, entry.handle)
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

    # -- acknowledging (the leases do the SQS calls) ----------------------------------

    def ack(self, groups: Sequence[str]) -> None:
        """Delete these messages: everything they carried is written."""
        self._forget(groups)
        _, failed = self.leases.delete(groups)
        for mid, reason in failed:
            self.leases.problem(
                f"message {mid} was written but could not be deleted ({reason}); it will "
                "be delivered again and its results rewritten in place"
            )

    def nack(self, groups: Sequence[str], reason: str) -> None:
        """Make these messages visible again after the retry delay; the others are untouched."""
        self._forget(groups)
        self.leases.release(groups, reason)

    def heartbeat(self) -> None:
        """Extend the visibility of messages still in work (and their leases, via ``renew``)."""
        extended = self.leases.heartbeat()
        if not extended or self.renew is None:
            return
        with self._groups_lock:
            groups = {mid: self._groups[mid] for mid in extended if mid in self._groups}
        # From the visibility's end as taken before the SQS call, so never later than it.
        ends = [end for mid in groups if (end := self.leases.visible_until(mid)) > 0]
        if ends:
            self.renew(groups, min(ends) - time.monotonic() - LEASE_MARGIN)

    def _forget(self, groups: Sequence[str]) -> None:
        with self._groups_lock:
            for mid in groups:
                self._groups.pop(mid, None)

    def close(self) -> None:
        """Release messages received but never finished, so another consumer can take them."""
        self.leases.release_all()

    def in_flight(self) -> list[str]:
        """Ids of messages received and not yet acknowledged."""
        return self.leases.held()

    @property
    def problems(self) -> list[str]:
        return self.leases.problems


def is_queue_url(target: str) -> bool:
    return target.startswith(("https://", "http://"))


def queue_of(parsed: Spec, credentials: AwsCredentials | None) -> SqsQueue:
    """The queue a ``sqs://`` spec names: a saved SqsQueue block, or a queue URL."""
    if is_queue_url(parsed.target):
        if parsed.target.rstrip("/").count("/") < 4:
            raise parsed.error("a queue URL is https://sqs.<region>.amazonaws.com/<account>/<name>")
        return SqsQueue(queue_url=parsed.target, credentials=credentials or AwsCredentials())
    if not parsed.target or "/" in parsed.target:
        raise parsed.error("expected sqs://<name of an SqsQueue block> or sqs://<queue URL>")
    return resolve_block(parsed.target, SqsQueue)


def open_sqs(spec: str, options: dict[str, Any]) -> SqsSource:
    """The ``sqs://<SqsQueue block name>`` source factory."""
    parsed = parse_spec(spec, "source", OPTIONS)
    queue = queue_of(parsed, options.get("credentials"))
    image_keys = parsed.strings("image_keys", DEFAULT_IMAGE_KEYS)
    if not image_keys:
        raise parsed.error("image_keys= names no key")
    return SqsSource(
        queue,
        name=None if is_queue_url(parsed.target) else parsed.target,
        each_key=parsed.boolean("each_key"),
        image_keys=image_keys,
        suffixes=parsed.strings("suffixes", IMAGE_SUFFIXES),
        idle_polls=parsed.integer("idle_polls", 1) or 0,
        message_limit=parsed.integer("message_limit", None, minimum=1),
    )
