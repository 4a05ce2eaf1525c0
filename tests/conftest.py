"""Session-wide test harness: one Prefect server and one moto server per test session.

Both are real servers reached over HTTP on 127.0.0.1: flows run against a real
(temporary, SQLite) Prefect API, and boto3 talks real HTTP to moto in server
mode, so serialisation, pagination and error responses are exercised as in
production.
"""

from __future__ import annotations

import os
import subprocess
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

from tests.support.servers import REPO, start_moto  # noqa: E402  (after the environment)

FIXTURES = REPO / "tests" / "fixtures"


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
    """``tests/fixtures``: reference data from the systems infergraph replaces (NOTES §3, §4)."""
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
