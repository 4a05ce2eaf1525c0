"""The online prediction API: sign in, upload images, get the batch flow's predictions.

``create_app()`` builds the FastAPI app from :class:`infergraph.api.settings.ApiSettings`
(environment variables). At start-up it loads the predictor once, through the
same :func:`infergraph.predictors.loading.get_predictor` the batch flow uses, and starts
the micro-batcher and the request-log writer; both stop cleanly at shutdown.
Uploads are decoded with the batch flow's :func:`infergraph.inference.decode.decode_image` and
predicted with ``Predictor.prepare`` / ``run_prepared``, so the same image gets
the same answer online and in batch.
"""

# No "from __future__ import annotations": FastAPI must see the closures used in Depends().
import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from infergraph.api.auth import FailedLoginLimiter, TokenError, Tokens
from infergraph.api.batcher import BatcherClosed, Expected, MicroBatcher
from infergraph.api.extensions import add_extensions
from infergraph.api.models import BatchPrediction, Prediction, TokenResponse, error_responses
from infergraph.api.requestlog import RequestContext, RequestLog, RequestLogMiddleware
from infergraph.api.settings import ApiSettings, check_settings
from infergraph.api.uploads import (
    BodyLimitMiddleware,
    PreparedUpload,
    UploadError,
    extension,
    prepare_upload,
)
from infergraph.api.users import UserStore
from infergraph.inference import decode_budget
from infergraph.inference.decode import FORMATS
from infergraph.inference.sinks.base import open_sink
from infergraph.predictors.base import Predictor, RecordError, RecordMeta
from infergraph.predictors.loading import get_predictor

logger = logging.getLogger(__name__)

USERS_REFRESH_SECONDS = 10.0
#: A user name and password; anything bigger is not a sign-in.
TOKEN_FORM_BYTES = 16 * 1024
BEARER = {"WWW-Authenticate": "Bearer"}


# ---------------------------------------------------------------- the running service


