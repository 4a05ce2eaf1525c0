"""Batch image inference as a Prefect flow.

``python flows/inference.py`` classifies the shipped digit samples with the
shipped model and writes ``results/predictions.csv`` and ``.jsonl``; see
``--help`` for everything else. The same flow reads S3 prefixes and SQS queues
and writes DynamoDB, S3 CSV and SQS (``infergraph/inference/aws_schemes.py`` lists the
strings), with a requests table and SNS completion notices as options.
"""

from __future__ import annotations

if __name__ == "__main__":  # a local run: Prefect's temporary server boots while this imports
    from infergraph.quick_exit import arm
    from infergraph.temporary_server import start_early

    arm()  # first: its exit handler runs last, and skips the interpreter's teardown
    start_early()

import os
from typing import Annotated, Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_aws import AwsCredentials

import infergraph.inference.aws_schemes  # registers the s3://, sqs://, dynamodb:// strings
import infergraph.inference.sinks.postgres  # noqa: F401  (registers postgres://<block>/<table>)
from blocks.dynamodb import DynamoDBTable
from blocks.sns import SnsTopic
from infergraph.blockref import resolve_block
from infergraph.inference.batch_sizing import (
    AUTO,
    batch_sizes,
    describe_batches,
    forward_batch,
    stable_batches,
)
from infergraph.inference.decode import DEFAULT_MAX_PIXELS
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.liveness import FlowRunLiveness
from infergraph.inference.notices import CompletionNotices
from infergraph.inference.outcome import completed, tell_outcome
from infergraph.inference.pipeline import BatchPipeline
from infergraph.inference.progress import watch
from infergraph.inference.records import SuccessState
from infergraph.inference.reference_env import read_reference_env
from infergraph.inference.requests_table import RequestsTable, ThenRequestsTable
from infergraph.inference.runners import THREADS, infer_task_runner, started
from infergraph.inference.sinks.base import DEFAULT_SINKS, Sink, open_sink
from infergraph.inference.sources.base import open_source, source_label
from infergraph.inference.sources.sqs import SqsSource
from infergraph.logs import run_logger
from infergraph.predictors.digits import DEFAULT_PREDICTOR, SAMPLES
from infergraph.predictors.loading import PredictorSpec, get_predictor
from infergraph.runs import titled as T
from tasks.inference import infer_batch, write_results


class RunIncomplete(RuntimeError):
    """Some results could not be written; their records were not acknowledged."""


def _run_name() -> str:
    """Runs are named after their source; the end of the run adds what it did."""
    return source_label(flow_run.parameters.get("source"))


