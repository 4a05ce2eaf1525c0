"""Predictors written for the reference batch CLI, run unchanged through an adapter.

The reference contract is one record at a time: ``predict(input_record, meta)``
(required, returns a dict), optionally ``preprocess_input(input_record, meta)`` and
``postprocess_output(result)`` (some versions also passed ``meta``). Its ``meta`` was
``{"input_settings": ..., "output_settings": ..., "request_info": info}`` where
``info`` held ``bucket``, ``key``, ``download_time`` and the request's own fields.

:func:`adapter_for` wraps such a class in a :class:`RecordwisePredictor`, so the
pipeline still batches around it: downloads, decoding (with ``preprocess_input``,
beside I/O) and writes overlap, and only the model step runs record by record.
:class:`PredictorBase` stands in for the reference's base class (the same optional
methods and hooks) for code that subclassed it.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import numpy as np

from infergraph.predictors.base import Predictor, RecordError, RecordMeta, RecordwisePredictor

#: The methods each contract needs, for the error a class matching neither gets.
CONTRACTS = {
    "infergraph (batch)": "a subclass of infergraph.predictors.base.Predictor implementing "
    "preprocess_input(record, meta), predict(batch, metas), postprocess_output(output, meta)",
    "reference (one record at a time)": "a class with predict(input_record, meta) returning a "
    "dict; preprocess_input(input_record, meta) and postprocess_output(result) optional",
}


class PredictorBase:
    """The reference CLI's predictor base class: identity steps and no-op hooks.

    Change ``from <reference>.predictors import PredictorBase`` to import this one
    (or keep the reference package installed); nothing else changes.
    """

    __version__ = "0.1.0"
    PROCESSING_TIMEOUT_SECONDS: int | None = None

    def pre_predict_hook(self, record: Any, info: dict[str, Any] | None = None) -> None:
        """Called before each record's steps."""

    def preprocess_input(self, input_record: Any, meta: dict[str, Any] | None = None) -> Any:
        return input_record

    def predict(self, input_record: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError("predict(input_record, meta) must be defined")

    def postprocess_output(self, prediction_result: Any, meta: dict[str, Any] | None = None) -> Any:
        return prediction_result

    def post_predict_hook(
        self, record: Any, response: Any, meta: dict[str, Any] | None = None
    ) -> None:
        """Called after each record's steps (``response`` is None: writes come later, per chunk)."""


def is_reference_predictor(cls: Any) -> bool:
    """A class that is not an infergraph Predictor but has ``predict(input_record, meta)``."""
    if not isinstance(cls, type) or issubclass(cls, Predictor):
        return False
    predict = getattr(cls, "predict", None)
    return callable(predict) and _positional_count(predict) >= 3  # self, input_record, meta


class ReferencePredictor(RecordwisePredictor):
    """Runs one reference-shaped predictor instance per process, record by record.

    Options: ``input_settings`` and ``output_settings``, the dicts the reference put
    in ``meta`` (``--from-env`` fills them from the reference's variables).
    """

    reference_class: type = object

    def __init__(
        self,
        input_settings: dict[str, Any] | None = None,
        output_settings: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.input_settings = dict(input_settings or {})
        self.output_settings = dict(output_settings or {})
        self.inner: Any = None
        self._passes_meta = False
        self._pre_hook: Any = None
        self._post_hook: Any = None
        # The reference ran one record at a time; its predictors may keep state per call.
        self._inner_lock = threading.Lock()

    def load(self) -> None:
        self.inner = self.reference_class()
        post = getattr(self.inner, "postprocess_output", None)
        self._passes_meta = post is not None and _positional_count(post) >= 2
        self._pre_hook = _overridden(self.inner, "pre_predict_hook")
        self._post_hook = _overridden(self.inner, "post_predict_hook")

    def meta(self, meta: RecordMeta) -> dict[str, Any]:
        """The reference's ``meta`` for one record."""
        bucket, key = None, None
        if meta.uri.startswith("s3://"):
            bucket, _, key = meta.uri[5:].partition("/")
        info = {"bucket": bucket, "key": key, "download_time": meta.download_seconds}
        info.update(meta.fields)
        return {
            "input_settings": self.input_settings,
            "output_settings": self.output_settings,
            "request_info": info,
        }

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> Any:
        """Runs beside downloads, as the reference's step did before predict."""
        reference_meta = self.meta(meta)
        if self._pre_hook is not None:
            self._pre_hook(record, reference_meta["request_info"])
        step = getattr(self.inner, "preprocess_input", None)
        value = step(record, reference_meta) if step is not None else record
        # The pixels are kept only for a post_predict_hook that wants them.
        return (value, reference_meta, record if self._post_hook is not None else None)

    def collate(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def predict_record(self, record: Any, meta: RecordMeta) -> Any:
        """predict → postprocess_output → post_predict_hook; a failure is this record's alone.

        Returning the error (instead of raising) spares the batch the bisection a
        failed batched forward pass needs.
        """
        value, reference_meta, image = record
        with self._inner_lock:
            step = "predict"
            try:
                result = self.inner.predict(value, reference_meta)
                if not isinstance(result, dict):
                    return RecordError(
                        f"predict returned a {type(result).__name__}; the reference "
                        "contract needs a dict"
                    )
                post = getattr(self.inner, "postprocess_output", None)
                step = "postprocess_output"
                if post is not None:
                    result = post(result, reference_meta) if self._passes_meta else post(result)
                step = "post_predict_hook"
                if self._post_hook is not None:
                    self._post_hook(image, None, reference_meta)
            except Exception as exc:
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
                return RecordError(f"{step} failed: {reason}")
        return result

    def postprocess_output(self, output: Any, meta: RecordMeta) -> dict[str, Any]:
        if not isinstance(output, dict):
            raise TypeError(
                f"postprocess_output returned a {type(output).__name__}; a result must be a dict"
            )
        return output


_adapters: dict[type, type[Predictor]] = {}
_adapters_lock = threading.Lock()


def adapter_for(cls: type) -> type[Predictor]:
    """The :class:`ReferencePredictor` subclass that runs ``cls`` (one per class)."""
    with _adapters_lock:
        if cls not in _adapters:
            _adapters[cls] = type(
                f"Reference{cls.__name__}",
                (ReferencePredictor,),
                {"reference_class": cls, "__module__": cls.__module__},
            )
        return _adapters[cls]


def contracts_text() -> str:
    """Both contracts, for errors about classes that match neither."""
    return "; ".join(f"{name}: {needs}" for name, needs in CONTRACTS.items())


def _overridden(instance: Any, name: str) -> Any:
    """The bound hook, unless it is missing or :class:`PredictorBase`'s no-op."""
    hook = getattr(instance, name, None)
    if hook is None or getattr(type(instance), name, None) is getattr(PredictorBase, name):
        return None
    return hook


def _positional_count(method: Any) -> int:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 3
    return sum(1 for p in parameters if p.kind in kinds)
