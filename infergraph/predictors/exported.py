"""Bring your own trained model: a TorchScript or ``torch.export`` file plus a labels file.

The model must map a float batch ``N×C×H×W`` (pixels scaled to [0, 1], then
normalised by ``mean``/``std``) to class logits. Both files may be local paths or
``s3://`` URIs; S3 is read with the named AWS credentials block, or the default
AWS credential chain.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from infergraph.aws.storage import read_uri
from infergraph.predictors.base import ClassifierPredictor, RecordMeta
from infergraph.predictors.imaging import grey_image
from infergraph.predictors.labels import parse_labels


class ExportedModelPredictor(ClassifierPredictor):
    """Classifier around an exported model file (``.pt`` TorchScript or ``.pt2`` export)."""

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
        **options: Any,
    ) -> None:
        super().__init__(top_k=top_k, **options)
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

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> torch.Tensor:
        image = grey_image(record) if self.channels == 1 else Image.fromarray(record)
        image = image.resize((self.width, self.height), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        x = x.unsqueeze(0) if self.channels == 1 else x.permute(2, 0, 1)
        return (x - self._mean) / self._std

    def predict(self, batch: torch.Tensor, metas: Sequence[RecordMeta]) -> torch.Tensor:
        step = self._static_batch
        if step is None:
            return super().predict(batch, metas)
        # A program exported with a fixed batch size: feed it padded slices of that size.
        parts = []
        for start in range(0, len(batch), step):
            part = batch[start : start + step]
            pad = step - len(part)
            if pad:
                part = torch.cat([part, part[:1].expand(pad, *part.shape[1:])])
            parts.append(torch.softmax(self.model(part).float(), dim=-1)[: step - pad])
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
