"""The arm's session operations over authenticated HTTP, as routes of the online API.

    POST /sessions/{session_id}/images     multipart: file, arm_id, image_name?, kind?
    POST /sessions/{session_id}/commands   {"arm_id"?, "arm_constants": {...}} → ends the session
    GET  /sessions/{session_id}/commands?arm_id=…   the commands stored by the last end

Same bearer token as ``/predict``. A picture is decoded by the project's safe
decoder, kept (S3 prefix or local folder) before anything else, recorded, and
detected through the API's own micro-batcher when the API serves a detector
(``INFERGRAPH_API_PREDICTOR=infergraph.detection.predictor:Detector``), so arm
pictures and ``/predict`` uploads share forward passes; otherwise through a
detector and batcher of their own. Ending a session runs the session flow (a
Prefect flow run, visible in the UI) named by ``INFERGRAPH_API_SESSIONS_FLOW``.
Settings: ``INFERGRAPH_API_SESSIONS_DATABASE`` (a ``postgresql://`` URL or a
PostgresDatabase block), ``…_IMAGES`` (``s3://bucket/prefix`` or a folder).
"""

import asyncio
import importlib
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infergraph.api.batcher import MicroBatcher
from infergraph.inference.decode import ImageDecodeError
from infergraph.inference.records import BOXES, Box
from infergraph.predictors.base import RecordError, RecordMeta
from infergraph.sessions.geometry import ArmConstants, ArmConstantsError, ImageNameError
from infergraph.sessions.service import BadRequest, ImageVault, receive_image, store_for
from infergraph.sessions.store import StoreError, UnknownSessionError

Name = Annotated[str, Field(min_length=1, max_length=200)]


class SessionSettings(BaseSettings):
    """``INFERGRAPH_API_SESSIONS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="INFERGRAPH_API_SESSIONS_", extra="ignore")

    database: str = Field(description="postgresql:// URL or PostgresDatabase block name")
    images: str = Field(default="sessions/", description="s3://bucket/prefix or a local folder")
    flow: str = Field(default="flows.sessions:sorting_session", description="the session flow")
    detector: str = "infergraph.detection.predictor:Detector"


class PictureReceived(BaseModel):
    arm_id: str
    session_id: str
    image_name: str
    kind: str
    uri: str
    width: int
    height: int
    new: bool = Field(description="False when the same picture was already received.")
    boxes: list[Box] | None = None
    box_count: int | None = None
    batch_size: int | None = Field(default=None, description="Pictures in its forward pass.")


class EndSession(BaseModel):
    arm_id: Name | None = Field(default=None, description="Default: the session's arm.")
    arm_constants: dict[str, Any]


class SessionCommands(BaseModel):
    arm_id: str
    session_id: str
    commands: list[list[list[float]]] = Field(
        description="[[item_servo0, item_servo1], [container_servo0, container_servo1]] each"
    )


class _Detection:
    """Forward passes for pictures: the API's batcher if its predictor has boxes, else its own."""

    def __init__(self, settings: SessionSettings, service: Callable[[], Any]) -> None:
        self.settings = settings
        self.service = service
        self._own: tuple[Any, MicroBatcher[Any, Any]] | None = None

    def parts(self) -> tuple[Any, MicroBatcher[Any, Any]]:
        svc = self.service()
        if BOXES in svc.predictor.output_fields:
            return svc.predictor, svc.batcher
        if self._own is None:
            from infergraph.predictors.loading import PredictorSpec, get_predictor

            detector = get_predictor(PredictorSpec(path=self.settings.detector))

            def forward(items: list[tuple[Any, RecordMeta]]) -> list[tuple[Any, int]]:
                outcomes = detector.run_prepared([i[0] for i in items], [i[1] for i in items])
                return [(o, len(items)) for o in outcomes]

            batcher: MicroBatcher[Any, Any] = MicroBatcher(
                forward, svc.settings.micro_batch_size, svc.settings.micro_batch_wait_ms / 1000
            )
            batcher.start()
            self._own = (detector, batcher)
        return self._own


