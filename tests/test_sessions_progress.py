"""Session progress: per-picture table, annotated strip artifact, control-panel POSTs."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import numpy as np
import pytest
from PIL import Image

from blocks.control_panel import ControlPanel
from infergraph.sessions.progress import post_log
from infergraph.sessions.service import ImageVault, parse_frame, receive_image
from infergraph.sessions.store import SessionStore
from infergraph.sessions.synthetic import CONSTANTS, session_pictures
from tests.support.servers import free_port


class Panel(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Panel.received.append((self.path, json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def panel_url() -> Any:
    Panel.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Panel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def artifacts_of(flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a.data for a in found}


def test_session_reports_each_picture_and_draws_its_boxes(
    pg_conninfo: str, tmp_path: Path, panel_url: str, prefect_server
) -> None:
    from flows.sessions import sorting_session

    pictures, _ = session_pictures(seed=5, items=6, containers=2)
    vault = ImageVault(str(tmp_path / "pictures"))
    with SessionStore(pg_conninfo).open() as store:
        for name, data in pictures:
            headers = {"command": "recv_img_proc", "arm_id": "a1", "session_id": "P1"}
            frame = json.dumps({**headers, "image_name": name}).encode() + b"___SPLIT___" + data
            receive_image(store, vault, *parse_frame(frame))
    ControlPanel(url=panel_url).save("panel", overwrite=True)

    state = sorting_session(
        "a1",
        "P1",
        CONSTANTS.model_dump(),
        database=pg_conninfo,
        images=vault.root,
        control_panel="panel",
        return_state=True,
    )
    commands = state.result()
    assert commands

    posts = Panel.received
    assert {path for path, _ in posts} == {"/log/"}
    steps = [body["log_type"] for _, body in posts]
    assert sorted(steps[:-1]) == sorted(n.removesuffix(".jpg") for n, _ in pictures)
    assert steps[-1] == "commands"
    assert all(b["arm_id"] == "a1" and b["session_id"] == "P1" and b["finished"] for _, b in posts)

    data = artifacts_of(state.state_details.flow_run_id)
    table = json.loads(data["session-a1-p1-detections"])
    assert sorted(r["image"] for r in table) == sorted(n for n, _ in pictures)
    markdown = data["session-a1-p1-pictures"]
    assert "data:image/png;base64," in markdown
    strip_path = Path(vault.root) / "a1" / "P1" / "annotated.png"
    assert f"file://{strip_path}" in markdown
    strip = np.asarray(Image.open(io.BytesIO(strip_path.read_bytes())).convert("RGB"))
    assert strip.shape[0] == 240 and strip.shape[1] > 5 * 240  # five 4:3 pictures side by side
    green = np.all(strip == (40, 200, 60), axis=-1).sum()
    blue = np.all(strip == (40, 110, 240), axis=-1).sum()
    assert green > 100 and blue > 100  # item and container outlines were drawn


def test_a_panel_that_is_down_costs_a_warning_not_the_session(caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert post_log(url, "a1", "S1", "1200", True, timeout=2) is False
    assert "did not take a1/S1 1200" in caplog.text
    assert post_log(None, "a1", "S1", "1200", True) is False
    with pytest.raises(ValueError, match="must start with http"):
        ControlPanel(url="panel.local")
