"""The session operations over the online API's HTTP (real uvicorn, PostgreSQL, Prefect server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg

from infergraph.sessions.synthetic import CONSTANTS, session_pictures
from tests.support.api import running_api

PICTURES, _ = session_pictures(seed=3, items=8, containers=2)


def test_session_over_http_shares_the_predict_batcher(
    tmp_path: Path, pg_conninfo: str, prefect_server
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {
        "INFERGRAPH_API_PREDICTOR": "infergraph.detection.predictor:Detector",
        "INFERGRAPH_API_SESSIONS_DATABASE": pg_conninfo,
        "INFERGRAPH_API_SESSIONS_IMAGES": str(tmp_path / "pictures"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    with running_api(tmp_path / "api", **env) as api:
        client = httpx.Client(
            base_url=api.url, timeout=120, headers={"Authorization": f"Bearer {api.token()}"}
        )
        url = "/sessions/S9/images"
        replies = []
        for name, data in PICTURES:
            r = client.post(url, data={"arm_id": "arm-7"}, files={"file": (name, data)})
            assert r.status_code == 200, r.text
            replies.append(r.json())
        assert all(r["new"] and r["box_count"] == len(r["boxes"]) for r in replies)
        assert sum(r["box_count"] for r in replies) >= 10
        again = client.post(url, data={"arm_id": "arm-7"}, files={"file": PICTURES[0]}).json()
        assert not again["new"] and again["boxes"] == replies[0]["boxes"]
        health = client.get("/health").json()["micro_batching"]
        assert health["records"] >= len(PICTURES) + 1  # pictures went through /predict's batcher

        # mistakes, each named
        bad = client.post(url, data={"arm_id": "arm-7"}, files={"file": ("left.jpg", b"\xff\xd8x")})
        assert bad.status_code == 422 and "left.jpg" in bad.json()["detail"]
        bad = client.post(url, data={"arm_id": "arm-7"}, files={"file": ("x.jpg", PICTURES[0][1])})
        assert bad.status_code == 422 and "base position" in bad.json()["detail"]
        anon = httpx.post(f"{api.url}{url}", data={"arm_id": "a"}, files={"file": PICTURES[0]})
        assert anon.status_code == 401
        assert client.get("/sessions/NOPE/commands").status_code == 404
        partial = {k: v for k, v in CONSTANTS.model_dump().items() if k != "arm_radius"}
        r = client.post("/sessions/S9/commands", json={"arm_constants": partial})
        assert r.status_code == 422 and "arm_radius" in r.json()["detail"]

        r = client.post("/sessions/S9/commands", json={"arm_constants": CONSTANTS.model_dump()})
        assert r.status_code == 200, r.text
        ended = r.json()
        assert ended["arm_id"] == "arm-7" and len(ended["commands"]) > 0
        stored = client.get("/sessions/S9/commands", params={"arm_id": "arm-7"}).json()
        assert stored["commands"] == ended["commands"]

    with psycopg.connect(pg_conninfo) as conn:
        (images,) = conn.execute("SELECT count(*) FROM images WHERE session_id = 'S9'").fetchone()
    assert images == len(PICTURES)
    assert len(list((tmp_path / "pictures").rglob("*.jpg"))) == len(PICTURES)
