"""The reference batch CLI's side of the migration tests: its predictor shapes and its rows.

``expected_row`` computes, for one image, what the reference's executor put in a
result (written from its documented contract, NOTES §1): the predictor's
postprocessed dict, with the request's fields merged in, minus the input's own
``bucket``, ``key`` and ``download_time``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infergraph.inference.decode import decode_image
from infergraph.predictors.examples.reference_digits import Predictor as ReferenceDigits

#: What each reference-shaped predictor below saw, by request key (one process).
SEEN: dict[str, dict[str, Any]] = {}


def expected_row(
    image: bytes, request: dict[str, Any] | None = None, image_key: str | None = None
) -> dict[str, Any]:
    """The reference's result for one image of a request (``image_key``: REQUEST_S3URI_KEYS)."""
    predictor = ReferenceDigits()
    pixels = decode_image(image, "expected")
    info = {**(request or {})}
    if image_key is not None:
        info["current_s3uri_key"] = image_key
    meta = {"input_settings": {}, "output_settings": {}, "request_info": info}
    result = predictor.postprocess_output(
        predictor.predict(predictor.preprocess_input(pixels, meta), meta)
    )
    return {**result, **info}


class EchoMeta:
    """Returns what it was given, so a test can compare ``meta`` with the reference's."""

    def predict(self, input_record: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        info = meta["request_info"]
        SEEN[str(info.get("key"))] = meta
        if int(input_record[0, 0, 0]) == 13:
            raise ValueError("unlucky pixel")
        if int(input_record[0, 0, 0]) == 7:
            return ["not", "a", "dict"]  # type: ignore[return-value]
        return {"pixel": int(input_record[0, 0, 0]), "meta_keys": sorted(meta)}

    def postprocess_output(self, prediction_result: dict[str, Any], meta: dict[str, Any]) -> Any:
        return {**prediction_result, "post_saw_meta": "request_info" in meta}


class OnlyPredict:
    """The smallest reference predictor: predict alone."""

    def predict(self, input_record: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        return {"height": int(input_record.shape[0])}


class PredictWithoutMeta:
    """Neither contract: the reference's predict took the record and meta."""

    def predict(self, input_record: np.ndarray) -> dict[str, Any]:
        return {}
