"""Find a predictor class by dotted path and keep one loaded instance per process.

Flows pass a :class:`PredictorSpec` (a path and JSON-able options) instead of a
model, so nothing heavy is pickled, hashed into a cache key or shipped to workers:
each worker process loads the model once, on first use.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from typing import Any

from pydantic import BaseModel, Field

from infergraph.logs import run_logger
from infergraph.predictors.base import Predictor
from infergraph.predictors.reference import adapter_for, contracts_text, is_reference_predictor


class PredictorSpecError(ValueError):
    """The predictor path or options cannot produce a predictor."""


class PredictorSpec(BaseModel, frozen=True):
    """Which predictor to run, as a flow parameter can carry it."""

    path: str = Field(
        description=(
            "Dotted path 'package.module:Class' of a Predictor subclass, or of a class "
            "with the reference CLI's predict(input_record, meta)."
        ),
        examples=["infergraph.predictors.digits:DigitsClassifier"],
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the predictor's constructor."
    )
    forward_batch: int = Field(
        default=0,
        ge=0,
        description="Most inputs in one predict call (0: the whole batch at once).",
    )

    def key(self) -> str:
        return self.path + json.dumps(self.options, sort_keys=True, default=str)


def resolve_predictor_class(path: str) -> type[Predictor]:
    """Import ``package.module:Class`` (or ``package.module.Class``) and check it."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise PredictorSpecError(
            f"predictor path {path!r} is not of the form 'package.module:Class'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PredictorSpecError(
            f"predictor path {path!r}: cannot import module {module_name!r} ({exc})"
        ) from exc
    try:
        cls = getattr(module, attr)
    except AttributeError as exc:
        raise PredictorSpecError(
            f"predictor path {path!r}: module {module_name!r} has no attribute {attr!r}"
        ) from exc
    if is_reference_predictor(cls):
        return adapter_for(cls)  # the reference CLI's one-record-at-a-time contract
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise PredictorSpecError(
            f"predictor path {path!r}: {attr!r} is not a subclass of "
            "infergraph.predictors.base.Predictor, nor a reference predictor; it must match "
            f"one contract — {contracts_text()}"
        )
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise PredictorSpecError(
            f"predictor path {path!r}: {attr!r} does not implement {missing} "
            f"(contracts — {contracts_text()})"
        )
    return cls


def build_predictor(spec: PredictorSpec) -> Predictor:
    """Construct (without loading) the predictor, turning bad options into a clear error."""
    cls = resolve_predictor_class(spec.path)
    try:
        return cls(**spec.options)
    except (TypeError, ValueError) as exc:
        raise PredictorSpecError(f"predictor {spec.path!r}: bad options: {exc}") from exc


_loaded: dict[str, Predictor] = {}
_load_lock = threading.Lock()


def get_predictor(spec: PredictorSpec) -> Predictor:
    """The loaded predictor for ``spec`` in this process, loading it on first use."""
    key = spec.key()
    predictor = _loaded.get(key)
    if predictor is not None:
        return predictor
    with _load_lock:
        predictor = _loaded.get(key)
        if predictor is None:
            started = time.perf_counter()
            predictor = build_predictor(spec)
            predictor.load()
            _loaded[key] = predictor
            # One line per process, so a run's log shows when (and how fast) the model was ready.
            run_logger(__name__).info(
                "model loaded: %s in %.2f s", spec.path, time.perf_counter() - started
            )
    return predictor
