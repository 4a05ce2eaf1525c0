"""The sorting-table detector behind the batch predictor contract, plus crop embeddings.

Results are ``{"boxes": [{class_id, label, score, x1, y1, x2, y2}], "box_count": n}``
with boxes in absolute pixels of the decoded (EXIF-upright) image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from infergraph.detection.model import INPUT_H, INPUT_W, CentreNet, decode, to_input
from infergraph.detection.synthetic import LABELS
from infergraph.predictors.base import Predictor, RecordMeta

HERE = Path(__file__).parent
EMBED_SIZE = 48


class Detector(Predictor):
    """Two classes, ``item`` (0) and ``container`` (1); ``threshold`` is the score cut-off."""

    output_fields = ("boxes", "box_count")

    def __init__(self, weights: str | None = None, threshold: float = 0.5, **options: Any) -> None:
        super().__init__(**options)
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.weights = Path(weights) if weights else HERE / "weights.pt"
        self.threshold = threshold
        self.model: CentreNet | None = None

    def load(self) -> None:
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        model = CentreNet()
        model.load_state_dict({k: v.float() for k, v in state.items()})
        self.model = model.to(self.device).eval()

    def preprocess_input(
        self, record: np.ndarray, meta: RecordMeta
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        return to_input(record), (record.shape[1], record.shape[0])

    def collate(self, inputs: list[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        return torch.stack([x for x, _ in inputs]).to(self.device), [s for _, s in inputs]

    def predict(self, batch: Any, metas: Sequence[RecordMeta]) -> list[list[dict[str, Any]]]:
        images, sizes = batch
        assert self.model is not None, "load() first"
        found = decode(*self.model(images), threshold=self.threshold)
        out = []
        for boxes, (width, height) in zip(found, sizes, strict=True):
            sx, sy = width / INPUT_W, height / INPUT_H
            out.append(
                [
                    {
                        "class_id": b.class_id,
                        "label": LABELS[b.class_id],
                        "score": round(b.score, 4),
                        "x1": round(max(0.0, b.x1 * sx), 1),
                        "y1": round(max(0.0, b.y1 * sy), 1),
                        "x2": round(min(float(width), b.x2 * sx), 1),
                        "y2": round(min(float(height), b.y2 * sy), 1),
                    }
                    for b in boxes
                ]
            )
        return out

    def split(self, outputs: Any, count: int) -> list[Any]:
        return super().split(list(outputs), count)

    def postprocess_output(self, output: list[dict[str, Any]], meta: RecordMeta) -> dict[str, Any]:
        return {"boxes": output, "box_count": len(output)}

    def detect(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        """Boxes for decoded images, without the batch machinery (scripts, tests)."""
        metas = [RecordMeta(record_id=str(i), uri=f"image-{i}") for i in range(len(images))]
        results = self.run_batch(list(images), metas)
        failed = [r for r in results if not isinstance(r, dict)]
        if failed:
            raise RuntimeError(f"detection failed: {failed[0]}")
        return [r["boxes"] for r in results]  # type: ignore[index]

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """One L2-normalised embedding per crop, from the detector's own backbone (batched)."""
        if not crops:
            return np.zeros((0, 0), dtype=np.float32)
        assert self.model is not None, "load() first"
        batch = torch.stack([to_input(c, EMBED_SIZE, EMBED_SIZE) for c in crops]).to(self.device)
        with self._predict_lock, torch.inference_mode():
            return self.model.embed(batch).cpu().numpy()


def crop(image: np.ndarray, box: dict[str, Any]) -> np.ndarray:
    """The box's pixels (at least 1×1), for embedding."""
    height, width = image.shape[:2]
    x1, y1 = int(max(0, min(width - 1, box["x1"]))), int(max(0, min(height - 1, box["y1"])))
    x2, y2 = int(max(x1 + 1, min(width, box["x2"]))), int(max(y1 + 1, min(height, box["y2"])))
    return np.ascontiguousarray(image[y1:y2, x1:x2])


__all__ = ["Detector", "Image", "crop"]
