"""Recovery after a crash (issue 12): notices, leases, the sweep and the redrive, on moto."""

from __future__ import annotations

import json
import time

import pytest
from boto3.dynamodb.types import TypeDeserializer

from blocks.dynamodb import DynamoDBTable
from blocks.sns import SnsTopic
from blocks.sqs import SqsQueue
from infergraph.aws.clients import aws_client
from infergraph.aws.dead_letters import peek, redrive
from infergraph.aws.dynamodb import serialize
from infergraph.devstack import Queue, Table, create_queue, create_table
from infergraph.inference.maintenance import redrive_queue
from infergraph.inference.notices import CompletionNotices
from infergraph.inference.records import LEASE_MARGIN, NOTIFIED, Claim, ImageRecord, ResultChunk
from infergraph.inference.requests_table import RequestsTable
from infergraph.inference.sources.sqs import SqsSource
from infergraph.inference.sweep import sweep_requests
from tests.support.queues import queue_counts

_deserializer = TypeDeserializer()


def _items(aws, table: str = "requests") -> dict[str, dict]:
    items = aws_client("dynamodb", aws).scan(TableName=table)["Items"]
    rows = [{k: _deserializer.deserialize(v) for k, v in i.items()} for i in items]
    return {r["request_id"]: r for r in rows}


def _put(aws, *items: dict) -> None:
    for item in items:
        aws_client("dynamodb", aws).put_item(TableName="requests", Item=serialize(item))


def _table(aws) -> DynamoDBTable:
    create_table(aws_client("dynamodb", aws), Table("requests", "request_id"))
    return DynamoDBTable(table_name="requests", partition_key="request_id", credentials=aws)


def _queue(aws, visibility: int = 30, max_receive_count: int = 3) -> SqsQueue:
    url = create_queue(
        aws_client("sqs", aws), Queue("requests", max_receive_count=max_receive_count)
    )
    return SqsQueue(
        queue_url=url,
        credentials=aws,
        wait_time_seconds=1,
        visibility_timeout=visibility,
        retry_delay_seconds=0,
    )


def _topic(aws) -> tuple[SnsTopic, str]:
    """A topic delivering to an inbox queue, so the notices can be read back."""
    sqs, sns = aws_client("sqs", aws), aws_client("sns", aws)
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]
    topic = sns.create_topic(Name="notices")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    return SnsTopic(topic_arn=topic, credentials=aws), inbox


def _announced(aws, inbox: str) -> list[str]:
    sqs, ids = aws_client("sqs", aws), []
    while got := sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages"):
        for m in got:
            ids += [
                r["request_id"] for r in json.loads(json.loads(m["Body"])["Message"])["requests"]
            ]
            sqs.delete_message(QueueUrl=inbox, ReceiptHandle=m["ReceiptHandle"])
    return sorted(ids)


def _send(aws, queue: SqsQueue, *bodies) -> list[str]:
    sqs = aws_client("sqs", aws)
    return [
        sqs.send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps(b))["MessageId"]
        for b in bodies
    ]


def _row(request: str, error: str | None = None) -> dict:
    return {
        "record_id": f"{request}|s3://b/{request}.png",
        "uri": f"s3://b/{request}.png",
        "request_id": request,
        "status": "error" if error else "ok",
        "error": error,
    }


# -- notices are part of "finished" -----------------------------------------------------


def test_the_marker_is_written_only_after_the_notice_went_out(aws):
    topic, inbox = _topic(aws)
    table = _table(aws)
    good = RequestsTable(table, run_id="A", notices=CompletionNotices(topic))
    good.claim({"m": [ImageRecord("s3://b/r1.png", {"request_id": "r1"})]}, 30)
    good.write(ResultChunk("m", [_row("r1")]))
    assert NOTIFIED not in _items(aws)["r1"]  # finished, not yet announced
    assert good.announce([ResultChunk("m", [_row("r1")])]) == []
    assert NOTIFIED in _items(aws)["r1"] and _announced(aws, inbox) == ["r1"]

    broken = CompletionNotices(SnsTopic(topic_arn="not-an-arn", credentials=aws))
    failing = RequestsTable(table, run_id="B", notices=broken)
    failing.claim({"m2": [ImageRecord("s3://b/r2.png", {"request_id": "r2"})]}, 30)
    failing.write(ResultChunk("m2", [_row("r2")]))
    assert failing.announce([ResultChunk("m2", [_row("r2")])])  # the problem is reported
    assert NOTIFIED not in _items(aws)["r2"]


