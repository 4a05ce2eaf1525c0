"""Uploaded files: size limits while reading, type by content, decode and preprocess.

The service we replace checked neither type nor size. Here a body over the
limit is cut off while it streams in (never buffered whole), the type is the one
Pillow detects from the bytes (the name's extension is only reported), and each
refusal is an :class:`UploadError` with the HTTP status and a detail that says
what was wrong with which file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from PIL import Image
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infergraph.inference.decode import FORMATS, ImageDecodeError, decoded
from infergraph.predictors.base import Predictor, RecordError, RecordMeta

#: Bytes of an over-limit body read and discarded so the client still receives the 413
#: (closing on an unread upload makes most clients report a reset instead of the answer).
DRAIN_BYTES = 64 * 1024 * 1024


class UploadError(Exception):
    """An upload refused with ``status`` (413, 415, 422) and a detail for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def detect_format(data: bytes) -> str | None:
    """The image format Pillow recognises from the leading bytes, allowed ones first."""
    Image.init()
    prefix = data[:16]
    ordered = [f for f in FORMATS if f in Image.OPEN] + [f for f in Image.OPEN if f not in FORMATS]
    for name in ordered:
        accept = Image.OPEN[name][1]
        if accept is None:
            continue  # formats without a signature cannot be told by content
        try:
            if accept(prefix):
                return name
        except Exception:
            continue
    return None


def extension(filename: str) -> str:
    """The file name's extension, lower case, without the dot ('' if none)."""
    return PurePosixPath(filename).suffix.lower().lstrip(".")


@dataclass(slots=True)
class PreparedUpload:
    """A decoded, preprocessed upload ready for the forward pass."""

    value: Any
    meta: RecordMeta
    format: str


def prepare_upload(
    data: bytes, filename: str, record_id: str, predictor: Predictor, max_pixels: int
) -> PreparedUpload:
    """Check type by content, decode and preprocess one file (CPU: call from a thread)."""
    if not data:
        raise UploadError(422, f"file {filename!r} is empty (0 bytes)")
    allowed = ", ".join(FORMATS)
    fmt = detect_format(data)
    if fmt is None:
        raise UploadError(
            415,
            f"file {filename!r} is not an image (its content matches none of the image "
            f"signatures); allowed types: {allowed}",
        )
    if fmt not in FORMATS:
        raise UploadError(
            415, f"file {filename!r} is a {fmt} image, which is not allowed; allowed: {allowed}"
        )
    try:
        # The decode budget is held through preprocessing: the full-size pixels live until then.
        with decoded(data, filename, max_pixels) as image:
            meta = RecordMeta(record_id, filename, {}, image.shape[1], image.shape[0])
            value = predictor.prepare(image, meta)
    except ImageDecodeError as exc:
        if exc.busy:
            raise UploadError(503, f"file {filename!r} not decoded: {exc.reason}") from None
        raise UploadError(422, f"file {filename!r} ({fmt}) cannot be used: {exc.reason}") from None
    if isinstance(value, RecordError):
        raise UploadError(422, f"file {filename!r} ({fmt}): the model cannot use it: {value}")
    return PreparedUpload(value, meta, fmt)


class BodyLimitMiddleware:
    """Refuse request bodies over a per-path limit with 413, while they stream in.

    A declared ``Content-Length`` over the limit is refused before any byte is
    read; a chunked body is counted as it arrives and cut off at the limit. The
    app behind never sees more than ``limit`` bytes, so uploads are never
    buffered (in memory or spooled to disk) beyond it.
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: dict[str, int],
        describe: Callable[[str, str], str],
        on_reject: Callable[[Scope, str], None] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.describe = describe
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = _int_or_none(headers.get(b"content-length"))
        if declared is not None and declared > limit:
            expects = headers.get(b"expect", b"").lower() == b"100-continue"
            if not expects and declared <= limit + DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES + limit)
            await self._reject(scope, send, self.describe(scope["path"], f"{declared:,} bytes"))
            return

        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    if message.get("more_body"):
                        await _drain(receive, DRAIN_BYTES)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's reaction to the cut-off body; the 413 below replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            size = f"more than {limit:,} bytes"
            await self._reject(scope, send, self.describe(scope["path"], size))

    async def _reject(self, scope: Scope, send: Send, detail: str) -> None:
        if self.on_reject is not None:
            self.on_reject(scope, detail)
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, budget: int) -> None:
    """Read and discard the rest of a body, up to ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body"):
            return


def _int_or_none(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
