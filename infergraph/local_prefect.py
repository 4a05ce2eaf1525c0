"""Prefect settings for a zero-setup run on a fresh machine, and a quiet, orderly shutdown."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infergraph.temporary_server import TemporaryServer

#: Off everywhere: anonymous usage reports only produce errors on machines without internet.
#: ``DO_NOT_TRACK`` is the client's switch, the setting the (temporary) server's.
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


class NoPrefectServer(RuntimeError):
    """``PREFECT_API_URL`` names a server that does not answer; ``fix`` says what to do."""

    def __init__(self, url: str) -> None:
        self.message = f"no Prefect server answers at PREFECT_API_URL={url}"
        self.fix = (
            "start it (prefect server start), or use a temporary one: "
            "prefect config unset PREFECT_API_URL (and unset the variable)"
        )
        super().__init__(f"{self.message}: {self.fix}")


@contextlib.contextmanager
def local_settings() -> Iterator[None]:
    """Settings for a zero-setup run on a fresh machine.

    Without a configured API, Prefect starts a temporary server whose first start
    migrates a new database, which takes longer than Prefect's default 20 s wait.
    Anything the user set in the environment or a profile wins.
    """
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    telemetry_off()
    updates: dict[Any, Any] = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 180
    if os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false").lower() == "false":
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    updates.update(_server_choice())
    with temporary_settings(updates=updates):
        yield


_kept: list[str] = []  # the kept server's URL, once local_settings chose it


def _server_choice() -> dict[Any, Any]:
    """The server started early for this run, else a kept one, when none is configured."""
    from prefect.settings import PREFECT_API_URL

    from infergraph.prefect_server import running_server
    from infergraph.temporary_server import choice

    early = choice()
    if early is not None:
        if early.temporary is not None:
            return {PREFECT_API_URL: early.temporary.api_url}
        if early.kept_url:
            _kept[:] = [early.kept_url]
            return {PREFECT_API_URL: early.kept_url}
        return {}
    if PREFECT_API_URL.value():
        return {}
    url = running_server()
    if not url:
        return {}
    _kept[:] = [url]
    return {PREFECT_API_URL: url}


def _started_here() -> TemporaryServer | None:
    from infergraph.temporary_server import choice

    early = choice()
    return early.temporary if early is not None else None


def _announce(url: str | None) -> None:
    """One line on which server a run uses, so a user is not left staring at nothing.

    Said once the command's own checks passed: a mistake gets only its error and fix.
    """
    from infergraph.temporary_server import STARTING

    temporary = _started_here()
    if not url or (temporary is not None and url == temporary.api_url):
        print(STARTING, file=sys.stderr)
    elif url in _kept:
        print(f"using the local Prefect server at {url}", file=sys.stderr)


def telemetry_off() -> None:
    """Turn Prefect's telemetry off for this process and the servers it starts (unless set)."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)


def check_api() -> None:
    """Fail fast, naming the fix, when ``PREFECT_API_URL`` points at no server.

    Commands call it before their first use of Prefect, after their own cheap
    checks, instead of waiting out the client's retries; it also says which server
    the run uses (a temporary one takes ~15 s to start).
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    _announce(url)
    if not url:
        return
    temporary = _started_here()
    if temporary is not None and url == temporary.api_url:
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        temporary.wait_until_healthy(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        return
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5)
    except httpx.HTTPError:
        raise NoPrefectServer(url) from None


def temporary_servers() -> set[int]:
    """Identities of the temporary Prefect servers running in this process.

    Prefect's server module takes seconds to import: if nothing imported it, no
    temporary server of Prefect's runs here.
    """
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return set()
    return {id(s) for s in server_module.SubprocessASGIServer._instances.values() if s.running}


def shutdown(keep: set[int] | None = None, timeout: float = 30.0) -> None:
    """Deliver queued events and logs, then stop the temporary server, in that order.

    Left to ``atexit``, the server can be stopped while it is still writing the
    last task-run events: harmless (it retries them in its final flush) but it prints ``Error
    flushing … events`` with a ``CancelledError`` traceback. Servers in ``keep``
    (running before the command started, e.g. a test's) stay up.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    server_module = sys.modules.get("prefect.server.api.server")
    instances = server_module.SubprocessASGIServer._instances.values() if server_module else []
    servers = [
        s
        for s in list(instances)
        if s.running and s.server_process is not None and id(s) not in (keep or set())
    ]
    early = _started_here()
    if early is not None and early.process.poll() is not None:
        early = None
    if not servers and early is None:
        return
    for cls in (EventsWorker, APILogWorker):
        with contextlib.suppress(Exception):
            cls.drain_all(timeout=timeout)
    for server in servers:
        _wait_until_idle(server.api_url)
        server.stop()
    if early is not None:
        _wait_until_idle(early.api_url)
        early.stop()


def _wait_until_idle(api_url: str, timeout: float = 5.0) -> None:
    """Wait until the server has recorded every task run's last state (bounded).

    The server records task runs from events, one at a time, after the client has
    sent them; while a task run it knows is not final, it still has work queued.
    """
    import time
    from datetime import UTC, datetime

    import httpx
    import psutil

    started = datetime.fromtimestamp(psutil.Process().create_time() - 1, UTC).isoformat()
    ours = {"expected_start_time": {"after_": started}}
    unfinished = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
    body = {"task_runs": {**ours, "state": {"type": {"any_": unfinished}}}}
    deadline = time.monotonic() + timeout
    previous = None
    with httpx.Client(base_url=api_url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                pending = client.post("/task_runs/count", json=body).json()
                total = client.post("/task_runs/count", json={"task_runs": ours}).json()
            except (httpx.HTTPError, ValueError):
                return
            if not isinstance(pending, int) or not isinstance(total, int):
                return  # an API that does not take this filter: nothing to wait on
            if pending == 0 and total == previous:
                return
            previous = total
            time.sleep(0.1)
