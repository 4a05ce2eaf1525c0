"""The reference batch CLI's environment variables, turned into the inference flow's arguments.

A container configured for the reference CLI (``PREDICTOR_MODULE``,
``INPUT_CONTEXT_MANAGER``, ``OUTPUT_CTXMGR_*``…) runs unchanged with
``python flows/inference.py --from-env`` or the flow parameter ``from_env=True``:
:func:`read_reference_env` checks every variable first and reports all problems at
once (unknown names, missing or malformed values, settings that contradict each
other), without touching AWS; :meth:`ReferenceSettings.flow_arguments` then builds
the equivalent blocks, source and sinks in memory (nothing is saved on the server),
one set of AWS credentials per service so the reference's per-service endpoints
keep working. The README's "Migrating from the reference batch CLI" section lists
the mapping variable by variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infergraph.inference.records import SuccessState
from infergraph.predictors.loading import PredictorSpecError, resolve_predictor_class

S3_INPUT = "S3BucketImageInputCtxManager"
SQS_INPUTS = ("SQSRecordS3InputImageCtxManager", "SQSMessageS3InputImageCtxManager")
SQS_OUTPUT = "SQSRecordOutputCtxManager"
CSV_OUTPUT = "S3BucketCsvFileOutputCtxManager"
DYNAMODB_OUTPUT = "DynamodbOutputCtxManager"
OUTPUTS = (SQS_OUTPUT, CSV_OUTPUT, DYNAMODB_OUTPUT)
#: The reference's CSV objects lived under its output class's name.
CSV_PREFIX = "s3bucketcsvfileoutputctxmanager/"
REQUEST_UPDATE_MIXIN = "DynamodbRequestUpdateMixIn"

#: Names the reference read that change nothing here, and why.
NO_EFFECT = {
    "LOG_LEVEL": "Prefect's logging settings apply (PREFECT_LOGGING_LEVEL)",
    "MODEL_VERSION": "not recorded; put it in the predictor's results",
    "INSTANCE_ON_AWS": "no EC2 or spot instance checks",
    "AWS_ENABLE_SPOTINSTANCE_STATE_LOGGING": "no EC2 or spot instance checks",
    "RESULT_RECORD_CHUNK_SIZE": "results are written per message (queue) or per batch",
    "MAX_PER_REQUEST_PROCESSING_SECONDS": "visibility is extended while a message is in work",
    "DYNAMODB_DECIMAL_PRECISION_DIGITS": "floats are stored exactly, not rounded",
    "S3BUCKET_OUTPUT_FILENAME_PREFIX": "CSV objects are named after the message or batch",
    "UUID_NAMESPACE_DNS_NAME": "request ids are never generated",
}
#: Every name this module reads (besides NO_EFFECT); anything else with a reference
#: prefix is reported as unknown.
KNOWN = {
    "PREDICTOR_MODULE",
    "PREDICTOR_CLASS_NAME",
    "PREDICTOR_RESULTS_KEYNAME",
    "INPUT_CONTEXT_MANAGER",
    "INPUT_CTXMGR_SQS_QUEUE_URL",
    "INPUT_CTXMANAGER_SQS_QUEUE_URL",
    "OUTPUT_CONTEXT_MANAGER",
    "OUTPUT_CTXMGR_SQS_QUEUE_URL",
    "OUTPUT_CTXMGR_OUTPUT_S3_BUCKET",
    "OUTPUT_CTXMGR_OUTPUT_S3_PREFIX",
    "OUTPUT_CTXMGR_CSV_FIELDNAMES",
    "OUTPUT_CTXMGR_FIELDNAMES",
    "OUTPUT_CTXMGR_REQUESTS_TABLENAME",
    "OUTPUT_CTXMGR_RESULTS_TABLENAME",
    "OUTPUT_CTXMGR_MIXINS",
    "RESULTS_ADDITIONAL_PARENT_FIELDS",
    "RESULTS_SORTKEY_KEYNAME",
    "REQUESTS_TABLE_HASHKEY_KEYNAME",
    "REQUESTS_TABLE_RESULTS_KEYNAME",
    "REQUESTS_COMPLETE_SNS_TOPIC_ARN",
    "REQUEST_UNIQUE_ID_FIELDNAME",
    "REQUEST_SNS_TOPIC_ARN_FIELDNAME",
    "REQUEST_S3URI_KEYS",
    "MAX_PROCESSING_REQUESTS",
    "DOWNLOAD_WORKERS",
    "SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION",
    "S3_ENDPOINT",
    "SQS_ENDPOINT",
    "SNS_ENDPOINT",
    "DYNAMODB_ENDPOINT",
    "INFERGRAPH_REQUESTS_SUCCESS_STATE",
    "INFERGRAPH_REFERENCE_IGNORE",
}
#: Prefixes of the reference's variables: an unknown name with one is a typo or a
#: setting infergraph does not have, and is reported rather than silently ignored.
PREFIXES = (
    "PREDICTOR_",
    "INPUT_CTX",
    "INPUT_CONTEXT_",
    "INPUT_CSV_",
    "OUTPUT_CTX",
    "OUTPUT_CONTEXT_",
    "DEFAULT_OUTPUT_CSV_",
    "RESULT_RECORD_",
    "RESULTS_",
    "REQUEST_S3URI",
    "REQUEST_UNIQUE",
    "REQUEST_SNS",
    "REQUESTS_TABLE_",
    "REQUESTS_COMPLETE_",
    "DYNAMODB_",
    "SQS_",
    "SNS_",
    "S3_",
    "S3BUCKET_",
    "MAX_PROCESSING_",
    "MAX_PER_REQUEST_",
    "INFERGRAPH_REQUESTS_",
    "INFERGRAPH_REFERENCE_",
)
#: Flow arguments that --from-env leaves to the command line.
TUNABLE = (
    "source",
    "batch_size",
    "batch_memory_mib",
    "max_in_flight",
    "max_pixels",
    "task_runner",
    "from_env",
)


class ReferenceEnvError(ValueError):
    """Variables that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "the reference CLI's environment cannot be used:\n  " + "\n  ".join(self.problems)
        )


