"""The request log: one row per request (per file for batch uploads), written through sinks.

Rows go to the same :class:`infergraph.inference.sinks.base.Sink` implementations as batch results
(a local JSON Lines file by default, DynamoDB or anything registered in
``SINK_SCHEMES`` when configured). The response path only puts rows on a
bounded queue; a background thread writes them in chunks. When the queue is
full (the sinks cannot keep up or are down) new rows are *dropped*, counted in
``/health`` and warned about, rather than slowing or failing requests.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infergraph.aws.errors import is_transient
from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import Sink

logger = logging.getLogger(__name__)

#: Columns every row has, so tabular sinks see the same header whatever the first request was.
HEAD_FIELDS = (
    "record_id",
    "request_id",
    "date",
    "method",
    "path",
    "status_code",
    "success",
    "client",
    "username",
    "filename",
    "extension",
    "format",
    "bytes",
    "width",
    "height",
)
TAIL_FIELDS = ("batch_size", "latency_ms", "error")


_ids = random.Random()  # seeded from os.urandom once; ids need uniqueness, not secrecy


def new_request_id() -> str:
    """A random 128-bit hex id without a system call per request.

    ``uuid4()`` reads ``os.urandom``, which releases the GIL; on the event loop,
    getting it back behind busy decode threads cost ~0.3 ms per request.
    """
    return f"{_ids.getrandbits(128):032x}"


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class RequestContext:
    """What handlers learn about a request, for its log rows (kept in ``request.state.log``)."""

    request_id: str
    date: str
    method: str
    path: str
    client: str
    started: float = field(default_factory=time.perf_counter)
    username: str | None = None
    error: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)


class RequestLog:
    """A bounded queue of rows and the thread that writes them to every sink in chunks."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        output_fields: Sequence[str] = (),
        max_queue: int = 10_000,
        chunk_rows: int = 200,
        flush_seconds: float = 1.0,
        attempts: int = 4,
    ) -> None:
        self.sinks = list(sinks)
        self.fields = (*HEAD_FIELDS, *output_fields, *TAIL_FIELDS)
        self.chunk_rows = chunk_rows
        self.flush_seconds = flush_seconds
        self.attempts = attempts
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(max_queue)
        self._instance = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._thread: threading.Thread | None = None
        self._last_drop_warning = 0.0
        self.rows_written = 0
        self.rows_dropped = 0
        self.rows_failed = 0

    def open(self) -> None:
        """Open the sinks (may do I/O) and start the writer thread."""
        for sink in self.sinks:
            sink.open()
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def record(self, context: RequestContext, status: int) -> None:
        """Queue the request's rows without ever blocking; drop them if the queue is full."""
        if self._thread is None:
            return
        rows = self.rows(context, status)
        try:
            self._queue.put_nowait(rows)
        except queue.Full:
            self.rows_dropped += len(rows)
            now = time.monotonic()
            if now - self._last_drop_warning > 60:
                self._last_drop_warning = now
                logger.warning(
                    "request log queue full (%d requests): dropping rows (%d so far); "
                    "the sinks are slower than the traffic or failing",
                    self._queue.maxsize,
                    self.rows_dropped,
                )

    def rows(self, context: RequestContext, status: int) -> list[dict[str, Any]]:
        latency = round((time.perf_counter() - context.started) * 1000, 3)
        base = dict.fromkeys(self.fields)
        base.update(
            request_id=context.request_id,
            date=context.date,
            method=context.method,
            path=context.path,
            client=context.client,
            username=context.username,
            latency_ms=latency,
        )
        items = context.items or [{}]
        rows = []
        for index, item in enumerate(items):
            row = {**base, **{k: v for k, v in item.items() if k in base}}
            if not row["record_id"]:
                row["record_id"] = (
                    context.request_id if len(items) == 1 else f"{context.request_id}/{index}"
                )
            row["status_code"] = item.get("status_code", status)
            row["error"] = item.get("error") or (context.error if status >= 400 else None)
            row["success"] = status < 400 and row["status_code"] < 400 and not row["error"]
            rows.append(row)
        return rows

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then close the sinks."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            logger.error("request log: writer stuck; %d queued requests lost", self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("request log: closing %s failed", sink.name)

    def stats(self) -> dict[str, Any]:
        return {
            "sinks": [s.name for s in self.sinks],
            "queued_requests": self._queue.qsize(),
            "rows_written": self.rows_written,
            "rows_dropped": self.rows_dropped,
            "rows_failed": self.rows_failed,
        }

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            buffer = list(item)
            deadline = time.monotonic() + self.flush_seconds
            while len(buffer) < self.chunk_rows:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                buffer.extend(item)
            self._write(buffer)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self._sequence += 1
        chunk = ResultChunk(key=f"api-requests-{self._instance}-{self._sequence:09d}", results=rows)
        failed = False
        for sink in self.sinks:
            for attempt in range(1, self.attempts + 1):
                try:
                    sink.write(chunk)
                    break
                except Exception as exc:
                    if attempt == self.attempts or not is_transient(exc):
                        failed = True
                        logger.error(
                            "request log: %d rows not written to %s: %s: %s",
                            len(rows),
                            sink.name,
                            type(exc).__name__,
                            exc,
                        )
                        break
                    time.sleep(min(8.0, 0.5 * 2**attempt))
        if failed:
            self.rows_failed += len(rows)
        else:
            self.rows_written += len(rows)


class RequestLogMiddleware:
    """Gives each request a :class:`RequestContext` and logs it once the response is sent."""

    def __init__(self, app: ASGIApp, log: Any, skip: Sequence[str] = ()) -> None:
        self.app = app
        self.log = log  # a callable returning the RequestLog (it exists only after start-up)
        self.skip = set(skip)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        context = RequestContext(
            request_id=new_request_id(),
            date=utc_now(),
            method=scope["method"],
            path=scope["path"],
            client=client[0] if client else "",
        )
        scope.setdefault("state", {})["log"] = context
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", context.request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception as exc:
            context.error = context.error or f"internal error: {type(exc).__name__}: {exc}"
            raise
        finally:
            log = self.log()
            if log is not None and scope["path"] not in self.skip:
                log.record(context, status)
