"""S3 and SQS sources against moto in server mode (real HTTP)."""

from __future__ import annotations

import json
import time

import pytest

import infergraph.inference.aws_schemes  # noqa: F401  (registers the s3:// and sqs:// sources)
from blocks.sqs import SqsQueue
from infergraph.aws.clients import aws_client
from infergraph.aws.sqs_leases import MAX_VISIBILITY_TIMEOUT, InFlight
from infergraph.devstack import Queue, create_queue
from infergraph.inference.sources.base import SourceError, UriList, open_source
from infergraph.inference.sources.messages import MalformedMessage, parse_body
from infergraph.inference.sources.s3 import S3Prefix
from infergraph.inference.sources.sqs import SqsSource
from infergraph.inference.specs import SpecError
from tests.support.queues import queue_counts
from tests.support.waiting import wait_until


def _put(s3, bucket: str, keys: list[str]) -> None:
    s3.create_bucket(Bucket=bucket)
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")


def _queue(aws, name: str = "requests", **settings) -> SqsQueue:
    sqs = aws_client("sqs", aws)
    url = create_queue(sqs, Queue(name, max_receive_count=settings.pop("max_receive_count", 3)))
    options = {"wait_time_seconds": 1, "visibility_timeout": 30, "retry_delay_seconds": 0}
    return SqsQueue(queue_url=url, credentials=aws, **{**options, **settings})


# -- S3 -----------------------------------------------------------------------------


def test_s3_prefix_lists_every_page_filters_suffixes_and_reads_the_manifest(aws):
    s3 = aws_client("s3", aws)
    images = [f"set/img_{i:02d}.png" for i in range(11)] + ["set/deep/x.JPG"]
    _put(s3, "pics", [*images, "set/notes.txt", "set/folder/", "other/img.png"])
    s3.put_object(Bucket="pics", Key="set/manifest.csv", Body=b"file,label\nimg_03.png,7\n")

    source = S3Prefix("pics", "set/", aws, page_size=4)  # forces three listing pages
    records = list(source.records())

    assert [r.uri for r in records] == [f"s3://pics/{k}" for k in sorted(images)]
    labelled = {r.uri: r.fields for r in records if r.fields}
    assert labelled == {"s3://pics/set/img_03.png": {"label": "7"}}


def test_bulk_clients_skip_timestamp_parsing_without_leaking_it_or_hiding_errors(aws):
    from datetime import datetime

    from infergraph.aws.storage import read_uri
    from infergraph.inference.fetch import _reason

    bulk = aws_client("s3", aws, bulk=True)
    assert aws_client("s3", aws, bulk=True) is bulk  # cached like the plain one
    _put(bulk, "pics", ["a.png"])
    listed = bulk.list_objects_v2(Bucket="pics")["Contents"][0]["LastModified"]
    assert isinstance(listed, str) and listed.startswith(str(datetime.now().year))
    plain = aws_client("s3", aws)  # made after the bulk client, from the same credentials
    assert plain is not bulk
    assert isinstance(plain.list_objects_v2(Bucket="pics")["Contents"][0]["LastModified"], datetime)

    assert read_uri("s3://pics/a.png", aws) == b"x"
    with pytest.raises(Exception) as missing:
        read_uri("s3://pics/b.png", aws)
    assert _reason(missing.value) == "NoSuchKey: The specified key does not exist."
    with pytest.raises(Exception) as bad_name:
        read_uri("s3://Bad_Bucket!/a.png", aws)
    assert 'Invalid bucket name "Bad_Bucket!"' in _reason(bad_name.value)


def test_s3_spec_strings_choose_object_prefix_or_pattern(aws):
    s3 = aws_client("s3", aws)
    _put(s3, "pics", ["a/1.png", "a/2.jpg", "a/b/3.png", "c.png"])

    one = open_source("s3://pics/c.png", credentials=aws)
    assert isinstance(one, UriList) and one.uris == ["s3://pics/c.png"]
    only_png = open_source("s3://pics/a/?suffixes=.png", credentials=aws)
    assert [r.uri for r in only_png.records()] == ["s3://pics/a/1.png", "s3://pics/a/b/3.png"]
    pattern = open_source("s3://pics/a/*.jpg", credentials=aws)
    assert [r.uri for r in pattern.records()] == ["s3://pics/a/2.jpg"]
    with pytest.raises(SpecError, match=r"unknown option 'suffix'.*suffixes"):
        open_source("s3://pics/a/?suffix=.png", credentials=aws)


