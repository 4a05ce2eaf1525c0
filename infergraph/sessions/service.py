"""The session operations the endpoint and the flow share: receive, detect, plan.

Pictures are kept as files (a local folder, or an S3 prefix) before anything else
happens, so a database or detector failure never loses a picture: the flow
re-detects whatever the store has not marked ``detected``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prefect_aws import AwsCredentials

from infergraph.aws.clients import aws_client
from infergraph.aws.storage import read_uri, split_s3_uri
from infergraph.inference.decode import decode_image
from infergraph.sessions.geometry import ArmConstants, base_position, box_to_arm
from infergraph.sessions.planning import (
    CONTAINER,
    ITEM,
    Plan,
    Sighting,
    merge_duplicates,
    plan_session,
)
from infergraph.sessions.store import SessionStore

COMMANDS = ("recv_img_proc", "recv_img_after")
_SAFE = str.maketrans({c: "_" for c in "/\\\0"})


class BadRequest(ValueError):
    """A frame or request the arm must fix; the message says what and where."""


@dataclass(frozen=True, slots=True)
class ImageVault:
    """Where received pictures live: ``s3://bucket/prefix`` or a local folder."""

    root: str
    credentials: AwsCredentials | None = None

    def uri(self, arm_id: str, session_id: str, image_name: str, kind: str) -> str:
        parts = [p.translate(_SAFE) for p in (arm_id, session_id)]
        name = (
            image_name.translate(_SAFE)
            if kind == "proc"
            else f"after/{image_name.translate(_SAFE)}"
        )
        return f"{self.root.rstrip('/')}/{parts[0]}/{parts[1]}/{name}"

    def put(self, uri: str, data: bytes) -> None:
        if uri.startswith("s3://"):
            bucket, key = split_s3_uri(uri)
            aws_client("s3", self.credentials).put_object(
                Bucket=bucket, Key=key, Body=data, ContentType="image/jpeg"
            )
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_bytes(data)
        partial.replace(path)

    def get(self, uri: str) -> bytes:
        return read_uri(uri, self.credentials)


@dataclass(frozen=True, slots=True)
class ReceivedImage:
    arm_id: str
    session_id: str
    image_name: str
    kind: str
    uri: str
    width: int
    height: int
    new: bool
    image: np.ndarray = field(repr=False)


