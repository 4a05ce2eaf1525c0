"""Prefect's temporary server, started as a local run starts, so it boots while the run imports.

Left to Prefect, the temporary server (a uvicorn subprocess serving
``prefect.server.api.server:create_app``) starts at the run's first API call,
after the run has imported torch, Prefect and its sinks: two start-ups of several
seconds each, one after the other, on a machine with a core idle.
:func:`start_early` launches the same server, with the same app and settings
(ephemeral: no UI, no background services), from a thread as the script starts.
It also skips block-type registration, most of a start because it imports every
installed Prefect collection: a block's type is registered when the block is
saved, and a full ``prefect server start`` on the same database registers the rest.

Nothing is started when a server is configured (``PREFECT_API_URL``) or kept
running by :mod:`infergraph.prefect_server`; :func:`choice` tells
:mod:`infergraph.local_prefect` which server the run uses.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

#: What the server process gets beyond the run's own settings: Prefect's own
#: temporary-server switches, and no block registration (see the module docstring).
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


STARTING = (
    "starting a temporary Prefect server (a few seconds; "
    "`python -m infergraph.prefect_server start` keeps one running)"
)


class ServerDidNotStart(RuntimeError):
    """The temporary server exited or never answered; ``fix`` says what to try."""

    def __init__(self, reason: str) -> None:
        self.message = f"the temporary Prefect server did not start: {reason}"
        self.fix = (
            "run again with --debug, or keep one running: python -m infergraph.prefect_server start"
        )
        super().__init__(self.message)


@dataclass
class TemporaryServer:
    """One uvicorn process serving Prefect's API on a free local port."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_until_healthy(self, timeout: float) -> None:
        """Block until the API answers; :class:`ServerDidNotStart` if it exits or times out.

        Meanwhile (the server is still booting) it imports what Prefect would import
        lazily at the run's first task, so that costs the run nothing.
        """
        import httpx

        deadline = time.monotonic() + timeout
        _warm_up()
        with httpx.Client(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise ServerDidNotStart(f"it exited with code {self.process.returncode}")
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerDidNotStart(f"no answer within {timeout:.0f} s")
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminate (then kill) the process; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Choice:
    """Which server a run uses: the configured one, a kept one, or a temporary one from here."""

    kept_url: str | None = None
    temporary: TemporaryServer | None = None


_thread: threading.Thread | None = None
_choice: list[Choice] = []  # filled by the thread
_failure: list[BaseException] = []


def start_early() -> None:
    """Decide on and launch the server in a thread; the script goes on importing meanwhile."""
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_decide, name="prefect-server-start", daemon=True)
        _thread.start()


def choice() -> Choice | None:
    """The decision :func:`start_early` made (waiting for it), or None if it was not called."""
    if _thread is None:
        return None
    _thread.join()
    if _failure:
        raise _failure[0]
    return _choice[0]


def _decide() -> None:
    try:
        _choice.append(_choose())
    except BaseException as exc:  # handed to the main thread by choice()
        _failure.append(exc)


def _choose() -> Choice:
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    from infergraph.prefect_server import running_server

    if PREFECT_API_URL.value():
        return Choice()
    kept = running_server()
    if kept:
        return Choice(kept_url=kept)
    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return Choice()  # Prefect itself says what to configure
    server = _launch()
    atexit.register(server.stop)
    return Choice(temporary=server)


def _launch() -> TemporaryServer:
    import prefect
    from prefect.settings import get_current_settings

    port = _free_port()
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        **SERVER_ENV,
    }
    env.pop("PREFECT_API_URL", None)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    return TemporaryServer(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL), port)


#: Modules a run imports at its first flow and task call, not before (~0.5 s).
LAZY_IMPORTS = ("fastapi.encoders", "prefect.flow_engine", "prefect.task_engine",
                "prefect.concurrency.sync")  # fmt: skip


def _warm_up() -> None:
    import contextlib
    import importlib

    for name in LAZY_IMPORTS:  # another Prefect version imports what it needs itself
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
