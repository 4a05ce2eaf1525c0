"""Result rows into a DynamoDB results table, idempotently.

Spec: ``dynamodb://<DynamoDBTable block name>?explode=top_k&copy=request_id,uri``.

Each result item is keyed by a deterministic id derived from the record's
identity (``record_id`` and the item's index) in the table's partition key; a
sort key, if the table has one, is copied from the row (for example ``uri``). A
rerun after a crash therefore overwrites the items it wrote before. Items go
out 25 per ``BatchWriteItem``; items DynamoDB leaves unprocessed (throttling)
are sent again with exponential backoff, and if they are still unprocessed the
write fails — the pipeline then keeps the messages on the queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blocks.dynamodb import DynamoDBTable
from infergraph.aws.backoff import jittered_delay
from infergraph.aws.dynamodb import (
    MAX_ITEM_BYTES,
    explode,
    flatten,
    item_bytes,
    result_id,
    serialize_typed,
    to_dynamo,
)
from infergraph.blockref import resolve_block
from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import BOXES_OPTION, Sink, SinkError
from infergraph.inference.specs import parse_spec

OPTIONS = {
    "explode": "write one item per element of this list field (e.g. top_k)",
    "copy": "with explode: parent fields copied into each item (default: all others)",
    **BOXES_OPTION,
}
BATCH_LIMIT = 25
ATTEMPTS = 8
BASE_DELAY = 0.05
MAX_DELAY = 5.0


class UnprocessedItemsError(TimeoutError):
    """DynamoDB kept leaving items unprocessed (throttling); a later attempt may succeed."""


def batch_write(
    send: Callable[[dict[str, Any]], dict[str, Any]],
    table: str,
    requests: list[dict[str, Any]],
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Send up to 25 write requests, resending unprocessed ones with jittered backoff.

    ``send`` is the client's ``batch_write_item``.
    """
    pending = {table: requests}
    for attempt in range(attempts):
        unprocessed = send(pending).get("UnprocessedItems") or {}
        if not unprocessed.get(table):
            return
        pending = {table: unprocessed[table]}
        sleep(jittered_delay(attempt, BASE_DELAY, MAX_DELAY))
    raise UnprocessedItemsError(
        f"DynamoDB table {table}: {len(pending[table])} item(s) still unprocessed after "
        f"{attempts} attempts (throttled)"
    )


class DynamoDBResultsSink(Sink):
    """One item per result (or per element of an exploded list field)."""

    def __init__(
        self,
        table: DynamoDBTable,
        explode_field: str | None = None,
        copy: tuple[str, ...] | None = None,
        concurrency: int = 4,
    ) -> None:
        self.table = table
        self.explode_field = explode_field
        self.copy = copy
        self.concurrency = concurrency
        self.name = f"dynamodb://{table.table_name}"

    def items(self, chunk: ResultChunk) -> Iterator[dict[str, Any]]:
        """The chunk's items, keyed; the last of any items sharing a key wins."""
        keyed: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in self.laid_out(chunk):
            record_id = str(row.get("record_id", ""))
            parts = (
                explode(row, self.explode_field, self.copy)
                if self.explode_field
                else iter([flatten(row)])
            )
            for index, item in enumerate(parts):
                item = self._keyed(item, record_id, index)
                keyed[tuple(item[k] for k in self._key_names())] = item
        return iter(keyed.values())

    def write(self, chunk: ResultChunk) -> None:
        requests = []
        for item in self.items(chunk):
            item = to_dynamo(item)
            size = item_bytes(item)
            if size > MAX_ITEM_BYTES:
                raise SinkError(
                    f"{self.name}: the result of {item.get('record_id')!r} is about "
                    f"{size:,} bytes, over DynamoDB's 400 KB item limit"
                )
            requests.append({"PutRequest": {"Item": serialize_typed(item)}})
        batches = [requests[i : i + BATCH_LIMIT] for i in range(0, len(requests), BATCH_LIMIT)]
        client = self.table.client(bulk=True)

        def send(batch: list[dict[str, Any]]) -> None:
            batch_write(
                lambda items: client.batch_write_item(RequestItems=items),
                self.table.table_name,
                batch,
            )

        if len(batches) <= 1 or self.concurrency <= 1:
            for batch in batches:
                send(batch)
            return
        with ThreadPoolExecutor(min(self.concurrency, len(batches))) as pool:
            for future in [pool.submit(send, b) for b in batches]:
                future.result()

    def _key_names(self) -> list[str]:
        sort = [self.table.sort_key] if self.table.sort_key else []
        return [self.table.partition_key, *sort]

    def _keyed(self, item: dict[str, Any], record_id: str, index: int) -> dict[str, Any]:
        pk, sk = self.table.partition_key, self.table.sort_key
        if item.get(pk) not in (None, ""):
            raise SinkError(
                f"{self.name}: partition key {pk!r} is also a result field; give the "
                "results table a key of its own (e.g. result_id), which receives a "
                "deterministic id per result item"
            )
        item[pk] = result_id(record_id, index)
        if sk and item.get(sk) in (None, ""):
            raise SinkError(
                f"{self.name}: sort key {sk!r} is missing from the result of {record_id!r}"
            )
        return item


def open_dynamodb(spec: str, options: dict[str, Any]) -> DynamoDBResultsSink:
    """The ``dynamodb://<DynamoDBTable block name>`` sink factory (a results table)."""
    parsed = parse_spec(spec, "sink", OPTIONS)
    if not parsed.target or "/" in parsed.target:
        raise parsed.error("expected dynamodb://<name of a DynamoDBTable block>")
    if "copy" in parsed.options and "explode" not in parsed.options:
        raise parsed.error("copy= only applies together with explode=")
    table = resolve_block(parsed.target, DynamoDBTable)
    copy = parsed.strings("copy") if "copy" in parsed.options else None
    return DynamoDBResultsSink(table, parsed.string("explode") or None, copy)
