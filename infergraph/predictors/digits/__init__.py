"""The shipped digits classifier: model, training script, weights and sample images."""

from infergraph.predictors.digits.predictor import SAMPLES, DigitsClassifier

#: The predictor a run uses when none is named: this package's classifier.
DEFAULT_PREDICTOR = "infergraph.predictors.digits:DigitsClassifier"

__all__ = ["DEFAULT_PREDICTOR", "SAMPLES", "DigitsClassifier"]
