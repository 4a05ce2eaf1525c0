"""Slow and too many clients: deadlines on reading a request, a cap on open connections.

uvicorn bounds the time between requests (keep-alive) but not the time a client
may take to send a request's headers or body, so connections that never finish
their headers are held for ever and a few thousand of them exhaust the server.
:class:`GuardedH11Protocol` is uvicorn's h11 protocol with three bounds:

- headers must be complete within ``header_timeout`` seconds of the connection
  (or of the previous response): otherwise 408 and close;
- a body must be complete within ``body_timeout`` seconds of its headers:
  otherwise the connection is closed (the app sees the client disconnect);
- at most ``max_connections`` are open: the next one gets 503 and is closed at
  once, before it can hold anything.

``python -m infergraph.api`` installs it; with uvicorn's own command line pass
``--http infergraph.api.connections:GuardedH11Protocol`` (limits then come from the
``INFERGRAPH_API_*`` variables).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 120.0
    max_connections: int = 512

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionLimits:
        return cls(
            settings.header_timeout_seconds,
            settings.body_timeout_seconds,
            settings.max_connections,
        )


@functools.cache
def _limits_from_environment() -> ConnectionLimits:
    from infergraph.api.settings import ApiSettings

    return ConnectionLimits.from_settings(ApiSettings())


def _plain_response(status: bytes, text: str) -> bytes:
    body = text.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a connection cap."""

    def __init__(self, *args: Any, limits: ConnectionLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or _limits_from_environment()
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(cls, limits: ConnectionLimits) -> functools.partial[GuardedH11Protocol]:
        """The factory to pass as uvicorn's ``http`` (picklable, so ``--workers`` works)."""
        return functools.partial(cls, limits=limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            logger.warning(
                "refused a connection from %s: %d open, the limit is %d",
                self.client[0] if self.client else "?",
                len(self.connections) - 1,
                self.limits.max_connections,
            )
            transport.write(
                _plain_response(b"503 Service Unavailable", "too many open connections; retry")
            )
            transport.close()
            return
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Keep the deadline matching what the client owes: headers, body, or nothing."""
        if self.transport.is_closing():
            self._arm(None)
            return
        state = self.conn.their_state
        self._arm("headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None)

    def _arm(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
            self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _expired(self, phase: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        client = self.client[0] if self.client else "?"
        logger.debug(
            "closed connection from %s: request %s not in within %g s", client, phase, seconds
        )
        if phase == "headers" and self.conn.our_state is h11.IDLE:
            text = f"request headers not received within {seconds:g} s"
            self.transport.write(_plain_response(b"408 Request Timeout", text))
        self.transport.close()