@dataclass
class ReferenceSettings:
    """What the variables ask for, checked; no AWS object is made until flow_arguments."""

    predictor: str
    predictor_options: dict[str, Any]
    region: str | None
    endpoints: dict[str, str]
    inputs: list[str] = field(default_factory=list)
    queue_url: str | None = None
    image_keys: tuple[str, ...] = ("s3_uri",)
    message_limit: int | None = None
    retry_delay: int = 5
    outputs: tuple[str, ...] = ()
    results_queue_url: str | None = None
    csv_bucket: str | None = None
    csv_prefix: str = CSV_PREFIX
    csv_columns: tuple[str, ...] = ()
    requests_table: str | None = None
    requests_key: str = "request_id"
    results_table: str | None = None
    results_sort_key: str = "s3_uri"
    results_field: str = "result"
    parent_fields: tuple[str, ...] = ("request_id", "s3_uri")
    topic_arn: str | None = None
    download_workers: int | None = None
    success_state: str = SuccessState.COMPLETED
    notes: list[str] = field(default_factory=list)

    def flow_arguments(self) -> dict[str, Any]:
        """The inference flow's arguments: blocks, source and sinks built in memory."""
        from prefect_aws import AwsCredentials

        from blocks.dynamodb import DynamoDBTable
        from blocks.sns import SnsTopic
        from blocks.sqs import SqsQueue
        from infergraph.inference.sinks.dynamodb import DynamoDBResultsSink
        from infergraph.inference.sinks.s3_csv import S3CsvSink
        from infergraph.inference.sinks.sqs import SqsResultsSink
        from infergraph.inference.sources.base import UriList
        from infergraph.inference.sources.sqs import SqsSource

        def credentials(service: str) -> AwsCredentials:
            endpoint = self.endpoints.get(service)
            parameters = {"endpoint_url": endpoint} if endpoint else {}
            return AwsCredentials(region_name=self.region, aws_client_parameters=parameters)

        def queue(url: str, **settings: Any) -> SqsQueue:
            return SqsQueue(queue_url=url, credentials=credentials("sqs"), **settings)

        s3 = credentials("s3")
        if self.queue_url:
            # The reference stopped at the first empty receive; a 1 s long poll asks
            # every SQS server (a short poll may miss messages) and ends as promptly.
            requests = queue(
                self.queue_url, wait_time_seconds=1, retry_delay_seconds=self.retry_delay
            )
            source: Any = SqsSource(
                requests,
                image_keys=self.image_keys,
                message_limit=self.message_limit,
                each_key=True,
            )
        else:
            source = UriList(self.inputs)
        sinks: list[Any] = []
        if SQS_OUTPUT in self.outputs and self.results_queue_url:
            sinks.append(SqsResultsSink(queue(self.results_queue_url), credentials=s3))
        if CSV_OUTPUT in self.outputs and self.csv_bucket:
            sinks.append(S3CsvSink(self.csv_bucket, self.csv_prefix, s3, self.csv_columns))
        dynamodb = credentials("dynamodb")
        if DYNAMODB_OUTPUT in self.outputs and self.results_table:
            table = DynamoDBTable(
                table_name=self.results_table,
                partition_key="hashkey",
                sort_key=self.results_sort_key,
                credentials=dynamodb,
            )
            sinks.append(DynamoDBResultsSink(table, self.results_field, self.parent_fields))
        arguments: dict[str, Any] = {
            "source": source,
            "predictor": self.predictor,
            "predictor_options": self.predictor_options,
            "sinks": sinks,
            "aws_credentials": s3,
            "reference_fields": True,
            "requests_success_state": self.success_state,
            "requests_table": None,
            "notify_topic": None,
        }
        if self.requests_table:
            arguments["requests_table"] = DynamoDBTable(
                table_name=self.requests_table,
                partition_key=self.requests_key,
                credentials=dynamodb,
            )
        if self.topic_arn:
            arguments["notify_topic"] = SnsTopic(
                topic_arn=self.topic_arn, credentials=credentials("sns")
            )
        if self.download_workers:
            arguments["download_concurrency"] = self.download_workers
        return arguments


