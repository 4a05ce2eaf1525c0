"""The DynamoDB requests table: one item per request, moved through its states.

``state`` goes ``queued → processing → completed | error``. Every move is a
conditional update that only applies from ``queued`` or ``processing`` (or to a
request the table does not know yet), so a late duplicate delivery can never
move a finished request back. Other attributes of the item (whatever the
producer stored, e.g. ``collection_id``) are kept.

Attributes written: ``state``, ``attempts`` (incremented each time processing
starts), ``processed_by`` (the flow run id), ``started_at_timestamp``,
``updated_at_timestamp`` and, when finished,
``completed_at_timestamp``, ``result`` (JSON: the result row, or a list of rows
when several images share a request id) and ``errors`` (list of strings).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from blocks.dynamodb import DynamoDBTable
from tasks.dynamodb_items import serialize
from tasks.logs import run_logger
from tasks.records import ImageRecord, ResultChunk
from tasks.sinks import Sink
from tasks.writing import write_chunks

QUEUED, PROCESSING, COMPLETED, ERROR = "queued", "processing", "completed", "error"
#: A move applies only to a request that is not finished yet.
OPEN_CONDITION = "attribute_not_exists(#state) OR #state IN (:queued, :processing)"


class RequestsTable(Sink):
    """Marks requests ``processing`` as their batch starts and finished when written."""

    def __init__(
        self, table: DynamoDBTable, concurrency: int = 16, run_id: str | None = None
    ) -> None:
        self.table = table
        self.run_id = run_id or "-"
        self.concurrency = concurrency
        self.name = f"requests table {table.table_name}"
        self.late_duplicates = 0
        self._count_lock = threading.Lock()
        self._log = run_logger(__name__)

    def mark_processing(self, records: Sequence[ImageRecord]) -> list[str]:
        """Move the batch's requests to ``processing``; problems are reported, not raised.

        The state is bookkeeping: failing to record ``processing`` must not stop
        the work itself (the final update is a write like any other and does fail).
        """
        keys = {}
        for record in records:
            key = self._key(record.fields)
            if key is not None:
                keys[_hashable(key)] = key
        now = _now()
        updates = [
            {
                "Key": serialize(key),
                "UpdateExpression": (
                    "SET #state = :processing, started_at_timestamp = :now, "
                    "updated_at_timestamp = :now, processed_by = :run ADD attempts :one"
                ),
                "ConditionExpression": OPEN_CONDITION,
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": serialize(
                    {
                        ":queued": QUEUED,
                        ":processing": PROCESSING,
                        ":now": now,
                        ":one": 1,
                        ":run": self.run_id,
                    }
                ),
            }
            for key in keys.values()
        ]
        errors = [str(e) for e in self._apply(updates) if e is not None]
        if errors:
            return [f"{self.name}: {len(errors)} request(s) not marked processing: {errors[0]}"]
        return []

    def write(self, chunk: ResultChunk) -> None:
        """Finish every request of the chunk; any failure but a late duplicate raises."""
        requests: dict[Any, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for row in chunk.results:
            key = self._key(row)
            if key is not None:
                requests.setdefault(_hashable(key), (key, []))[1].append(row)
        now = _now()
        updates = []
        for key, rows in requests.values():
            errors = [str(r.get("error")) for r in rows if r.get("status") != "ok"]
            result = rows[0] if len(rows) == 1 else rows
            updates.append(
                {
                    "Key": serialize(key),
                    "UpdateExpression": (
                        "SET #state = :state, #result = :result, #errors = :errors, "
                        "completed_at_timestamp = :now, updated_at_timestamp = :now"
                    ),
                    "ConditionExpression": OPEN_CONDITION,
                    "ExpressionAttributeNames": {
                        "#state": "state",
                        "#result": "result",
                        "#errors": "errors",
                    },
                    "ExpressionAttributeValues": serialize(
                        {
                            ":state": ERROR if errors else COMPLETED,
                            ":result": json.dumps(result, default=str),
                            ":errors": errors,
                            ":now": now,
                            ":queued": QUEUED,
                            ":processing": PROCESSING,
                        }
                    ),
                }
            )
        failures = [e for e in self._apply(updates) if e is not None]
        if failures:
            raise failures[0]

    def _apply(self, updates: list[dict[str, Any]]) -> list[Exception | None]:
        """Run the updates concurrently; a failed condition (already finished) is not an error."""
        client = self.table.client()

        def update(params: dict[str, Any]) -> Exception | None:
            try:
                client.update_item(TableName=self.table.table_name, **params)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    with self._count_lock:
                        self.late_duplicates += 1
                    self._log.info("%s: %s is already finished", self.name, params["Key"])
                    return None
                return exc
            return None

        if len(updates) <= 1:
            return [update(u) for u in updates]
        with ThreadPoolExecutor(min(self.concurrency, len(updates))) as pool:
            return list(pool.map(update, updates))

    def _key(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The request's key, or None for a record that is not a tracked request."""
        try:
            key = self.table.key_of(fields)
        except KeyError:
            return None
        return None if any(v in (None, "") for v in key.values()) else key


class ThenRequestsTable(Sink):
    """The result sinks (concurrently), then the requests table.

    A request is marked finished only once its results are in every sink; if a
    sink fails, the request stays ``processing`` and its message is retried.
    """

    def __init__(self, sinks: Sequence[Sink], table: RequestsTable) -> None:
        self.sinks = list(sinks)
        self.table = table
        self.name = " + ".join([*(s.name for s in self.sinks), table.name])

    def open(self) -> None:
        for sink in [*self.sinks, self.table]:
            sink.open()

    def write(self, chunk: ResultChunk) -> None:
        if self.sinks:
            write_chunks(self.sinks, [chunk])
        self.table.write(chunk)

    def close(self) -> None:
        for sink in [*self.sinks, self.table]:
            sink.close()


def _hashable(key: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in key.items()))


def _now() -> Decimal:
    return Decimal(f"{time.time():.3f}")
