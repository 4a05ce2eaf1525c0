"""The digits model written to the reference batch CLI's contract, as its users wrote theirs.

Nothing here imports infergraph's predictor classes: the class has the reference's
shape (``predict(input_record, meta)`` per record returning a dict, with the
optional ``preprocess_input(input_record, meta)`` and ``postprocess_output(result)``)
and runs through :mod:`infergraph.predictors.reference`'s adapter, found from its
methods. Its results follow the reference's convention of a ``result`` list (the
DynamoDB results table gets one item per element).

Run it as ``PREDICTOR_MODULE=infergraph.predictors.examples.reference_digits``
(``PREDICTOR_CLASS_NAME`` defaults to ``Predictor``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from infergraph.predictors.digits.model import DigitsNet, to_model_input
from infergraph.predictors.digits.predictor import HERE
from infergraph.predictors.labels import read_labels

TOP = 3


class Predictor:
    """Top-3 digit classes of one image per call."""

    __version__ = "1.0.0"

    def __init__(self) -> None:
        self.model = DigitsNet()
        state = torch.load(HERE / "weights.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        self.labels = read_labels(HERE / "labels.txt")

    def preprocess_input(self, input_record: np.ndarray, meta: dict[str, Any]) -> torch.Tensor:
        return to_model_input(input_record)

    def predict(self, input_record: torch.Tensor, meta: dict[str, Any]) -> dict[str, Any]:
        with torch.no_grad():
            scores = torch.softmax(self.model(input_record.unsqueeze(0))[0], dim=-1)
        top = torch.topk(scores, TOP)
        result = [
            {"class_id": int(i), "category_name": self.labels[int(i)], "score": float(s)}
            for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        return {"result": result, "is_valid": True}

    def postprocess_output(self, prediction_result: dict[str, Any]) -> dict[str, Any]:
        best = prediction_result["result"][0]
        return {**prediction_result, "category_name": best["category_name"]}
