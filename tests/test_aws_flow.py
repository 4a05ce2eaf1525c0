"""The inference flow end to end on emulated AWS: queues in, every sink out.

Blocks are saved on the session's Prefect server through ``infergraph.blockconfig`` and
named in the flow's parameters, as a deployment would; runs that must be killed
or run side by side are real subprocesses of the CLI.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from boto3.dynamodb.types import TypeDeserializer
from PIL import Image

from infergraph import blockconfig as block_config
from infergraph.aws.clients import aws_client
from infergraph.devstack import Queue, Resources, Table, Topic, provision
from infergraph.predictors.digits import SAMPLES
from tests.support.queues import queue_counts
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
_deserializer = TypeDeserializer()


def _scan(dynamodb, table: str) -> list[dict]:
    items, kwargs = [], {}
    while True:
        page = dynamodb.scan(TableName=table, **kwargs)
        items += [{k: _deserializer.deserialize(v) for k, v in i.items()} for i in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _setup(aws, max_receive_count: int = 3, visibility: int = 30, **queue_fields) -> dict:
    """Bucket with sample digits, queues, tables and topic on moto; blocks saved for them."""
    made = provision(
        aws,
        Resources(
            queues=[
                Queue("requests", max_receive_count=max_receive_count),
                Queue("results", dead_letter=False),
                Queue("notices-inbox", dead_letter=False),
            ],
            tables=[
                Table("requests", "request_id", index=("state-index", "state")),
                Table("results", "result_id"),
            ],
            topics=[Topic("notices", subscribe_queue="notices-inbox")],
        ),
    )
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="images")
    names = sorted(p.name for p in SAMPLES.glob("*.png"))[:80]
    for name in names:
        s3.upload_file(str(SAMPLES / name), "images", f"digits/{name}")
    endpoint = aws.aws_client_parameters.endpoint_url
    block_config.apply(
        {
            "aws-credentials": {
                "moto": {
                    "region_name": "us-east-1",
                    "aws_access_key_id": "testing",
                    "aws_secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
                    "aws_client_parameters": {"endpoint_url": endpoint},
                }
            },
            "sqs-queue": {
                "requests": {
                    "queue_url": made["queue"]["requests"],
                    "credentials": "moto",
                    "wait_time_seconds": 1,
                    "visibility_timeout": visibility,
                    "retry_delay_seconds": 0,
                    **queue_fields,
                },
                "results-queue": {"queue_url": made["queue"]["results"], "credentials": "moto"},
            },
            "dynamodb-table": {
                "requests": {
                    "table_name": "requests",
                    "index_name": "state-index",
                    "credentials": "moto",
                },
                "results": {
                    "table_name": "results",
                    "partition_key": "result_id",
                    "credentials": "moto",
                },
            },
            "sns-topic": {
                "notices": {"topic_arn": made["topic"]["notices"], "credentials": "moto"}
            },
        }
    )
    return {**made, "images": [f"s3://images/digits/{n}" for n in names]}


def _send(aws, url: str, requests: list[list[dict]]) -> list[str]:
    sqs = aws_client("sqs", aws)
    dynamodb = aws_client("dynamodb", aws)
    from infergraph.aws.dynamodb import serialize

    ids = []
    for message in requests:
        for request in message:
            if "request_id" in request:
                item = {"request_id": request["request_id"], "state": "queued", "origin": "test"}
                dynamodb.put_item(TableName="requests", Item=serialize(item))
        ids.append(sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))["MessageId"])
    return ids


def _queue_sizes(aws, url: str) -> tuple[int, int]:
    return queue_counts(aws_client("sqs", aws), url)


def _drain(aws, url: str) -> list[dict]:
    sqs, messages = aws_client("sqs", aws), []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages"):
        messages += batch
    return messages


def test_one_message_with_good_and_bad_images_reaches_every_sink(prefect_server, aws):
    from flows.inference import inference

    made = _setup(aws)
    s3 = aws_client("s3", aws)
    s3.put_object(Bucket="images", Key="odd/corrupt.png", Body=b"\x89PNG\r\n\x1a\n broken")
    s3.put_object(Bucket="images", Key="odd/gray.png", Body=_png(np.full((8, 8), 200, np.uint8)))
    s3.put_object(Bucket="images", Key="odd/black.png", Body=_png(np.zeros((8, 8, 3), np.uint8)))
    good = made["images"][:2]
    mixed = [
        {"request_id": "good-0", "s3_uri": good[0], "collection_id": "c1"},
        {"request_id": "corrupt", "s3_uri": "s3://images/odd/corrupt.png"},
        {"request_id": "gray", "s3_uri": "s3://images/odd/gray.png"},
        {"request_id": "black", "image": {"uri": "s3://images/odd/black.png"}},
        {"request_id": "no-key", "path": "forgot"},
        {"request_id": "missing", "s3_uri": "s3://images/odd/absent.png"},
    ]
    ids = _send(
        aws, made["queue"]["requests"], [mixed, [{"request_id": "good-1", "s3_uri": good[1]}]]
    )

    summary = inference(
        source="sqs://requests?image_keys=s3_uri,image.uri",
        sinks=[
            "dynamodb://results",
            "s3://images/out/?columns=request_id,uri,class_id,status,error",
            "sqs://results-queue",
        ],
        requests_table="requests",
        notify_topic="notices",
        batch_size=4,
    )

    assert (summary["images"], summary["errors"], summary["written"]) == (7, 3, 7)
    assert _queue_sizes(aws, made["queue"]["requests"]) == (0, 0)  # both deleted after writing
    dynamodb = aws_client("dynamodb", aws)
    requests = {r["request_id"]: r for r in _scan(dynamodb, "requests")}
    states = {k: v["state"] for k, v in requests.items()}
    assert states == {
        "good-0": "completed",
        "good-1": "completed",
        "gray": "completed",
        "black": "completed",
        "corrupt": "error",
        "no-key": "error",
        "missing": "error",
    }
    assert (
        "s3://images/odd/corrupt.png: corrupt or truncated PNG" in requests["corrupt"]["errors"][0]
    )
    assert "has no image URI under any of 's3_uri', 'image.uri'" in requests["no-key"]["errors"][0]
    assert "NoSuchKey" in requests["missing"]["errors"][0]
    assert requests["good-0"]["origin"] == "test"  # the producer's attributes are kept

    results = _scan(dynamodb, "results")
    assert sorted(r["request_id"] for r in results) == sorted(states)
    assert {r["request_id"]: r["collection_id"] for r in results if "collection_id" in r} == {
        "good-0": "c1"
    }

    objects = {o["Key"] for o in s3.list_objects_v2(Bucket="images", Prefix="out/")["Contents"]}
    assert objects == {f"out/{ids[0]}.csv", f"out/{ids[1]}.csv"}
    header = s3.get_object(Bucket="images", Key=f"out/{ids[0]}.csv")["Body"].read().decode()
    assert header.splitlines()[0] == "request_id,uri,class_id,status,error"
    assert len(header.strip().splitlines()) == 7  # header + six requests

    sent = [json.loads(m["Body"])["request_id"] for m in _drain(aws, made["queue"]["results"])]
    assert sorted(sent) == sorted(states)
    notices = [json.loads(m["Body"]) for m in _drain(aws, made["queue"]["notices-inbox"])]
    noticed = {r["request_id"]: r["state"] for n in notices for r in n["requests"]}
    assert noticed == {k: "error" if v == "error" else "completed" for k, v in states.items()}


def test_prefix_source_rerun_overwrites_instead_of_duplicating(prefect_server, aws):
    from flows.inference import inference

    _setup(aws)
    s3 = aws_client("s3", aws)
    manifest = (SAMPLES / "manifest.csv").read_bytes()
    s3.put_object(Bucket="images", Key="digits/manifest.csv", Body=manifest)

    for _ in range(2):
        summary = inference(
            source="s3://images/digits/",
            sinks=["dynamodb://results", "s3://images/out/?gzip=true"],
            aws_credentials="moto",
        )  # batches sized automatically: kept at a fixed size, since S3 CSV objects are
        assert summary["images"] == 80 and summary["accuracy"] > 0.9  # named by batch

    results = _scan(aws_client("dynamodb", aws), "results")
    assert len(results) == 80
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="images", Prefix="out/")["Contents"]]
    assert len(keys) == 2 and all(k.endswith(".csv.gz") for k in keys)  # 80 / 64, replaced


def test_a_failed_notice_is_reported_and_loses_nothing(prefect_server, aws):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from blocks.sns import SnsTopic
    from flows.inference import inference

    made = _setup(aws)
    _send(aws, made["queue"]["requests"], [[{"request_id": "r1", "s3_uri": made["images"][0]}]])
    missing = SnsTopic(topic_arn="arn:aws:sns:us-east-1:123456789012:gone", credentials=aws)

    state = inference(
        source="sqs://requests",
        sinks=["dynamodb://results"],
        notify_topic=missing,
        return_state=True,
    )
    summary = state.result()

    assert summary["written"] == 1
    assert _queue_sizes(aws, made["queue"]["requests"]) == (0, 0)
    [problem] = summary["problems"]
    assert problem.startswith(
        "SNS notice to arn:aws:sns:us-east-1:123456789012:gone for 1 request(s) (r1)"
    )
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["inference-errors"])),
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            ),
        )
    assert "SNS notice to arn:aws:sns:us-east-1:123456789012:gone" in artifacts[0].data


def test_a_late_duplicate_is_deleted_without_being_processed_again(prefect_server, aws):
    from flows.inference import inference

    made = _setup(aws)
    request = [{"request_id": "r1", "s3_uri": made["images"][0]}]
    options = {
        "source": "sqs://requests",
        "sinks": ["sqs://results-queue"],
        "requests_table": "requests",
        "notify_topic": "notices",
    }
    _send(aws, made["queue"]["requests"], [request])
    assert inference(**options)["images"] == 1
    first = _drain(aws, made["queue"]["results"]) + _drain(aws, made["queue"]["notices-inbox"])
    assert len(first) == 2

    aws_client("sqs", aws).send_message(
        QueueUrl=made["queue"]["requests"], MessageBody=json.dumps(request)
    )
    assert inference(**options)["images"] == 0
    assert _queue_sizes(aws, made["queue"]["requests"]) == (0, 0)
    assert _drain(aws, made["queue"]["results"]) + _drain(aws, made["queue"]["notices-inbox"]) == []
    [item] = _scan(aws_client("dynamodb", aws), "requests")
    assert (item["state"], item["attempts"]) == ("completed", 1)


def test_a_poison_message_reaches_the_dead_letter_queue_alone(prefect_server, aws):
    from flows.inference import inference

    made = _setup(aws, max_receive_count=2)
    sqs = aws_client("sqs", aws)
    sqs.set_queue_attributes(
        QueueUrl=made["queue"]["results"], Attributes={"MaximumMessageSize": "2048"}
    )
    images = made["images"]
    messages = [[{"request_id": f"ok-{i}", "s3_uri": images[i]}] for i in range(5)]
    messages.insert(2, [{"request_id": "poison", "s3_uri": images[9], "note": "x" * 4000}])
    ids = _send(aws, made["queue"]["requests"], messages)

    state = inference(
        source="sqs://requests?idle_polls=2",
        sinks=["dynamodb://results", "sqs://results-queue"],
        requests_table="requests",
        batch_size=8,
        return_state=True,
    )

    assert state.is_failed()  # a result that cannot be written fails the run
    dlq = sqs.get_queue_url(QueueName="requests-dlq")["QueueUrl"]
    assert [m["MessageId"] for m in _drain(aws, dlq)] == [ids[2]]
    assert _queue_sizes(aws, made["queue"]["requests"]) == (0, 0)
    requests = {r["request_id"]: r for r in _scan(aws_client("dynamodb", aws), "requests")}
    assert {k for k, v in requests.items() if v["state"] == "completed"} == {
        f"ok-{i}" for i in range(5)
    }
    assert requests["poison"]["state"] == "processing"  # never marked done
    assert requests["poison"]["attempts"] == 2
    with pytest.raises(Exception, match=r"over the queue's 2,048-byte message limit"):
        state.result()


# -- real processes ------------------------------------------------------------------


def _cli(*args: str, log: Path) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(REPO / "flows" / "inference.py"), *args],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _requests(images: list[str], messages: int, per_message: int) -> list[list[dict]]:
    return [
        [
            {"request_id": f"m{m:02d}-{k}", "s3_uri": images[(m * per_message + k) % len(images)]}
            for k in range(per_message)
        ]
        for m in range(messages)
    ]


@pytest.mark.timeout(240)
def test_a_killed_run_is_completed_by_a_rerun_exactly_once(prefect_server, aws, tmp_path):
    from flows.inference import inference

    made = _setup(aws, visibility=5)
    ids = _send(aws, made["queue"]["requests"], _requests(made["images"], 40, 2))
    dynamodb = aws_client("dynamodb", aws)
    args = [
        "--sink",
        "dynamodb://results",
        "--sink",
        "s3://images/out/",
        "--requests-table",
        "requests",
    ]

    run = _cli(
        "sqs://requests",
        *args,
        "--batch-size",
        "1",
        "--max-in-flight",
        "1",
        log=tmp_path / "run.log",
    )

    def written() -> int:
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        count = dynamodb.scan(TableName="results", Select="COUNT")["Count"]
        return count if count >= 10 else 0

    try:
        done = wait_until(written, timeout=120, interval=0.05, what="the run to write results")
        run.send_signal(signal.SIGKILL)  # no cleanup, no release of in-flight messages
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert done < 80, "the run finished before it could be interrupted"
    assert _queue_sizes(aws, made["queue"]["requests"])[1] > 0  # messages left in flight

    wait_until(  # the killed run's messages become visible again
        lambda: _queue_sizes(aws, made["queue"]["requests"])[1] == 0,
        timeout=60,
        what="the killed run's messages to become visible",
    )
    summary = inference(
        source="sqs://requests?idle_polls=2",
        sinks=["dynamodb://results", "s3://images/out/"],
        requests_table="requests",
        batch_size=8,
    )

    assert summary["images"] >= 80 - done
    assert _queue_sizes(aws, made["queue"]["requests"]) == (0, 0)
    results = _scan(dynamodb, "results")
    assert Counter(Counter(r["record_id"] for r in results).values()) == {1: 80}
    requests = _scan(dynamodb, "requests")
    assert len(requests) == 80 and {r["state"] for r in requests} == {"completed"}
    s3 = aws_client("s3", aws)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="images", Prefix="out/")["Contents"]]
    assert sorted(keys) == sorted(f"out/{i}.csv" for i in ids)  # one object per message
    rows = sum(
        len(s3.get_object(Bucket="images", Key=k)["Body"].read().decode().strip().splitlines()) - 1
        for k in keys
    )
    assert rows == 80


@pytest.mark.timeout(240)
def test_two_runs_on_one_queue_process_each_request_once(prefect_server, aws, tmp_path):
    made = _setup(aws, visibility=60)
    args = ["sqs://requests?idle_polls=15", "--sink", "dynamodb://results"]
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    runs = [
        _cli(*args, "--requests-table", "requests", "--batch-size", "2", log=log) for log in logs
    ]

    def polling() -> bool:
        assert all(r.poll() is None for r in runs), [log.read_text()[-2000:] for log in logs]
        return all(f"receiving from {queue}" in log.read_text() for log in logs)

    queue = "sqs://requests"
    try:
        wait_until(polling, timeout=120, interval=0.2, what="both runs to poll the queue")
        _send(aws, made["queue"]["requests"], _requests(made["images"], 40, 2))
        codes = [r.wait(timeout=150) for r in runs]
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]

    dynamodb = aws_client("dynamodb", aws)
    requests = _scan(dynamodb, "requests")
    assert len(requests) == 80 and {r["state"] for r in requests} == {"completed"}
    twice = [(r["request_id"], r["attempts"]) for r in requests if r["attempts"] != 1]
    assert twice == [], "processed more than once"
    assert len(_scan(dynamodb, "results")) == 80
    assert len({r["processed_by"] for r in requests}) == 2  # both runs took a share
