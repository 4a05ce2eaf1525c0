"""Sorting sessions: detection throughput (flow vs bare loop), session-end latency, endpoint rate.

    python bench/sessions.py                  # all three, on a synthetic session's pictures

1. the session flow's batched detection vs a bare ``Detector.run_batch`` loop on the same
   pictures (ratio target ≥ 0.9; the flow's fixed cost is its task runs);
2. session end (convert, merge, crop + embed, cluster, assign, store) for 5 pictures and
   ~20 objects, warm (target < 2 s on 2 cores);
3. the websocket endpoint's pictures/s with 4 arms sending at once.
Everything runs against a throwaway PostgreSQL and a temporary Prefect server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infergraph.detection.predictor import Detector
from infergraph.inference.decode import decode_image
from infergraph.predictors.base import RecordMeta
from infergraph.sessions.pgserver import ThrowawayPostgres
from infergraph.sessions.service import (
    ImageVault,
    end_session,
    parse_frame,
    receive_image,
)
from infergraph.sessions.store import SessionStore
from infergraph.sessions.synthetic import CONSTANTS, session_pictures


def frame(arm: str, session: str, name: str, data: bytes) -> bytes:
    headers = {"command": "recv_img_proc", "arm_id": arm, "session_id": session, "image_name": name}
    return json.dumps(headers).encode() + b"___SPLIT___" + data


def main() -> None:
    torch.set_num_threads(2)
    pictures, _ = session_pictures(seed=7, items=16, containers=3)
    detector = Detector()
    detector.load()
    with ThrowawayPostgres() as pg, tempfile.TemporaryDirectory() as folder:
        store = SessionStore(pg.conninfo).open()
        vault = ImageVault(folder)

        # 1. bare loop: decode + detect the same pictures, 8 sessions' worth (40 pictures)
        sessions = [f"B{n}" for n in range(8)]
        started = time.perf_counter()
        for _ in sessions:
            images = [decode_image(d, n) for n, d in pictures]
            metas = [RecordMeta(record_id=n, uri=n) for n, _ in pictures]
            detector.run_batch(images, metas)
        bare = len(sessions) * len(pictures) / (time.perf_counter() - started)

        from flows.sessions import sorting_session
        from infergraph.sessions.service import store_for

        for session in sessions:
            for name, data in pictures:
                receive_image(store, vault, *parse_frame(frame("bench", session, name, data)))
        store_for(pg.conninfo)
        sorting_session(
            "bench", "warmup", CONSTANTS.model_dump(), database=pg.conninfo, images=folder
        )
        started = time.perf_counter()
        for session in sessions:
            sorting_session(
                "bench",
                session,
                CONSTANTS.model_dump(),
                database=pg.conninfo,
                images=folder,
                batch_size=8,
            )
        flow_rate = len(sessions) * len(pictures) / (time.perf_counter() - started)
        print(
            f"detection: bare loop {bare:.1f} pictures/s, flow (incl. session end and "
            f"its task runs) {flow_rate:.1f} pictures/s, ratio {flow_rate / bare:.2f}"
        )

        # 2. session end alone, warm
        times = []
        for _ in range(5):
            started = time.perf_counter()
            outcome = end_session(store, vault, detector, "bench", "B0", CONSTANTS, seed=0)
            times.append(time.perf_counter() - started)
        print(
            f"session end: {len(outcome.commands)} commands from {outcome.sightings} boxes, "
            f"median {np.median(times) * 1000:.0f} ms (best {min(times) * 1000:.0f} ms)"
        )

        # 3. endpoint, 4 arms at once
        from websockets.asyncio.client import connect

        from infergraph.sessions.endpoint import MAX_FRAME, SessionEndpoint

        async def arms() -> float:
            endpoint = SessionEndpoint(store, vault, detector, lambda *a: [])
            await endpoint.start("127.0.0.1", 0)
            port = next(iter(endpoint.server.sockets)).getsockname()[1]  # type: ignore[union-attr]

            async def arm(n: int) -> None:
                async with connect(f"ws://127.0.0.1:{port}", max_size=MAX_FRAME) as ws:
                    for rep in range(3):
                        for name, data in pictures:
                            await ws.send(frame(f"arm-{n}", f"E{rep}", name, data))
                            assert await ws.recv() == "true"

            started = time.perf_counter()
            await asyncio.gather(*(arm(n) for n in range(4)))
            elapsed = time.perf_counter() - started
            await endpoint.close()
            return 4 * 3 * len(pictures) / elapsed

        rate = asyncio.run(arms())
        print(
            f"endpoint: {rate:.1f} pictures/s with 4 concurrent arms (decode, keep, record, "
            "detect, store boxes)"
        )
        store.close()


if __name__ == "__main__":
    main()
