"""Prefect tasks of the sorting-session flow: thin wrappers over infergraph.sessions."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from infergraph.inference.batch import BatchOutput
from infergraph.inference.records import ImageRecord
from infergraph.predictors.loading import PredictorSpec, get_predictor
from infergraph.sessions.geometry import ArmConstants
from infergraph.sessions.progress import annotated_strip, post_log, publish_strip
from infergraph.sessions.service import ImageVault, detection_table, end_session, store_for


@task(name="pending-images", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def pending_images(database: str, arm_id: str, session_id: str) -> list[ImageRecord]:
    """The session's pictures whose boxes are not stored yet (all of them on a rerun is fine)."""
    store = store_for(database)
    return [
        ImageRecord(uri=i.uri or "", fields={"image_name": i.image_name}, record_id=i.image_name)
        for i in store.images(arm_id, session_id)
        if not i.detected and i.uri
    ]


@task(name="store-detections", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15])
def store_detections(
    output: BatchOutput, database: str, arm_id: str, session_id: str, panel: str | None = None
) -> int:
    """Write each picture's boxes (and report it); a picture that failed stays pending."""
    store = store_for(database)
    logger = get_run_logger()
    failed = [row for row in output.rows if row["status"] != "ok"]
    for row in output.rows:
        if row["status"] == "ok":
            store.put_boxes(arm_id, session_id, row["image_name"], row["boxes"])
            labels = [b["label"] for b in row["boxes"]]
            logger.info(
                "picture %s: %d items, %d containers",
                row["image_name"],
                labels.count("item"),
                labels.count("container"),
            )
            post_log(panel, arm_id, session_id, row["image_name"].rsplit(".", 1)[0], True)
    if failed:
        raise RuntimeError(f"{len(failed)} picture(s) failed detection: {failed[0]['error']}")
    return sum(row["box_count"] for row in output.rows)


@task(name="plan-commands", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def plan_commands(
    database: str,
    images: str,
    detector: PredictorSpec,
    arm_id: str,
    session_id: str,
    constants: ArmConstants,
    seed: int,
) -> dict[str, Any]:
    """Session end: convert, merge, crop + embed, cluster, assign; commands stored."""
    store = store_for(database)
    outcome = end_session(
        store, ImageVault(images), get_predictor(detector), arm_id, session_id, constants, seed
    )
    return {
        "commands": outcome.commands,
        "boxes": outcome.sightings,
        "items": len(outcome.plan.items),
        "containers": len(outcome.plan.containers),
    }


@task(name="publish-session", cache_policy=NO_CACHE)
def publish_session(
    database: str,
    images: str,
    arm_id: str,
    session_id: str,
    summary: dict[str, Any],
    panel: str | None = None,
) -> None:
    """Detections per picture, the annotated pictures and the commands, as artifacts."""
    store = store_for(database)
    key = f"session-{arm_id}-{session_id}".lower().replace("_", "-")
    key = "".join(c if c.isalnum() or c == "-" else "-" for c in key)[:80]
    create_table_artifact(
        key=f"{key}-detections",
        table=detection_table(store, arm_id, session_id),
        description=f"Detections per picture of session {session_id} (arm {arm_id})",
    )
    create_table_artifact(
        key=f"{key}-commands",
        table=[
            {"#": n, "item": str(c[0]), "container": str(c[1])}
            for n, c in enumerate(summary["commands"])
        ]
        or [{"#": "-", "item": "no commands", "container": "-"}],
        description=f"{summary['items']} items, {summary['containers']} containers",
    )
    vault = ImageVault(images)
    create_markdown_artifact(
        key=f"{key}-pictures",
        markdown=publish_strip(
            annotated_strip(store, vault, arm_id, session_id),
            vault.uri(arm_id, session_id, "annotated.png", "proc"),
            vault,
            key,
            f"Session {session_id} (arm {arm_id}): {summary['boxes']} boxes",
        ),
        description="The session's pictures with their boxes",
    )
    post_log(panel, arm_id, session_id, "commands", True)
