"""Session-wide test harness: one Prefect server and one moto server per test session.

Both are real servers reached over HTTP on 127.0.0.1: flows run against a real
(temporary, SQLite) Prefect API, and boto3 talks real HTTP to moto in server
mode, so serialisation, pagination and error responses are exercised as in
production.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# Never let a test reach real AWS with someone's real credentials.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {proc.returncode}")
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
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
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


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect API (SQLite) for every test that runs flows or uses blocks."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode, as a subprocess on a free loopback port."""
    proc, url = start_moto()
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def aws(moto_endpoint: str):
    """Fresh, empty emulated AWS for one test, and an AwsCredentials block pointing at it."""
    from prefect_aws import AwsCredentials

    httpx.post(f"{moto_endpoint}/moto-api/reset", timeout=30).raise_for_status()
    return AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": moto_endpoint},
    )


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures``: reference data that is not committed to this repository."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def postgres_server():
    """ONE real PostgreSQL per test session, from the machine's binaries (see pgserver)."""
    from infergraph.sessions.pgserver import PostgresUnavailable, ThrowawayPostgres

    try:
        server = ThrowawayPostgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def pg_conninfo(postgres_server) -> str:
    """The session's PostgreSQL with empty infergraph tables (schema kept, rows truncated)."""
    import psycopg

    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS commands, objects, images, sessions CASCADE")
        conn.execute("DROP TABLE IF EXISTS infergraph_schema_version")
    return postgres_server.conninfo
