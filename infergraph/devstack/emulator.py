"""moto in server mode on loopback: the background emulator of ``up``, and throwaway ones.

Tests and benchmarks start theirs with :func:`start_moto` (a free port, real HTTP);
``up`` keeps one running across commands through a pid file (:class:`Emulator`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infergraph.devstack.resources import DEFAULT_PORT, HOME

#: moto in server mode with atomic DynamoDB writes (see :mod:`infergraph.devstack.moto_server`).
MOTO_SERVER = (sys.executable, "-m", "infergraph.devstack.moto_server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Return once ``url`` answers HTTP at all; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer within {timeout}s")


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto in server mode on a free loopback port (real HTTP); (process, URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [*MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/moto-api/", proc=proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc, url


@dataclass
class Emulator:
    """A moto server started in the background, found again through its pid file.

    Its files are keyed by port, so ``--port`` alone keeps two emulators (two
    checkouts, two users of one ``INFERGRAPH_HOME``) apart.
    """

    home: Path = HOME
    port: int = DEFAULT_PORT

    @property
    def pid_file(self) -> Path:
        return self.home / f"moto-{self.port}.pid"

    @property
    def state_file(self) -> Path:
        return self.home / f"state-{self.port}.json"

    @property
    def log_file(self) -> Path:
        return self.home / f"moto-{self.port}.log"

    def running(self) -> dict[str, Any] | None:
        """The state of a live emulator started by ``up`` on this port, else None."""
        try:
            pid = int(self.pid_file.read_text())
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        if not _is_moto(pid):
            return None
        return {**state, "pid": pid}

    def start(self, port: int | None = None) -> dict[str, Any]:
        from infergraph.cli_errors import UsageError

        self.port = port or self.port
        self.home.mkdir(parents=True, exist_ok=True)
        endpoint = f"http://127.0.0.1:{self.port}"
        if _answers(endpoint):
            raise UsageError(
                f"port {self.port} is in use by another program", "pick another one with --port"
            )
        log = open(self.log_file, "ab")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            [*MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not _answers(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise UsageError(f"moto did not start; see {self.log_file}", exit_code=1)
            time.sleep(0.2)
        state = {"endpoint": endpoint, "port": self.port}
        self.pid_file.write_text(str(proc.pid))
        self.state_file.write_text(json.dumps(state))
        return {**state, "pid": proc.pid}

    def stop(self) -> bool:
        state = self.running()
        if state is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        pid = state["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _is_moto(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_moto(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def _is_moto(pid: int) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and any(
            part in ("moto.server", MOTO_SERVER[-1]) for part in process.cmdline()
        )
    except psutil.Error:
        return False


def _answers(endpoint: str) -> bool:
    try:
        httpx.get(f"{endpoint}/moto-api/", timeout=2)
        return True
    except httpx.HTTPError:
        return False
