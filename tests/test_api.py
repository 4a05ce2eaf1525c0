"""The online prediction API, against a real ``python -m infergraph.api`` (uvicorn) on 127.0.0.1.

Clients speak HTTP through httpx; failed sign-ins come from distinct client
addresses via ``X-Forwarded-For`` (this server is configured to trust it from
127.0.0.1, as behind a local proxy), so the
per-client rate limit of one test does not lock out the others.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image

from infergraph.api.users import hash_password
from infergraph.inference.batch import run_batch
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.records import ImageRecord
from infergraph.predictors.loading import PredictorSpec, get_predictor
from tests.support.api import (
    MAX_FILE,
    MAX_FILES,
    MAX_PIXELS,
    PASSWORD,
    SAMPLE_FILES,
    TTL,
    Api,
    auth,
    labels,
    start_api,
)
from tests.support.servers import REPO, free_port


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("api")
    users = root / "users.htpasswd"
    users.write_text(f"alice:{hash_password(PASSWORD, rounds=4)}\n")
    server = start_api(root, users, INFERGRAPH_API_FORWARDED_ALLOW_IPS="127.0.0.1")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def token(api: Api) -> str:
    return api.token()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def assert_still_serving(api: Api, token: str) -> None:
    sample = SAMPLE_FILES[0]
    with api.client() as client:
        response = client.post(
            "/predict", files={"file": (sample.name, sample.read_bytes())}, headers=auth(token)
        )
    assert response.status_code == 200, response.text
    assert response.json()["class_id"] == labels()[sample.name]
    assert api.proc.poll() is None


# ---------------------------------------------------------------- start-up refusals


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "refusing to start with the default signing key"),
        ({"INFERGRAPH_API_SIGNING_KEY": "short"}, "use at least 32 random bytes"),
        ({"INFERGRAPH_API_SIGNING_KEY": "k" * 40, "INFERGRAPH_API_USERS_FILE": ""}, "no users"),
    ],
)
def test_refuses_unsafe_settings(tmp_path: Path, env: dict[str, str], message: str) -> None:
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password(PASSWORD, rounds=4)}\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INFERGRAPH_API_")} | {
        "INFERGRAPH_API_USERS_FILE": str(users),
        "INFERGRAPH_API_PORT": str(free_port()),
    }
    environ.update(env)
    if not environ["INFERGRAPH_API_USERS_FILE"]:
        del environ["INFERGRAPH_API_USERS_FILE"]
    done = subprocess.run(
        [sys.executable, "-m", "infergraph.api"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr.decode()


# ---------------------------------------------------------------- tokens


def test_token_flow(api: Api, token: str) -> None:
    claims = jwt.decode(token, api.key, algorithms=["HS256"], issuer="infergraph")
    assert set(claims) == {"sub", "iss", "iat", "nbf", "exp", "jti", "ver"}
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == TTL
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()
    stored_hash = api.users_file.read_text().split(":", 1)[1].strip()
    assert PASSWORD not in payload and stored_hash not in payload
    assert stored_hash.split("$")[-1][:22] not in payload  # not even the salt

    sample = SAMPLE_FILES[3]
    with api.client() as client:
        response = client.post(
            "/predict", files={"file": (sample.name, sample.read_bytes())}, headers=auth(token)
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["username"] == "alice"
    assert body["filename"] == sample.name
    assert body["extension"] == "png" and body["format"] == "PNG"
    assert datetime.fromisoformat(body["date"]).utcoffset() == UTC.utcoffset(None)
    assert abs(datetime.fromisoformat(body["date"]) - datetime.now(UTC)).total_seconds() < 60
    assert body["class_id"] == labels()[sample.name]
    assert body["category_name"] == str(body["class_id"])
    assert isinstance(body["score"], float) and 0.0 <= body["score"] <= 1.0
    assert body["score"] < 1.0 or body["score"] == 1.0  # a probability, not a percentage
    assert body["top_k"][0]["class_id"] == body["class_id"]
    assert len(body["top_k"]) == 3
    assert body["success"] is True
    assert response.headers["x-request-id"] == body["request_id"]


def test_wrong_password_and_unknown_user_get_the_same_401(api: Api) -> None:
    with api.client() as client:
        wrong = client.post(
            "/token",
            data={"username": "alice", "password": "nope"},
            headers={"X-Forwarded-For": "198.51.100.1"},
        )
        unknown = client.post(
            "/token",
            data={"username": "mallory", "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.2"},
        )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "incorrect username or password"}
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"


def test_failed_sign_ins_are_rate_limited_per_client(api: Api) -> None:
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    with api.client() as client:
        for _ in range(3):
            response = client.post(
                "/token", data={"username": "alice", "password": "guess"}, headers=attacker
            )
            assert response.status_code == 401
        blocked = client.post(
            "/token", data={"username": "alice", "password": PASSWORD}, headers=attacker
        )
        assert blocked.status_code == 429
        assert "too many failed sign-ins" in blocked.json()["detail"]
        assert int(blocked.headers["retry-after"]) > 0
    # Another client is not affected, and the server still serves.
    other = api.token(ip="203.0.113.8")
    assert_still_serving(api, other)


def _signed(api: Api, **claims: Any) -> str:
    now = int(time.time())
    base = {"sub": "alice", "iss": "infergraph", "iat": now, "nbf": now, "exp": now + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, api.key, "HS256")


@pytest.mark.parametrize(
    ("make_headers", "detail"),
    [
        (lambda api: {}, "missing bearer token"),
        (lambda api: {"Authorization": "Basic YWxpY2U6eA=="}, "missing bearer token"),
        (lambda api: auth("not-a-jwt"), "malformed"),
        (
            lambda api: auth(_signed(api, iat=int(time.time()) - 7200, exp=int(time.time()) - 60)),
            "token expired at",
        ),
        (lambda api: auth(_signed(api, exp=None)), "no 'exp' claim"),
        (
            lambda api: auth(
                jwt.encode(
                    {"sub": "alice", "iss": "infergraph", "iat": 0, "exp": 2**31},
                    "another-key-of-sufficient-length-000000",
                    "HS256",
                )
            ),
            "signature is invalid",
        ),
        (lambda api: auth(_signed(api, iss="someone-else")), "not issued by 'infergraph'"),
        (lambda api: auth(_signed(api, sub="ghost")), "user 'ghost' no longer exists"),
    ],
    ids=["none", "basic", "garbage", "expired", "no-exp", "other-key", "issuer", "unknown-user"],
)
def test_bad_tokens_get_401(api: Api, token: str, make_headers: Any, detail: str) -> None:
    sample = SAMPLE_FILES[0]
    with api.client() as client:
        response = client.post(
            "/predict",
            files={"file": (sample.name, sample.read_bytes())},
            headers=make_headers(api),
        )
    assert response.status_code == 401
    assert detail in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert_still_serving(api, token)


def test_new_user_can_sign_in_without_restart_and_removed_user_is_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infergraph.api.users import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("carol-password\n"))
    args = ["--file", str(api.users_file), "--password-stdin", "--rounds", "4"]
    assert main(["add", "carol", *args]) == 0
    carol = api.token("carol", "carol-password")
    assert_still_serving(api, carol)
    assert main(["remove", "carol", "--file", str(api.users_file)]) == 0
    api.token()  # any sign-in re-reads the changed file
    with api.client() as client:
        response = client.post(
            "/predict",
            files={"file": ("a.png", SAMPLE_FILES[0].read_bytes())},
            headers=auth(carol),
        )
    assert response.status_code == 401
    assert "no longer exists" in response.json()["detail"]


def test_tokens_issued_before_a_password_change_or_re_creation_are_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infergraph.api.users import main

    def users(*args: str, password: str | None = None) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(f"{password}\n"))
        extra = ["--password-stdin", "--rounds", "4"] if password else []
        assert main([*args, "--file", str(api.users_file), *extra]) == 0

    def predict(token: str) -> httpx.Response:
        with api.client() as client:
            return client.post(
                "/predict",
                files={"file": ("a.png", SAMPLE_FILES[0].read_bytes())},
                headers=auth(token),
            )

    users("add", "erin", password="first-password")
    first = api.token("erin", "first-password", ip="198.51.100.20")
    assert predict(first).status_code == 200
    users("add", "erin", password="second-password")  # a password change
    refused = predict(first)
    assert refused.status_code == 401
    assert "issued before the password of 'erin' changed" in refused.json()["detail"]
    second = api.token("erin", "second-password", ip="198.51.100.20")
    assert predict(second).status_code == 200

    users("remove", "erin")
    users("add", "erin", password="second-password")  # re-created, same password
    assert predict(second).status_code == 401
    assert predict(api.token("erin", "second-password", ip="198.51.100.20")).status_code == 200


def test_failed_sign_in_logs_no_unknown_user_name(api: Api) -> None:
    typed = "Tr0ub4dor&3-typed-in-the-name-field"
    with api.client() as client:
        response = client.post(
            "/token",
            data={"username": typed, "password": "x"},
            headers={"X-Forwarded-For": "192.0.2.77"},
        )
    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 20
    while not (rows := [r for r in api.log_rows() if r["request_id"] == request_id]):
        assert time.monotonic() < deadline, "the failed sign-in was not logged"
        time.sleep(0.2)
    assert rows[0]["username"].startswith("unknown:") and len(rows[0]["username"]) == 20
    assert typed[:8] not in json.dumps(api.log_rows()) and typed[:8] not in api.output.read_text()


# ---------------------------------------------------------------- uploads


def test_over_the_size_limit_is_413_while_streaming(api: Api, token: str) -> None:
    image = SAMPLE_FILES[0].read_bytes()
    with api.client() as client:
        # Over the request-body limit: refused by the body limit.
        big = image + b"\0" * (MAX_FILE + 64 * 1024)
        response = client.post("/predict", files={"file": ("big.png", big)}, headers=auth(token))
        assert response.status_code == 413
        assert "over the limit for one file" in response.json()["detail"]
        # Just over the per-file limit (within the body's framing allowance): names the file.
        response = client.post(
            "/predict",
            files={"file": ("edge.png", image + b"\0" * (MAX_FILE - len(image) + 10))},
            headers=auth(token),
        )
        assert response.status_code == 413
        assert response.json()["detail"] == (
            f"file 'edge.png' is {MAX_FILE + 10:,} bytes, over the limit of {MAX_FILE:,}"
        )

        # Chunked upload (no Content-Length): counted as it streams and cut off.
        boundary = "streamedboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()

        def chunks() -> Iterator[bytes]:
            yield head + image
            for _ in range(32):
                yield b"\0" * 65536
            yield f"\r\n--{boundary}--\r\n".encode()

        response = client.post(
            "/predict",
            content=chunks(),
            headers={**auth(token), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413
        assert "over the limit" in response.json()["detail"]

        # Nor is an oversized sign-in form buffered.
        response = client.post("/token", data={"username": "alice", "password": "x" * 100_000})
        assert response.status_code == 413
        assert "sign-in form of" in response.json()["detail"]

    # A declared 10 GB body is refused before any of it is sent.
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                "POST /predict HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n"
                "Content-Length: 10000000000\r\n\r\n"
            ).encode()
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"request body of 10,000,000,000 bytes is over the limit" in reply
    assert_still_serving(api, token)


def _ico() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buffer, "ICO")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "status", "detail"),
    [
        ("doc.png", lambda: b"%PDF-1.7\n%\xe2\xe3\n1 0 obj\n", 415, "is not an image"),
        ("notes.jpg", lambda: b"hello, I am text\n" * 10, 415, "is not an image"),
        ("icon.png", _ico, 415, "is a ICO image, which is not allowed"),
        ("cut.png", lambda: SAMPLE_FILES[0].read_bytes()[:300], 422, "cannot be used"),
        (
            "huge.png",
            lambda: png(Image.new("L", (1250, 1000), 255)),
            422,
            f"over the limit of {MAX_PIXELS:,}",
        ),
        ("empty.png", lambda: b"", 422, "is empty"),
        ("blob.png", lambda: b"SECRET-UPLOAD-BYTES" * 3, 415, "is not an image"),
    ],
    ids=["pdf", "text", "ico", "truncated", "too-many-pixels", "empty", "no-echo"],
)
def test_bad_images_get_precise_errors(
    api: Api, token: str, name: str, make: Any, status: int, detail: str
) -> None:
    with api.client() as client:
        response = client.post("/predict", files={"file": (name, make())}, headers=auth(token))
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert repr(name) in response.json()["detail"]
    assert b"SECRET" not in response.content and b"%PDF" not in response.content  # no echo
    assert_still_serving(api, token)


def test_type_is_decided_by_content_not_extension(api: Api, token: str) -> None:
    sample = SAMPLE_FILES[5]
    jpeg = io.BytesIO()
    Image.open(sample).convert("RGB").save(jpeg, "JPEG", quality=95)
    with api.client() as client:
        as_txt = client.post(
            "/predict", files={"file": ("digit.txt", sample.read_bytes())}, headers=auth(token)
        )
        as_jpeg = client.post(
            "/predict", files={"file": ("digit", jpeg.getvalue())}, headers=auth(token)
        )
    assert as_txt.status_code == 200 and as_jpeg.status_code == 200
    assert (as_txt.json()["extension"], as_txt.json()["format"]) == ("txt", "PNG")
    assert (as_jpeg.json()["extension"], as_jpeg.json()["format"]) == ("", "JPEG")
    assert as_txt.json()["class_id"] == labels()[sample.name]


def test_batch_form_answers_each_file(api: Api, token: str) -> None:
    truth = labels()
    samples = SAMPLE_FILES[10:14]
    files = [("files", (p.name, p.read_bytes())) for p in samples]
    files.insert(2, ("files", ("bad.png", b"%PDF-1.4 not an image")))
    with api.client() as client:
        response = client.post("/predict/batch", files=files, headers=auth(token))
        too_many = client.post(
            "/predict/batch",
            files=[("files", (p.name, p.read_bytes())) for p in SAMPLE_FILES[: MAX_FILES + 1]],
            headers=auth(token),
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["succeeded"]) == (5, 4)
    results = body["results"]
    assert [r["filename"] for r in results] == [
        samples[0].name,
        samples[1].name,
        "bad.png",
        samples[2].name,
        samples[3].name,
    ]
    assert results[2]["success"] is False and results[2]["status_code"] == 415
    assert "is not an image" in results[2]["error"]
    for result in results[:2] + results[3:]:
        assert result["success"] is True
        assert result["class_id"] == truth[result["filename"]]
        assert result["username"] == "alice"
    assert len({r["record_id"] for r in results}) == 5
    assert too_many.status_code == 413
    assert too_many.json()["detail"] == f"{MAX_FILES + 1} files in one request; at most {MAX_FILES}"


# ---------------------------------------------------------------- micro-batching and parity


async def _predict_all(api: Api, token: str, paths: list[Path], concurrency: int) -> list[Any]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=api.url, timeout=120, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(path: Path) -> Any:
            async with gate:
                response = await client.post(
                    "/predict", files={"file": (path.name, path.read_bytes())}, headers=auth(token)
                )
            assert response.status_code == 200, response.text
            return response.json()

        return list(await asyncio.gather(*(one(p) for p in paths)))


def _batch_path(paths: list[Path], batch_size: int) -> dict[str, dict[str, Any]]:
    """The batch flow's per-batch body on the same files, ``batch_size`` images per pass."""
    predictor = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    rows: dict[str, dict[str, Any]] = {}
    for start in range(0, len(paths), batch_size):
        records = [ImageRecord(uri=str(p)) for p in paths[start : start + batch_size]]
        for row in run_batch(records, predictor, FetchOptions()).rows:
            assert row["status"] == "ok", row
            rows[Path(row["uri"]).name] = row
    return rows


