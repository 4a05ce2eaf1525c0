"""One batch through a predictor: images in, one result row per image out (no Prefect)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infergraph.inference.boxes import BoxesError, check_boxes
from infergraph.inference.fetch import FetchOptions, PreparedRecord, prepare_batch
from infergraph.inference.records import BOXES, ImageRecord, RowStatus, row_ok
from infergraph.predictors.base import Predictor, RecordError


@dataclass(slots=True)
class BatchOutput:
    """Result rows in input order, which of them may succeed if retried, and timings."""

    rows: list[dict[str, Any]]
    retryable: list[bool]
    prepare_seconds: float = 0.0
    predict_seconds: float = 0.0
    #: Bytes of model input the batch held (what batch sizing budgets for).
    input_bytes: int = 0


def result_row(
    record: ImageRecord, output_fields: Sequence[str], outcome: dict[str, Any] | RecordError
) -> dict[str, Any]:
    """The row written to sinks: identity, request fields, prediction or error.

    A result with ``boxes`` must follow the ``Box`` contract, or the record fails
    with the reason (sinks and the session store rely on every box's fields).
    """
    row: dict[str, Any] = {"record_id": record.record_id, "uri": record.uri, **record.fields}
    row.update(dict.fromkeys(output_fields))
    if not isinstance(outcome, RecordError) and BOXES in outcome:
        try:
            check_boxes(outcome[BOXES])
        except BoxesError as exc:
            outcome = RecordError(f"postprocess_output returned bad boxes: {exc}")
    if isinstance(outcome, RecordError):
        row.update(status=RowStatus.ERROR, error=str(outcome))
    else:
        row.update(outcome)
        row.update(status=RowStatus.OK, error=None)
    return row


def add_reference_fields(row: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    """Add the reference batch CLI's ``bucket``, ``key``, ``download_time`` and ``errors``.

    ``bucket`` and ``key`` are None for images that are not S3 objects;
    ``download_time`` (seconds) is None when the image could not be read.
    """
    uri = str(row.get("uri") or "")
    bucket, key = None, None
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
    errors = [] if row_ok(row) else [str(row.get("error"))]
    row.update(bucket=bucket, key=key, download_time=seconds, errors=errors)
    return row


def run_batch(
    records: list[ImageRecord], predictor: Predictor, fetch: FetchOptions, forward_batch: int = 0
) -> BatchOutput:
    """Prepare and predict one batch: the ``infer-batch`` task's body, callable without Prefect.

    ``forward_batch`` caps one forward pass (0: the whole batch), see ``run_prepared``.
    """
    started = time.perf_counter()
    prepared: list[PreparedRecord] = prepare_batch(records, predictor, fetch)
    prepared_at = time.perf_counter()
    outcomes = predictor.run_prepared(
        [p.value for p in prepared], [p.meta for p in prepared], forward_batch
    )
    finished = time.perf_counter()
    rows = [
        result_row(r, predictor.output_fields, o) for r, o in zip(records, outcomes, strict=True)
    ]
    if fetch.reference_fields:
        seconds = [p.meta.download_seconds for p in prepared]
        rows = [add_reference_fields(r, s) for r, s in zip(rows, seconds, strict=True)]
    return BatchOutput(
        rows=rows,
        retryable=[p.retryable for p in prepared],
        prepare_seconds=prepared_at - started,
        predict_seconds=finished - prepared_at,
        input_bytes=sum(getattr(p.value, "nbytes", 0) for p in prepared),
    )
