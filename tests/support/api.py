"""The API under test: ``python -m infergraph.api`` (uvicorn) on 127.0.0.1 with test limits."""

from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infergraph.api.users import hash_password
from infergraph.predictors.digits import SAMPLES
from tests.support.servers import REPO, free_port, wait_for_http

PASSWORD = "correct horse battery staple"
TTL = 120
MAX_FILE = 256 * 1024
MAX_FILES = 8
MAX_PIXELS = 1_000_000
SAMPLE_FILES = sorted(SAMPLES.glob("*.png"))


def labels() -> dict[str, int]:
    with open(SAMPLES / "manifest.csv", newline="") as handle:
        return {row["file"]: int(row["label"]) for row in csv.DictReader(handle)}


@dataclass
class Api:
    url: str
    proc: subprocess.Popen[bytes]
    key: str
    root: Path
    users_file: Path
    output: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def token(self, user: str = "alice", password: str = PASSWORD, ip: str | None = None) -> str:
        headers = {"X-Forwarded-For": ip} if ip else {}
        with self.client() as client:
            response = client.post(
                "/token", data={"username": user, "password": password}, headers=headers
            )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def log_rows(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted((self.root / "log").glob("requests-*.jsonl")):
            rows += [json.loads(line) for line in path.read_text().splitlines()]
        return rows

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_api(root: Path, users_file: Path | None, **env: str) -> Api:
    """``python -m infergraph.api`` with test limits, logging under ``root``; caller stops it."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    key = secrets.token_urlsafe(48)
    environ = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "INFERGRAPH_API_SIGNING_KEY": key,
        "INFERGRAPH_API_PORT": str(port),
        "INFERGRAPH_API_TOKEN_TTL_SECONDS": str(TTL),
        "INFERGRAPH_API_MAX_FILE_BYTES": str(MAX_FILE),
        "INFERGRAPH_API_MAX_FILES_PER_REQUEST": str(MAX_FILES),
        "INFERGRAPH_API_MAX_PIXELS": str(MAX_PIXELS),
        "INFERGRAPH_API_MAX_FAILED_LOGINS": "3",
        "INFERGRAPH_API_MICRO_BATCH_SIZE": "16",
        "INFERGRAPH_API_MICRO_BATCH_WAIT_MS": "20",
        "INFERGRAPH_API_REQUEST_LOG": f"{root}/log/requests-{{pid}}.jsonl,{root}/log/requests.csv",
        **env,
    }
    if users_file is not None:
        environ["INFERGRAPH_API_USERS_FILE"] = str(users_file)
    output = root / "server.log"
    with open(output, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infergraph.api", "--log-level", "warning"],
            cwd=REPO,
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    api = Api(f"http://127.0.0.1:{port}", proc, key, root, users_file or root / "none", output)
    try:
        wait_for_http(f"{api.url}/health", timeout=90, proc=proc)
    except Exception:
        api.stop()
        raise RuntimeError(f"API did not start:\n{output.read_text()}") from None
    return api


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def running_api(root: Path, **env: str) -> Iterator[Api]:
    """:func:`start_api` with user ``alice`` and limits that fit full-size photos; stopped after."""
    root.mkdir(parents=True, exist_ok=True)
    users = root / "users.htpasswd"
    users.write_text(f"alice:{hash_password(PASSWORD, rounds=4)}\n")
    photos = {
        "INFERGRAPH_API_MAX_FILE_BYTES": str(8 << 20),
        "INFERGRAPH_API_MAX_PIXELS": "50000000",
    }
    api = start_api(root, users, **{**photos, **env})
    try:
        yield api
    finally:
        api.stop()
