"""The arm's websocket protocol, spoken by a real websocket client to a real server."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from infergraph.detection.predictor import Detector
from infergraph.sessions.endpoint import MAX_FRAME, SessionEndpoint
from infergraph.sessions.service import ImageVault
from infergraph.sessions.store import SessionStore
from infergraph.sessions.synthetic import CONSTANTS, session_pictures
from tests.support.servers import free_port

pytestmark = pytest.mark.asyncio

PICTURES, _ = session_pictures(seed=3, items=8, containers=2)


def frame(image_name: str, data: bytes, session_id: str = "S3", **extra: object) -> bytes:
    headers = {
        "command": "recv_img_proc",
        "arm_id": "arm-1",
        "session_id": session_id,
        "image_name": image_name,
        **extra,
    }
    return json.dumps(headers).encode() + b"___SPLIT___" + data


@pytest.fixture(scope="module")
def detector() -> Detector:
    loaded = Detector()
    loaded.load()
    return loaded


@pytest.fixture
def endpoint_parts(pg_conninfo: str, tmp_path: Path, detector: Detector):
    store = SessionStore(pg_conninfo, pool_size=2, timeout=2).open()
    yield store, ImageVault(str(tmp_path / "pictures")), detector
    store.close()


async def serving(parts, run_session=None, **options):
    store, vault, detector = parts
    endpoint = SessionEndpoint(
        store,
        vault,
        detector,
        run_session or (lambda *a: pytest.fail("no flow expected")),
        **options,
    )
    port = free_port()
    await endpoint.start("127.0.0.1", port)
    return endpoint, f"ws://127.0.0.1:{port}"


async def test_bad_pictures_are_refused_and_nothing_duplicates(endpoint_parts) -> None:
    endpoint, url = await serving(endpoint_parts, max_pixels=1_000_000)
    store = endpoint_parts[0]
    small = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(small, "JPEG")
    try:
        async with connect(url, max_size=MAX_FRAME) as ws:
            cases = {
                "no separator": b'{"command": "recv_img_proc"}' + small.getvalue(),
                "headers not JSON": b"{nope" + b"___SPLIT___" + small.getvalue(),
                "no session_id": frame("1400.jpg", small.getvalue(), session_id=""),
                "corrupt JPEG": frame("1400.jpg", b"\xff\xd8\xff\xe0garbage"),
                "too many pixels": frame("1400.jpg", PICTURES[0][1]),  # 2 Mpx > 1 Mpx limit
                "no base position": frame("left.jpg", small.getvalue()),
            }
            for case, data in cases.items():
                await ws.send(data)
                assert await ws.recv() == "false", case
            for _ in range(2):  # the same picture twice
                await ws.send(frame("1400.jpg", small.getvalue()))
                assert await ws.recv() == "true"
        assert store.counts()["images"] == 1
    finally:
        await endpoint.close()


async def test_text_requests_get_named_errors(endpoint_parts) -> None:
    endpoint, url = await serving(endpoint_parts)
    try:
        async with connect(url) as ws:

            async def ask(payload: object) -> dict:
                await ws.send(payload if isinstance(payload, str) else json.dumps(payload))
                return json.loads(await ws.recv())

            assert "not JSON" in (await ask("get commands please"))["error"]
            assert "unknown command 'dance'" in (await ask({"command": "dance"}))["error"]
            constants = CONSTANTS.model_dump()
            del constants["arm_radius"]
            reply = await ask(
                {
                    "command": "get_commands_of_session",
                    "session_id": "S3",
                    "arm_constants": constants,
                }
            )
            assert "arm_radius: field required" in reply["error"]
            # stitch_after_image has no reply: the next answer is the next request's.
            await ws.send(
                json.dumps({"command": "stitch_after_image", "arm_id": "arm-1", "session_id": "S3"})
            )
            reply = await ask(
                {
                    "command": "get_commands_of_session",
                    "session_id": "S404",
                    "arm_constants": CONSTANTS.model_dump(),
                }
            )
            assert reply == {"error": "unknown session 'S404': no picture was received"}
        async with connect(url, max_size=None) as ws:
            await ws.send(b"x" * (MAX_FRAME + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        await endpoint.close()


async def test_database_down_answers_false_and_keeps_the_picture(
    endpoint_parts, postgres_server
) -> None:
    endpoint, url = await serving(endpoint_parts)
    try:
        async with connect(url, max_size=MAX_FRAME) as ws:
            postgres_server.stop("immediate")
            try:
                await ws.send(frame(*PICTURES[0]))
                assert await asyncio.wait_for(ws.recv(), timeout=30) == "false"
            finally:
                postgres_server.restart()
        kept = list(Path(endpoint_parts[1].root).rglob("*.jpg"))
        assert [p.name for p in kept] == [PICTURES[0][0]]
    finally:
        await endpoint.close()


async def test_a_session_end_to_end_through_the_flow(endpoint_parts, prefect_server) -> None:
    from flows.sessions import sorting_session

    store, vault, _ = endpoint_parts

    def run_session(arm_id: str, session_id: str, constants: dict) -> list:
        return sorting_session(
            arm_id=arm_id,
            session_id=session_id,
            arm_constants=constants,
            database=store.pool.conninfo,
            images=vault.root,
        )

    endpoint, url = await serving(endpoint_parts, run_session)
    request = {
        "command": "get_commands_of_session",
        "session_id": "S3",
        "arm_constants": {**CONSTANTS.model_dump(), "host": "10.0.0.9", "port": 6000},
    }
    try:
        async with connect(url, max_size=MAX_FRAME) as ws:
            for name, data in PICTURES:
                await ws.send(frame(name, data))
                assert await ws.recv() == "true"
            await ws.send(json.dumps(request))
            commands = json.loads(await ws.recv())
            await ws.send(json.dumps(request))  # asked again: a rerun, same answer
            again = json.loads(await ws.recv())
        assert isinstance(commands, list) and len(commands) == 8
        assert again == commands
        counts = store.counts()
        assert counts["images"] == 5 and counts["commands"] == 8
    finally:
        await endpoint.close()