@flow(
    name="inference",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=8),
    flow_run_name=_run_name,
    description="Classify images from a folder, S3 or SQS and write the results to sinks.",
)
def inference(
    source: Annotated[str | list[str], T("Source")] = "",
    predictor: Annotated[str, T("Predictor")] = DEFAULT_PREDICTOR,
    # Defaults the run form shows as they are (these two are read, never changed).
    predictor_options: Annotated[dict[str, Any], T("Predictor options")] = {},  # noqa: B006
    sinks: Annotated[list[str], T("Sinks")] = list(DEFAULT_SINKS),  # noqa: B006
    batch_size: Annotated[int, T("Batch size (0: automatic)")] = AUTO,
    batch_memory_mib: Annotated[int, T("Memory for batches in flight (MiB)")] = 512,
    max_in_flight: Annotated[int, T("Batches in flight")] = 3,
    download_concurrency: Annotated[int, T("Parallel downloads")] = 16,
    max_pixels: Annotated[int, T("Largest image (pixels)")] = DEFAULT_MAX_PIXELS,
    aws_credentials: Annotated[str | AwsCredentials, T("AWS credentials")] = "",
    requests_table: Annotated[str | DynamoDBTable, T("Requests table")] = "",
    notify_topic: Annotated[str | SnsTopic, T("Completion notices topic")] = "",
    task_runner: Annotated[str, T("Task runner")] = THREADS,
    reference_fields: Annotated[bool, T("Reference batch CLI fields")] = False,
    requests_success_state: Annotated[str, T("Requests' success state")] = SuccessState.COMPLETED,
    from_env: Annotated[bool, T("From the reference CLI's environment")] = False,
) -> State[dict[str, Any]]:
    """Classify every image of a source and write one result per image to each sink.

    Args:
        source: A local folder, glob or file; a list of paths or s3:// URIs;
            `s3://bucket/prefix/` (every image under it; `?suffixes=.png,.jpg` to filter)
            or `s3://bucket/photos/*.jpg`; or `sqs://<SqsQueue block>` for request
            messages and S3 event notifications (`?image_keys=s3_uri,image.uri`
            names where requests keep the image; `?idle_polls=0` keeps polling).
            Empty: the digit samples shipped with the code, wherever it runs.
        predictor: Dotted path `package.module:Class` of an
            `infergraph.predictors.base.Predictor`.
        predictor_options: Keyword arguments for the predictor (JSON object).
        sinks: Where results go, all written for each chunk: `*.csv` / `*.jsonl` local
            files; `dynamodb://<DynamoDBTable block>` (a results table;
            `?explode=top_k` for one item per list element); `s3://bucket/prefix/` (CSV
            objects; `?columns=a,b&gzip=true&rows=1000`); `sqs://<SqsQueue block>`
            (one message per result; `?oversize=s3://bucket/big/`);
            `postgres://<PostgresDatabase block>/<table>` (upserted on `record_id`;
            `?create=false` needs the table to exist). A detector's boxes become one
            row per box (keyed `<record_id>#box<n>`), or stay one list per image with
            `?boxes=json` on any sink.
        batch_size: Images per forward pass (and per task run). 0: sized from the cost
            of the batches so far, about two seconds of work each (small first batches, so
            results start at once), within batch_memory_mib.
        batch_memory_mib: Model input the batches in flight may hold, when sized
            automatically.
        max_in_flight: Batches downloading or predicting at once; bounds memory.
        download_concurrency: Parallel downloads per worker process, shared by the
            batches in flight (decoding uses one thread per core).
        max_pixels: Images with more pixels are rejected (decompression bombs).
        aws_credentials: AwsCredentials block (or its name) for reading images and
            writing `s3://` sinks. Empty: the queue block's credentials for an `sqs://`
            source, else the default AWS chain.
        requests_table: DynamoDBTable block (or its name) of the requests table: each
            request's state moves queued → processing → completed | error. Empty: none.
        notify_topic: SnsTopic block (or its name) that is told when requests finish;
            a request's own `sns_topic_arn` field takes precedence. Empty: none.
        task_runner: Where batches are fetched and predicted: `threads` (this process);
            `dask` (a temporary local Dask cluster, one worker process per core;
            `dask?workers=4&threads=1&memory=4GiB` sizes it); or `tcp://host:8786` /
            `dask://host:8786` (an existing Dask scheduler whose workers run this
            image). Writes and acknowledgements stay in the flow. Give max_in_flight at
            least the cluster's worker threads, or some workers idle.
        reference_fields: Rows also carry the reference batch CLI's bucket, key,
            download_time (seconds) and errors (a list).
        requests_success_state: The requests table's state for a request whose images
            all succeeded: `completed`, or `processed` for readers of the reference's tables.
        from_env: Take predictor, source, sinks and tables from the reference batch
            CLI's environment variables (README: migrating); source then holds only
            the s3:// URIs its S3 input reads, and only batch_size, batch_memory_mib,
            max_in_flight, max_pixels and task_runner still apply.
    """
    if from_env:  # the reference CLI's variables, checked together, become the arguments
        inputs = source or []
        arguments = read_reference_env(os.environ, inputs).flow_arguments()
        tuning = dict(
            batch_size=batch_size,
            batch_memory_mib=batch_memory_mib,
            max_in_flight=max_in_flight,
            max_pixels=max_pixels,
        )
        return inference.fn(**arguments, **tuning, task_runner=task_runner)
    spec = PredictorSpec(path=predictor, options=predictor_options or {})
    get_predictor(spec)  # a bad path, option or weights file fails here, before any data is read
    runner = infer_task_runner(task_runner)  # so does a bad task_runner value
    credentials = resolve_block(aws_credentials, AwsCredentials) if aws_credentials else None
    requests = resolve_block(requests_table, DynamoDBTable) if requests_table else None
    topic = resolve_block(notify_topic, SnsTopic) if notify_topic else None
    src = open_source(source or str(SAMPLES), credentials=credentials)
    credentials = credentials or getattr(src, "credentials", None)
    sinks = list(sinks or DEFAULT_SINKS)  # specs, or sinks built by --from-env
    outputs: list[Sink] = [open_sink(s, credentials=credentials) for s in sinks]
    stable = stable_batches(src, outputs)  # reruns rewrite the same S3 CSV objects
    sizes = batch_sizes(batch_size, max_in_flight, batch_memory_mib, stable)
    spec = spec.model_copy(update={"forward_batch": forward_batch(sizes)})
    settings = {
        "predictor": predictor,
        "sinks": ", ".join(s if isinstance(s, str) else type(s).__name__ for s in sinks),
        "batches": describe_batches(sizes, max_in_flight, download_concurrency, task_runner),
    }
    log = run_logger(__name__)
    log.info("classifying %s · %s", src.description, " · ".join(settings.values()))
    run_id = _flow_run_id()
    notices = CompletionNotices(topic, credentials, flow_run_id=run_id)
    tracker = (
        RequestsTable(
            requests,
            run_id=run_id,
            notices=notices,
            run_alive=FlowRunLiveness(),
            success_state=requests_success_state,
        )
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
                fetch=FetchOptions(credentials, download_concurrency, max_pixels, reference_fields),
                batch_size=sizes,
                max_in_flight=max_in_flight,
                after_write=[tracker.announce if tracker else notices],
                before_batch=[tracker.mark_processing] if tracker and not claims_on_receive else [],
                infer_runner=infer_runner,
            )
            pipeline.summary.settings, pipeline.summary.warn = settings, log.warning
            pipeline.summary.listener = feedback = watch(src, log)  # "first batch", progress line
            summary = pipeline.run()
        settings["batches"] = describe_batches(
            sizes, max_in_flight, download_concurrency, task_runner
        )  # now with the sizes found
        if tracker:
            pipeline.report(tracker.problems)
        if isinstance(src, SqsSource) and src.skipped:
            print(f"skipped {src.skipped} message(s) whose requests were finished or in work")
    finally:
        for sink in outputs:
            sink.close()
        src.close()
    feedback.close(summary)  # the progress line ends before the run's last log lines
    tell_outcome(summary, source, log)  # last log lines, run name and tags, artifacts
    if summary.write_failures:
        raise RunIncomplete(
            f"{summary.write_failures} results could not be written: " + "; ".join(summary.problems)
        )
    return completed(summary)


def _flow_run_id() -> str | None:
    return str(flow_run.id) if flow_run.id else None


if __name__ == "__main__":
    from infergraph.inference.cli import main
    from infergraph.quick_exit import finish

    finish(main(inference))