def test_s3_listing_of_a_missing_bucket_names_it(aws):
    source = open_source("s3://no-such-bucket/x/", credentials=aws)
    with pytest.raises(SourceError, match=r"s3://no-such-bucket/x/.*NoSuchBucket"):
        list(source.records())


# -- SQS message bodies --------------------------------------------------------------


def test_request_lists_single_requests_dotted_and_candidate_keys():
    body = json.dumps(
        [
            {"request_id": "r1", "s3_uri": "s3://b/one.png", "collection_id": "c"},
            {"request_id": "r2", "image": {"uri": "s3://b/two.png"}},
            {"request_id": "r3", "image_uri": "s3://b/three.png", "s3_uri": ""},
            {"request_id": "r4", "s3_uri": "https://example.com/x.png"},
            {"request_id": "r5"},
            "not an object",
        ]
    )
    parsed = parse_body(body, ("s3_uri", "image.uri", "image_uri"))
    ok = [(r.uri, r.record_id) for r in parsed.requests if r.error is None]
    assert ok == [
        ("s3://b/one.png", "r1|s3://b/one.png"),
        ("s3://b/two.png", "r2|s3://b/two.png"),
        ("s3://b/three.png", "r3|s3://b/three.png"),
    ]
    assert parsed.requests[0].fields["collection_id"] == "c"
    errors = [r.error for r in parsed.requests if r.error]
    assert "request 4 of 6" in errors[0] and "not an s3://bucket/key URI" in errors[0]
    assert "request 5 of 6 has no image URI under any of 's3_uri'" in errors[1]
    assert "request 6 of 6 is a JSON string, not an object" in errors[2]

    single = parse_body(json.dumps({"s3_uri": "s3://b/k.png", "n": 1}))
    assert [(r.uri, r.fields["n"]) for r in single.requests] == [("s3://b/k.png", 1)]


def test_s3_event_notifications_are_decoded_and_test_events_ignored():
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2024-05-01T10:00:00Z",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "my+photo%281%29.PNG"}},
            },
            {
                "eventName": "ObjectRemoved:Delete",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "gone.png"}},
            },
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "notes.txt"}},
            },
        ]
    }
    parsed = parse_body(json.dumps(event), suffixes=(".png",))
    assert [(r.uri, r.record_id) for r in parsed.requests] == [
        ("s3://b/my photo(1).PNG", "s3://b/my photo(1).PNG")
    ]
    assert parsed.requests[0].fields["event_time"] == "2024-05-01T10:00:00Z"

    envelope = {"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": json.dumps(event)}
    assert len(parse_body(json.dumps(envelope), suffixes=(".png",)).requests) == 1
    test_event = parse_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    assert test_event.requests == [] and test_event.ignored == "S3 test event"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not valid JSON: Expecting property name"),
        ("42", "body is a JSON number"),
        ("[]", "empty list"),
    ],
)
def test_unreadable_bodies_say_why(body, reason):
    with pytest.raises(MalformedMessage, match=reason):
        parse_body(body)


# -- SQS source ----------------------------------------------------------------------


