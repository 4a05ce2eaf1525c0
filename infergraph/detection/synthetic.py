"""Seeded synthetic table-top scenes: small *items* of several shapes and colours, and bins.

A scene is resolution-free (positions and sizes are fractions of the picture), so
the same scene renders at the detector's training size and at the arm camera's
1640×1232. Class 0 is an item, class 1 a container, as in the reference detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

LABELS = ("item", "container")
SHAPES = ("disc", "square", "triangle", "diamond")
COLOURS = {
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 160, 60),
    "yellow": (225, 200, 40),
    "purple": (130, 50, 160),
    "orange": (235, 120, 30),
}
ITEM_KINDS = tuple(f"{c}-{s}" for c in COLOURS for s in SHAPES)


@dataclass(frozen=True, slots=True)
class SceneObject:
    """One object; cx, cy, w, h are fractions of the picture's width and height."""

    class_id: int
    kind: str
    cx: float
    cy: float
    w: float
    h: float


@dataclass(frozen=True, slots=True)
class Scene:
    objects: tuple[SceneObject, ...]
    table: tuple[int, int, int]
    texture_seed: int


def random_item(rng: np.random.Generator, kind: str | None = None) -> SceneObject:
    """A square-ish item (4:3 in fractions = square in pixels) of a random or given kind."""
    kind = kind or ITEM_KINDS[rng.integers(len(ITEM_KINDS))]
    size = rng.uniform(0.035, 0.065)
    cx, cy = rng.uniform(0.03, 0.97), rng.uniform(0.04, 0.96)
    return SceneObject(0, kind, cx, cy, size, size * 4 / 3)


def random_container(rng: np.random.Generator) -> SceneObject:
    w, h = rng.uniform(0.14, 0.24), rng.uniform(0.16, 0.3)
    return SceneObject(1, "bin", rng.uniform(0.08, 0.92), rng.uniform(0.1, 0.9), w, h)


def random_scene(rng: np.random.Generator) -> Scene:
    """A training or held-out scene: 0–3 containers and 2–12 items that do not overlap much."""
    objects: list[SceneObject] = []
    for _ in range(int(rng.integers(0, 4))):
        _place(objects, random_container(rng))
    for _ in range(int(rng.integers(2, 13))):
        _place(objects, random_item(rng))
    return Scene(tuple(objects), table_colour(rng), int(rng.integers(2**31)))


def table_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    base = rng.uniform(150, 215)
    return (int(base), int(base * rng.uniform(0.8, 0.95)), int(base * rng.uniform(0.6, 0.8)))


def _place(objects: list[SceneObject], candidate: SceneObject, tries: int = 1) -> bool:
    if any(_overlap(candidate, o) > 0.1 for o in objects):
        return False
    objects.append(candidate)
    return True


def _overlap(a: SceneObject, b: SceneObject) -> float:
    ix = max(0.0, min(a.cx + a.w / 2, b.cx + b.w / 2) - max(a.cx - a.w / 2, b.cx - b.w / 2))
    iy = max(0.0, min(a.cy + a.h / 2, b.cy + b.h / 2) - max(a.cy - a.h / 2, b.cy - b.h / 2))
    return ix * iy / min(a.w * a.h, b.w * b.h)


def render(scene: Scene, width: int, height: int, supersample: int = 2) -> Image.Image:
    """Draw the scene: textured table, containers (rim, shadowed floor), then items."""
    W, H = width * supersample, height * supersample
    rng = np.random.default_rng(scene.texture_seed)
    coarse = rng.normal(0, 9, (12, 16, 1))
    grain = np.asarray(
        Image.fromarray(((coarse - coarse.min()) * 8).clip(0, 255).astype(np.uint8)[..., 0]).resize(
            (W, H), Image.BILINEAR
        ),
        dtype=np.float32,
    )
    base = np.array(scene.table, dtype=np.float32)
    pixels = base + (grain[..., None] - grain.mean()) * 0.35
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in sorted(scene.objects, key=lambda o: -o.class_id):
        x1, y1 = (obj.cx - obj.w / 2) * W, (obj.cy - obj.h / 2) * H
        x2, y2 = (obj.cx + obj.w / 2) * W, (obj.cy + obj.h / 2) * H
        if obj.class_id == 1:
            rim = max(3, int(0.12 * min(x2 - x1, y2 - y1)))
            draw.rounded_rectangle((x1, y1, x2, y2), radius=rim, fill=(70, 75, 85))
            draw.rounded_rectangle(
                (x1 + rim, y1 + rim, x2 - rim, y2 - rim), radius=rim // 2, fill=(115, 120, 130)
            )
        else:
            colour_name, shape = obj.kind.split("-")
            colour = COLOURS[colour_name]
            if shape == "disc":
                draw.ellipse((x1, y1, x2, y2), fill=colour)
            elif shape == "square":
                draw.rectangle((x1, y1, x2, y2), fill=colour)
            elif shape == "triangle":
                draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)
            else:
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(supersample * 0.4))
    return image.resize((width, height), Image.BOX) if supersample > 1 else image


def boxes(scene: Scene, width: int, height: int, min_visible: float = 0.4) -> list[dict]:
    """Ground-truth boxes in pixels, clipped to the picture; mostly-hidden objects dropped."""
    out = []
    for obj in scene.objects:
        x1, y1 = (obj.cx - obj.w / 2) * width, (obj.cy - obj.h / 2) * height
        x2, y2 = (obj.cx + obj.w / 2) * width, (obj.cy + obj.h / 2) * height
        cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        if (cx2 - cx1) * (cy2 - cy1) < min_visible * (x2 - x1) * (y2 - y1):
            continue
        out.append(
            {
                "class_id": obj.class_id,
                "label": LABELS[obj.class_id],
                "kind": obj.kind,
                "x1": round(cx1, 1),
                "y1": round(cy1, 1),
                "x2": round(cx2, 1),
                "y2": round(cy2, 1),
            }
        )
    return out