class Service:
    """What the routes share; exists between start-up and shutdown."""

    def __init__(self, settings: ApiSettings, predictor: Predictor, users: UserStore) -> None:
        self.settings = settings
        self.predictor = predictor
        self.users = users
        self.tokens = Tokens(
            settings.signing_key.get_secret_value(), settings.token_ttl_seconds, settings.issuer
        )
        self.limiter = FailedLoginLimiter(
            settings.max_failed_logins, settings.failed_login_window_seconds
        )
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        # bcrypt is deliberately slow: two threads at most, so sign-ins cannot starve predictions.
        self.auth_pool = ThreadPoolExecutor(2, thread_name_prefix="bcrypt")
        self.batcher: MicroBatcher[tuple[Any, RecordMeta], tuple[Any, int]] = MicroBatcher(
            self._forward, settings.micro_batch_size, settings.micro_batch_wait_ms / 1000
        )
        self.request_log: RequestLog | None = None
        self.started = time.monotonic()
        self._refresher: asyncio.Task[None] | None = None

    def _forward(self, items: list[tuple[Any, RecordMeta]]) -> list[tuple[Any, int]]:
        """One forward pass over a micro-batch (runs in the batcher's thread)."""
        outcomes = self.predictor.run_prepared([i[0] for i in items], [i[1] for i in items])
        return [(o, len(items)) for o in outcomes]

    async def start(self) -> None:
        self.batcher.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_users())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self.batcher.close()
        self.decode_pool.shutdown(wait=True)
        self.auth_pool.shutdown(wait=True)
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.close)

    async def _refresh_users(self) -> None:
        """Re-read the users (a Secret block too), so password changes revoke tokens promptly."""
        while True:
            await asyncio.sleep(USERS_REFRESH_SECONDS)
            try:
                await asyncio.to_thread(self.users.refresh, True)
            except Exception as exc:  # a Prefect API hiccup must not end the refreshing
                logger.error("users not reloaded, keeping the previous users: %s", exc)

    async def classify(
        self,
        upload: UploadFile,
        username: str,
        context: RequestContext,
        record_id: str,
        arrival: Expected | None = None,
    ) -> dict[str, Any]:
        """One file through size check, decode, preprocess and the shared forward pass.

        Returns the response item; its ``status_code`` says whether it succeeded.
        ``arrival`` is the request's announcement, handed over to this file's own.
        """
        name = upload.filename or "upload"
        item: dict[str, Any] = {
            "request_id": context.request_id,
            "record_id": record_id,
            "username": username,
            "filename": name,
            "extension": extension(name),
            "format": None,
            "date": context.date,
            "bytes": upload.size,
        }
        try:
            with self.batcher.expecting() as ticket:
                if arrival is not None:
                    arrival.release()
                prepared = await self._prepare(upload, name, record_id)
                item.update(
                    format=prepared.format, width=prepared.meta.width, height=prepared.meta.height
                )
                try:
                    outcome, batch_size = await self.batcher.submit(
                        (prepared.value, prepared.meta), ticket
                    )
                except BatcherClosed as exc:
                    raise UploadError(503, f"file {name!r} not predicted: {exc}") from None
            item["batch_size"] = batch_size
            if isinstance(outcome, RecordError):
                raise UploadError(500, f"file {name!r}: the model failed: {outcome}")
        except UploadError as exc:
            item.update(success=False, status_code=exc.status, error=exc.detail)
            return item
        item.update(outcome)
        item.update(success=True, status_code=200, error=None)
        return item

    async def _prepare(self, upload: UploadFile, name: str, record_id: str) -> PreparedUpload:
        limit = self.settings.max_file_bytes
        if upload.size is not None and upload.size > limit:
            raise UploadError(
                413, f"file {name!r} is {upload.size:,} bytes, over the limit of {limit:,}"
            )
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise UploadError(413, f"file {name!r} is over the limit of {limit:,} bytes")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.decode_pool,
            prepare_upload,
            data,
            name,
            record_id,
            self.predictor,
            self.settings.max_pixels,
        )

    def health(self) -> dict[str, Any]:
        s = self.settings
        return {
            "status": "ok",
            "predictor": s.predictor,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "users": len(self.users),
            "allowed_formats": list(FORMATS),
            "limits": {
                "max_file_bytes": s.max_file_bytes,
                "max_files_per_request": s.max_files_per_request,
                "max_pixels": s.max_pixels,
            },
            "micro_batching": {
                "max_batch_size": s.micro_batch_size,
                "max_wait_ms": s.micro_batch_wait_ms,
                **self.batcher.stats.as_dict(),
            },
            "request_log": self.request_log.stats() if self.request_log else None,
        }


class AnnounceMiddleware:
    """Announce prediction requests to the batcher as they arrive, before their bodies are read.

    A forming batch then waits (up to the maximum wait) for requests whose
    uploads are still streaming in, not only for those already decoding.
    """

    PATHS = frozenset({"/predict", "/predict/batch"})

    def __init__(self, app: ASGIApp, service: Callable[[], Service | None]) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self.service() if scope["type"] == "http" else None
        if service is None or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
            return
        with service.batcher.expecting() as ticket:
            scope.setdefault("state", {})["arrival"] = ticket
            await self.app(scope, receive, send)


def _arrival(request: Request) -> Expected | None:
    ticket = request.scope.get("state", {}).get("arrival")
    return ticket if isinstance(ticket, Expected) else None


async def _start_service(settings: ApiSettings) -> Service:
    """Load users, the model (once) and the request-log sinks, off the event loop."""
    # First, before any worker thread exists: it also caps malloc's per-thread arenas.
    decode_budget.configure(
        int(settings.decode_budget_mb * 1024 * 1024), settings.decode_wait_seconds
    )
    if settings.users_file is not None:
        users = await asyncio.to_thread(UserStore.from_file, settings.users_file)
    else:
        users = await asyncio.to_thread(UserStore.from_secret, settings.users_secret or "")
    if not len(users):
        logger.warning("no users: nobody can sign in until one is added")
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    predictor = await asyncio.to_thread(get_predictor, settings.predictor_spec())
    await asyncio.to_thread(_warm_up, predictor)
    service = Service(settings, predictor, users)
    if settings.request_log:
        service.request_log = await asyncio.to_thread(_open_request_log, settings, predictor)
    await service.start()
    return service