def test_concurrent_requests_share_forward_passes(api: Api, token: str) -> None:
    with api.client() as client:
        before = client.get("/health", headers=auth(token)).json()["micro_batching"]
    paths = SAMPLE_FILES[:96]
    answers = asyncio.run(_predict_all(api, token, paths, concurrency=32))
    with api.client() as client:
        after = client.get("/health", headers=auth(token)).json()["micro_batching"]

    truth = labels()
    reference = _batch_path(paths, 64)
    assert [a["filename"] for a in answers] == [p.name for p in paths]
    correct = 0
    for answer in answers:
        expected = reference[answer["filename"]]
        assert answer["class_id"] == expected["class_id"]
        assert answer["category_name"] == expected["category_name"]
        assert [t["class_id"] for t in answer["top_k"]] == [
            t["class_id"] for t in expected["top_k"]
        ]
        # Float32 sums depend on how many rows a pass holds (true of the batch flow's
        # own batch sizes too): equal up to rounding.
        assert answer["score"] == pytest.approx(expected["score"], abs=1e-5)
        correct += answer["class_id"] == truth[answer["filename"]]
    assert correct >= 0.9 * len(paths)

    passes = after["forward_passes"] - before["forward_passes"]
    records = after["records"] - before["records"]
    assert records == len(paths)
    # How many share a pass depends on how fast this process's clients send (the
    # event loop, not the tiny model, is the bottleneck here); sharing must be common.
    assert passes < 0.6 * len(paths), after
    assert after["largest_batch"] > 2
    assert max(a["batch_size"] for a in answers) <= 16


