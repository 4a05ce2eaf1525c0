"""Result rows as SQS messages, one message per result.

Spec: ``sqs://<SqsQueue block name>?oversize=s3://bucket/prefix/`` (or ``sqs://<queue URL>``).

Messages go out with ``SendMessageBatch``: at most 10 per call and at most the
queue's ``MaximumMessageSize`` per call in total. Entries SQS reports as failed
are resent with backoff when the failure is SQS's, and fail the write when it is
the sender's. A result larger than the queue's limit fails the write with a
clear error, unless ``oversize`` names an S3 prefix: the body is then stored
there and the message carries a pointer in the format of the Amazon SQS
Extended Client Library, so its readers fetch the body transparently.

Queues deliver at least once: each message carries the result's ``record_id``
(an attribute as well as in the body) for consumers to de-duplicate, and on a
FIFO queue a deduplication id derived from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from botocore.exceptions import ClientError

from blocks.sqs import SqsQueue
from infergraph.aws.backoff import jittered_delay
from infergraph.aws.clients import aws_client
from infergraph.aws.storage import split_s3_uri
from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import BOXES_OPTION, Sink, SinkError
from infergraph.inference.sources.sqs import queue_of
from infergraph.inference.specs import parse_spec

OPTIONS = {
    "oversize": "s3://bucket/prefix/ where results over the queue's size limit are stored",
    **BOXES_OPTION,
}
#: SQS's classic limit, used when the queue's own attribute cannot be read.
DEFAULT_MAX_BYTES = 262_144
BATCH_ENTRIES = 10
ATTEMPTS = 5
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"


class SendFailedError(TimeoutError):
    """SQS kept failing some entries on its side; a later attempt may succeed."""


class SqsResultsSink(Sink):
    """One message per result row."""

    def __init__(self, queue: SqsQueue, oversize: str | None = None, credentials: Any = None):
        self.queue = queue
        self.oversize = oversize
        self.credentials = credentials  # for the oversize bucket
        self.max_bytes = DEFAULT_MAX_BYTES
        self.fifo = queue.queue_url.endswith(".fifo")
        self.name = f"sqs://{queue.queue_name}"

    def open(self) -> None:
        try:
            attributes = self.queue.client().get_queue_attributes(
                QueueUrl=self.queue.queue_url, AttributeNames=["MaximumMessageSize"]
            )["Attributes"]
            self.max_bytes = int(attributes["MaximumMessageSize"])
        except (ClientError, KeyError, ValueError) as exc:
            if isinstance(exc, ClientError) and _missing_queue(exc):
                raise SinkError(f"{self.name}: the queue does not exist") from exc
            self.max_bytes = DEFAULT_MAX_BYTES

    def entries(self, chunk: ResultChunk) -> list[dict[str, Any]]:
        """One ``SendMessageBatch`` entry per row (without its batch ``Id``)."""
        entries = []
        for row in self.laid_out(chunk):
            record_id = str(row.get("record_id", ""))
            body = json.dumps(row, default=str)
            attributes = {"record_id": {"DataType": "String", "StringValue": record_id or "-"}}
            if _size(body, attributes) > self.max_bytes:
                body, attributes = self._offload(record_id, body, attributes)
            entry: dict[str, Any] = {"MessageBody": body, "MessageAttributes": attributes}
            if self.fifo:
                digest = hashlib.sha256(record_id.encode()).hexdigest()
                entry.update(MessageGroupId=chunk.key[:128], MessageDeduplicationId=digest)
            entries.append(entry)
        return entries

    def write(self, chunk: ResultChunk) -> None:
        batch: list[dict[str, Any]] = []
        size = 0
        for entry in self.entries(chunk):
            entry_size = _size(entry["MessageBody"], entry["MessageAttributes"])
            if batch and (len(batch) == BATCH_ENTRIES or size + entry_size > self.max_bytes):
                self._send(batch)
                batch, size = [], 0
            batch.append(entry)
            size += entry_size
        if batch:
            self._send(batch)

    def _send(self, entries: list[dict[str, Any]]) -> None:
        pending = {str(i): e for i, e in enumerate(entries)}
        client = self.queue.client()
        for attempt in range(ATTEMPTS):
            response = client.send_message_batch(
                QueueUrl=self.queue.queue_url,
                Entries=[{"Id": i, **e} for i, e in pending.items()],
            )
            failed = response.get("Failed", [])
            if not failed:
                return
            senders = [f for f in failed if f.get("SenderFault")]
            if senders:
                f = senders[0]
                record = pending[f["Id"]]["MessageAttributes"]["record_id"]["StringValue"]
                raise SinkError(
                    f"{self.name}: SQS rejected the result of {record!r}: "
                    f"{f.get('Code')}: {f.get('Message', '')}"
                )
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            time.sleep(jittered_delay(attempt, base=0.1))
        raise SendFailedError(
            f"{self.name}: {len(pending)} message(s) still failing after {ATTEMPTS} attempts"
        )

    def _offload(
        self, record_id: str, body: str, attributes: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        size = len(body.encode())
        if not self.oversize:
            raise SinkError(
                f"{self.name}: the result of {record_id!r} is {size:,} bytes, over the "
                f"queue's {self.max_bytes:,}-byte message limit; add "
                "?oversize=s3://bucket/prefix/ to the sink to store large results in S3"
            )
        bucket, prefix = split_s3_uri(self.oversize)
        key = f"{prefix}{hashlib.sha256(record_id.encode()).hexdigest()[:32]}.json"
        aws_client("s3", self.credentials).put_object(
            Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json"
        )
        pointer = json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}])
        attributes = {
            **attributes,
            "ExtendedPayloadSize": {"DataType": "Number", "StringValue": str(size)},
        }
        return pointer, attributes


def _missing_queue(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return "NonExistentQueue" in code or code == "QueueDoesNotExist"


def _size(body: str, attributes: dict[str, Any]) -> int:
    """Bytes SQS counts for a message: body plus attribute names, types and values."""
    total = len(body.encode())
    for name, value in attributes.items():
        total += len(name.encode()) + len(value["DataType"].encode())
        total += len(str(value.get("StringValue", "")).encode())
    return total


def open_sqs_sink(spec: str, options: dict[str, Any]) -> SqsResultsSink:
    """The ``sqs://<SqsQueue block name>`` sink factory (a results queue)."""
    parsed = parse_spec(spec, "sink", OPTIONS)
    queue = queue_of(parsed, options.get("credentials"))
    oversize = parsed.string("oversize")
    if oversize is not None:
        try:
            _, prefix = split_s3_uri(oversize)
        except ValueError:
            raise parsed.error(f"oversize={oversize!r} is not an s3://bucket/prefix/") from None
        if prefix and not prefix.endswith("/"):
            raise parsed.error("oversize= must be a prefix ending in '/'")
    return SqsResultsSink(queue, oversize, options.get("credentials") or queue.credentials)