def test_a_redelivered_finished_but_unannounced_request_is_announced_before_its_delete(aws):
    topic, inbox = _topic(aws)
    table, queue = _table(aws), _queue(aws)
    _put(
        aws,
        *(
            {"request_id": r, "state": "completed", "result": json.dumps(_row(r)), **marker}
            for r, marker in (("crashed-before-notice", {}), ("announced", {NOTIFIED: 1}))
        ),
    )
    _send(
        aws,
        queue,
        {"request_id": "crashed-before-notice", "s3_uri": "s3://b/1.png"},
        {"request_id": "announced", "s3_uri": "s3://b/2.png"},
    )
    tracker = RequestsTable(table, run_id="rerun", notices=CompletionNotices(topic))
    source = SqsSource(queue)
    source.claim = tracker.claim

    assert [r for batch in source.batches(10) for r in batch] == []  # nothing to reprocess
    assert queue_counts(aws_client("sqs", aws), queue.queue_url) == (0, 0)  # both deleted
    assert _announced(aws, inbox) == ["crashed-before-notice"]
    assert NOTIFIED in _items(aws)["crashed-before-notice"] and tracker.renotified == 1


def test_a_redelivered_request_whose_notice_still_fails_keeps_its_message(aws):
    table, queue = _table(aws), _queue(aws)
    _put(aws, {"request_id": "r", "state": "completed", "result": json.dumps(_row("r"))})
    _send(aws, queue, {"request_id": "r", "s3_uri": "s3://b/1.png"})
    broken = CompletionNotices(SnsTopic(topic_arn="not-an-arn", credentials=aws))
    source = SqsSource(queue)
    source.claim = RequestsTable(table, run_id="rerun", notices=broken).claim

    assert list(source.batches(10)) == []
    assert queue_counts(aws_client("sqs", aws), queue.queue_url) == (0, 1)  # kept, hidden
    assert NOTIFIED not in _items(aws)["r"]


# -- leases follow the message's invisibility --------------------------------------------


def test_the_lease_ends_before_the_invisibility_and_the_heartbeat_renews_it(aws):
    table, queue = _table(aws), _queue(aws, visibility=30)
    _send(aws, queue, [{"request_id": f"r{i}", "s3_uri": f"s3://b/{i}.png"} for i in range(3)])
    tracker = RequestsTable(table, run_id="A")
    source = SqsSource(queue, message_limit=1)
    source.claim, source.renew = tracker.claim, tracker.renew
    before = time.time()
    assert len(next(source.batches(10))) == 3
    (mid,) = source.in_flight()
    leases = {r: float(i["lease_until"]) for r, i in _items(aws).items()}
    assert all(before + 20 < lease <= before + 28.5 for lease in leases.values()), leases

    entry = source.leases._held[mid]
    entry.visible_until = time.monotonic() + 1  # about to become visible again
    source.leases._last_beat = 0.0
    source.heartbeat()
    renewed = {r: float(i["lease_until"]) for r, i in _items(aws).items()}
    assert all(renewed[r] > leases[r] for r in leases), (leases, renewed)
    assert all(lease <= time.time() + 30 for lease in renewed.values())  # never past it