class _Reader:
    """Reads variables, remembering which were used and every problem found."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = {k: v.strip() for k, v in environ.items()}
        self.problems: list[str] = []

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name)
        return value if value else default

    def either(self, *names: str) -> str | None:
        """One setting spelled several ways (the reference's docs and code differ)."""
        values = {n: self.env[n] for n in names if self.env.get(n)}
        if len(set(values.values())) > 1:
            shown = ", ".join(f"{n}={v!r}" for n, v in values.items())
            self.problems.append(f"{shown}: the same setting with different values; keep one")
        return next(iter(values.values()), None)

    def integer(self, name: str, default: int | None = None, minimum: int = 0) -> int | None:
        text = self.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            self.problems.append(f"{name}={text!r} is not a whole number")
            return default
        if value < minimum:
            self.problems.append(f"{name}={value} must be at least {minimum}")
            return default
        return value

    def names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        text = self.get(name)
        if text is None:
            return default
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        if not values:
            self.problems.append(f"{name}={text!r} names nothing")
        return values or default

    def require(self, name: str, why: str, *aliases: str) -> str | None:
        value = self.either(name, *aliases)
        if value is None:
            self.problems.append(f"{name} is required {why}")
        return value

    def unused(self, names: Sequence[str], why: str) -> None:
        """Variables that are set although what they configure is not in use."""
        for name in names:
            if self.get(name) is not None:
                self.problems.append(f"{name} is set, but {why}")


def read_reference_env(
    environ: Mapping[str, str], inputs: Sequence[str] | str = ()
) -> ReferenceSettings:
    """Check the reference's variables (and the S3 URIs given as inputs); raise with all problems.

    ``inputs`` are the reference CLI's positional argument: S3 URIs, comma-separated
    or as separate items.
    """
    env = _Reader(environ)
    ignored = set(env.names("INFERGRAPH_REFERENCE_IGNORE", ()))
    unknown = sorted(
        n
        for n in env.env
        if n.startswith(PREFIXES) and n not in KNOWN and n not in NO_EFFECT and n not in ignored
    )
    for name in unknown:
        env.problems.append(
            f"{name} is not a variable of the reference CLI that infergraph knows; unset it or "
            "list it in INFERGRAPH_REFERENCE_IGNORE"
        )

    module = env.require("PREDICTOR_MODULE", "(the module of your predictor class)")
    class_name = env.get("PREDICTOR_CLASS_NAME", "Predictor")
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    uris = [u.strip() for item in items for u in str(item).split(",") if u.strip()]

    input_manager = env.get("INPUT_CONTEXT_MANAGER", S3_INPUT)
    queue_url = env.either("INPUT_CTXMGR_SQS_QUEUE_URL", "INPUT_CTXMANAGER_SQS_QUEUE_URL")
    if input_manager == S3_INPUT:
        if queue_url:
            env.problems.append(
                f"INPUT_CTXMGR_SQS_QUEUE_URL is set, but INPUT_CONTEXT_MANAGER is {S3_INPUT} "
                f"(set INPUT_CONTEXT_MANAGER={SQS_INPUTS[0]} to read the queue)"
            )
        if not uris:
            env.problems.append(f"{S3_INPUT} reads the s3:// URIs given as arguments: none given")
        bad = [u for u in uris if not u.startswith("s3://") or "/" not in u[5:]]
        if bad:
            env.problems.append(f"inputs must be s3://bucket/key URIs: {', '.join(bad[:5])}")
    elif input_manager in SQS_INPUTS:
        if not queue_url:
            env.problems.append(f"INPUT_CTXMGR_SQS_QUEUE_URL is required by {input_manager}")
        if uris:
            env.problems.append(
                f"{input_manager} reads its requests from the queue, but inputs were given "
                f"({uris[0]}…); drop them or use {S3_INPUT}"
            )
    else:
        env.problems.append(
            f"INPUT_CONTEXT_MANAGER={input_manager!r} is not supported; infergraph reads images "
            f"named by {S3_INPUT} (s3:// arguments) or {SQS_INPUTS[0]} (a queue)"
        )
    image_keys = env.names("REQUEST_S3URI_KEYS", ("s3_uri",))
    message_limit = env.integer("MAX_PROCESSING_REQUESTS", None, minimum=1)
    retry_delay = env.integer("SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION", 5) or 0
    if input_manager not in SQS_INPUTS:
        env.unused(["REQUEST_S3URI_KEYS", "MAX_PROCESSING_REQUESTS"], "the input is not a queue")

    outputs = env.names("OUTPUT_CONTEXT_MANAGER", (SQS_OUTPUT,))
    for name in outputs:
        if name not in OUTPUTS:
            env.problems.append(
                f"OUTPUT_CONTEXT_MANAGER names {name!r}; known: {', '.join(OUTPUTS)}"
            )
    if len(set(outputs)) != len(outputs):
        env.problems.append("OUTPUT_CONTEXT_MANAGER names an output twice")
    settings = ReferenceSettings(
        predictor=f"{module}:{class_name}",
        predictor_options={},
        region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"),
        endpoints={
            service: value
            for service in ("s3", "sqs", "sns", "dynamodb")
            if (value := env.get(f"{service.upper()}_ENDPOINT"))
        },
        inputs=uris if input_manager == S3_INPUT else [],
        queue_url=queue_url if input_manager in SQS_INPUTS else None,
        image_keys=image_keys,
        message_limit=message_limit,
        retry_delay=retry_delay,
        outputs=outputs,
    )
    _outputs(env, settings)
    _requests(env, settings)
    env.integer("RESULT_RECORD_CHUNK_SIZE", minimum=1)  # checked, as the reference did
    for name, why in NO_EFFECT.items():
        if env.get(name) is not None:
            settings.notes.append(f"{name}: no effect ({why})")
    if module:
        try:
            resolve_predictor_class(settings.predictor)
        except PredictorSpecError as exc:
            env.problems.append(f"PREDICTOR_MODULE/PREDICTOR_CLASS_NAME: {exc}")
    if env.problems:
        raise ReferenceEnvError(env.problems)
    input_settings = {"sqs_queue_url": queue_url} if settings.queue_url else {}
    settings.predictor_options = {
        "input_settings": input_settings,
        "output_settings": _output_settings(settings),
    }
    return settings


def _outputs(env: _Reader, settings: ReferenceSettings) -> None:
    outputs = settings.outputs
    if SQS_OUTPUT in outputs:
        settings.results_queue_url = env.require(
            "OUTPUT_CTXMGR_SQS_QUEUE_URL", f"by {SQS_OUTPUT} (the results queue)"
        )
    else:
        env.unused(["OUTPUT_CTXMGR_SQS_QUEUE_URL"], f"OUTPUT_CONTEXT_MANAGER has no {SQS_OUTPUT}")
    csv_names = ["OUTPUT_CTXMGR_OUTPUT_S3_BUCKET", "OUTPUT_CTXMGR_OUTPUT_S3_PREFIX"]
    if CSV_OUTPUT in outputs:
        settings.csv_bucket = env.require("OUTPUT_CTXMGR_OUTPUT_S3_BUCKET", f"by {CSV_OUTPUT}")
        columns = env.require(
            "OUTPUT_CTXMGR_CSV_FIELDNAMES",
            f"by {CSV_OUTPUT} (the CSV header)",
            "OUTPUT_CTXMGR_FIELDNAMES",
        )
        settings.csv_columns = tuple(c.strip() for c in (columns or "").split(",") if c.strip())
        prefix = (env.get("OUTPUT_CTXMGR_OUTPUT_S3_PREFIX") or "").strip("/")
        settings.csv_prefix = f"{prefix}/" if prefix else CSV_PREFIX
    else:
        why = f"OUTPUT_CONTEXT_MANAGER has no {CSV_OUTPUT}"
        env.unused([*csv_names, "OUTPUT_CTXMGR_CSV_FIELDNAMES", "OUTPUT_CTXMGR_FIELDNAMES"], why)
    settings.results_field = env.get("PREDICTOR_RESULTS_KEYNAME", "result") or "result"
    if DYNAMODB_OUTPUT in outputs:
        settings.results_table = env.require(
            "OUTPUT_CTXMGR_RESULTS_TABLENAME", f"by {DYNAMODB_OUTPUT}"
        )
        settings.requests_table = env.require(
            "OUTPUT_CTXMGR_REQUESTS_TABLENAME", f"by {DYNAMODB_OUTPUT}"
        )
        settings.results_sort_key = env.get("RESULTS_SORTKEY_KEYNAME", "s3_uri") or "s3_uri"
        settings.parent_fields = env.names(
            "RESULTS_ADDITIONAL_PARENT_FIELDS", ("request_id", "s3_uri")
        )
    elif env.get("OUTPUT_CTXMGR_RESULTS_TABLENAME") is not None:
        env.unused(
            ["OUTPUT_CTXMGR_RESULTS_TABLENAME"], f"OUTPUT_CONTEXT_MANAGER has no {DYNAMODB_OUTPUT}"
        )


def _requests(env: _Reader, settings: ReferenceSettings) -> None:
    mixins = env.names("OUTPUT_CTXMGR_MIXINS", ())
    for mixin in mixins:
        if mixin != REQUEST_UPDATE_MIXIN:
            env.problems.append(
                f"OUTPUT_CTXMGR_MIXINS names {mixin!r}; known: {REQUEST_UPDATE_MIXIN}"
            )
    if REQUEST_UPDATE_MIXIN in mixins and settings.requests_table is None:
        settings.requests_table = env.require(
            "OUTPUT_CTXMGR_REQUESTS_TABLENAME", f"by {REQUEST_UPDATE_MIXIN}"
        )
    if settings.requests_table is None:
        env.unused(
            ["OUTPUT_CTXMGR_REQUESTS_TABLENAME", "INFERGRAPH_REQUESTS_SUCCESS_STATE"],
            f"no requests table is in use ({DYNAMODB_OUTPUT} or {REQUEST_UPDATE_MIXIN})",
        )
    settings.requests_key = env.get("REQUESTS_TABLE_HASHKEY_KEYNAME", "request_id") or "request_id"
    for name, only in (
        ("REQUESTS_TABLE_RESULTS_KEYNAME", "result"),
        ("REQUEST_UNIQUE_ID_FIELDNAME", "request_id"),
        ("REQUEST_SNS_TOPIC_ARN_FIELDNAME", "sns_topic_arn"),
    ):
        value = env.get(name)
        if value is not None and value != only:
            env.problems.append(f"{name}={value!r}: infergraph supports only {only!r}")
    state = env.get("INFERGRAPH_REQUESTS_SUCCESS_STATE", SuccessState.COMPLETED)
    if state not in set(SuccessState):
        known = ", ".join(SuccessState)
        env.problems.append(f"INFERGRAPH_REQUESTS_SUCCESS_STATE={state!r} is not one of {known}")
    else:
        settings.success_state = str(state)
    settings.topic_arn = env.get("REQUESTS_COMPLETE_SNS_TOPIC_ARN")
    settings.download_workers = env.integer("DOWNLOAD_WORKERS", None, minimum=1)


def _output_settings(settings: ReferenceSettings) -> dict[str, Any]:
    """The reference's ``meta["output_settings"]``: its output managers' required settings."""
    out: dict[str, Any] = {}
    if settings.results_queue_url:
        out["sqs_queue_url"] = settings.results_queue_url
    if settings.csv_bucket:
        out.update(
            output_s3_bucket=settings.csv_bucket, csv_fieldnames=",".join(settings.csv_columns)
        )
    if settings.results_table:
        out.update(
            results_tablename=settings.results_table, requests_tablename=settings.requests_table
        )
    return out


def run_cli(inference: Any, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--from-env``: check the variables (all problems at once, no traceback), then run."""
    from infergraph.local_prefect import check_api, local_settings

    given = [
        f"--{name.replace('_', '-')}"
        for name, value in vars(args).items()
        if name not in TUNABLE and value != parser.get_default(name)
    ]
    if given:
        parser.error(f"--from-env takes its settings from the environment; drop {', '.join(given)}")
    try:
        settings = read_reference_env(os.environ, args.source)
    except ReferenceEnvError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    for note in settings.notes:
        print(note)
    with local_settings():
        check_api()
        inference(
            source=args.source or [],
            from_env=True,
            batch_size=args.batch_size,
            batch_memory_mib=args.batch_memory_mib,
            max_in_flight=args.max_in_flight,
            max_pixels=args.max_pixels,
            task_runner=args.task_runner,
        )
    return 0
