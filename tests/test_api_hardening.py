"""The API with its defaults for untrusted networks: forwarded headers ignored, slow and
surplus connections cut off. Against a real ``python -m infergraph.api`` (uvicorn)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from infergraph.api.users import hash_password
from tests.support.api import PASSWORD, SAMPLE_FILES, Api, auth, start_api
from tests.support.images import png16

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
MAX_CONNECTIONS = 40
#: Far above the bounds: a connection still open after this was not cut off.
PATIENCE = 30


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("api-hardening")
    users = root / "users.htpasswd"
    users.write_text(f"alice:{hash_password(PASSWORD, rounds=4)}\n")
    server = start_api(
        root,
        users,
        INFERGRAPH_API_FORWARDED_ALLOW_IPS="",
        INFERGRAPH_API_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        INFERGRAPH_API_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        INFERGRAPH_API_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        INFERGRAPH_API_DECODE_BUDGET_MB="2",
    )
    try:
        yield server
    finally:
        server.stop()


def address(api: Api) -> tuple[str, int]:
    host, port = api.url.removeprefix("http://").split(":")
    return host, int(port)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (socket timeout: it never did)."""
    sock.settimeout(PATIENCE)
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def test_connections_that_never_finish_headers_are_cut_off(api: Api) -> None:
    token = api.token()
    slow: list[socket.socket] = []
    try:
        # Fill the server to just under its limit with clients that stop mid-headers.
        for _ in range(MAX_CONNECTIONS - 5):
            sock = socket.create_connection(address(api), timeout=PATIENCE)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)
        # A legitimate client is still served meanwhile.
        with httpx.Client(base_url=api.url, timeout=PATIENCE) as client:
            assert client.get("/health").json() == {"status": "ok"}
        # Connections over the limit are answered 503 and closed at once. (They send
        # nothing: a request the server never read would turn its close into a reset.)
        surplus = [socket.create_connection(address(api), timeout=PATIENCE) for _ in range(20)]
        replies = [read_until_closed(s) for s in surplus]
        refused = [r for r in replies if r.startswith(b"HTTP/1.1 503")]
        assert len(refused) >= 14, replies
        assert all(b"too many open connections" in r for r in refused)
        # Every slow client is closed with 408 once the header deadline passes.
        started = time.monotonic()
        for sock in slow:
            reply = read_until_closed(sock)
            assert reply.startswith(b"HTTP/1.1 408"), reply
            assert f"not received within {HEADER_TIMEOUT} s".encode() in reply
        assert time.monotonic() - started < PATIENCE
        for sock in surplus:
            sock.close()
    finally:
        for sock in slow:
            sock.close()
    # Afterwards the server serves normally.
    with httpx.Client(base_url=api.url, timeout=PATIENCE) as client:
        assert client.get("/health", headers=auth(token)).json()["users"] == 1


def test_a_body_that_stops_arriving_is_cut_off(api: Api) -> None:
    with socket.create_connection(address(api), timeout=PATIENCE) as sock:
        sock.sendall(
            b"POST /token HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000\r\n\r\nusername=alice&pass"
        )
        assert read_until_closed(sock) == b""  # closed, no answer to half a request
    with httpx.Client(base_url=api.url, timeout=PATIENCE) as client:
        assert client.get("/health").status_code == 200


def test_an_image_that_could_never_fit_the_decode_budget_is_refused(api: Api) -> None:
    """600×600 16-bit grey: 43 KB uploaded, ~7 MiB to decode, over the 2 MiB budget."""
    deep = png16(np.zeros((600, 600), dtype=np.uint16))
    token = api.token()
    with httpx.Client(base_url=api.url, timeout=PATIENCE) as client:
        response = client.post("/predict", files={"file": ("deep.png", deep)}, headers=auth(token))
        small = client.post(
            "/predict",
            files={"file": ("ok.png", SAMPLE_FILES[0].read_bytes())},
            headers=auth(token),
        )
    assert response.status_code == 422
    assert "'deep.png'" in response.json()["detail"]
    assert "more than the whole per-process decode budget of 2 MiB" in response.json()["detail"]
    assert small.status_code == 200


def test_forwarded_for_is_ignored_unless_configured(api: Api) -> None:
    """A local client rotating X-Forwarded-For still meets the sign-in limit of its own
    address. (Runs last: it locks 127.0.0.1 out of signing in.)"""
    with httpx.Client(base_url=api.url, timeout=60) as client:
        statuses = [
            client.post(
                "/token",
                data={"username": "alice", "password": "guess"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        blocked = client.post(
            "/token",
            data={"username": "alice", "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.99"},
        )
    assert blocked.status_code == 429
    assert "too many failed sign-ins from 127.0.0.1" in blocked.json()["detail"]
