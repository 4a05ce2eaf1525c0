"""Train the sorting-table detector on seeded synthetic scenes; write weights and held-out samples.

Run ``python -m infergraph.detection.train`` (about four minutes on one CPU
core). Scenes are generated on the fly from a seeded generator, so a rerun on
the same library versions reproduces the committed weights. The held-out scenes
(never trained on) are written as JPEGs with their ground-truth boxes in
``samples/truth.json``; their mAP@0.5 is printed and recomputed by the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from infergraph.detection.metrics import mean_average_precision
from infergraph.detection.model import INPUT_H, INPUT_W, NUM_CLASSES, STRIDE, CentreNet, to_input
from infergraph.detection.synthetic import boxes, random_scene, render

HERE = Path(__file__).parent
SEED = 20261117
SAMPLE_SIZE = (640, 480)


_GRID_Y, _GRID_X = np.mgrid[0 : INPUT_H // STRIDE, 0 : INPUT_W // STRIDE]


def targets(truth: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian centre heatmap, log box size and centre offset at each object's centre cell."""
    h, w = _GRID_Y.shape
    heat = np.zeros((NUM_CLASSES, h, w), np.float32)
    size = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    mask = np.zeros((1, h, w), np.float32)
    for t in truth:
        cx, cy = (t["x1"] + t["x2"]) / 2 / STRIDE, (t["y1"] + t["y2"]) / 2 / STRIDE
        bw, bh = (t["x2"] - t["x1"]) / STRIDE, (t["y2"] - t["y1"]) / STRIDE
        gx, gy = min(int(cx), w - 1), min(int(cy), h - 1)
        sigma = max(0.6, min(bw, bh) / 6)
        blob = np.exp(-((_GRID_X - gx) ** 2 + (_GRID_Y - gy) ** 2) / (2 * sigma**2))
        np.maximum(heat[t["class_id"]], blob, out=heat[t["class_id"]])
        size[:, gy, gx] = (math.log(bw), math.log(bh))
        offset[:, gy, gx] = (cx - gx, cy - gy)
        mask[0, gy, gx] = 1
    return heat, size, offset, mask


def scene_pool(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, list[dict]]]:
    """Rendered training scenes; flips in :func:`batch` multiply them by four."""
    pool = []
    for _ in range(count):
        scene = random_scene(rng)
        pool.append((np.asarray(render(scene, INPUT_W, INPUT_H)), boxes(scene, INPUT_W, INPUT_H)))
    return pool


def flipped(image: np.ndarray, truth: list[dict], horizontal: bool, vertical: bool):
    truth = [dict(t) for t in truth]
    if horizontal:
        image = image[:, ::-1]
        for t in truth:
            t["x1"], t["x2"] = INPUT_W - t["x2"], INPUT_W - t["x1"]
    if vertical:
        image = image[::-1]
        for t in truth:
            t["y1"], t["y2"] = INPUT_H - t["y2"], INPUT_H - t["y1"]
    return np.ascontiguousarray(image), truth


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos = -(torch.log(pred) * (1 - pred) ** 2 * positive).sum()
    neg = -(torch.log(1 - pred) * pred**2 * (1 - target) ** 4 * (1 - positive)).sum()
    return (pos + neg) / positive.sum().clamp(min=1)


def batch(
    pool: list[tuple[np.ndarray, list[dict]]], rng: np.random.Generator, count: int
) -> tuple[torch.Tensor, ...]:
    images, heats, sizes, offsets, masks = [], [], [], [], []
    for index in rng.integers(len(pool), size=count):
        image, truth = flipped(*pool[index], rng.random() < 0.5, rng.random() < 0.5)
        if rng.random() < 0.5:  # brightness jitter: cameras and lights differ
            image = (image * rng.uniform(0.75, 1.2)).clip(0, 255).astype(np.uint8)
        images.append(to_input(image))
        for bucket, value in zip((heats, sizes, offsets, masks), targets(truth), strict=True):
            bucket.append(torch.from_numpy(value))
    return tuple(torch.stack(x) for x in (images, heats, sizes, offsets, masks))


def loss_of(model: CentreNet, data: tuple[torch.Tensor, ...]) -> torch.Tensor:
    images, heat, size, offset, mask = data
    p_heat, p_size, p_offset = model(images)
    count = mask.sum().clamp(min=1)
    size_loss = (F.l1_loss(p_size, size, reduction="none") * mask).sum() / count
    offset_loss = (F.l1_loss(p_offset, offset, reduction="none") * mask).sum() / count
    return focal_loss(p_heat, heat) + size_loss + offset_loss


def write_samples(out_dir: Path, count: int) -> list[dict]:
    """Held-out scenes from their own seed, as JPEGs plus ``truth.json``."""
    samples = out_dir / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    for old in samples.glob("*.jpg"):
        old.unlink()
    rng = np.random.default_rng(SEED + 1)
    width, height = SAMPLE_SIZE
    truth = []
    for n in range(count):
        scene = random_scene(rng)
        name = f"scene_{n:02d}.jpg"
        render(scene, width, height).save(samples / name, quality=88)
        found = boxes(scene, width, height)
        truth.append({"file": name, "width": width, "height": height, "boxes": found})
    (samples / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def train(steps: int, batch_size: int, scenes: int, out_dir: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    started = time.perf_counter()
    pool = scene_pool(rng, scenes)
    print(f"rendered {scenes} training scenes in {time.perf_counter() - started:.0f}s")
    model = CentreNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=4e-3, total_steps=steps)
    running = 0.0
    for step in range(1, steps + 1):
        model.train()
        loss = loss_of(model, batch(pool, rng, batch_size))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        value = loss.item()
        running = 0.9 * running + 0.1 * value if step > 1 else value
        if step % 50 == 0 or step == steps:
            print(f"step {step}/{steps}: loss {running:.3f} ({time.perf_counter() - started:.0f}s)")
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, out_dir / "weights.pt")
    (out_dir / "labels.txt").write_text("item\ncontainer\n")
    write_samples(out_dir, 12)
    score = held_out_map(out_dir)
    print(f"trained in {time.perf_counter() - started:.0f}s; held-out mAP@0.5 {score:.4f}")


def held_out_map(out_dir: Path = HERE) -> float:
    """Detect the shipped held-out samples with the shipped weights; mAP@0.5 over both classes."""
    from PIL import Image

    from infergraph.detection.predictor import Detector

    truth = json.loads((out_dir / "samples" / "truth.json").read_text())
    detector = Detector(weights=str(out_dir / "weights.pt"))
    detector.load()
    images = [np.asarray(Image.open(out_dir / "samples" / t["file"]).convert("RGB")) for t in truth]
    predictions = detector.detect(images)
    return mean_average_precision(predictions, [t["boxes"] for t in truth])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    train(args.steps, args.batch_size, args.scenes, args.out, args.threads)


if __name__ == "__main__":
    main()
