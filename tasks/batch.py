"""The per-batch Prefect task: images in, one result row per image out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from predictors.base import Predictor, RecordError
from predictors.loading import PredictorSpec, get_predictor
from tasks.errors import retry_if_transient
from tasks.fetch import FetchOptions, PreparedRecord, prepare_batch
from tasks.records import ImageRecord


@dataclass(slots=True)
class BatchOutput:
    """Result rows in input order, which of them may succeed if retried, and timings."""

    rows: list[dict[str, Any]]
    retryable: list[bool]
    prepare_seconds: float = 0.0
    predict_seconds: float = 0.0


def result_row(
    record: ImageRecord, output_fields: Sequence[str], outcome: dict[str, Any] | RecordError
) -> dict[str, Any]:
    """The row written to sinks: identity, request fields, prediction or error."""
    row: dict[str, Any] = {"record_id": record.record_id, "uri": record.uri, **record.fields}
    row.update(dict.fromkeys(output_fields))
    if isinstance(outcome, RecordError):
        row.update(status="error", error=str(outcome))
    else:
        row.update(outcome)
        row.update(status="ok", error=None)
    return row


def run_batch(records: list[ImageRecord], predictor: Predictor, fetch: FetchOptions) -> BatchOutput:
    """Prepare and predict one batch; the body of :func:`infer_batch`, callable without Prefect."""
    started = time.perf_counter()
    prepared: list[PreparedRecord] = prepare_batch(records, predictor, fetch)
    prepared_at = time.perf_counter()
    outcomes = predictor.run_prepared([p.value for p in prepared], [p.meta for p in prepared])
    finished = time.perf_counter()
    rows = [
        result_row(r, predictor.output_fields, o) for r, o in zip(records, outcomes, strict=True)
    ]
    return BatchOutput(
        rows=rows,
        retryable=[p.retryable for p in prepared],
        prepare_seconds=prepared_at - started,
        predict_seconds=finished - prepared_at,
    )


@task(
    name="infer-batch",
    task_run_name="infer-batch-{index}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_if_transient,
)
def infer_batch(
    records: list[ImageRecord], index: int, predictor: PredictorSpec, fetch: FetchOptions
) -> BatchOutput:
    """Fetch, decode and classify one batch.

    The predictor travels as a spec and is loaded once per worker process, so no
    model is ever pickled or hashed into a cache key (``NO_CACHE``: reruns must
    recompute, never replay stored results).
    """
    return run_batch(records, get_predictor(predictor), fetch)
