"""DynamoDB, S3 CSV and SQS sinks, the requests table and SNS notices against moto."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections import Counter
from decimal import Decimal

import pytest
from boto3.dynamodb.types import TypeDeserializer

from blocks.dynamodb import DynamoDBTable
from blocks.sns import SnsTopic
from blocks.sqs import SqsQueue
from infergraph.aws.clients import aws_client
from infergraph.aws.dynamodb import serialize
from infergraph.aws.errors import is_transient
from infergraph.devstack import Queue, Table, create_queue, create_table
from infergraph.inference.notices import MAX_MESSAGE_BYTES, CompletionNotices
from infergraph.inference.records import ResultChunk
from infergraph.inference.requests_table import RequestsTable
from infergraph.inference.sinks.base import SinkError
from infergraph.inference.sinks.dynamodb import (
    DynamoDBResultsSink,
    UnprocessedItemsError,
    batch_write,
)
from infergraph.inference.sinks.s3_csv import S3CsvSink
from infergraph.inference.sinks.sqs import POINTER_CLASS, SqsResultsSink

_deserializer = TypeDeserializer()


def _row(request: str, uri: str, score: float = 0.91, error: str | None = None) -> dict:
    ok = error is None
    return {
        "record_id": f"{request}|{uri}",
        "uri": uri,
        "request_id": request,
        "meta": {"camera": {"model": "X1"}, "tags": ["a"]},
        "class_id": 3 if ok else None,
        "score": score if ok else None,
        "top_k": [{"class_id": 3, "score": score}, {"class_id": 5, "score": 0.05}] if ok else None,
        "status": "ok" if ok else "error",
        "error": error,
    }


def _scan(dynamodb, table: str) -> list[dict]:
    items = dynamodb.scan(TableName=table)["Items"]
    return [{k: _deserializer.deserialize(v) for k, v in item.items()} for item in items]


def _table(aws, name: str, key: str, **extra) -> DynamoDBTable:
    create_table(aws_client("dynamodb", aws), Table(name, key))
    return DynamoDBTable(table_name=name, partition_key=key, credentials=aws, **extra)


# -- DynamoDB results ----------------------------------------------------------------


def test_results_are_flattened_typed_and_overwritten_by_a_rerun(aws):
    sink = DynamoDBResultsSink(_table(aws, "results", "result_id"))
    rows = [_row(f"r{i}", f"s3://b/{i}.png") for i in range(30)]  # two BatchWriteItem calls
    sink.write(ResultChunk("m1", rows))
    sink.write(ResultChunk("m1", [_row("r0", "s3://b/0.png", score=0.5)]))  # a rerun

    dynamodb = aws_client("dynamodb", aws)
    # Raw items, not keyed by record: a rerun that added an item instead of replacing it
    # would show here as 31.
    assert dynamodb.scan(TableName="results", Select="COUNT")["Count"] == 30
    scanned = _scan(dynamodb, "results")
    assert len({i["result_id"] for i in scanned}) == len(scanned) == 30
    items = {i["record_id"]: i for i in scanned}
    assert len(items) == 30
    first = items["r0|s3://b/0.png"]
    assert first["score"] == Decimal("0.5")
    assert first["meta__camera__model"] == "X1" and first["meta__tags"] == ["a"]
    assert first["top_k"][0] == {"class_id": 3, "score": Decimal("0.5")}
    assert len(first["result_id"]) == 32


def test_exploded_results_give_one_item_per_element_and_keep_errors(aws):
    table = _table(aws, "results", "result_id")
    sink = DynamoDBResultsSink(table, explode_field="top_k", copy=("request_id", "uri"))
    sink.write(
        ResultChunk("m", [_row("r1", "s3://b/1.png"), _row("r2", "s3://b/2.png", error="bad")])
    )

    items = _scan(aws_client("dynamodb", aws), "results")
    good = sorted((i for i in items if i["request_id"] == "r1"), key=lambda i: i["item_index"])
    assert [(i["class_id"], i["item_index"]) for i in good] == [(3, 0), (5, 1)]
    assert set(good[0]) == {"result_id", "request_id", "uri", "class_id", "score", "item_index"}
    [bad] = [i for i in items if i["request_id"] == "r2"]
    assert bad["item_index"] == 0  # the failed record is still represented


def test_a_result_field_named_like_the_partition_key_is_refused(aws):
    sink = DynamoDBResultsSink(_table(aws, "results", "request_id"))
    with pytest.raises(SinkError, match="partition key 'request_id' is also a result field"):
        sink.write(ResultChunk("m", [_row("r1", "s3://b/1.png")]))


def test_an_item_over_the_size_limit_names_its_record(aws):
    sink = DynamoDBResultsSink(_table(aws, "results", "result_id"))
    row = {**_row("big", "s3://b/big.png"), "blob": "x" * 500_000}
    with pytest.raises(
        SinkError, match=r"'big\|s3://b/big.png' is about .* over DynamoDB's 400 KB"
    ):
        sink.write(ResultChunk("m", [row]))


def test_unprocessed_items_are_resent_with_backoff_then_fail_as_transient():
    calls, delays = [], []

    def throttled(times):
        def send(request_items):
            calls.append(len(request_items["t"]))
            left = request_items["t"][1:] if len(calls) <= times else []
            return {"UnprocessedItems": {"t": left} if left else {}}

        return send

    batch_write(throttled(2), "t", [{"PutRequest": {}}] * 5, sleep=delays.append)
    assert calls == [5, 4, 3] and len(delays) == 2

    calls.clear()
    with pytest.raises(UnprocessedItemsError, match="still unprocessed after 3 attempts") as info:
        batch_write(throttled(99), "t", [{"PutRequest": {}}] * 5, attempts=3, sleep=delays.append)
    assert is_transient(info.value)


# -- requests table ------------------------------------------------------------------


def test_requests_move_through_their_states_and_never_back(aws):
    dynamodb = aws_client("dynamodb", aws)
    table = _table(aws, "requests", "request_id")
    for rid in ("r1", "r2"):
        item = {"request_id": rid, "state": "queued", "collection_id": "c7"}
        dynamodb.put_item(TableName="requests", Item=serialize(item))
    tracker = RequestsTable(table, run_id="run-1")

    from infergraph.inference.records import ImageRecord

    records = [ImageRecord("s3://b/1.png", {"request_id": r}) for r in ("r1", "r2", "r3")]
    assert tracker.mark_processing(records) == []
    states = {i["request_id"]: i for i in _scan(dynamodb, "requests")}
    assert {k: (v["state"], v["attempts"]) for k, v in states.items()} == {
        "r1": ("processing", 1),
        "r2": ("processing", 1),
        "r3": ("processing", 1),  # unknown requests are created
    }
    assert states["r1"]["processed_by"] == "run-1" and states["r1"]["collection_id"] == "c7"

    tracker.write(
        ResultChunk(
            "m",
            [
                _row("r1", "s3://b/1.png"),
                _row("r2", "s3://b/2.png", error="s3://b/2.png: not an image"),
                _row("r3", "s3://b/3a.png"),
                _row("r3", "s3://b/3b.png"),
            ],
        )
    )
    done = {i["request_id"]: i for i in _scan(dynamodb, "requests")}
    assert done["r1"]["state"] == "completed" and done["r1"]["errors"] == []
    assert json.loads(done["r1"]["result"])["class_id"] == 3
    assert done["r1"]["collection_id"] == "c7"
    assert done["r2"]["state"] == "error" and done["r2"]["errors"] == ["s3://b/2.png: not an image"]
    assert len(json.loads(done["r3"]["result"])) == 2  # two images, one request

    # A late duplicate delivery neither reopens nor rewrites a finished request.
    tracker.mark_processing(records[:1])
    tracker.write(ResultChunk("m", [_row("r1", "s3://b/1.png", error="late failure")]))
    again = {i["request_id"]: i for i in _scan(dynamodb, "requests")}
    assert again["r1"] == done["r1"]
    assert tracker.late_duplicates == 1


def test_a_failed_requests_table_write_raises_so_the_message_is_not_acknowledged(aws):
    """A write that fails for any reason but a late duplicate must fail the write task:
    only a logged problem would let the message be deleted with its request stuck."""
    from infergraph.inference.records import ImageRecord

    dynamodb = aws_client("dynamodb", aws)
    table = _table(aws, "requests", "request_id")
    tracker = RequestsTable(table, run_id="run-1")
    assert tracker.mark_processing([ImageRecord("s3://b/1.png", {"request_id": "r1"})]) == []
    dynamodb.delete_table(TableName="requests")  # gone: not a condition failure

    with pytest.raises(Exception, match=r"ResourceNotFound|does not exist|not found"):
        tracker.write(ResultChunk("m", [_row("r1", "s3://b/1.png")]))


def test_claims_skip_finished_requests_and_requests_another_run_holds(aws):
    from infergraph.inference.records import Claim, ImageRecord

    PROCESS, FINISHED, BUSY = Claim

    dynamodb = aws_client("dynamodb", aws)
    table = _table(aws, "requests", "request_id")
    now = time.time()
    for item in (
        {"request_id": "done", "state": "completed"},
        {"request_id": "held", "state": "processing", "processed_by": "B", "lease_until": now + 60},
        {"request_id": "stale", "state": "processing", "processed_by": "C", "lease_until": now - 1},
        {"request_id": "free", "state": "queued"},
    ):
        dynamodb.put_item(TableName="requests", Item=serialize(item))
    mine = RequestsTable(table, run_id="A")

    def records(*ids):
        return [ImageRecord(f"s3://b/{i}.png", {"request_id": i}) for i in ids]

    decisions = mine.claim(
        {
            "late-duplicate": records("done"),
            "duplicate-delivery": records("free", "held"),
            "dead-run": records("stale"),
            "no-requests": [ImageRecord("s3://b/x.png")],
        },
        lease_seconds=30,
    )
    assert decisions == {
        "late-duplicate": FINISHED,
        "duplicate-delivery": BUSY,
        "dead-run": PROCESS,
        "no-requests": PROCESS,
    }
    items = {i["request_id"]: i for i in _scan(dynamodb, "requests")}
    assert (items["free"]["state"], items["free"]["attempts"]) == ("queued", 0)  # given back
    assert (items["held"]["processed_by"], items["stale"]["processed_by"]) == ("B", "A")
    assert items["stale"]["lease_until"] > now + 25


# -- S3 CSV --------------------------------------------------------------------------


def test_csv_objects_are_quoted_ordered_and_replaced_by_a_rerun(aws):
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="out")
    sink = S3CsvSink("out", "csv/", aws, columns=("request_id", "note", "score"))
    tricky = 'comma, "quote"\nand newline'
    rows = [{**_row("r1", "s3://b/1.png"), "note": tricky}, _row("r2", "s3://b/2.png")]
    sink.write(ResultChunk("msg-1", rows))
    sink.write(ResultChunk("msg-1", rows))

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="out")["Contents"]]
    assert keys == ["csv/msg-1.csv"]
    text = s3.get_object(Bucket="out", Key="csv/msg-1.csv")["Body"].read().decode()
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed == [["request_id", "note", "score"], ["r1", tricky, "0.91"], ["r2", "", "0.91"]]


@pytest.mark.parametrize("compress", [False, True])
def test_big_chunks_become_numbered_parts_holding_every_row_in_order(aws, compress):
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="out")
    sink = S3CsvSink("out", "", aws, compress=compress, rows=2)
    sink.write(ResultChunk("batch-1", [_row(f"r{i}", f"s3://b/{i}") for i in range(5)]))

    suffix = ".csv.gz" if compress else ".csv"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="out")["Contents"])
    assert keys == [f"batch-1-part-000{n}{suffix}" for n in (1, 2, 3)]
    parts = []
    for key in keys:
        body = s3.get_object(Bucket="out", Key=key)["Body"].read()
        text = (gzip.decompress(body) if compress else body).decode()
        parts.append([row["request_id"] for row in csv.DictReader(io.StringIO(text))])
    assert parts == [["r0", "r1"], ["r2", "r3"], ["r4"]]  # every record once, in order, 2/2/1
    body = s3.get_object(Bucket="out", Key=keys[2])["Body"].read()
    [row] = list(
        csv.DictReader(io.StringIO((gzip.decompress(body) if compress else body).decode()))
    )
    assert json.loads(row["meta"]) == {"camera": {"model": "X1"}, "tags": ["a"]}


# -- SQS results ---------------------------------------------------------------------


def _receive_all(sqs, url: str) -> list[dict]:
    messages = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages"):
        messages += batch
    return messages


def test_results_are_sent_ten_per_call_with_their_record_ids(aws):
    sqs = aws_client("sqs", aws)
    url = create_queue(sqs, Queue("results", dead_letter=False))
    sink = SqsResultsSink(SqsQueue(queue_url=url, credentials=aws))
    sink.open()
    rows = [_row(f"r{i}", f"s3://b/{i}.png") for i in range(23)]
    sink.write(ResultChunk("m", rows))

    messages = _receive_all(sqs, url)
    assert sorted(json.loads(m["Body"])["request_id"] for m in messages) == sorted(
        r["request_id"] for r in rows
    )
    ids = Counter(m["MessageAttributes"]["record_id"]["StringValue"] for m in messages)
    assert len(ids) == 23 and set(ids.values()) == {1}


def test_an_oversized_result_is_refused_or_stored_in_s3_with_a_pointer(aws):
    sqs, s3 = aws_client("sqs", aws), aws_client("s3", aws)
    url = sqs.create_queue(QueueName="small", Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    queue = SqsQueue(queue_url=url, credentials=aws)
    big = {**_row("big", "s3://b/big.png"), "blob": "x" * 2000}

    refusing = SqsResultsSink(queue)
    refusing.open()
    with pytest.raises(
        SinkError, match=r"'big\|s3://b/big.png' is 2,\d{3} bytes, over .*1,024-byte"
    ):
        refusing.write(ResultChunk("m", [big]))

    s3.create_bucket(Bucket="spill")
    offloading = SqsResultsSink(queue, oversize="s3://spill/large/", credentials=aws)
    offloading.open()
    offloading.write(ResultChunk("m", [big, _row("small", "s3://b/s.png")]))
    messages = {
        m["MessageAttributes"]["record_id"]["StringValue"]: m for m in _receive_all(sqs, url)
    }
    kind, pointer = json.loads(messages["big|s3://b/big.png"]["Body"])
    assert kind == POINTER_CLASS
    stored = s3.get_object(Bucket=pointer["s3BucketName"], Key=pointer["s3Key"])["Body"].read()
    assert json.loads(stored)["blob"] == "x" * 2000
    assert json.loads(messages["small|s3://b/s.png"]["Body"])["request_id"] == "small"


# -- SNS -----------------------------------------------------------------------------


def _topic_with_inbox(aws, name: str) -> tuple[str, str]:
    sns, sqs = aws_client("sns", aws), aws_client("sqs", aws)
    arn = sns.create_topic(Name=name)["TopicArn"]
    inbox = create_queue(sqs, Queue(f"{name}-inbox", dead_letter=False))
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])
    sns.subscribe(
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=inbox_arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    return arn, inbox


def test_notices_go_to_each_requests_topic_grouped_per_request(aws):
    default_arn, default_inbox = _topic_with_inbox(aws, "default")
    own_arn, own_inbox = _topic_with_inbox(aws, "own")
    notices = CompletionNotices(SnsTopic(topic_arn=default_arn, credentials=aws), flow_run_id="f1")
    rows = [
        _row("r1", "s3://b/1a.png"),
        _row("r1", "s3://b/1b.png", error="corrupt"),
        {**_row("r2", "s3://b/2.png"), "sns_topic_arn": own_arn},
    ]
    assert notices([ResultChunk("m1", rows[:2]), ResultChunk("m2", rows[2:])]) == []

    sqs = aws_client("sqs", aws)
    [default_notice] = [json.loads(m["Body"]) for m in _receive_all(sqs, default_inbox)]
    assert default_notice["flow_run_id"] == "f1"
    assert default_notice["requests"] == [
        {"request_id": "r1", "state": "error", "images": 2, "errors": ["corrupt"]}
    ]
    [own_notice] = [json.loads(m["Body"]) for m in _receive_all(sqs, own_inbox)]
    assert [r["request_id"] for r in own_notice["requests"]] == ["r2"]


def test_notices_are_split_under_the_size_limit():
    notices = CompletionNotices()
    entries = [
        {"request_id": f"r{i}", "state": "error", "images": 1, "errors": ["e" * 2000]}
        for i in range(300)
    ]
    packed = notices.messages(entries)
    assert len(packed) > 1
    assert all(len(body.encode()) <= MAX_MESSAGE_BYTES for body, _ in packed)
    assert [i for _, ids in packed for i in ids] == [f"r{i}" for i in range(300)]


def test_a_failed_publish_is_reported_not_raised(aws):
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    notices = CompletionNotices(SnsTopic(topic_arn=missing, credentials=aws))
    problems = notices([ResultChunk("m", [_row("r1", "s3://b/1.png")])])
    assert len(problems) == 1
    assert problems[0].startswith(
        f"SNS notice to {missing} for 1 request(s) (r1) not sent: NotFound"
    )
