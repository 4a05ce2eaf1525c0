"""Blocks from a config file, and the local-AWS command that writes and applies one."""

from __future__ import annotations

import json

import pytest

from blocks.dynamodb import DynamoDBTable
from blocks.sqs import SqsQueue
from infergraph import blockconfig as block_config

CONFIG = """
[aws-credentials.cfg-creds]
region_name = "eu-west-1"
aws_access_key_id = "AKIAEXAMPLE"
aws_secret_access_key = "${CFG_TEST_SECRET}"
aws_client_parameters = { endpoint_url = "http://127.0.0.1:1" }

[sqs-queue.cfg-queue]
queue_url = "${CFG_TEST_QUEUE_URL:-http://127.0.0.1:1/000/q}"
credentials = "cfg-creds"
visibility_timeout = 120

[dynamodb-table.cfg-table]
table_name = "requests"
index_name = "state-index"
credentials = "cfg-creds"
"""


def test_a_config_file_creates_blocks_with_references_and_overrides(prefect_server, tmp_path):
    path = tmp_path / "blocks.toml"
    path.write_text(CONFIG)
    environ = {
        "CFG_TEST_SECRET": "s3cr3t-value",
        "INFERGRAPH_AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "INFERGRAPH_BLOCK__SQS_QUEUE__CFG_QUEUE__VISIBILITY_TIMEOUT": "900",
    }

    saved = block_config.apply(path, environ)

    assert [f"{e.slug}/{e.name}" for e in saved] == [
        "aws-credentials/cfg-creds",
        "sqs-queue/cfg-queue",
        "dynamodb-table/cfg-table",
    ]
    queue = SqsQueue.load("cfg-queue")
    # the queue URL moves with the endpoint
    assert queue.queue_url == "http://127.0.0.1:4566/000/q" and queue.visibility_timeout == 900
    assert queue.credentials.aws_client_parameters.endpoint_url == "http://127.0.0.1:4566"
    assert queue.credentials.aws_secret_access_key.get_secret_value() == "s3cr3t-value"
    table = DynamoDBTable.load("cfg-table")
    assert (table.table_name, table.index_name, table.credentials.region_name) == (
        "requests",
        "state-index",
        "eu-west-1",
    )
    shown = "\n".join(e.describe() for e in saved)
    assert "s3cr3t-value" not in shown and "cfg-creds" in shown

    # Real AWS: the same file with the endpoint dropped, no code change.
    real = {"CFG_TEST_SECRET": "x", "INFERGRAPH_AWS_ENDPOINT_URL": "", "AWS_ACCOUNT_ID": "1" * 12}
    block_config.apply(path, real)
    queue = SqsQueue.load("cfg-queue")
    assert queue.credentials.aws_client_parameters.endpoint_url is None
    assert queue.queue_url == "https://sqs.eu-west-1.amazonaws.com/111111111111/q"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        (CONFIG, {}, r"aws-credentials\.cfg-creds\.aws_secret_access_key: .*CFG_TEST_SECRET"),
        ("[no-such-type.x]\na = 1\n", {}, r"\[no-such-type\]: unknown block type slug"),
        (
            '[sqs-queue.q]\nqueue_url = "u"\nwait_time_seconds = 99\n',
            {},
            r"\[sqs-queue\.q\]: wait_time_seconds: Input should be less than or equal to 20",
        ),
        (
            '[sqs-queue.q]\nqueue_url = "u"\ncredentials = "never-saved-creds"\n',
            {},
            r"credentials = 'never-saved-creds': no .*aws-credentials block of that name",
        ),
        (
            "[sqs-queue.q]\nqueue_url = 'u'\n",
            {"INFERGRAPH_BLOCK__SQS_QUEUE__OTHER__X": "1"},
            "'OTHER'",
        ),
    ],
)
def test_config_errors_say_where(prefect_server, tmp_path, text, environ, message):
    path = tmp_path / "blocks.toml"
    path.write_text(text)
    with pytest.raises(block_config.BlockConfigError, match=message):
        block_config.apply(path, environ, dry_run=True)


def test_yaml_files_are_read_too(tmp_path):
    path = tmp_path / "blocks.yaml"
    path.write_text("sqs-queue:\n  y-queue:\n    queue_url: http://x/1/q\n    max_messages: 5\n")
    [entry] = block_config.apply(path, {}, dry_run=True)
    assert entry.block.max_messages == 5