def test_queue_records_are_grouped_by_message_and_acknowledged_one_by_one(aws):
    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    two = [
        {"request_id": "a", "s3_uri": "s3://b/a.png"},
        {"request_id": "b", "s3_uri": "s3://b/b.png"},
    ]
    ids = {
        "two": sqs.send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps(two))["MessageId"],
        "one": sqs.send_message(
            QueueUrl=queue.queue_url, MessageBody=json.dumps({"s3_uri": "s3://b/c.png"})
        )["MessageId"],
    }
    source = SqsSource(queue, image_keys=("s3_uri",))
    batches = list(source.batches(2))

    records = [r for b in batches for r in b]
    assert {(r.group, r.group_size) for r in records} == {(ids["two"], 2), (ids["one"], 1)}
    assert {r.record_id for r in records} == {"a|s3://b/a.png", "b|s3://b/b.png", f"{ids['one']}#1"}
    assert set(source.in_flight()) == set(ids.values())

    source.ack([ids["two"]])
    source.nack([ids["one"]], "a transient failure")
    assert source.in_flight() == []
    again = wait_until(
        lambda: sqs.receive_message(
            QueueUrl=queue.queue_url,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages"),
        what="the released message to come back",
    )
    assert [(m["MessageId"], m["Attributes"]["ApproximateReceiveCount"]) for m in again] == [
        (ids["one"], "2")
    ]


def test_nack_resets_only_that_message(aws):
    queue = _queue(aws, retry_delay_seconds=3)
    sqs = aws_client("sqs", aws)
    for i in range(3):
        sqs.send_message(
            QueueUrl=queue.queue_url, MessageBody=json.dumps({"s3_uri": f"s3://b/{i}"})
        )
    source = SqsSource(queue)
    groups = [r.group for batch in source.batches(10) for r in batch]
    source.nack(groups[:1], "failed")
    assert queue_counts(sqs, queue.queue_url) == (0, 3)  # not at once: after the retry delay
    back = wait_until(
        lambda: sqs.receive_message(QueueUrl=queue.queue_url, MaxNumberOfMessages=10).get(
            "Messages"
        ),
        what="the released message to come back",
    )
    assert [m["MessageId"] for m in back] == groups[:1]  # the other two stay hidden
    assert queue_counts(sqs, queue.queue_url) == (0, 3)


def test_unreadable_message_goes_to_the_dead_letter_queue_with_its_reason(aws):
    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    bad = sqs.send_message(
        QueueUrl=queue.queue_url,
        MessageBody="{oops",
        MessageAttributes={"origin": {"DataType": "String", "StringValue": "test"}},
    )["MessageId"]
    sqs.send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps({"Event": "s3:TestEvent"}))
    source = SqsSource(queue)

    assert list(source.batches(10)) == []
    assert queue_counts(sqs, queue.queue_url) == (0, 0)  # test event deleted, bad one moved
    dlq = sqs.get_queue_url(QueueName="requests-dlq")["QueueUrl"]
    moved = sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"])["Messages"]
    assert moved[0]["Body"] == "{oops"
    attributes = moved[0]["MessageAttributes"]
    assert attributes["origin"]["StringValue"] == "test"
    assert "not valid JSON" in attributes["infergraph_error"]["StringValue"]
    assert bad in attributes["infergraph_source"]["StringValue"]
    assert any(bad in p and "moved to dead-letter queue requests-dlq" in p for p in source.problems)


def test_without_a_dead_letter_queue_an_unreadable_message_is_hidden_not_deleted(aws):
    sqs = aws_client("sqs", aws)
    url = create_queue(sqs, Queue("plain", dead_letter=False))
    sqs.send_message(QueueUrl=url, MessageBody="not json")
    source = SqsSource(SqsQueue(queue_url=url, credentials=aws, wait_time_seconds=0))

    assert list(source.batches(10)) == []
    assert queue_counts(sqs, url) == (0, 1)
    assert "no dead-letter queue is configured" in source.problems[0]


def test_heartbeat_keeps_a_slow_message_hidden(aws):
    queue = _queue(aws, visibility_timeout=2)
    sqs = aws_client("sqs", aws)
    sqs.send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps({"s3_uri": "s3://b/k"}))
    source = SqsSource(queue)
    [_batch] = list(source.batches(10))
    # A witness received later with the same 2-second visibility and no heartbeat: each
    # time it is visible again, the held message's own timeout has run out too.
    sqs.send_message(QueueUrl=queue.queue_url, MessageBody="witness")

    def witness_back() -> list[str]:
        source.heartbeat()  # the run's worker does this while the slow message is in work
        got = sqs.receive_message(
            QueueUrl=queue.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=2
        )
        return [m["Body"] for m in got.get("Messages", [])]

    for expiry in range(3):  # the first receive hides it; then it expires twice
        bodies = wait_until(witness_back, timeout=20, interval=0.2, what=f"witness {expiry}")
        assert bodies == ["witness"]  # never the held message: its visibility was extended
    assert queue_counts(sqs, queue.queue_url) == (0, 2)
    source.close()  # releases what was never finished
    assert queue_counts(sqs, queue.queue_url) == (1, 1)


