"""Predictors used by the tests to probe the contract (importable by dotted path)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from infergraph.predictors.base import (
    ClassifierPredictor,
    Predictor,
    RecordMeta,
    RecordwisePredictor,
)
from infergraph.predictors.digits import DigitsClassifier
from infergraph.predictors.digits.model import to_model_input

LOADS: dict[str, int] = {}
_lock = threading.Lock()


class CountingDigits(DigitsClassifier):
    """The digits model, counting how often this process loads it and checking inference mode."""

    def load(self) -> None:
        with _lock:
            LOADS[str(os.getpid())] = LOADS.get(str(os.getpid()), 0) + 1
        super().load()

    def predict(self, batch: torch.Tensor, metas: Sequence[RecordMeta]) -> torch.Tensor:
        assert torch.is_inference_mode_enabled(), "predict must run under inference_mode"
        return super().predict(batch, metas)


class OneAtATimeDigits(RecordwisePredictor, ClassifierPredictor):
    """The digits model through the record-at-a-time adapter."""

    def load(self) -> None:
        inner = DigitsClassifier()
        inner.load()
        self.net, self.labels = inner.model, inner.labels

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> torch.Tensor:
        return to_model_input(record)

    def predict_record(self, record: torch.Tensor, meta: RecordMeta) -> torch.Tensor:
        return torch.softmax(self.net(record.unsqueeze(0)), dim=-1)[0]


class Fussy(Predictor):
    """Fails in each step for images whose top-left pixel names the step, to test isolation."""

    PREPROCESS, PREDICT, POSTPROCESS = 1, 2, 3

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> torch.Tensor:
        if record[0, 0, 0] == self.PREPROCESS:
            raise ValueError("cannot preprocess this one")
        return torch.tensor([float(record[0, 0, 0])])

    def predict(self, batch: torch.Tensor, metas: Sequence[RecordMeta]) -> torch.Tensor:
        if (batch == self.PREDICT).any():
            raise RuntimeError("model rejects the batch")
        return batch * 10

    def postprocess_output(self, output: torch.Tensor, meta: RecordMeta) -> dict[str, Any]:
        if int(output[0]) == self.POSTPROCESS * 10:
            raise KeyError("no label")
        return {"value": float(output[0])}


class NotAPredictor:
    def predict(self, batch: Any) -> Any:
        return batch


class Incomplete(Predictor):
    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> Any:
        return record


class BadBoxes(Predictor):
    """A 'detector' whose second image gets a box without x2, to test the box contract."""

    output_fields = ("boxes", "box_count")

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> torch.Tensor:
        return torch.zeros(1)

    def predict(self, batch: torch.Tensor, metas: Sequence[RecordMeta]) -> list[int]:
        return list(range(len(metas)))

    def split(self, outputs: Any, count: int) -> list[Any]:
        return list(outputs)

    def postprocess_output(self, output: Any, meta: RecordMeta) -> dict[str, Any]:
        box = {"class_id": 0, "label": "item", "score": 0.9, "x1": 1, "y1": 2, "x2": 3, "y2": 4}
        if output == 1:
            del box["x2"]
        return {"boxes": [box], "box_count": 1}
