"""Completion notices to SNS, sent once a request's results are written.

Used as a pipeline ``after_write`` hook: it runs after a chunk is written to
every sink and before its messages are deleted, so a notice never announces a
result that is not stored. Each request goes to its own topic (the request's
``sns_topic_arn`` field) or to the default topic; requests are grouped per
topic and packed into messages under SNS's 256 KiB limit. A publish failure is
returned as a problem for the run's summary and artifact and changes nothing
else: the results are written and their messages are acknowledged.

Delivery is at least once: with a requests table, a request counts as announced
only once ``notified_at_timestamp`` is written on it after the publish, and a
redelivered message whose finished requests lack it publishes again before it is
deleted (``RequestsTable.claim``). Each entry carries its ``request_id`` for
subscribers to de-duplicate.

Message body::

    {"event": "inference.finished", "flow_run_id": "...", "count": 2,
     "requests": [{"request_id": "r1", "state": "completed", "images": 1, "errors": []},
                  {"request_id": "r2", "state": "error", "images": 1, "errors": ["..."]}]}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prefect_aws import AwsCredentials

from blocks.sns import SnsTopic
from infergraph.aws.clients import aws_client
from infergraph.aws.errors import describe_aws_error
from infergraph.inference.records import RequestState, ResultChunk, row_ok

EVENT = "inference.finished"
#: SNS's limit is 256 KiB for the message and its attributes; keep room for both.
MAX_MESSAGE_BYTES = 256 * 1024 - 4096
MAX_ERRORS_PER_REQUEST = 20


class CompletionNotices:
    """An ``after_write`` hook: publishes one notice per topic for the chunks just written."""

    def __init__(
        self,
        default_topic: SnsTopic | None = None,
        credentials: Any = None,
        topic_field: str = "sns_topic_arn",
        request_field: str = "request_id",
        flow_run_id: str | None = None,
    ) -> None:
        self.default_arn = default_topic.topic_arn if default_topic else None
        self.credentials = default_topic.credentials if default_topic else credentials
        self.topic_field = topic_field
        self.request_field = request_field
        self.flow_run_id = flow_run_id
        self.published = 0
        self.failed = 0

    def __call__(self, chunks: Sequence[ResultChunk]) -> list[str]:
        return self.publish(chunks)[0]

    def publish(self, chunks: Sequence[ResultChunk]) -> tuple[list[str], set[str]]:
        """Send the notices; (problems, ids of the requests whose notice was not sent)."""
        problems: list[str] = []
        unsent: set[str] = set()
        for topic, entries in self.requests_by_topic(chunks).items():
            for message, ids in self.messages(entries):
                try:
                    self._publish(topic, message, len(ids))
                    self.published += 1
                except (ClientError, BotoCoreError, ValueError) as exc:
                    self.failed += 1
                    unsent.update(ids)
                    shown = ", ".join(ids[:10]) + (
                        f" and {len(ids) - 10} more" if len(ids) > 10 else ""
                    )
                    problems.append(
                        f"SNS notice to {topic} for {len(ids)} request(s) ({shown}) "
                        f"not sent: {describe_aws_error(exc)}"
                    )
        return problems, unsent

    def request_id(self, row: dict[str, Any]) -> str:
        """The id a row's request is announced under (its request id, else its record id)."""
        request = row.get(self.request_field)
        return str(row.get("record_id") if request in (None, "") else request)

    def requests_by_topic(self, chunks: Sequence[ResultChunk]) -> dict[str, list[dict[str, Any]]]:
        """Topic ARN → one entry per request: its state, image count and errors."""
        topics: dict[str, dict[str, dict[str, Any]]] = {}
        for chunk in chunks:
            for row in chunk.results:
                topic = row.get(self.topic_field) or self.default_arn
                if not topic:
                    continue
                raw = row.get(self.request_field)
                entry = topics.setdefault(str(topic), {}).setdefault(
                    self.request_id(row),
                    {
                        "request_id": row.get("record_id") if raw in (None, "") else raw,
                        "state": RequestState.COMPLETED,
                        "images": 0,
                        "errors": [],
                    },
                )
                entry["images"] += 1
                if not row_ok(row):
                    entry["state"] = RequestState.ERROR
                    if len(entry["errors"]) < MAX_ERRORS_PER_REQUEST:
                        entry["errors"].append(str(row.get("error"))[:2000])
        return {t: list(entries.values()) for t, entries in topics.items()}

    def messages(self, entries: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
        """Entries packed into message bodies under the size limit, with their request ids."""
        head = {"event": EVENT, "flow_run_id": self.flow_run_id}
        overhead = len(json.dumps({**head, "count": 0, "requests": []}))
        packed: list[tuple[str, list[str]]] = []
        batch: list[dict[str, Any]] = []
        size = overhead
        for entry in entries:
            entry_size = len(json.dumps(entry, default=str).encode()) + 2
            if batch and size + entry_size > MAX_MESSAGE_BYTES:
                packed.append(self._body(head, batch))
                batch, size = [], overhead
            batch.append(entry)
            size += entry_size
        if batch:
            packed.append(self._body(head, batch))
        return packed

    def _body(self, head: dict[str, Any], batch: list[dict[str, Any]]) -> tuple[str, list[str]]:
        body = json.dumps({**head, "count": len(batch), "requests": batch}, default=str)
        return body, [str(e["request_id"]) for e in batch]

    def _publish(self, topic: str, message: str, count: int) -> None:
        parts = topic.split(":")
        if len(parts) < 6 or parts[0] != "arn" or parts[2] != "sns":
            raise ValueError(f"{topic!r} is not an SNS topic ARN")
        credentials = self.credentials or AwsCredentials()
        if parts[3] and credentials.region_name != parts[3]:
            credentials = credentials.model_copy(update={"region_name": parts[3]})
        params: dict[str, Any] = {
            "TopicArn": topic,
            "Message": message,
            "Subject": f"infergraph: {count} request(s) finished",
            "MessageAttributes": {"event": {"DataType": "String", "StringValue": EVENT}},
        }
        if topic.endswith(".fifo"):
            params["MessageGroupId"] = "infergraph"
            params["MessageDeduplicationId"] = hashlib.sha256(message.encode()).hexdigest()
        aws_client("sns", credentials).publish(**params)
