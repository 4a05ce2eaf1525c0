"""The shipped digits classifier: model, training script, weights and sample images."""

from predictors.digits.predictor import SAMPLES, DigitsClassifier

__all__ = ["SAMPLES", "DigitsClassifier"]
