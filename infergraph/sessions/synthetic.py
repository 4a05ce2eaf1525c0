"""A synthetic sorting session: one table, pictures at the arm's five base positions.

Objects are placed in arm coordinates and drawn into each picture through the
exact inverse of the reference conversion, so detections map back to where the
objects are and the same object seen from two positions is a duplicate to merge.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from infergraph.detection.synthetic import Scene, SceneObject, render, table_colour
from infergraph.sessions.geometry import ArmConstants

POSITIONS = (1800, 1600, 1400, 1200, 1000)
WIDTH, HEIGHT = 1640, 1232
CONSTANTS = ArmConstants(
    arm_radius=1500,
    rotation_range_as_deg=130,
    rotation_range_as_pw=1400,
    dist_min_as_pw=1150,
    dist_max_as_pw=2050,
)
KINDS = ("red-disc", "blue-square", "green-triangle")


@dataclass(frozen=True, slots=True)
class Placed:
    kind: str
    class_id: int
    servo0: float
    servo1: float


def arm_to_pixel(
    servo0: float, servo1: float, base: float, c: ArmConstants, width: int, height: int
) -> tuple[float, float]:
    """Inverse of :func:`box_to_arm`: where (servo0, servo1) appears in the picture at ``base``."""
    delta = servo0 - base
    gamma = math.radians(abs(delta) * c.rotation_range_as_deg / c.rotation_range_as_pw)
    dist = (servo1 - c.dist_min_as_pw) * height / (c.dist_max_as_pw - c.dist_min_as_pw) + (
        c.arm_radius - height / 2
    )
    a, b = dist * math.sin(gamma), dist * math.cos(gamma) - c.arm_radius
    x = width / 2 + a if delta < 0 else width / 2 - a
    return x, height / 2 - b


def world(seed: int, items: int = 12, containers: int = 3) -> list[Placed]:
    """Items on a grid (≥180 PW apart, so they never merge) and bins at the far edge."""
    rng = np.random.default_rng(seed)
    kinds = KINDS[:containers]
    slots = [(s0, s1) for s0 in range(980, 1821, 180) for s1 in (1300, 1490, 1680)]
    chosen = rng.choice(len(slots), size=min(items, len(slots)), replace=False)
    placed = [
        Placed(kinds[n % len(kinds)], 0, slots[i][0] + rng.uniform(-15, 15), slots[i][1])
        for n, i in enumerate(sorted(chosen))
    ]
    for n in range(containers):
        s0 = 1050 + n * 700 / max(1, containers - 1) if containers > 1 else 1400
        placed.append(Placed("bin", 1, s0, 1910))
    return placed


def session_pictures(
    seed: int = 7, items: int = 12, containers: int = 3, quality: int = 90
) -> tuple[list[tuple[str, bytes]], list[Placed]]:
    """JPEG pictures ``<PW>.jpg`` of one synthetic session, and the objects placed."""
    placed = world(seed, items, containers)
    table = table_colour(np.random.default_rng(seed))
    pictures = []
    for base in POSITIONS:
        objects = []
        for p in placed:
            x, y = arm_to_pixel(p.servo0, p.servo1, base, CONSTANTS, WIDTH, HEIGHT)
            w, h = (0.05, 0.05 * 4 / 3) if p.class_id == 0 else (0.17, 0.24)
            if -0.3 * w * WIDTH < x < WIDTH * (1 + 0.3 * w) and 0 < y < HEIGHT:
                objects.append(SceneObject(p.class_id, p.kind, x / WIDTH, y / HEIGHT, w, h))
        image = render(Scene(tuple(objects), table, seed * 10 + base), WIDTH, HEIGHT, supersample=1)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        pictures.append((f"{base}.jpg", buffer.getvalue()))
    return pictures, placed
