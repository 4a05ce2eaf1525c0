"""The predictor contract every model plugs into.

A predictor turns decoded images into JSON-able results in three steps so that the
expensive middle step runs once per *batch*:

1. ``preprocess_input(record, meta)`` per image (CPU, runs beside I/O),
2. ``predict(batch, metas)`` once per batch (the forward pass),
3. ``postprocess_output(output, meta)`` per image.

``run_batch`` drives the three steps and turns any per-record failure into a
per-record error, so one bad image never costs the rest of its batch.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """What a predictor may know about one image besides its pixels."""

    record_id: str
    uri: str
    fields: dict[str, Any] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    #: Seconds spent reading the image's bytes (None when not measured).
    download_seconds: float | None = None


class RecordError(Exception):
    """A failure that belongs to one record, not to the batch or the run."""


def default_device() -> torch.device:
    """CUDA when the machine has it, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor(ABC):
    """Base class for batch predictors.

    Subclasses take their options as keyword arguments (JSON-able, so a flow
    parameter can carry them), do the heavy work in :meth:`load`, which runs once
    per worker process, and implement the three steps.
    """

    #: Keys every result of this predictor has; error rows carry them as None so
    #: that tabular sinks see the same columns whatever the first record was.
    output_fields: tuple[str, ...] = ()

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")
        self.device = default_device()
        # One forward pass at a time per process: concurrent batches would only
        # fight over the same cores, and serialising bounds activation memory.
        self._predict_lock = threading.Lock()

    def load(self) -> None:
        """Load weights and move them to ``self.device``; called once per process."""

    @abstractmethod
    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> Any:
        """Turn an H×W×3 uint8 RGB array into one model input."""

    @abstractmethod
    def predict(self, batch: Any, metas: Sequence[RecordMeta]) -> Any:
        """Run the model on a collated batch; return one output per record."""

    @abstractmethod
    def postprocess_output(self, output: Any, meta: RecordMeta) -> dict[str, Any]:
        """Turn one record's output into a JSON-able dict."""

    def collate(self, inputs: list[Any]) -> Any:
        """Stack per-record inputs into one batch tensor on the device."""
        tensors = [torch.as_tensor(x) for x in inputs]
        return torch.stack(tensors).to(self.device, non_blocking=True)

    def split(self, outputs: Any, count: int) -> list[Any]:
        """Split the batch output into per-record outputs (rows of a tensor)."""
        if isinstance(outputs, torch.Tensor):
            outputs = outputs.detach().to("cpu")
        rows = list(outputs)
        if len(rows) != count:
            raise RuntimeError(f"predict returned {len(rows)} outputs for {count} records")
        return rows

    def prepare(self, record: np.ndarray, meta: RecordMeta) -> Any:
        """``preprocess_input`` with its failure turned into the record's error.

        May run in several threads at once (beside downloads), so
        ``preprocess_input`` must not mutate shared state.
        """
        try:
            return self.preprocess_input(record, meta)
        except Exception as exc:
            return RecordError(f"preprocess_input failed: {_describe(exc)}")

    def run_prepared(
        self, inputs: Sequence[Any], metas: Sequence[RecordMeta], forward_batch: int = 0
    ) -> list[dict[str, Any] | RecordError]:
        """Predict prepared inputs; each slot holds a result dict or the record's error.

        Inputs that are already a :class:`RecordError` pass straight through.
        ``forward_batch`` caps the inputs of one ``predict`` call (0: all at once):
        a forward pass's activations grow with its batch, the inputs alone do not.
        """
        slots: list[dict[str, Any] | RecordError] = [
            x if isinstance(x, RecordError) else RecordError("no output") for x in inputs
        ]
        positions = [i for i, x in enumerate(inputs) if not isinstance(x, RecordError)]
        step = forward_batch if forward_batch > 0 else max(1, len(positions))
        outcomes: list[Any] = []
        for start in range(0, len(positions), step):
            part = positions[start : start + step]
            outcomes += self._predict_isolating([inputs[i] for i in part], part, metas)
        for i, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, RecordError):
                slots[i] = outcome
                continue
            try:
                slots[i] = self.postprocess_output(outcome, metas[i])
            except Exception as exc:
                slots[i] = RecordError(f"postprocess_output failed: {_describe(exc)}")
        return slots

    def run_batch(
        self, images: Sequence[np.ndarray], metas: Sequence[RecordMeta]
    ) -> list[dict[str, Any] | RecordError]:
        """Preprocess, predict and postprocess decoded images in one call."""
        inputs = [self.prepare(image, meta) for image, meta in zip(images, metas, strict=True)]
        return self.run_prepared(inputs, metas)

    def _predict_isolating(
        self, inputs: list[Any], positions: list[int], metas: Sequence[RecordMeta]
    ) -> list[Any]:
        """Predict the batch; if it fails, bisect so only the bad records fail."""
        if not inputs:
            return []
        batch_metas = [metas[i] for i in positions]
        try:
            with self._predict_lock, torch.inference_mode():
                outputs = self.predict(self.collate(inputs), batch_metas)
                return self.split(outputs, len(inputs))
        except Exception as exc:
            if len(inputs) == 1:
                return [RecordError(f"predict failed: {_describe(exc)}")]
        half = len(inputs) // 2
        return self._predict_isolating(
            inputs[:half], positions[:half], metas
        ) + self._predict_isolating(inputs[half:], positions[half:], metas)


class RecordwisePredictor(Predictor):
    """Adapter for models that only know how to predict one record at a time.

    Implement :meth:`predict_record` instead of :meth:`predict`; the batch is then
    a plain list and each record is predicted in turn.
    """

    @abstractmethod
    def predict_record(self, record: Any, meta: RecordMeta) -> Any:
        """Predict one preprocessed record."""

    def collate(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def predict(self, batch: list[Any], metas: Sequence[RecordMeta]) -> list[Any]:
        return [self.predict_record(x, m) for x, m in zip(batch, metas, strict=True)]


class ClassifierPredictor(Predictor):
    """A predictor whose model returns class logits; results carry the top-k classes.

    Subclasses set ``self.model`` (an ``nn.Module`` or callable) and ``self.labels``
    in :meth:`load`.
    """

    output_fields = ("class_id", "category_name", "score", "top_k")

    def __init__(self, top_k: int = 5, **options: Any) -> None:
        super().__init__(**options)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.top_k = top_k
        self.model: Any = None
        self.labels: list[str] = []

    def predict(self, batch: torch.Tensor, metas: Sequence[RecordMeta]) -> torch.Tensor:
        return torch.softmax(self.model(batch).float(), dim=-1)

    def postprocess_output(self, output: torch.Tensor, meta: RecordMeta) -> dict[str, Any]:
        k = min(self.top_k, output.shape[-1])
        scores, indices = torch.topk(output, k)
        top = [
            {"class_id": int(i), "category_name": self.label(int(i)), "score": float(s)}
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]
        return {**top[0], "top_k": top}

    def label(self, class_id: int) -> str:
        """The name of a class, or its id when the labels file does not cover it."""
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
