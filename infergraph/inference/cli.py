"""``python flows/inference.py``: the inference flow from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefect import tags

from infergraph.cli_errors import UsageError, UsageParser, command
from infergraph.inference import preflight, progress
from infergraph.inference.batch_sizing import AUTO
from infergraph.inference.decode import DEFAULT_MAX_PIXELS
from infergraph.inference.runners import THREADS
from infergraph.inference.sinks.base import DEFAULT_SINKS
from infergraph.local_prefect import check_api
from infergraph.predictors.digits import DEFAULT_PREDICTOR
from infergraph.runs import CLI_TAG


@command()
def main(inference: Any, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run ``inference`` (passed in: the library never imports flows)."""
    parser = UsageParser(
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
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default=AUTO,
        metavar="N|auto",
        help="images per batch (default: auto, sized from the cost of the first batches)",
    )
    parser.add_argument(
        "--batch-memory-mib",
        type=_positive,
        default=512,
        help="model input the batches in flight may hold when sized automatically",
    )
    parser.add_argument("--max-in-flight", type=int, default=3)
    parser.add_argument("--download-concurrency", type=int, default=16)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--aws-credentials", help="name of an AwsCredentials block")
    parser.add_argument(
        "--requests-table", help="name of the DynamoDBTable block of the requests table"
    )
    parser.add_argument("--notify-topic", help="name of an SnsTopic block for completion notices")
    parser.add_argument(
        "--task-runner",
        default=THREADS,
        help="threads (default), dask (a local cluster; dask?workers=N&threads=M), "
        "or tcp://host:port of a Dask scheduler",
    )
    parser.add_argument(
        "--from-env",
        action="store_true",
        help="take everything else from the reference batch CLI's environment variables",
    )
    args = parser.parse_args(argv)
    if args.from_env:
        from infergraph.inference.reference_env import run_cli

        return run_cli(inference, parser, args)
    source: str | list[str] = ""  # the shipped samples
    if len(args.source) == 1:
        source = args.source[0]
    elif args.source:
        source = args.source
    sources = [source] if isinstance(source, str) and source else source or []
    preflight.check_local(sources, args.predictor)
    check_api()
    args.aws_credentials = preflight.check_blocks(
        sources, args.sink or [], args.aws_credentials, args.requests_table, args.notify_topic
    )
    with tags(CLI_TAG), progress.requested():  # a progress line, when stderr is a terminal
        summary = inference(
            source=source,
            predictor=args.predictor,
            predictor_options=dict(_parse_option(o) for o in args.option),
            sinks=args.sink or [],
            batch_size=args.batch_size,
            batch_memory_mib=args.batch_memory_mib,
            max_in_flight=args.max_in_flight,
            download_concurrency=args.download_concurrency,
            max_pixels=args.max_pixels,
            aws_credentials=args.aws_credentials or "",
            requests_table=args.requests_table or "",
            notify_topic=args.notify_topic or "",
            task_runner=args.task_runner,
        )
    written = [_where(s) for s in (args.sink or DEFAULT_SINKS)]
    print(f"results in: {', '.join(written)}")
    return 0 if summary is not None else 1


def _where(sink: str) -> str:
    """A sink as the user can find it: local files by absolute path, the rest as given."""
    if "://" in sink and not sink.startswith("file://"):
        return sink
    return str(Path(sink.removeprefix("file://")).resolve())


def _batch_size(text: str) -> int:
    return AUTO if text == "auto" else _positive(text, " or auto")


def _positive(text: str, alternative: str = "") -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number{alternative}, got {text!r}")
    return number


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--option expects KEY=VALUE, got {text!r}", "e.g. --option top_k=3")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
