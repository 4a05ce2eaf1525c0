"""Batch image inference as a Prefect flow.

``python flows/inference.py`` classifies the shipped digit samples with the
shipped model and writes ``results/predictions.csv`` and ``.jsonl``; see
``--help`` for everything else. The same flow reads S3 prefixes and SQS queues
and writes DynamoDB, S3 CSV and SQS (``infergraph/inference/aws_schemes.py`` lists the
strings), with a requests table and SNS completion notices as options.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_aws import AwsCredentials

import infergraph.inference.aws_schemes  # noqa: F401  (registers the s3://, sqs://, dynamodb:// strings)
from blocks.dynamodb import DynamoDBTable
from blocks.sns import SnsTopic
from infergraph.blockref import resolve_block
from infergraph.inference.decode import DEFAULT_MAX_PIXELS
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.liveness import FlowRunLiveness
from infergraph.inference.notices import CompletionNotices
from infergraph.inference.pipeline import BatchPipeline
from infergraph.inference.reporting import publish_artifacts
from infergraph.inference.requests_table import RequestsTable, ThenRequestsTable
from infergraph.inference.runners import THREADS, infer_task_runner, started
from infergraph.inference.sinks.base import DEFAULT_SINKS, Sink, open_sink
from infergraph.inference.sources.base import open_source
from infergraph.inference.sources.sqs import SqsSource
from infergraph.predictors.digits import DEFAULT_PREDICTOR, SAMPLES
from infergraph.predictors.loading import PredictorSpec, get_predictor
from tasks.inference import infer_batch, write_results


class RunIncomplete(RuntimeError):
    """Some results could not be written; their records were not acknowledged."""


@flow(
    name="inference",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=8),
    description="Classify images from a folder, S3 or SQS and write the results to sinks.",
)
def inference(
    source: str | list[str] = str(SAMPLES),
    predictor: str = DEFAULT_PREDICTOR,
    predictor_options: dict[str, Any] | None = None,
    sinks: list[str] | None = None,
    batch_size: int = 64,
    max_in_flight: int = 3,
    download_concurrency: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    aws_credentials: str | AwsCredentials | None = None,
    requests_table: str | DynamoDBTable | None = None,
    notify_topic: str | SnsTopic | None = None,
    task_runner: str = THREADS,
) -> dict[str, Any]:
    """Classify every image of a source and write one result per image to each sink.

    Args:
        source: A local folder, glob or file; a list of paths or s3:// URIs;
            s3://bucket/prefix/ (every image under it; ?suffixes=.png,.jpg to filter)
            or s3://bucket/photos/*.jpg; or sqs://<SqsQueue block> for request
            messages and S3 event notifications (?image_keys=s3_uri,image.uri
            names where requests keep the image; ?idle_polls=0 keeps polling).
        predictor: Dotted path 'package.module:Class' of a infergraph.predictors.base.Predictor.
        predictor_options: Keyword arguments for the predictor (JSON object).
        sinks: Where results go, all written for each chunk: *.csv / *.jsonl local
            files; dynamodb://<DynamoDBTable block> (a results table;
            ?explode=top_k for one item per list element); s3://bucket/prefix/ (CSV
            objects; ?columns=a,b&gzip=true&rows=1000); sqs://<SqsQueue block>
            (one message per result; ?oversize=s3://bucket/big/). Default:
            results/predictions.csv and .jsonl.
        batch_size: Images per forward pass (and per task run).
        max_in_flight: Batches downloading or predicting at once; bounds memory.
        download_concurrency: Parallel downloads per worker process, shared by the
            batches in flight (decoding uses one thread per core).
        max_pixels: Images with more pixels are rejected (decompression bombs).
        aws_credentials: AwsCredentials block (or its name) for reading images and
            writing s3:// sinks. Default: the queue block's credentials for an sqs://
            source, else the default AWS chain.
        requests_table: DynamoDBTable block (or its name) of the requests table: each
            request's state moves queued → processing → completed | error.
        notify_topic: SnsTopic block (or its name) that is told when requests finish;
            a request's own sns_topic_arn field takes precedence.
        task_runner: Where batches are fetched and predicted: 'threads' (this process);
            'dask' (a temporary local Dask cluster, one worker process per core;
            'dask?workers=4&threads=1&memory=4GiB' sizes it); or 'tcp://host:8786' /
            'dask://host:8786' (an existing Dask scheduler whose workers run this
            image). Writes and acknowledgements stay in the flow. Give max_in_flight at
            least the cluster's worker threads, or some workers idle.
    """
    spec = PredictorSpec(path=predictor, options=predictor_options or {})
    get_predictor(spec)  # a bad path, option or weights file fails here, before any data is read
    runner = infer_task_runner(task_runner)  # so does a bad task_runner value
    credentials = resolve_block(aws_credentials, AwsCredentials) if aws_credentials else None
    requests = resolve_block(requests_table, DynamoDBTable) if requests_table else None
    topic = resolve_block(notify_topic, SnsTopic) if notify_topic else None
    src = open_source(source, credentials=credentials)
    credentials = credentials or getattr(src, "credentials", None)
    outputs: list[Sink] = [open_sink(s, credentials=credentials) for s in (sinks or DEFAULT_SINKS)]
    run_id = _flow_run_id()
    notices = CompletionNotices(topic, credentials, flow_run_id=run_id)
    tracker = (
        RequestsTable(requests, run_id=run_id, notices=notices, run_alive=FlowRunLiveness())
        if requests
        else None
    )
    if tracker:  # a request is marked finished only once every sink has its results
        outputs = [ThenRequestsTable(outputs, tracker)]
    claims_on_receive = False
    if tracker is not None and isinstance(src, SqsSource):
        src.claim = tracker.claim  # duplicates and finished requests are skipped unprocessed
        src.renew, src.busy_for = tracker.renew, tracker.busy_seconds  # leases follow visibility
        claims_on_receive = True
    try:
        for sink in outputs:
            sink.open()
        with started(runner) as infer_runner:
            pipeline = BatchPipeline(
                source=src,
                predictor=spec,
                infer=infer_batch,
                write=write_results,
                sinks=outputs,
                fetch=FetchOptions(credentials, download_concurrency, max_pixels),
                batch_size=batch_size,
                max_in_flight=max_in_flight,
                after_write=[tracker.announce if tracker else notices],
                before_batch=[tracker.mark_processing] if tracker and not claims_on_receive else [],
                infer_runner=infer_runner,
            )
            summary = pipeline.run()
        if tracker:
            pipeline.report(tracker.problems)
        if isinstance(src, SqsSource) and src.skipped:
            print(f"skipped {src.skipped} message(s) whose requests were finished or in work")
    finally:
        for sink in outputs:
            sink.close()
        src.close()
    publish_artifacts(summary)
    print(summary.text())
    if summary.write_failures:
        raise RunIncomplete(
            f"{summary.write_failures} results could not be written: " + "; ".join(summary.problems)
        )
    return summary.as_dict()


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


if __name__ == "__main__":
    from infergraph.inference.cli import main

    sys.exit(main(inference))