def _warm_up(predictor: Predictor) -> None:
    """One throw-away pass so the first client does not pay for lazy initialisation."""
    import numpy as np

    meta = RecordMeta("warm-up", "warm-up", {}, 32, 32)
    image = np.full((32, 32, 3), 255, dtype=np.uint8)
    image[8:24, 14:18] = 0
    predictor.run_prepared([predictor.prepare(image, meta)], [meta])


def _open_request_log(settings: ApiSettings, predictor: Predictor) -> RequestLog:
    import infergraph.inference.aws_schemes  # noqa: F401  (registers the dynamodb://, s3://, sqs:// sinks)

    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    credentials = None
    if settings.aws_credentials:
        from prefect_aws import AwsCredentials

        credentials = AwsCredentials.load(settings.aws_credentials)
    sinks = [
        open_sink(
            spec.replace("{started}", started).replace("{pid}", str(os.getpid())),
            credentials=credentials,
        )
        for spec in settings.request_log
    ]
    log = RequestLog(
        sinks,
        predictor.output_fields,
        max_queue=settings.request_log_queue,
        flush_seconds=settings.request_log_flush_seconds,
    )
    log.open()
    return log


# ---------------------------------------------------------------- the app


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The FastAPI app; refuses unsafe settings (``infergraph.api.settings.check_settings``)."""
    settings = settings or ApiSettings()
    for warning in check_settings(settings):
        logger.warning(warning)
    holder: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await _start_service(settings)
        holder["service"] = service
        logger.info(
            "serving %s for %d users; request log: %s",
            settings.predictor,
            len(service.users),
            ", ".join(service.request_log.stats()["sinks"]) if service.request_log else "off",
        )
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="infergraph prediction API",
        version="1.0",
        description=(
            "Sign in with `POST /token`, then send images to `POST /predict` (one file) or "
            "`POST /predict/batch` (several) with `Authorization: Bearer <token>`. "
            "Predictions come from the same predictor and decoding as the batch flow."
        ),
        lifespan=lifespan,
    )

    def service() -> Service:
        return holder["service"]

    def context(request: Request) -> RequestContext:
        return request.state.log

    bearer = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)

    async def authenticate(request: Request, token: str) -> str:
        """The user a bearer token names, if it is valid for their current password."""
        svc = service()
        if svc.users.changed():
            await asyncio.get_running_loop().run_in_executor(svc.auth_pool, svc.users.refresh)
        try:
            name = svc.tokens.verify(token, svc.users.credential)
        except TokenError as exc:
            raise HTTPException(401, exc.detail, headers=BEARER) from None
        context(request).username = name
        return name

    async def current_user(request: Request, token: Annotated[str | None, Depends(bearer)]) -> str:
        if not token:
            raise HTTPException(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>' "
                "with a token from POST /token",
                headers=BEARER,
            )
        return await authenticate(request, token)

    @app.post(
        "/token",
        response_model=TokenResponse,
        responses=error_responses(401, 429),
        summary="Sign in (OAuth2 password form) and get a bearer token",
    )
    async def token(
        request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
    ) -> TokenResponse:
        svc = service()
        # Logged verbatim only once it is known to be a user name, not a mistyped password.
        ctx = context(request)
        known = form.username in svc.users
        ctx.username = form.username if known else svc.tokens.redact(form.username)
        client = request.client.host if request.client else "unknown"
        wait = svc.limiter.begin(client)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise HTTPException(
                429,
                f"too many failed sign-ins from {client}: try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        loop = asyncio.get_running_loop()

        def check() -> bytes | None:
            svc.users.refresh()
            return svc.users.check(form.username, form.password)

        credential = await loop.run_in_executor(svc.auth_pool, check)
        if credential is None:
            raise HTTPException(401, "incorrect username or password", headers=BEARER)
        svc.limiter.succeeded(client)
        return TokenResponse(
            access_token=svc.tokens.issue(form.username, credential),
            expires_in=svc.tokens.ttl_seconds,
        )

    @app.post(
        "/predict",
        response_model=Prediction,
        responses=error_responses(401, 413, 415, 422, 500, 503),
        summary="Classify one uploaded image",
    )
    async def predict(
        request: Request,
        file: Annotated[UploadFile, File(description="An image: " + ", ".join(FORMATS))],
        username: Annotated[str, Depends(current_user)],
    ) -> dict[str, Any]:
        ctx = context(request)
        item = await service().classify(file, username, ctx, ctx.request_id, _arrival(request))
        ctx.items = [item]
        if not item["success"]:
            raise HTTPException(item["status_code"], item["error"])
        return item

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        responses=error_responses(401, 413),
        summary="Classify several uploaded images; each result says whether it succeeded",
    )
    async def predict_batch(
        request: Request,
        files: Annotated[list[UploadFile], File(description="Images, as repeated 'files' parts.")],
        username: Annotated[str, Depends(current_user)],
    ) -> dict[str, Any]:
        svc = service()
        ctx = context(request)
        limit = svc.settings.max_files_per_request
        if len(files) > limit:
            raise HTTPException(413, f"{len(files)} files in one request; at most {limit}")
        arrival = _arrival(request)
        items = await asyncio.gather(
            *(
                svc.classify(f, username, ctx, f"{ctx.request_id}/{i}", arrival)
                for i, f in enumerate(files)
            )
        )
        ctx.items = list(items)
        return {
            "request_id": ctx.request_id,
            "username": username,
            "date": ctx.date,
            "count": len(items),
            "succeeded": sum(1 for i in items if i["success"]),
            "results": items,
        }

    add_extensions(app, service, current_user)  # e.g. the sorting-session routes

    @app.get(
        "/health",
        responses=error_responses(401),
        summary="Liveness; with a bearer token also configuration and counters",
    )
    async def health(
        request: Request, token: Annotated[str | None, Depends(bearer)]
    ) -> dict[str, Any]:
        if not token:
            return {"status": "ok"}
        await authenticate(request, token)
        return service().health()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Any:
        state = request.scope.get("state", {}).get("log")
        if state is not None:
            state.error = str(exc.detail)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Any:
        state = request.scope.get("state", {}).get("log")
        if state is not None:
            state.error = "invalid request: " + "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                for e in exc.errors()
            )
        return await request_validation_exception_handler(request, exc)

    def too_large(path: str, size: str) -> str:
        if path == "/token":
            return f"sign-in form of {size} is over the limit of {TOKEN_FORM_BYTES:,} bytes"
        if path == "/predict/batch":
            return (
                f"request body of {size} is over the limit for "
                f"{settings.max_files_per_request} files of at most "
                f"{settings.max_file_bytes:,} bytes each"
            )
        return (
            f"request body of {size} is over the limit for one file of at most "
            f"{settings.max_file_bytes:,} bytes"
        )

    def rejected(scope: Scope, detail: str) -> None:
        state = scope.get("state", {}).get("log")
        if state is not None:
            state.error = detail

    app.add_middleware(AnnounceMiddleware, service=lambda: holder.get("service"))
    app.add_middleware(
        BodyLimitMiddleware,
        limits={
            "/token": TOKEN_FORM_BYTES,
            "/predict": settings.upload_limit(1),
            "/predict/batch": settings.upload_limit(settings.max_files_per_request),
        },
        describe=too_large,
        on_reject=rejected,
    )
    app.add_middleware(
        RequestLogMiddleware,
        log=lambda: holder["service"].request_log if "service" in holder else None,
        skip=settings.request_log_skip,
    )
    return app
