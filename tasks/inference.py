"""The inference flow's two Prefect tasks: infer one batch, write chunks of results.

Both are thin: the work is in ``infergraph.inference``. One task run per batch (never per
image) keeps Prefect's per-run cost small beside the model's.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from infergraph.aws.errors import retry_if_transient
from infergraph.inference.batch import BatchOutput, run_batch
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.records import ImageRecord, ResultChunk, row_ok
from infergraph.inference.sinks.base import Sink
from infergraph.inference.writing import write_chunks
from infergraph.predictors.loading import PredictorSpec, get_predictor


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
) -> State[BatchOutput]:
    """Fetch, decode and classify one batch; its state message counts the failed images.

    The predictor travels as a spec and is loaded once per worker process, so no
    model is ever pickled or hashed into a cache key (``NO_CACHE``: reruns must
    recompute, never replay stored results).
    """
    output = run_batch(records, get_predictor(predictor), fetch, predictor.forward_batch)
    failed = sum(not row_ok(row) for row in output.rows)
    return Completed(message=f"{len(output.rows)} images, {failed} failed", data=output)


@task(
    name="write-results",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
)
def write_results(sinks: list[Sink], chunks: list[ResultChunk]) -> State[int]:
    """Store chunks in every sink; a failure fails the task, never just a log line."""
    rows = write_chunks(sinks, chunks)
    return Completed(message=f"{rows} rows written", data=rows)