def test_visibility_is_clamped_to_the_twelve_hour_limit(aws):
    assert SqsQueue(queue_url="u", visibility_timeout=86_400).visibility_timeout == 43_200
    queue = _queue(aws, visibility_timeout=600)
    source = SqsSource(queue)
    old = InFlight(
        "h",
        first_received=time.time() - MAX_VISIBILITY_TIMEOUT + 200,
        visible_until=0,
        receive_count=1,
    )
    assert 130 <= source.leases.allowed(old, 600) <= 140  # 200 s left, minus a 60 s margin
    fresh = InFlight("h", first_received=time.time(), visible_until=0, receive_count=1)
    assert source.leases.allowed(fresh, 600) == 600


def test_a_claim_decides_which_messages_are_processed(aws):
    from infergraph.inference.records import Claim

    PROCESS, FINISHED, BUSY = Claim

    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    ids = {
        sqs.send_message(
            QueueUrl=queue.queue_url, MessageBody=json.dumps({"s3_uri": f"s3://b/{name}.png"})
        )["MessageId"]: name
        for name in (PROCESS, FINISHED, BUSY)
    }
    asked = []

    def claim(groups, lease):
        asked.append(lease)
        return {mid: ids[mid] for mid in groups}

    source = SqsSource(queue)
    source.claim = claim
    records = [r for batch in source.batches(10) for r in batch]

    assert [r.uri for r in records] == ["s3://b/process.png"]
    assert len(asked) == 1 and 25 < asked[0] <= 28  # the invisibility left, less a margin
    assert source.skipped == 2
    assert [ids[m] for m in source.in_flight()] == [PROCESS]
    assert queue_counts(sqs, queue.queue_url) == (0, 2)  # finished: deleted; busy: left hidden


def test_a_drained_queue_ends_the_run_without_a_long_empty_poll(aws):
    queue = _queue(aws, wait_time_seconds=20)
    sqs = aws_client("sqs", aws)
    for i in range(5):
        sqs.send_message(
            QueueUrl=queue.queue_url, MessageBody=json.dumps({"s3_uri": f"s3://b/{i}"})
        )
    source = SqsSource(queue)
    batches = list(source.batches(2))  # the last ones still held, as in a run

    assert sorted(len(b) for b in batches)[-1] <= 2 and source.received == 5
    assert source.empty_long_polls == 0  # stopped once the queue had nothing left
    assert source.idle_seconds < queue.wait_time_seconds


def test_messages_held_by_another_consumer_are_waited_for(aws):
    queue = _queue(aws, wait_time_seconds=2)
    sqs = aws_client("sqs", aws)
    for i in range(3):
        sqs.send_message(
            QueueUrl=queue.queue_url, MessageBody=json.dumps({"s3_uri": f"s3://b/{i}"})
        )
    sqs.receive_message(QueueUrl=queue.queue_url, MaxNumberOfMessages=1, VisibilityTimeout=60)
    source = SqsSource(queue)
    list(source.batches(10))

    assert source.received == 2
    assert source.empty_long_polls == 1  # it may come back, so the run long-polled once


def test_message_limit_and_partial_batches(aws):
    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    for i in range(5):
        sqs.send_message(
            QueueUrl=queue.queue_url, MessageBody=json.dumps({"s3_uri": f"s3://b/{i}"})
        )
    source = SqsSource(queue, message_limit=3)
    batches = list(source.batches(2))
    assert [len(b) for b in batches] == [2, 1]  # a full batch, then what the limit left
    assert source.received == 3 and len(source.in_flight()) == 3
    taken = [r.uri for b in batches for r in b]
    # The two messages past the limit were never received: visible, for the next consumer.
    assert queue_counts(sqs, queue.queue_url) == (2, 3)
    rest = sqs.receive_message(QueueUrl=queue.queue_url, MaxNumberOfMessages=10)["Messages"]
    left = [json.loads(m["Body"])["s3_uri"] for m in rest]
    assert sorted(taken + left) == [f"s3://b/{i}" for i in range(5)]