def test_results_identical_to_the_batch_path(api: Api, token: str) -> None:
    """All shipped samples, one request at a time, against the batch path at one image per pass.

    Same predictor, same decoding, same pass size: the answers are bit-identical.
    """
    with api.client() as client:
        answers = []
        for path in SAMPLE_FILES:
            response = client.post(
                "/predict", files={"file": (path.name, path.read_bytes())}, headers=auth(token)
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())
    reference = _batch_path(SAMPLE_FILES, 1)
    fields = ("class_id", "category_name", "score", "top_k")
    assert len(answers) == len(SAMPLE_FILES) == 360
    for answer in answers:
        assert answer["batch_size"] == 1
        expected = reference[answer["filename"]]
        assert {k: answer[k] for k in fields} == {k: expected[k] for k in fields}


# ---------------------------------------------------------------- request log and docs


def test_every_request_is_logged(api: Api, token: str) -> None:
    sample = SAMPLE_FILES[7]
    ids: dict[str, int] = {}
    with api.client() as client:
        for response in (
            client.post(
                "/predict", files={"file": (sample.name, sample.read_bytes())}, headers=auth(token)
            ),
            client.post("/predict", files={"file": (sample.name, sample.read_bytes())}),
            client.post(
                "/predict", files={"file": ("x.png", b"GIF89a broken")}, headers=auth(token)
            ),
            client.post("/predict", files={"file": ("t.png", b"text")}, headers=auth(token)),
            client.post(
                "/token",
                data={"username": "alice", "password": "Wrong-Pa55word-42"},
                headers={"X-Forwarded-For": "192.0.2.55"},
            ),
            client.post(
                "/predict",
                files={"file": ("big.png", b"\0" * (MAX_FILE * 2))},
                headers=auth(token),
            ),
        ):
            ids[response.headers["x-request-id"]] = response.status_code
        good_body = client.post(
            "/predict", files={"file": (sample.name, sample.read_bytes())}, headers=auth(token)
        ).json()
        ids[good_body["request_id"]] = 200
    assert sorted(ids.values()) == [200, 200, 401, 401, 413, 415, 422]

    deadline = time.monotonic() + 20
    while True:
        rows = {r["request_id"]: r for r in api.log_rows() if r["request_id"] in ids}
        if len(rows) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(rows) == set(ids)
    for request_id, status in ids.items():
        row = rows[request_id]
        assert row["status_code"] == status
        assert row["success"] is (status == 200)
        assert (row["error"] is None) is (status == 200), row
        assert row["date"].endswith("Z") and row["latency_ms"] > 0
    good = rows[good_body["request_id"]]
    assert (good["username"], good["filename"], good["format"]) == ("alice", sample.name, "PNG")
    assert good["class_id"] == good_body["class_id"] and good["score"] == good_body["score"]
    assert good["top_k"] == good_body["top_k"] and good["batch_size"] == 1
    failed_sign_in = next(r for r in rows.values() if r["path"] == "/token")
    assert failed_sign_in["username"] == "alice" and failed_sign_in["client"] == "192.0.2.55"
    assert "Wrong-Pa55word-42" not in json.dumps(list(rows.values()))
    # The CSV sink receives the same rows, with one fixed header.
    with open(api.root / "log" / "requests.csv", newline="") as handle:
        csv_ids = {r["request_id"] for r in csv.DictReader(handle)}
    assert set(ids) <= csv_ids


