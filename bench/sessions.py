"""Sorting sessions: detection throughput (flow vs bare loop), session-end latency, endpoint rate.

    python bench/sessions.py                  # all three, on a synthetic session's pictures

1. detection throughput: the batch inference flow (``flows/inference.py``, the detector
   as its predictor) vs a bare read + decode + ``Detector.run_batch`` loop on the same
   pictures, in batches of the same size (ratio target ≥ 0.9); then whole session flows
   (detect, store, session end, artifacts) vs the same library calls in a bare loop, so
   the flow's own cost (flow and task runs, artifacts) shows apart from the work;
2. session end (convert, merge, crop + embed, cluster, assign, store) for 5 pictures and
   ~20 objects, warm (target < 2 s on 2 cores);
3. the websocket endpoint's pictures/s with 4 arms sending at once.
Everything runs against a throwaway PostgreSQL and a temporary Prefect server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# A loaded machine starts the temporary Prefect server slowly; read before Prefect is imported.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "240")

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

DETECTOR = "infergraph.detection.predictor:Detector"
REPEATS = 3
SESSIONS = 6


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

        # 1a. detection: the batch flow vs a bare loop over the same 40 files, batches of 8
        files = Path(folder) / "detect"
        files.mkdir()
        for copy in range(8):
            for name, data in pictures:
                (files / f"c{copy}-{name}").write_bytes(data)
        paths = sorted(files.glob("*.jpg"))
        from flows.inference import inference

        sink = str(Path(folder) / "boxes.jsonl")
        inference(source=str(paths[0]), predictor=DETECTOR, sinks=[sink])  # warm-up
        bare, flow_rate = [], []
        for _ in range(REPEATS):  # interleaved: the machine's load drifts
            started = time.perf_counter()
            for i in range(0, len(paths), 8):
                chunk = paths[i : i + 8]
                images = [decode_image(p.read_bytes(), p.name) for p in chunk]
                detector.run_batch(
                    images, [RecordMeta(record_id=p.name, uri=str(p)) for p in chunk]
                )
            bare.append(len(paths) / (time.perf_counter() - started))
            started = time.perf_counter()
            inference(source=f"{files}/*.jpg", predictor=DETECTOR, sinks=[sink], batch_size=8)
            flow_rate.append(len(paths) / (time.perf_counter() - started))
        b, f = float(np.median(bare)), float(np.median(flow_rate))
        print(
            f"detection: bare loop {b:.2f} pictures/s, batch flow {f:.2f} pictures/s, "
            f"ratio {f / b:.2f} (medians of {REPEATS})"
        )

        # 1b. whole sessions: the session flow vs the same library calls, bare
        from flows.sessions import sorting_session
        from infergraph.sessions.progress import annotated_strip
        from infergraph.sessions.service import store_for

        sessions = [f"B{n}" for n in range(SESSIONS)]
        for session in [*sessions, *(f"F{n}" for n in range(SESSIONS))]:
            for name, data in pictures:
                receive_image(store, vault, *parse_frame(frame("bench", session, name, data)))
        store_for(pg.conninfo)
        sorting_session(
            "bench", "warmup", CONSTANTS.model_dump(), database=pg.conninfo, images=folder
        )
        started = time.perf_counter()
        for session in sessions:
            images = [vault.get(i.uri) for i in store.images("bench", session)]
            decoded = [decode_image(d, "p") for d in images]
            names = [i.image_name for i in store.images("bench", session)]
            metas = [RecordMeta(record_id=n, uri=n) for n in names]
            for name, result in zip(names, detector.run_batch(decoded, metas), strict=True):
                store.put_boxes("bench", session, name, result["boxes"])  # type: ignore[index]
            end_session(store, vault, detector, "bench", session, CONSTANTS, seed=0)
            annotated_strip(store, vault, "bench", session)
        bare_sessions = len(sessions) * len(pictures) / (time.perf_counter() - started)
        started = time.perf_counter()
        for n in range(SESSIONS):
            sorting_session(
                "bench",
                f"F{n}",
                CONSTANTS.model_dump(),
                database=pg.conninfo,
                images=folder,
                batch_size=8,
            )
        flow_sessions = SESSIONS * len(pictures) / (time.perf_counter() - started)
        print(
            f"sessions: bare calls {bare_sessions:.2f} pictures/s, session flow "
            f"{flow_sessions:.2f} pictures/s, ratio {flow_sessions / bare_sessions:.2f}"
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