def test_local_aws_up_creates_everything_and_saves_blocks(prefect_server, aws, tmp_path):
    from prefect_aws import AwsCredentials

    from blocks.sns import SnsTopic
    from infergraph import devstack as local_aws
    from infergraph.aws.clients import aws_client

    endpoint = aws.aws_client_parameters.endpoint_url
    local_aws.up(endpoint=endpoint, home=tmp_path)

    sqs = aws_client("sqs", aws)
    queue = SqsQueue.load("inference-requests")
    policy = sqs.get_queue_attributes(QueueUrl=queue.queue_url, AttributeNames=["RedrivePolicy"])
    redrive = json.loads(policy["Attributes"]["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":inference-requests-dlq")
    assert int(redrive["maxReceiveCount"]) == 3
    described = aws_client("dynamodb", aws).describe_table(TableName="inference-requests")
    [index] = described["Table"]["GlobalSecondaryIndexes"]
    assert (
        index["IndexName"] == "state-index" == DynamoDBTable.load("inference-requests").index_name
    )
    assert SnsTopic.load("inference-notices").topic_arn.endswith(":inference-notices")
    assert AwsCredentials.load("local-aws").aws_client_parameters.endpoint_url == endpoint
    listed = aws_client("s3", aws).list_objects_v2(Bucket="infergraph-local", Prefix="samples/")
    assert listed["KeyCount"] == 361  # 360 digits and their manifest

    written = tmp_path / "blocks.yaml"
    assert "sqs-queue" in written.read_text()
    described = block_config.load_file(written)
    reapplied = block_config.apply(written, {}, dry_run=True)  # the file re-applies
    assert len(reapplied) == sum(len(names) for names in described.values()) >= 7

    assert local_aws.enqueue(25, 10, endpoint=endpoint) == 25
    messages = int(
        sqs.get_queue_attributes(
            QueueUrl=queue.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
    )
    assert messages == 3


def test_the_emulator_runs_in_the_background_until_stopped(tmp_path):
    from infergraph.devstack import Emulator
    from tests.support.servers import free_port

    first, second = Emulator(tmp_path, free_port()), Emulator(tmp_path, free_port())
    assert first.running() is None
    state = first.start()
    try:
        assert first.running() == state
        assert second.running() is None  # the port alone keeps them apart
        assert (tmp_path / f"moto-{first.port}.pid").read_text() == str(state["pid"])
    finally:
        assert first.stop()
    assert first.running() is None and not first.pid_file.exists()
    assert not second.stop()


def test_switching_to_real_aws_leaves_nothing_local(prefect_server, tmp_path):
    """The one documented step: the devstack's blocks.yaml applied with the endpoint removed."""
    from infergraph.devstack import RESOURCES, to_yaml
    from infergraph.devstack import block_config as devstack_config

    endpoint, account = "http://127.0.0.1:5055", "123456789012"
    made = {
        "bucket": {b.name: b.name for b in RESOURCES.buckets},
        "queue": {q.name: f"{endpoint}/{account}/{q.name}" for q in RESOURCES.queues},
        "table": {t.name: t.name for t in RESOURCES.tables},
        "topic": {t.name: f"arn:aws:sns:us-east-1:{account}:{t.name}" for t in RESOURCES.topics},
    }
    path = tmp_path / "blocks.yaml"
    path.write_text(to_yaml(devstack_config(endpoint, made, home=tmp_path)))
    real = {
        "INFERGRAPH_AWS_ENDPOINT_URL": "",
        "AWS_ACCOUNT_ID": "111122223333",
        "INFERGRAPH_AWS_REGION": "eu-west-1",
    }
    with pytest.raises(block_config.BlockConfigError, match="AWS_ACCOUNT_ID"):
        block_config.apply(path, {"INFERGRAPH_AWS_ENDPOINT_URL": ""}, dry_run=True)

    saved = block_config.apply(path, real)

    assert len(saved) >= 10
    for entry in saved:
        loaded = block_config.block_class(entry.slug).load(entry.name)
        text = json.dumps(loaded.model_dump(mode="json"), default=str)
        assert "127.0.0.1" not in text and account not in text, (entry.slug, entry.name, text)
        assert '"testing"' not in text  # the emulator's placeholder keys are gone
    queue = SqsQueue.load("inference-requests")
    assert queue.queue_url == "https://sqs.eu-west-1.amazonaws.com/111122223333/inference-requests"
    assert queue.credentials.aws_client_parameters.endpoint_url is None
    assert queue.credentials.region_name == "eu-west-1"


def test_apply_names_the_file_to_copy_or_takes_the_shipped_example(tmp_path):
    from infergraph.cli_errors import UsageError

    with pytest.raises(UsageError) as missing:
        block_config.config_path(tmp_path / "blocks.yaml")
    assert "blocks.yaml" in missing.value.fix and "aws.example.yaml" in missing.value.fix
    example = block_config.config_path(tmp_path / "blocks" / "aws.example.yaml")
    assert example.is_file() and "sqs-queue" in example.read_text()
