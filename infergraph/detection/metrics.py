"""Mean average precision at an IoU threshold (VOC all-point interpolation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def iou(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    ix = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    iy = max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    inter = ix * iy
    area = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"])
    return inter / (area - inter) if area - inter > 0 else 0.0


def average_precision(
    predictions: Sequence[Sequence[Mapping[str, Any]]],
    truths: Sequence[Sequence[Mapping[str, Any]]],
    class_id: int,
    threshold: float = 0.5,
) -> float:
    """AP of one class over images; each prediction matches at most one unmatched truth."""
    scored = [
        (p["score"], image, p)
        for image, preds in enumerate(predictions)
        for p in preds
        if p["class_id"] == class_id
    ]
    scored.sort(key=lambda t: -t[0])
    wanted = [[t for t in ts if t["class_id"] == class_id] for ts in truths]
    total = sum(len(w) for w in wanted)
    if total == 0:
        return float("nan")
    used = [[False] * len(w) for w in wanted]
    hits = []
    for _, image, pred in scored:
        overlaps = [iou(pred, t) for t in wanted[image]]
        best = int(np.argmax(overlaps)) if overlaps else -1
        if best >= 0 and overlaps[best] >= threshold and not used[image][best]:
            used[image][best] = True
            hits.append(1)
        else:
            hits.append(0)
    tp = np.cumsum(hits)
    recall = np.concatenate([[0.0], tp / total, [1.0]])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(hits) + 1), [0.0]])
    if not hits:
        return 0.0
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(((recall[steps + 1] - recall[steps]) * precision[steps + 1]).sum())


def mean_average_precision(
    predictions: Sequence[Sequence[Mapping[str, Any]]],
    truths: Sequence[Sequence[Mapping[str, Any]]],
    classes: Sequence[int] = (0, 1),
    threshold: float = 0.5,
) -> float:
    """Mean of the per-class APs, skipping classes with no ground truth."""
    aps = [average_precision(predictions, truths, c, threshold) for c in classes]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")
