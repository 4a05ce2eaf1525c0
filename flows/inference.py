"""Batch image inference as a Prefect flow.

``python flows/inference.py`` classifies the shipped digit samples with the
shipped model and writes ``results/predictions.csv`` and ``.jsonl``; see
``--help`` for everything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.pipeline import BatchPipeline
from predictors.digits import SAMPLES
from predictors.loading import PredictorSpec, get_predictor
from tasks.decode import DEFAULT_MAX_PIXELS
from tasks.fetch import FetchOptions
from tasks.reporting import publish_artifacts
from tasks.sinks import DEFAULT_SINKS, open_sink
from tasks.sources import open_source

DEFAULT_PREDICTOR = "predictors.digits:DigitsClassifier"


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
    aws_credentials: str | None = None,
) -> dict[str, Any]:
    """Classify every image of a source and write one result per image to each sink.

    Args:
        source: A local folder, glob or file; a list of paths or s3:// URIs; an
            s3://bucket/prefix/ to list; or a queue (sqs://...).
        predictor: Dotted path 'package.module:Class' of a predictors.base.Predictor.
        predictor_options: Keyword arguments for the predictor (JSON object).
        sinks: Where results go: *.csv / *.jsonl local files and any registered
            scheme (dynamodb://, s3://, sqs://). Default: results/predictions.csv and .jsonl.
        batch_size: Images per forward pass (and per task run).
        max_in_flight: Batches downloading or predicting at once; bounds memory.
        download_concurrency: Parallel downloads and decodes within a batch.
        max_pixels: Images with more pixels are rejected (decompression bombs).
        aws_credentials: Name of an AwsCredentials block for S3; default AWS chain if empty.
    """
    spec = PredictorSpec(path=predictor, options=predictor_options or {})
    get_predictor(spec)  # a bad path, option or weights file fails here, before any data is read
    credentials = _load_credentials(aws_credentials)
    src = open_source(source, credentials=credentials)
    outputs = [open_sink(s, credentials=credentials) for s in (sinks or DEFAULT_SINKS)]
    for sink in outputs:
        sink.open()
    try:
        pipeline = BatchPipeline(
            source=src,
            predictor=spec,
            sinks=outputs,
            fetch=FetchOptions(credentials, download_concurrency, max_pixels),
            batch_size=batch_size,
            max_in_flight=max_in_flight,
        )
        summary = pipeline.run()
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


def _load_credentials(name: str | None) -> Any:
    if not name:
        return None
    from prefect_aws import AwsCredentials

    return AwsCredentials.load(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Classify images with a PyTorch predictor through the Prefect flow."
    )
    parser.add_argument(
        "source", nargs="*", help="folder, glob, files, s3:// URIs or a queue (default: samples)"
    )
    parser.add_argument("--predictor", default=DEFAULT_PREDICTOR, help="package.module:Class")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="predictor option; VALUE is parsed as JSON when it can be",
    )
    parser.add_argument(
        "--sink", action="append", help="results destination (repeatable); default: results/"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=3)
    parser.add_argument("--download-concurrency", type=int, default=16)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--aws-credentials", help="name of an AwsCredentials block")
    args = parser.parse_args(argv)
    source: str | list[str] = str(SAMPLES)
    if len(args.source) == 1:
        source = args.source[0]
    elif args.source:
        source = args.source
    with local_settings():
        inference(
            source=source,
            predictor=args.predictor,
            predictor_options=dict(_parse_option(o) for o in args.option),
            sinks=args.sink,
            batch_size=args.batch_size,
            max_in_flight=args.max_in_flight,
            download_concurrency=args.download_concurrency,
            max_pixels=args.max_pixels,
            aws_credentials=args.aws_credentials,
        )
    return 0


def local_settings() -> Any:
    """Settings for a zero-setup run on a fresh machine.

    Without a configured API, Prefect starts a temporary server whose first start
    migrates a new database, which takes longer than Prefect's default 20 s wait;
    anonymous telemetry only produces errors on machines without internet.
    Anything the user set in the environment or a profile wins.
    """
    import os

    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict[Any, Any] = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 180
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    return temporary_settings(updates=updates)


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--option expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


if __name__ == "__main__":
    sys.exit(main())
