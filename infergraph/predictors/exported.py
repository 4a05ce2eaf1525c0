"""Bring your own trained model: a TorchScript or ``torch.export`` file plus a labels file.

The model maps a float batch ``N×C×H×W`` (pixels scaled to [0, 1], then
normalised by ``mean``/``std``) to class logits (``output="classes"``), or, for
a detector (``output="boxes"``), to ``N×K×6`` rows ``[x1, y1, x2, y2, score,
class_id]`` in model-input pixels (rows scoring under ``threshold`` are
padding); boxes come back in pixels of the decoded image, as the ``Box``
contract says. Both files may be local paths or ``s3://`` URIs; S3 is read with
the named AWS credentials block, or the default AWS credential chain.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from infergraph.aws.storage import read_uri
from infergraph.predictors.base import ClassifierPredictor, RecordMeta
from infergraph.predictors.imaging import grey_image
from infergraph.predictors.labels import parse_labels

BOX_COLUMNS = 6  # x1, y1, x2, y2, score, class_id


class ExportedModelPredictor(ClassifierPredictor):
    """An exported model file (``.pt`` TorchScript or ``.pt2`` export): classes or boxes."""

    def __init__(
        self,
        model: str,
        labels: str,
        input_size: int | Sequence[int] = 224,
        channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        aws_credentials: str | None = None,
        top_k: int = 5,
        output: Literal["classes", "boxes"] = "classes",
        threshold: float = 0.5,
        **options: Any,
    ) -> None:
        super().__init__(top_k=top_k, **options)
        if output not in ("classes", "boxes"):
            raise ValueError(f"output must be 'classes' or 'boxes', got {output!r}")
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.boxes = output == "boxes"
        self.threshold = threshold
        if self.boxes:
            self.output_fields = ("boxes", "box_count")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        size = [input_size, input_size] if isinstance(input_size, int) else list(input_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(
                f"input_size must be a positive int or [height, width], got {input_size}"
            )
        self.model_uri, self.labels_uri = model, labels
        self.height, self.width = int(size[0]), int(size[1])
        self.channels = channels
        mean = list(mean) if mean is not None else [0.0] * channels
        std = list(std) if std is not None else [1.0] * channels
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(f"mean and std need {channels} values each (std > 0)")
        self._mean = torch.tensor(mean, dtype=torch.float32).view(channels, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(channels, 1, 1)
        self.aws_credentials = aws_credentials
        self._static_batch: int | None = None

    def load(self) -> None:
        credentials = None
        if self.aws_credentials:
            from prefect_aws import AwsCredentials

            credentials = AwsCredentials.load(self.aws_credentials)
        blob = read_uri(self.model_uri, credentials)
        self.labels = parse_labels(read_uri(self.labels_uri, credentials).decode(), self.labels_uri)
        self.model = self._load_model(blob)

    def _load_model(self, blob: bytes) -> Any:
        """TorchScript and torch.export archives are both zip files; try the format named inside."""
        try:
            names = zipfile.ZipFile(io.BytesIO(blob)).namelist()
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{self.model_uri}: not a TorchScript or torch.export file") from exc
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return torch.jit.load(io.BytesIO(blob), map_location=self.device).eval()
        program = torch.export.load(io.BytesIO(blob))
        self._static_batch = _static_batch_size(program)
        return program.module().to(self.device)

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> Any:
        image = grey_image(record) if self.channels == 1 else Image.fromarray(record)
        image = image.resize((self.width, self.height), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        x = x.unsqueeze(0) if self.channels == 1 else x.permute(2, 0, 1)
        x = (x - self._mean) / self._std
        return (x, (record.shape[1], record.shape[0])) if self.boxes else x

    def collate(self, inputs: list[Any]) -> Any:
        if not self.boxes:
            return super().collate(inputs)
        return super().collate([x for x, _ in inputs]), [size for _, size in inputs]

    def predict(self, batch: Any, metas: Sequence[RecordMeta]) -> Any:
        if not self.boxes:
            return torch.softmax(self._forward(batch).float(), dim=-1)
        images, sizes = batch
        rows = self._forward(images).float().to("cpu")
        if rows.dim() != 3 or rows.shape[-1] != BOX_COLUMNS or rows.shape[0] != len(sizes):
            raise ValueError(
                f"{self.model_uri}: a boxes model returns N×K×{BOX_COLUMNS} "
                f"[x1, y1, x2, y2, score, class_id], got shape {tuple(rows.shape)}"
            )
        return list(zip(rows, sizes, strict=True))

    def split(self, outputs: Any, count: int) -> list[Any]:
        return super().split(list(outputs) if self.boxes else outputs, count)

    def postprocess_output(self, output: Any, meta: RecordMeta) -> dict[str, Any]:
        if not self.boxes:
            return super().postprocess_output(output, meta)
        rows, (width, height) = output
        sx, sy = width / self.width, height / self.height
        boxes = [
            {
                "class_id": int(c),
                "label": self.label(int(c)),
                "score": round(score, 4),
                "x1": round(max(0.0, x1 * sx), 1),
                "y1": round(max(0.0, y1 * sy), 1),
                "x2": round(min(float(width), x2 * sx), 1),
                "y2": round(min(float(height), y2 * sy), 1),
            }
            for x1, y1, x2, y2, score, c in rows.tolist()
            if score >= self.threshold
        ]
        boxes.sort(key=lambda b: -b["score"])
        return {"boxes": boxes, "box_count": len(boxes)}

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        step = self._static_batch
        if step is None:
            return self.model(batch)
        # A program exported with a fixed batch size: feed it padded slices of that size.
        parts = []
        for start in range(0, len(batch), step):
            part = batch[start : start + step]
            pad = step - len(part)
            if pad:
                part = torch.cat([part, part[:1].expand(pad, *part.shape[1:])])
            parts.append(self.model(part)[: step - pad])
        return torch.cat(parts)


def _static_batch_size(program: torch.export.ExportedProgram) -> int | None:
    """The fixed batch size of the first user input, or None when it is dynamic."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            dim = value.shape[0] if value is not None and value.dim() else None
            return dim if isinstance(dim, int) else None
    return None
