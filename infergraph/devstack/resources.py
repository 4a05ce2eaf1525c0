"""The local AWS resources (buckets, queues, tables, topics, notifications) and their blocks.

Append to :data:`RESOURCES` to add resources for another flow (a bucket, queue, table or
topic with the block name it should be saved under, ``extra_blocks`` for block types of
your own).
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infergraph.aws.local import LOCAL_CREDENTIALS_BLOCK, LOCAL_HOME

DEFAULT_PORT = 5055
REGION = "us-east-1"
CREDENTIALS_BLOCK = LOCAL_CREDENTIALS_BLOCK
#: The AwsCredentials block name prefect.yaml's deployments use, on the emulator or real AWS.
DEPLOYMENT_CREDENTIALS_BLOCK = "infergraph-aws"
REASONING_INPUT, REASONING_OUTPUT = "reasoning-input", "reasoning-output"
#: The run-scenario deployment's store: the example model's scenarios, uploaded by ``up``.
SCENARIO_BUCKET = "transport-model"
HOME = LOCAL_HOME


@dataclass(frozen=True)
class Bucket:
    name: str
    block: str | None = None  # saved as a prefect-aws S3Bucket block


@dataclass(frozen=True)
class Queue:
    name: str
    block: str | None = None
    dead_letter: bool = True  # a "<name>-dlq" queue and a redrive policy
    max_receive_count: int = 3
    visibility_timeout: int = 300
    retry_delay_seconds: int = 30


@dataclass(frozen=True)
class Table:
    name: str
    partition_key: str
    block: str | None = None
    sort_key: str | None = None
    index: tuple[str, str] | None = None  # (index name, partition key of the index)
    index_sort_key: str | None = None  # sort key of that index


@dataclass(frozen=True)
class Notification:
    """S3 → SQS: the bucket tells the queue about created objects (optionally filtered)."""

    bucket: str
    queue: str
    prefix: str | None = None
    suffix: str | None = None


@dataclass(frozen=True)
class Topic:
    name: str
    block: str | None = None
    subscribe_queue: str | None = None  # deliver notices to this queue too (to read them)


@dataclass
class Resources:
    """Everything ``up`` creates; other flows append their own entries."""

    buckets: list[Bucket] = field(default_factory=list)
    queues: list[Queue] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    topics: list[Topic] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    #: ``{slug: {block name: fields}}``; "{endpoint}", "{region}" and "{home}" (the folder
    #: ``up`` keeps its state in) in strings are filled in.
    extra_blocks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: (local folder, s3://bucket/prefix/) pairs uploaded by ``up``.
    uploads: list[tuple[Path, str]] = field(default_factory=list)


def _scenarios() -> Path:
    return Path(__file__).resolve().parent.parent / "scenarios" / "example_model" / "scenarios"


def _samples() -> Path:
    return Path(__file__).resolve().parent.parent / "predictors" / "digits" / "samples"


RESOURCES = Resources(
    buckets=[
        Bucket("infergraph-local", block="infergraph-local"),
        Bucket(REASONING_INPUT),
        Bucket(REASONING_OUTPUT),
        Bucket(SCENARIO_BUCKET),
    ],
    queues=[
        Queue("inference-requests", block="inference-requests"),
        Queue("inference-results", block="inference-results", dead_letter=False),
        Queue("inference-notices", dead_letter=False),
        # S3 notifications for the bridge; short visibility: a bridge that dies mid-batch
        # leaves its messages to the next one within a minute.
        Queue("s3-events", block="s3-events", visibility_timeout=60, retry_delay_seconds=10),
        Queue("reasoning-notices", dead_letter=False),
    ],
    tables=[
        Table(
            "inference-requests",
            "request_id",
            block="inference-requests",
            index=("state-index", "state"),
        ),
        Table("inference-results", "result_id", block="inference-results"),
        # flows/reasoning.py's jobs table (JobStore.create_table has the same layout).
        Table(
            "reasoning-jobs",
            "dataset",
            block="reasoning-jobs",
            sort_key="date_seq",
            index=("status-index", "status"),
            index_sort_key="updated_at",
        ),
    ],
    topics=[
        Topic("inference-notices", block="inference-notices", subscribe_queue="inference-notices"),
        Topic("reasoning-notices", block="reasoning-notices", subscribe_queue="reasoning-notices"),
    ],
    # What the deployments' triggers react to; the sample images (under samples/) stay quiet.
    notifications=[
        Notification("infergraph-local", "s3-events", prefix="incoming/"),
        Notification(REASONING_INPUT, "s3-events", suffix=".rdfoxjob.json"),
        Notification(REASONING_OUTPUT, "s3-events", suffix="/rdfox.log"),
        Notification("infergraph-local", "s3-events", prefix="sessions/", suffix="/session.end"),
        Notification(SCENARIO_BUCKET, "s3-events", suffix="/run.json"),
    ],
    extra_blocks={
        # The credentials every deployment names (prefect.yaml): here the emulator's.
        "aws-credentials": {
            DEPLOYMENT_CREDENTIALS_BLOCK: {
                "region_name": "{region}",
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "${{AWS_SECRET_ACCESS_KEY:-testing}}",  # str.format
                "aws_client_parameters": {"endpoint_url": "{endpoint}"},
            }
        },
        # The reasoning flows' default graph store: an on-disk Oxigraph store.
        "oxigraph-store": {
            "reasoning-graph": {"path": "{home}/reasoning-graph", "credentials": CREDENTIALS_BLOCK}
        },
    },
    uploads=[
        (_samples(), "s3://infergraph-local/samples/"),
        *[
            (_scenarios() / name, f"s3://{SCENARIO_BUCKET}/{name}/")
            for name in ("base", "bridge_closed")
        ],
    ],
)


# -- creating resources --------------------------------------------------------------


def provision(credentials: Any, resources: Resources = RESOURCES) -> dict[str, dict[str, str]]:
    """Create every resource (idempotently); return their URLs and ARNs by kind and name."""
    from infergraph.aws.clients import aws_client

    s3, sqs = aws_client("s3", credentials), aws_client("sqs", credentials)
    dynamodb, sns = aws_client("dynamodb", credentials), aws_client("sns", credentials)
    made: dict[str, dict[str, str]] = {"bucket": {}, "queue": {}, "table": {}, "topic": {}}
    for bucket in resources.buckets:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket.name)
        made["bucket"][bucket.name] = bucket.name
    for queue in resources.queues:
        made["queue"][queue.name] = create_queue(sqs, queue)
    for table in resources.tables:
        create_table(dynamodb, table)
        made["table"][table.name] = table.name
    for topic in resources.topics:
        arn = sns.create_topic(Name=topic.name)["TopicArn"]
        made["topic"][topic.name] = arn
        if topic.subscribe_queue:
            url = made["queue"][topic.subscribe_queue]
            queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            sns.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn["Attributes"]["QueueArn"],
                Attributes={"RawMessageDelivery": "true"},
            )
    by_bucket: dict[str, list[Notification]] = {}
    for notification in resources.notifications:
        by_bucket.setdefault(notification.bucket, []).append(notification)
    for bucket_name, notifications in by_bucket.items():
        configure_notifications(s3, sqs, bucket_name, notifications, made["queue"])
    return made


def configure_notifications(
    s3: Any, sqs: Any, bucket: str, notifications: list[Notification], queues: dict[str, str]
) -> None:
    """Send ``s3:ObjectCreated:*`` of ``bucket`` to the queues (replacing its configuration).

    On real AWS the queue's access policy must also allow ``s3.amazonaws.com`` to
    ``sqs:SendMessage`` (see the README); the emulator does not check it.
    """
    configurations = []
    for n in notifications:
        url = queues[n.queue]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        rules = [
            {"Name": k, "Value": v} for k, v in (("prefix", n.prefix), ("suffix", n.suffix)) if v
        ]
        config: dict[str, Any] = {
            "Id": f"{n.queue}-{n.prefix or ''}{n.suffix or ''}".strip("-"),
            "QueueArn": arn["Attributes"]["QueueArn"],
            "Events": ["s3:ObjectCreated:*"],
        }
        if rules:
            config["Filter"] = {"Key": {"FilterRules": rules}}
        configurations.append(config)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configurations}
    )


def create_queue(sqs: Any, queue: Queue) -> str:
    """The queue's URL; with ``dead_letter``, a ``-dlq`` queue and a redrive policy too."""
    attributes = {"VisibilityTimeout": str(queue.visibility_timeout)}
    if queue.dead_letter:
        dlq = sqs.create_queue(QueueName=f"{queue.name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
                "maxReceiveCount": str(queue.max_receive_count),
            }
        )
    url = sqs.create_queue(QueueName=queue.name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def create_table(dynamodb: Any, table: Table) -> None:
    """An on-demand table with the given keys (and index), unless it exists."""
    keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
    names = {name for name, _ in keys} | ({table.index[1]} if table.index else set())
    names |= {table.index_sort_key} if table.index and table.index_sort_key else set()
    params: dict[str, Any] = {
        "TableName": table.name,
        "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t in keys],
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"} for n in sorted(names)],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if table.index:
        params["GlobalSecondaryIndexes"] = [
            {
                "IndexName": table.index[0],
                "KeySchema": [{"AttributeName": table.index[1], "KeyType": "HASH"}]
                + (
                    [{"AttributeName": table.index_sort_key, "KeyType": "RANGE"}]
                    if table.index_sort_key
                    else []
                ),
                "Projection": {"ProjectionType": "ALL"},
            }
        ]
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(**params)


def block_config(
    endpoint: str | None,
    made: dict[str, dict[str, str]],
    resources: Resources = RESOURCES,
    home: Path = HOME,
) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``infergraph.blockconfig`` configuration of blocks for the created resources."""
    credentials: dict[str, Any] = {
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "${AWS_SECRET_ACCESS_KEY:-testing}",
    }
    if endpoint:
        credentials["aws_client_parameters"] = {"endpoint_url": endpoint}
    config: dict[str, dict[str, dict[str, Any]]] = {
        "aws-credentials": {CREDENTIALS_BLOCK: credentials}
    }

    def add(slug: str, name: str | None, fields: dict[str, Any]) -> None:
        if name:
            config.setdefault(slug, {})[name] = {**fields, "credentials": CREDENTIALS_BLOCK}

    for bucket in resources.buckets:
        add("s3-bucket", bucket.block, {"bucket_name": bucket.name})
    for queue in resources.queues:
        add(
            "sqs-queue",
            queue.block,
            {
                "queue_url": made["queue"][queue.name],
                "visibility_timeout": queue.visibility_timeout,
                "retry_delay_seconds": queue.retry_delay_seconds,
            },
        )
    for table in resources.tables:
        fields: dict[str, Any] = {"table_name": table.name, "partition_key": table.partition_key}
        if table.sort_key:
            fields["sort_key"] = table.sort_key
        if table.index:
            fields["index_name"] = table.index[0]
        add("dynamodb-table", table.block, fields)
    for topic in resources.topics:
        add("sns-topic", topic.block, {"topic_arn": made["topic"][topic.name]})
    values = {"endpoint": endpoint or "", "region": REGION, "home": str(home)}
    for slug, blocks in resources.extra_blocks.items():
        for name, fields in blocks.items():
            config.setdefault(slug, {})[name] = _fill(fields, values)
    return config


def upload(credentials: Any, folder: Path, target: str) -> int:
    """Upload every file of ``folder`` under ``target`` (s3://bucket/prefix/); the count."""
    from infergraph.aws.clients import aws_client
    from infergraph.aws.storage import split_s3_uri

    bucket, prefix = split_s3_uri(target)
    client = aws_client("s3", credentials)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda p: client.upload_file(
                    str(p), bucket, prefix + p.relative_to(folder).as_posix()
                ),
                files,
            )
        )
    return len(files)


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, str):
        return value.format(**values)
    return value
