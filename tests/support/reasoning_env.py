"""Emulated AWS for the reasoning tests: buckets, the jobs table, a topic that feeds a queue.

Not a conftest: only the reasoning test files import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_aws import AwsCredentials

from blocks.dynamodb import DynamoDBTable
from blocks.oxigraph import OxigraphStore
from blocks.sns import SnsTopic
from infergraph.aws.clients import aws_client
from infergraph.reasoning.jobs import JobStore

INPUT, OUTPUT = "reasoning-input", "reasoning-output"


@dataclass
class ReasoningEnv:
    credentials: AwsCredentials
    table: DynamoDBTable
    topic: SnsTopic
    queue_url: str
    graph: OxigraphStore

    @property
    def store(self) -> JobStore:
        return JobStore(self.table)

    @property
    def s3(self) -> Any:
        return aws_client("s3", self.credentials)

    def put_jobspec(self, key: str, spec: dict[str, Any] | str | bytes) -> str:
        body = spec if isinstance(spec, str | bytes) else json.dumps(spec)
        self.s3.put_object(Bucket=INPUT, Key=key, Body=body)
        return key

    def notices(self, wait: int = 1) -> list[dict[str, Any]]:
        """Every notice delivered so far (SNS envelope: Subject, Message, MessageAttributes)."""
        sqs = aws_client("sqs", self.credentials)
        got: list[dict[str, Any]] = []
        while True:
            reply = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
            )
            messages = reply.get("Messages", [])
            if not messages:
                return got
            for m in messages:
                got.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            wait = 0


def jobs_table(credentials: AwsCredentials) -> DynamoDBTable:
    """The jobs table as ``python -m infergraph.devstack up`` creates it."""
    return DynamoDBTable(
        table_name="reasoning-jobs",
        partition_key="dataset",
        sort_key="date_seq",
        index_name="status-index",
        credentials=credentials,
    )


def make_env(credentials: AwsCredentials, tmp_path: Path) -> ReasoningEnv:
    s3 = aws_client("s3", credentials)
    for bucket in (INPUT, OUTPUT):
        s3.create_bucket(Bucket=bucket)
    table = jobs_table(credentials)
    JobStore(table).create_table()
    sns, sqs = aws_client("sns", credentials), aws_client("sqs", credentials)
    topic_arn = sns.create_topic(Name="reasoning-notices")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="reasoning-notices-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return ReasoningEnv(
        credentials=credentials,
        table=table,
        topic=SnsTopic(topic_arn=topic_arn, credentials=credentials),
        queue_url=queue_url,
        graph=OxigraphStore(path=str(tmp_path / "graph"), credentials=credentials),
    )
