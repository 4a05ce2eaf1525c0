"""Sorting session: detect the session's pictures in batches, then plan pick/drop commands.

    python flows/sessions.py demo        # synthetic session, throwaway PostgreSQL, commands
    python flows/sessions.py run --arm-id arm-1 --session-id S1 --constants arm.json \
        --database sessions-db --images s3://bucket/sessions/
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, unmapped
from prefect.states import Completed, State

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
    control_panel: str = "",
) -> State[list[list[list[float]]]]:
    """Commands ``[[item_servo0, item_servo1], [container_servo0, container_servo1]]``.

    Args:
        arm_id: The arm whose session this is.
        session_id: The session, as named in the picture keys.
        arm_constants: The arm's geometry (radius, rotation and distance ranges).
        database: The session store: a PostgresDatabase block name or a `postgresql://` URL.
        images: Where the pictures are: `s3://bucket/prefix/` or a local folder.
        batch_size: Pictures per detection task.
        seed: Seed of the item clustering, for repeatable plans.
        detector: The detector to run (a predictor spec).
        control_panel: A `ControlPanel` block told of each picture and the session's end
            (empty: none).
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
    told = (
        f"{len(records)} pictures detected, {summary['items']} items, "
        f"{summary['containers']} containers, {len(summary['commands'])} commands"
    )
    print(f"session {session_id}: {told}")
    return Completed(message=f"Completed: {told}", data=summary["commands"])


if __name__ == "__main__":
    from infergraph.sessions.cli import main

    sys.exit(main(sorting_session))