def parse_frame(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a binary frame: UTF-8 JSON headers, ``___SPLIT___``, JPEG bytes."""
    head, sep, body = frame.partition(b"___SPLIT___")
    if not sep:
        raise BadRequest("binary frame has no ___SPLIT___ separator between headers and image")
    try:
        headers = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"frame headers are not UTF-8 JSON: {exc}") from None
    if not isinstance(headers, dict):
        raise BadRequest("frame headers must be a JSON object")
    missing = [k for k in ("command", "arm_id", "session_id", "image_name") if not headers.get(k)]
    if missing:
        raise BadRequest(f"frame headers lack {', '.join(missing)}")
    if headers["command"] not in COMMANDS:
        raise BadRequest(
            f"unknown binary command {headers['command']!r}: expected {' or '.join(COMMANDS)}"
        )
    for key in ("arm_id", "session_id", "image_name"):
        if not isinstance(headers[key], str) or len(headers[key]) > 200:
            raise BadRequest(f"header {key} must be a string of at most 200 characters")
    return headers, body


def receive_image(
    store: SessionStore,
    vault: ImageVault,
    headers: dict[str, Any],
    data: bytes,
    max_pixels: int = 20_000_000,
) -> ReceivedImage:
    """Check, keep and record one picture (the file first, then the row)."""
    kind = "proc" if headers["command"] == "recv_img_proc" else "after"
    name = headers["image_name"]
    base = base_position(name) if kind == "proc" else None
    image = decode_image(data, f"{headers['session_id']}/{name}", max_pixels=max_pixels)
    height, width = image.shape[:2]
    uri = vault.uri(headers["arm_id"], headers["session_id"], name, kind)
    vault.put(uri, data)
    new = store.add_image(
        headers["arm_id"],
        headers["session_id"],
        name,
        kind=kind,
        data=data,
        width=width,
        height=height,
        base_pw=base,
        uri=uri,
    )
    return ReceivedImage(
        headers["arm_id"], headers["session_id"], name, kind, uri, width, height, new, image
    )


@dataclass(slots=True)
class SessionOutcome:
    commands: list[list[list[float]]]
    plan: Plan
    sightings: int


def end_session(
    store: SessionStore,
    vault: ImageVault,
    detector: Any,
    arm_id: str,
    session_id: str,
    constants: ArmConstants,
    seed: int = 0,
) -> SessionOutcome:
    """Convert, merge, crop + embed, cluster, assign; store and return the commands."""
    images = {i.image_name: i for i in store.images(arm_id, session_id)}
    sightings: list[Sighting] = []
    for row in store.boxes(arm_id, session_id):
        image = images.get(row["image_name"])
        if image is None:
            continue
        box = (row["x1"], row["y1"], row["x2"], row["y2"])
        point = box_to_arm(
            box, image.width, image.height, base_position(image.image_name), constants
        )
        sightings.append(
            Sighting(
                key=f"{row['image_name']}#{row['box_index']}",
                class_id=row["class_id"],
                servo0=point.servo0,
                servo1=point.servo1,
                score=row["score"],
                image_name=row["image_name"],
                box=tuple(int(v) for v in box),  # type: ignore[arg-type]
            )
        )
    items = merge_duplicates([s for s in sightings if s.class_id == ITEM])
    containers = merge_duplicates([s for s in sightings if s.class_id == CONTAINER])
    embeddings = embed_items(vault, detector, images, items) if items and containers else None
    plan = plan_session(items, containers, embeddings, seed=seed)

    by_key = {s.key: s for s in sightings}
    placements = []
    for number, obj in enumerate(items):
        cluster = plan.labels[number] if plan.labels else None
        for key in obj.members:
            s = by_key[key]
            placements.append(
                (s.image_name, int(key.rsplit("#", 1)[1]), s.servo0, s.servo1, number, cluster)
            )
    for number, obj in enumerate(containers, start=len(items)):
        for key in obj.members:
            s = by_key[key]
            placements.append(
                (s.image_name, int(key.rsplit("#", 1)[1]), s.servo0, s.servo1, number, None)
            )
    clusters = [plan.labels[i] for i, _ in plan.pairs]
    store.save_plan(arm_id, session_id, placements, list(zip(plan.commands, clusters, strict=True)))
    return SessionOutcome(plan.commands, plan, len(sightings))


def embed_items(
    vault: ImageVault, detector: Any, images: dict[str, Any], items: Sequence[Any]
) -> np.ndarray:
    """Crop each item from its best picture and embed all crops in one batch."""
    from infergraph.detection.predictor import crop

    decoded: dict[str, np.ndarray] = {}
    crops = []
    for obj in items:
        name = obj.best.image_name
        if name not in decoded:
            decoded[name] = decode_image(vault.get(images[name].uri), images[name].uri)
        x1, y1, x2, y2 = obj.best.box
        crops.append(crop(decoded[name], {"x1": x1, "y1": y1, "x2": x2, "y2": y2}))
    return detector.embed_crops(crops)


_stores: dict[str, SessionStore] = {}


def store_for(database: str) -> SessionStore:
    """One open store per database per process: a ``postgresql://`` URL or a block's name."""
    store = _stores.get(database)
    if store is None:
        if database.startswith(("postgresql://", "postgres://")):
            store = SessionStore(database)
        else:
            from blocks.postgres import PostgresDatabase

            store = SessionStore.from_block(PostgresDatabase.load(database))
        _stores[database] = store.open()
    return store


def detection_table(store: SessionStore, arm_id: str, session_id: str) -> list[dict[str, Any]]:
    """One row per picture: its items, containers and best scores (the run's artifact)."""
    rows: dict[str, dict[str, Any]] = {
        i.image_name: {"image": i.image_name, "items": 0, "containers": 0, "best score": 0.0}
        for i in store.images(arm_id, session_id)
    }
    for box in store.boxes(arm_id, session_id):
        row = rows.setdefault(
            box["image_name"],
            {"image": box["image_name"], "items": 0, "containers": 0, "best score": 0.0},
        )
        row["items" if box["class_id"] == ITEM else "containers"] += 1
        row["best score"] = round(max(row["best score"], box["score"]), 3)
    return list(rows.values())