def test_a_busy_copy_comes_back_when_the_holders_lease_ends(aws):
    table, queue = _table(aws), _queue(aws)
    now = time.time()
    _put(
        aws,
        {"request_id": "ended", "state": "processing", "processed_by": "B", "lease_until": now},
        {"request_id": "held", "state": "processing", "processed_by": "B", "lease_until": now + 20},
    )
    tracker = RequestsTable(table, run_id="A")
    decisions = tracker.claim(
        {
            "m-ended": [ImageRecord("s3://b/1.png", {"request_id": "ended"})],
            "m-held": [ImageRecord("s3://b/2.png", {"request_id": "held"})],
        },
        30,
    )
    assert decisions == {"m-ended": Claim.PROCESS, "m-held": Claim.BUSY}
    assert 15 < tracker.busy_seconds("m-held") <= 20  # the holder's lease, not a full timeout

    (mid,) = _send(aws, queue, {"request_id": "held", "s3_uri": "s3://b/2.png"})
    source = SqsSource(queue, message_limit=1)
    source.claim = tracker.claim
    asked = []
    source.busy_for = lambda m: asked.append(m) or -LEASE_MARGIN  # as if the lease just ended
    assert list(source.batches(10)) == [] and asked == [mid]
    # Hidden until the holder's lease ends (here: now), not for the 30 s visibility timeout.
    assert queue_counts(aws_client("sqs", aws), queue.queue_url) == (1, 0)


def test_a_lease_whose_holder_is_no_longer_running_is_taken_over(prefect_server, aws):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from infergraph.inference.liveness import FlowRunLiveness

    @flow(name="lease-holder")
    def holder() -> None: ...

    with get_client(sync_client=True) as client:
        dead = client.create_flow_run(holder, state=Running())
        client.set_flow_run_state(dead.id, Crashed(), force=True)
        live = client.create_flow_run(holder, state=Running())
    table = _table(aws)
    later = time.time() + 600
    _put(
        aws,
        {
            "request_id": "dead",
            "state": "processing",
            "processed_by": str(dead.id),
            "lease_until": later,
        },
        {
            "request_id": "live",
            "state": "processing",
            "processed_by": str(live.id),
            "lease_until": later,
        },
    )
    tracker = RequestsTable(table, run_id="A", run_alive=FlowRunLiveness())
    decisions = tracker.claim(
        {
            "m-dead": [ImageRecord("s3://b/1.png", {"request_id": "dead"})],
            "m-live": [ImageRecord("s3://b/2.png", {"request_id": "live"})],
        },
        30,
    )
    assert decisions == {"m-dead": Claim.PROCESS, "m-live": Claim.BUSY}
    items = _items(aws)
    assert (items["dead"]["processed_by"], items["live"]["processed_by"]) == ("A", str(live.id))
    assert tracker.taken_over == 1
    assert 590 < tracker.busy_seconds("m-live") <= 600


# -- the sweep and the redrive -----------------------------------------------------------


def _stuck(aws) -> tuple[DynamoDBTable, SqsQueue]:
    table, queue = _table(aws), _queue(aws)
    now = time.time()
    _put(
        aws,
        {
            "request_id": "parked",
            "state": "processing",
            "lease_until": now - 60,
            "s3_uri": "s3://b/p.png",
        },
        {
            "request_id": "old",
            "state": "processing",
            "lease_until": now - 7200,
            "s3_uri": "s3://b/o.png",
            "collection_id": "c1",
        },
        {"request_id": "recent", "state": "processing", "lease_until": now - 60},
        {"request_id": "live", "state": "processing", "lease_until": now + 600},
        {
            "request_id": "unannounced",
            "state": "completed",
            "result": json.dumps(_row("unannounced")),
            "updated_at_timestamp": now - 7200,
        },
        {
            "request_id": "announced",
            "state": "completed",
            NOTIFIED: now - 7200,
            "updated_at_timestamp": now - 7200,
        },
    )
    sqs = aws_client("sqs", aws)
    dlq = sqs.get_queue_url(QueueName="requests-dlq")["QueueUrl"]
    sqs.send_message(
        QueueUrl=dlq, MessageBody=json.dumps([{"request_id": "parked", "s3_uri": "s3://b/p.png"}])
    )
    return table, queue


