"""The sorting arm's websocket protocol, served beside the flows (reference port 6000).

Binary frame: UTF-8 JSON headers ``{"command", "arm_id", "session_id", "image_name"}``,
``___SPLIT___``, JPEG bytes. ``recv_img_proc`` keeps, records and detects the
picture; ``recv_img_after`` keeps and records it. The reply is the text ``true``
or ``false`` as the reference sent (the arm does not read more); the reason for
a ``false`` is logged with the arm, session and image.
Text frame ``{"command": "get_commands_of_session", "session_id", "arm_constants"}``
runs the session flow and replies with the JSON command list, or with
``{"error": "..."}`` naming what was wrong (the arm expects a list, so an object
is unmistakable). ``stitch_after_image`` gets no reply, as in the reference.

Unlike the reference, frames are handled concurrently: decoding, storage and the
flow run in threads, and pictures from all connections share forward passes
through a micro-batcher.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve

from infergraph.api.batcher import MicroBatcher
from infergraph.inference.decode import ImageDecodeError
from infergraph.predictors.base import RecordMeta
from infergraph.sessions.geometry import ArmConstants, ArmConstantsError, ImageNameError
from infergraph.sessions.service import (
    BadRequest,
    ImageVault,
    parse_frame,
    receive_image,
)
from infergraph.sessions.store import SessionStore, StoreError, UnknownSessionError

log = logging.getLogger("infergraph.sessions.endpoint")
MAX_FRAME = 4 * 1024 * 1024  # reference frames are ~2 MB
RunSession = Callable[[str, str, dict[str, Any]], list[Any]]


class SessionEndpoint:
    """``async with SessionEndpoint(...).serving(host, port)``; one instance per process."""

    def __init__(
        self,
        store: SessionStore,
        vault: ImageVault,
        detector: Any,
        run_session: RunSession,
        *,
        max_pixels: int = 20_000_000,
        batch_size: int = 8,
        max_wait: float = 0.02,
        store_retries: int = 3,
    ) -> None:
        self.store, self.vault, self.detector = store, vault, detector
        self.run_session = run_session
        self.max_pixels = max_pixels
        self.store_retries = store_retries
        self.batcher: MicroBatcher[np.ndarray, Any] = MicroBatcher(
            self._detect_batch, max_size=batch_size, max_wait=max_wait
        )
        self.server: Server | None = None

    def _detect_batch(self, images: list[np.ndarray]) -> list[Any]:
        metas = [RecordMeta(record_id=str(i), uri="frame") for i in range(len(images))]
        return self.detector.run_batch(images, metas)

    async def start(self, host: str = "127.0.0.1", port: int = 6000) -> Server:
        self.batcher.start()
        self.server = await serve(self.handle, host, port, max_size=MAX_FRAME)
        return self.server

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        await self.batcher.close()

    async def handle(self, connection: ServerConnection) -> None:
        async for message in connection:
            if isinstance(message, bytes):
                ok = await self.on_picture(message)
                await connection.send("true" if ok else "false")
            else:
                reply = await self.on_text(message)
                if reply is not None:
                    await connection.send(json.dumps(reply))

    async def on_picture(self, frame: bytes) -> bool:
        where = "frame"
        try:
            headers, data = parse_frame(frame)
            where = (
                f"arm {headers['arm_id']} session {headers['session_id']} {headers['image_name']}"
            )
            received = await self._with_retries(
                receive_image, self.store, self.vault, headers, data, self.max_pixels
            )
            if received.kind == "proc":
                outcome = await self.batcher.submit(received.image)
                if not isinstance(outcome, dict):
                    raise RuntimeError(f"detection failed: {outcome}")
                await self._with_retries(
                    self.store.put_boxes,
                    received.arm_id,
                    received.session_id,
                    received.image_name,
                    outcome["boxes"],
                )
            return True
        except (BadRequest, ImageDecodeError, ImageNameError) as exc:
            log.warning("refused %s: %s", where, exc)
        except StoreError as exc:
            log.error("%s kept in %s but not recorded: %s", where, self.vault.root, exc)
        except Exception:
            log.exception("failed %s", where)
        return False

    async def _with_retries(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking store work in a thread; a database blip is retried, then reported."""
        for attempt in range(self.store_retries):
            try:
                return await asyncio.to_thread(fn, *args)
            except StoreError:
                if attempt == self.store_retries - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def on_text(self, text: str) -> Any:
        try:
            request = json.loads(text)
        except json.JSONDecodeError as exc:
            return {"error": f"text frame is not JSON: {exc}"}
        if not isinstance(request, dict):
            return {"error": "text frame must be a JSON object with a command"}
        command = request.get("command")
        if command == "stitch_after_image":
            log.info(
                "stitch_after_image for %s/%s: nothing to stitch",
                request.get("arm_id"),
                request.get("session_id"),
            )
            return None
        if command != "get_commands_of_session":
            return {
                "error": f"unknown command {command!r}: expected get_commands_of_session "
                "or stitch_after_image"
            }
        session_id = request.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            return {"error": "get_commands_of_session needs a session_id"}
        try:
            constants = ArmConstants.parse(request.get("arm_constants"))
            arm_id = request.get("arm_id") or await self._with_retries(
                self.store.arm_of, session_id
            )
            return await asyncio.to_thread(
                self.run_session, arm_id, session_id, constants.model_dump()
            )
        except (ArmConstantsError, UnknownSessionError, StoreError) as exc:
            return {"error": str(exc)}
        except Exception as exc:
            log.exception("session %s failed", session_id)
            return {"error": f"session {session_id} failed: {type(exc).__name__}: {exc}"}
