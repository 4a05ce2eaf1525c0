"""A real ``python -m infergraph.api`` (uvicorn) on 127.0.0.1 for tests outside test_api.py."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from infergraph.api.users import hash_password
from tests.support.servers import REPO, free_port, wait_for_http

PASSWORD = "correct horse battery staple"


@dataclass
class RunningApi:
    url: str
    output: Path

    def token(self, user: str = "alice") -> str:
        response = httpx.post(f"{self.url}/token", data={"username": user, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


@contextmanager
def running_api(root: Path, **env: str) -> Iterator[RunningApi]:
    """The API with user ``alice`` (password :data:`PASSWORD`) and ``env`` on top; stopped after."""
    root.mkdir(parents=True, exist_ok=True)
    users = root / "users.htpasswd"
    users.write_text(f"alice:{hash_password(PASSWORD, rounds=4)}\n")
    port = free_port()
    environ = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "INFERGRAPH_API_SIGNING_KEY": secrets.token_urlsafe(48),
        "INFERGRAPH_API_PORT": str(port),
        "INFERGRAPH_API_USERS_FILE": str(users),
        "INFERGRAPH_API_REQUEST_LOG": f"{root}/log/requests.jsonl",
        **env,
    }
    output = root / "server.log"
    with open(output, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infergraph.api", "--log-level", "warning"],
            cwd=REPO,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
        except Exception:
            raise RuntimeError(f"API did not start:\n{output.read_text()}") from None
        yield RunningApi(f"http://127.0.0.1:{port}", output)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