def session_routes(service: Callable[[], Any], current_user: Any) -> APIRouter:
    """The router :mod:`infergraph.api.extensions` includes in the API."""
    settings = SessionSettings()  # type: ignore[call-arg]  (database comes from the environment)
    vault = ImageVault(settings.images)
    detection = _Detection(settings, service)
    router = APIRouter(prefix="/sessions", tags=["sorting sessions"])
    flow_path = settings.flow

    async def in_thread(fn: Callable[..., Any], *args: Any, retries: int = 3) -> Any:
        """Blocking store work off the event loop; a database blip is retried, then 503."""
        for attempt in range(retries):
            try:
                return await asyncio.to_thread(fn, *args)
            except StoreError as exc:
                if attempt == retries - 1:
                    raise HTTPException(503, f"session store unavailable: {exc}") from None
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    @router.post("/{session_id}/images", response_model=PictureReceived)
    async def post_image(
        session_id: str,
        file: Annotated[UploadFile, File(description="The picture (JPEG or PNG)")],
        arm_id: Annotated[str, Form(min_length=1, max_length=200)],
        username: Annotated[str, Depends(current_user)],
        image_name: Annotated[str | None, Form(max_length=200)] = None,
        kind: Annotated[Literal["proc", "after"], Form()] = "proc",
    ) -> dict[str, Any]:
        """``recv_img_proc`` / ``recv_img_after`` of the arm's protocol, with reasons on failure."""
        svc = service()
        name = image_name or file.filename or ""
        if not name or len(session_id) > 200:
            raise HTTPException(422, "image_name (or the file's name) and session_id are needed")
        limit = svc.settings.max_file_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"picture {name!r} is over the limit of {limit:,} bytes")
        headers = {
            "command": f"recv_img_{kind}",
            "arm_id": arm_id,
            "session_id": session_id,
            "image_name": name,
        }
        try:
            store = await in_thread(store_for, settings.database)
            received = await in_thread(
                receive_image, store, vault, headers, data, svc.settings.max_pixels
            )
        except (BadRequest, ImageDecodeError, ImageNameError) as exc:
            raise HTTPException(422, f"picture {name!r} refused: {exc}") from None
        reply: dict[str, Any] = {
            **{k: getattr(received, k) for k in ("arm_id", "session_id", "image_name", "kind")},
            **{k: getattr(received, k) for k in ("uri", "width", "height", "new")},
        }
        if kind == "after":
            return reply
        detector, batcher = detection.parts()
        meta = RecordMeta(name, received.uri, {}, received.width, received.height)
        with batcher.expecting() as ticket:
            prepared = await asyncio.to_thread(detector.prepare, received.image, meta)
            outcome, batch_size = await batcher.submit((prepared, meta), ticket)
        if isinstance(outcome, RecordError):
            raise HTTPException(500, f"picture {name!r} kept at {received.uri}: {outcome}")
        boxes = outcome[BOXES]
        await in_thread(store.put_boxes, arm_id, session_id, name, boxes)
        return {**reply, "boxes": boxes, "box_count": len(boxes), "batch_size": batch_size}

    @router.post("/{session_id}/commands", response_model=SessionCommands)
    async def end_session(
        session_id: str, body: EndSession, username: Annotated[str, Depends(current_user)]
    ) -> dict[str, Any]:
        """``get_commands_of_session``: run the session flow, return its commands."""
        try:
            constants = ArmConstants.parse(body.arm_constants)
        except ArmConstantsError as exc:
            raise HTTPException(422, str(exc)) from None
        store = await in_thread(store_for, settings.database)
        arm_id = body.arm_id or await known_arm(store, session_id)
        module, _, name = flow_path.partition(":")
        flow_fn = getattr(importlib.import_module(module), name)
        commands = await asyncio.to_thread(
            flow_fn,
            arm_id=arm_id,
            session_id=session_id,
            arm_constants=constants.model_dump(),
            database=settings.database,
            images=settings.images,
        )
        return {"arm_id": arm_id, "session_id": session_id, "commands": commands}

    @router.get("/{session_id}/commands", response_model=SessionCommands)
    async def get_commands(
        session_id: str,
        username: Annotated[str, Depends(current_user)],
        arm_id: str | None = None,
    ) -> dict[str, Any]:
        """The commands the session's last end stored (404 for an unknown session)."""
        store = await in_thread(store_for, settings.database)
        arm = arm_id or await known_arm(store, session_id)
        commands = await in_thread(store.commands, arm, session_id)
        return {"arm_id": arm, "session_id": session_id, "commands": commands}

    async def known_arm(store: Any, session_id: str) -> str:
        try:
            return await in_thread(store.arm_of, session_id)
        except UnknownSessionError as exc:
            raise HTTPException(404, str(exc)) from None

    return router