def test_health_and_docs(api: Api, token: str) -> None:
    with api.client() as client:
        liveness = client.get("/health")
        health = client.get("/health", headers=auth(token)).json()
        forged = client.get("/health", headers=auth(_signed(api, sub="ghost")))
        docs = client.get("/docs")
        spec = client.get("/openapi.json").json()
    # Without a token only liveness: no log paths, user count or model for strangers.
    assert liveness.status_code == 200 and liveness.json() == {"status": "ok"}
    assert forged.status_code == 401
    assert health["status"] == "ok" and health["users"] >= 1
    assert health["predictor"].endswith("DigitsClassifier")
    assert health["micro_batching"]["max_batch_size"] == 16
    assert health["request_log"]["rows_failed"] == 0
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert {"/token", "/predict", "/predict/batch", "/health"} <= set(spec["paths"])


# ---------------------------------------------------------------- users from a Secret block


def test_secret_block_users_dynamodb_log_and_flush_on_shutdown(
    prefect_server: None, aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users from a Prefect Secret block, the request log in DynamoDB (moto) and a local
    file; rows still queued at shutdown are written before the server exits."""
    from prefect.settings import PREFECT_API_URL

    from blocks.dynamodb import DynamoDBTable
    from infergraph.api.users import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("dave-password\n"))
    added = main(["add", "dave", "--secret", "api-test-users", "--password-stdin", "--rounds", "4"])
    assert added == 0
    table = DynamoDBTable(table_name="api-requests", partition_key="log_id", credentials=aws)
    table.client().create_table(
        TableName="api-requests",
        KeySchema=[{"AttributeName": "log_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "log_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    table.save("api-requests", overwrite=True)
    server = start_api(
        tmp_path,
        None,
        INFERGRAPH_API_USERS_SECRET="api-test-users",
        INFERGRAPH_API_REQUEST_LOG=f"{tmp_path}/log/requests-{{pid}}.jsonl,dynamodb://api-requests",
        INFERGRAPH_API_REQUEST_LOG_FLUSH_SECONDS="600",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    try:
        dave = server.token("dave", "dave-password")
        with server.client() as client:
            wrong = client.post("/token", data={"username": "dave", "password": "x"})
            assert wrong.status_code == 401
            for path in SAMPLE_FILES[:20]:
                response = client.post(
                    "/predict", files={"file": (path.name, path.read_bytes())}, headers=auth(dave)
                )
                assert response.status_code == 200
            health = client.get("/health", headers=auth(dave)).json()
            assert health["request_log"]["rows_written"] == 0
    finally:
        server.stop()
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    assert server.proc.returncode in (0, -signal.SIGTERM), server.output.read_text()
    rows = server.log_rows()
    assert len(rows) == 22
    assert sum(r["path"] == "/predict" and r["success"] for r in rows) == 20
    items = table.client().scan(TableName="api-requests")["Items"]
    assert len(items) == 22
    by_id = {i["record_id"]["S"]: i for i in items}
    assert set(by_id) == {r["record_id"] for r in rows}
    predicted = next(r for r in rows if r["path"] == "/predict")
    item = by_id[predicted["record_id"]]
    assert item["username"]["S"] == "dave"
    assert int(item["class_id"]["N"]) == predicted["class_id"]
    assert int(item["status_code"]["N"]) == 200


def test_password_change_in_the_secret_block_revokes_tokens(
    prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    from infergraph.api.users import main

    def set_password(password: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(f"{password}\n"))
        args = ["add", "frank", "--secret", "api-test-revoke", "--password-stdin", "--rounds", "4"]
        assert main(args) == 0

    set_password("old-password")
    server = start_api(
        tmp_path,
        None,
        INFERGRAPH_API_USERS_SECRET="api-test-revoke",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    try:
        old = server.token("frank", "old-password")
        with server.client() as client:
            assert client.get("/health", headers=auth(old)).status_code == 200
            set_password("new-password")
            # The server re-reads the block every 10 s.
            deadline = time.monotonic() + 60
            while (refused := client.get("/health", headers=auth(old))).status_code == 200:
                assert time.monotonic() < deadline, "the old token is still accepted"
                time.sleep(0.5)
        assert refused.status_code == 401
        assert "issued before the password of 'frank' changed" in refused.json()["detail"]
        new = server.token("frank", "new-password")
        with server.client() as client:
            assert client.get("/health", headers=auth(new)).json()["users"] == 1
    finally:
        server.stop()
