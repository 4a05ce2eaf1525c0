"""The shipped handwritten-digits classifier, as a batch predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from infergraph.predictors.base import ClassifierPredictor, RecordMeta
from infergraph.predictors.digits.model import DigitsNet, to_model_input
from infergraph.predictors.labels import read_labels

HERE = Path(__file__).parent
SAMPLES = HERE / "samples"


class DigitsClassifier(ClassifierPredictor):
    """Classifies images of single handwritten digits (0–9).

    Trained by ``infergraph/predictors/digits/train.py`` on scikit-learn's digits; the
    held-out digits ship in ``infergraph/predictors/digits/samples``.
    """

    def __init__(self, weights: str | None = None, top_k: int = 3, **options: Any) -> None:
        super().__init__(top_k=top_k, **options)
        self.weights = Path(weights) if weights else HERE / "weights.pt"

    def load(self) -> None:
        model = DigitsNet()
        model.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
        self.model = model.to(self.device).eval()
        self.labels = read_labels(HERE / "labels.txt")

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> torch.Tensor:
        return to_model_input(record)