def test_the_sweep_finishes_stuck_requests_as_errors_and_announces_them(aws):
    table, queue = _stuck(aws)
    topic, inbox = _topic(aws)
    report = sweep_requests(
        table, queue, "error", expired_after=3600, notices=CompletionNotices(topic)
    )

    items = _items(aws)
    assert {r: i["state"] for r, i in items.items()} == {
        "parked": "error",
        "old": "error",
        "recent": "processing",  # its lease ended a minute ago: its message may come back
        "live": "processing",
        "unannounced": "completed",
        "announced": "completed",
    }
    assert "dead-letter queue requests-dlq" in items["parked"]["errors"][0]
    assert "lease ended" in items["old"]["errors"][0]
    assert json.loads(items["old"]["result"])["collection_id"] == "c1"  # the request's fields
    assert _announced(aws, inbox) == ["old", "parked", "unannounced"]
    assert all(NOTIFIED in items[r] for r in ("old", "parked", "unannounced"))
    assert (report.in_dead_letter, report.expired, report.left_in_work) == (1, 1, 2)
    # The dead-letter queue was only read: its message is still there for a redrive.
    dlq = aws_client("sqs", aws).get_queue_url(QueueName="requests-dlq")["QueueUrl"]
    assert queue_counts(aws_client("sqs", aws), dlq) == (1, 0)


def test_the_sweep_can_requeue_stuck_requests_instead(aws):
    table, queue = _stuck(aws)
    report = sweep_requests(table, queue, "requeue", expired_after=3600)

    items = _items(aws)
    assert (items["old"]["state"], items["parked"]["state"]) == ("queued", "queued")
    assert "lease_until" not in items["old"] and report.requeued == 2
    sqs = aws_client("sqs", aws)
    bodies = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=queue.queue_url, MaxNumberOfMessages=10)["Messages"]
    ]
    assert sorted(b["request_id"] for b in bodies) == ["old", "parked"]
    assert {"request_id": "old", "s3_uri": "s3://b/o.png", "collection_id": "c1"} in bodies


def test_redrive_moves_dead_letters_back_without_the_aside_reason(aws):
    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    dlq = sqs.get_queue_url(QueueName="requests-dlq")["QueueUrl"]
    for i in range(13):
        sqs.send_message(
            QueueUrl=dlq,
            MessageBody=json.dumps({"request_id": f"r{i}", "s3_uri": "s3://b/1.png"}),
            MessageAttributes={
                "infergraph_error": {"DataType": "String", "StringValue": "crash loop"},
                "tenant": {"DataType": "String", "StringValue": "t1"},
            },
        )
    assert len(peek(sqs, dlq)) == 13 and queue_counts(sqs, dlq) == (13, 0)  # peek keeps them

    assert redrive(sqs, dlq, queue.queue_url, limit=3) == 3
    assert redrive_queue(queue) == 10  # the rest, found through the redrive policy
    assert queue_counts(sqs, dlq) == (0, 0)
    moved = peek(sqs, queue.queue_url)
    assert sorted(json.loads(m["Body"])["request_id"] for m in moved) == sorted(
        f"r{i}" for i in range(13)
    )
    assert all(set(m["MessageAttributes"]) == {"tenant"} for m in moved)


def test_redrive_of_a_queue_without_a_dead_letter_queue_says_so(aws):
    url = create_queue(aws_client("sqs", aws), Queue("plain", dead_letter=False))
    with pytest.raises(ValueError, match="plain has no dead-letter queue"):
        redrive_queue(SqsQueue(queue_url=url, credentials=aws))


def test_redrive_reopens_the_requests_the_sweep_finished_so_they_are_processed(aws):
    table, queue = _stuck(aws)
    sqs = aws_client("sqs", aws)
    dlq = sqs.get_queue_url(QueueName="requests-dlq")["QueueUrl"]
    sqs.send_message(  # a finished request's late copy, parked too
        QueueUrl=dlq, MessageBody=json.dumps({"request_id": "announced", "s3_uri": "s3://b/a.png"})
    )
    sweep_requests(table, queue, "error", expired_after=3600)
    assert _items(aws)["parked"]["state"] == "error"

    assert redrive_queue(queue, requests_table=table) == 2
    items = _items(aws)
    assert items["parked"]["state"] == "queued" and "errors" not in items["parked"]
    assert items["old"]["state"] == "error"  # swept, but its message is not the one moved
    assert items["announced"]["state"] == "completed"  # finished on its own: left alone
    source = SqsSource(queue)
    source.claim = RequestsTable(table, run_id="after-redrive").claim
    processed = [r.fields["request_id"] for batch in source.batches(10) for r in batch]
    assert processed == ["parked"]  # the announced request's copy is deleted unprocessed
