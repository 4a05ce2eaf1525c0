"""Sorting session: detect the session's pictures in batches, then plan pick/drop commands.

    python flows/sessions.py demo        # synthetic session, throwaway PostgreSQL, commands
    python flows/sessions.py run --arm-id arm-1 --session-id S1 --constants arm.json \
        --database sessions-db --images s3://bucket/sessions/
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, unmapped

from blocks.control_panel import ControlPanel
from infergraph.blockref import resolve_block
from infergraph.inference.fetch import FetchOptions
from infergraph.predictors.loading import PredictorSpec
from infergraph.sessions.geometry import ArmConstants
from tasks.inference import infer_batch
from tasks.sessions import pending_images, plan_commands, publish_session, store_detections

DETECTOR = PredictorSpec(path="infergraph.detection.predictor:Detector")


@flow(name="sorting-session", flow_run_name="session-{arm_id}-{session_id}", log_prints=True)
def sorting_session(
    arm_id: str,
    session_id: str,
    arm_constants: dict[str, Any],
    database: str = "sessions-db",
    images: str = "sessions/",
    batch_size: int = 8,
    seed: int = 0,
    detector: PredictorSpec = DETECTOR,
    control_panel: str | None = None,
) -> list[list[list[float]]]:
    """Commands ``[[item_servo0, item_servo1], [container_servo0, container_servo1]]``.

    ``control_panel`` names a ControlPanel block that is told of each picture and the end.
    """
    constants = ArmConstants.parse(arm_constants)  # a bad field fails before any work
    panel = resolve_block(control_panel, ControlPanel).url if control_panel else None
    records = pending_images(database, arm_id, session_id)
    batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    outputs = infer_batch.map(
        batches, range(len(batches)), unmapped(detector), unmapped(FetchOptions())
    )
    stored = store_detections.map(
        outputs, unmapped(database), unmapped(arm_id), unmapped(session_id), unmapped(panel)
    )
    summary = plan_commands(
        database, images, detector, arm_id, session_id, constants, seed, wait_for=[stored]
    )
    publish_session(database, images, arm_id, session_id, summary, panel)
    print(
        f"session {session_id}: {len(records)} pictures detected, {summary['items']} items, "
        f"{summary['containers']} containers, {len(summary['commands'])} commands"
    )
    return summary["commands"]


if __name__ == "__main__":
    from infergraph.sessions.cli import main

    sys.exit(main(sorting_session))
