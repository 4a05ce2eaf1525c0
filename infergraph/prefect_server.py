"""A Prefect server kept running in the background, so local runs skip the 15 s temporary one.

``python -m infergraph.prefect_server start|stop|status [--port N]`` starts
``prefect server start`` detached, records its URL and pid under
``$INFERGRAPH_HOME/prefect-server/<port>.json`` and stops it again;
:func:`running_server` is how local runs find it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

DEFAULT_PORT = 4200
PREFECT_START = ("-m", "prefect", "server", "start")
START_TIMEOUT = 180.0  # a first start migrates a new database; slow on a loaded machine


def home() -> Path:
    """Where the records live (read at call time, so tests and users can redirect it)."""
    root = Path(os.environ.get("INFERGRAPH_HOME", Path.home() / ".infergraph"))
    return root / "prefect-server"


def _record(port: int) -> Path:
    return home() / f"{port}.json"


def healthy(api_url: str, timeout: float = 0.5) -> bool:
    """Whether the Prefect API at ``api_url`` (ending in ``/api``) answers its health check."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running_server(timeout: float = 0.5) -> str | None:
    """The API URL of a recorded server that answers now (the default port first), else None."""
    records = sorted(home().glob("*.json"), key=lambda p: p.stem != str(DEFAULT_PORT))
    for path in records:
        try:
            url = json.loads(path.read_text())["api_url"]
        except (OSError, ValueError, KeyError):
            continue
        if healthy(url, timeout):
            return url
    return None


def start(port: int = DEFAULT_PORT) -> dict[str, Any]:
    """Start a detached server on ``port`` (or find the one already recorded there)."""
    api_url = f"http://127.0.0.1:{port}/api"
    known = status(port)
    if known is not None:
        return known
    if healthy(api_url, 2):
        raise SystemExit(f"port {port} already serves a Prefect API not started here: use it")
    home().mkdir(parents=True, exist_ok=True)
    log_path = home() / f"{port}.log"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of another one
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *PREFECT_START, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command and its terminal's Ctrl-C
            env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy(api_url, 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            _terminate(proc.pid)
            raise SystemExit(f"the Prefect server did not start; see {log_path}")
        time.sleep(0.3)
    state = {"api_url": api_url, "pid": proc.pid, "port": port, "log": str(log_path)}
    _record(port).write_text(json.dumps(state))
    return state


def status(port: int = DEFAULT_PORT) -> dict[str, Any] | None:
    """The record of the server on ``port`` if that server still runs, else None."""
    try:
        state = json.loads(_record(port).read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state["pid"]) else None


def stop(port: int = DEFAULT_PORT) -> bool:
    """Stop the server recorded on ``port``; whether one was running."""
    state = status(port)
    _record(port).unlink(missing_ok=True)
    if state is None:
        return False
    _terminate(state["pid"])
    return True


def _alive(pid: int) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "prefect" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _terminate(pid: int) -> None:
    """SIGTERM the server's process group (uvicorn and its services), SIGKILL if it lingers."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infergraph.prefect_server",
        description="Keep a local Prefect server running for repeated local runs.",
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if args.command == "start":
        state = start(args.port)
        print(f"Prefect server at {state['api_url']} (pid {state['pid']}, log {state['log']})")
        print("local runs use it; stop it with `python -m infergraph.prefect_server stop`")
    elif args.command == "stop":
        print("stopped" if stop(args.port) else f"no server recorded on port {args.port}")
    else:
        state = status(args.port)
        if state is None:
            print(f"no server running on port {args.port}")
            return 1
        print(f"running at {state['api_url']} (pid {state['pid']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
