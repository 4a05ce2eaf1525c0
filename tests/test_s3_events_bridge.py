"""The S3 events bridge against moto in server mode and the session's real Prefect API."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from blocks.sqs import SqsQueue
from infergraph.aws.clients import aws_client
from infergraph.devstack import Queue, create_queue
from infergraph.events.bridge import (
    EVENT,
    S3EventQueue,
    Stopper,
    bridge_s3_events,
    event_id,
    object_event,
    object_kind,
)
from infergraph.inference.sources.messages import S3Object
from tests.support.queues import queue_counts
from tests.support.servers import REPO, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def _unique(prefix: str) -> str:
    """Names unique in the session: the Prefect server keeps every test's events."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _queue(aws, name: str | None = None, **settings: Any) -> SqsQueue:
    sqs = aws_client("sqs", aws)
    url = create_queue(sqs, Queue(name or _unique("s3-events"), max_receive_count=3))
    options = {"wait_time_seconds": 1, "visibility_timeout": 30, "retry_delay_seconds": 0}
    return SqsQueue(queue_url=url, credentials=aws, **{**options, **settings})


def _record(bucket: str, key: str, **extra: Any) -> dict[str, Any]:
    """An S3 notification record as AWS sends it: the key URL-encoded by the caller."""
    obj = {"key": key, "size": extra.pop("size", 3), "eTag": extra.pop("etag", "abc")}
    obj.update(extra.pop("object", {}))
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": extra.pop("time", datetime.now(UTC).isoformat().replace("+00:00", "Z")),
        "eventName": extra.pop("name", "ObjectCreated:Put"),
        "s3": {"bucket": {"name": bucket}, "object": obj},
    }


def _send(sqs, queue: SqsQueue, *bodies: Any) -> list[str]:
    ids = []
    for body in bodies:
        text = body if isinstance(body, str) else json.dumps(body)
        ids.append(sqs.send_message(QueueUrl=queue.queue_url, MessageBody=text)["MessageId"])
    return ids


def _events(bucket: str, count: int, timeout: float = 20.0) -> list[Any]:
    """The bucket's events as the server stored them, once ``count`` have arrived."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(
        event=EventNameFilter(name=[EVENT]),
        resource=EventResourceFilter(id=[f"aws.s3.bucket.{bucket}"]),
    )
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            events = client.read_events(flt, limit=50).events
            if len(events) >= count or time.monotonic() > deadline:
                return sorted(events, key=lambda e: e.payload["key"])
            time.sleep(0.3)


def _bridge(queue: SqsQueue, **options: Any):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return bridge_s3_events(S3EventQueue(queue), client, wait_seconds=0, **options)


# -- event shape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("jobs/2024/a.rdfoxjob.json", "jobspec"),
        ("a.RDFOXJOB.JSON", "other"),  # S3 suffix filters are case-sensitive too
        ("ds/job-1/rdfox.log", "reasoner-log"),
        ("bridge_closed/run.json", "scenario-run"),
        ("rdfox.log", "other"),
        ("ds/job-1/my-rdfox.log", "other"),
        ("in/x.PNG", "image"),
        ("in/x.tiff", "image"),
        ("in/x.jpeg.txt", "other"),
        ("in/folder/", "other"),
    ],
)
def test_the_kind_label_follows_the_key_ending(key, kind):
    assert object_kind(key) == kind


def test_event_ids_repeat_for_a_redelivery_and_differ_for_a_new_upload():
    first = S3Object("b", "k.png", 3, "e1", "ObjectCreated:Put", "2026-01-01T00:00:00Z", "A1")
    assert event_id(first) == event_id(S3Object(**{**_fields(first)}))
    assert event_id(first) != event_id(S3Object(**{**_fields(first), "sequencer": "A2"}))
    assert event_id(first) != event_id(S3Object(**{**_fields(first), "key": "k2.png"}))
    # Without a sequencer (emulators), the same bytes uploaded again are told apart by time.
    bare = S3Object("b", "k.png", 3, "e1", "ObjectCreated:Put", "2026-01-01T00:00:00Z")
    assert event_id(bare) != event_id(S3Object(**{**_fields(bare), "event_time": "2026-01-02"}))
    assert event_id(bare) == event_id(S3Object(**_fields(bare)))

    event = object_event(first)
    assert event.event == EVENT and event.id == event_id(first)
    assert dict(event.resource) == {
        "prefect.resource.id": "aws.s3.bucket.b",
        "aws.s3.bucket": "b",
        "aws.s3.object.kind": "image",
    }
    assert event.payload == {
        "key": "k.png",
        "size": 3,
        "etag": "e1",
        "event_name": "ObjectCreated:Put",
        "event_time": "2026-01-01T00:00:00Z",
    }
    assert event.occurred == datetime(2026, 1, 1, tzinfo=UTC)


def _fields(obj: S3Object) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in S3Object.__slots__}


# -- against moto and the Prefect API ------------------------------------------------


def test_real_bucket_notifications_become_events_and_their_messages_are_deleted(
    aws, prefect_server
):
    from flows.s3_events_bridge import s3_events_bridge

    queue = _queue(aws)
    block = _unique("s3-events")
    queue.save(block)
    s3, sqs = aws_client("s3", aws), aws_client("sqs", aws)
    bucket = _unique("uploads")
    s3.create_bucket(Bucket=bucket)
    arn = sqs.get_queue_attributes(QueueUrl=queue.queue_url, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                }
            ]
        },
    )  # S3 first sends an s3:TestEvent to the queue
    uploads = {
        "in/my photo+1 (é).png": b"png bytes",
        "jobs/job 1.rdfoxjob.json": b"{}",
        "ds/job-1/rdfox.log": b"log",
        "notes.txt": b"x",
    }
    for key, body in uploads.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.delete_object(Bucket=bucket, Key="notes.txt")  # ObjectRemoved: not bridged

    counts = s3_events_bridge(queue=block, wait_seconds=1)

    assert counts == {
        "received": 6,
        "events": 4,
        "deleted": 4,
        "ignored": 2,  # the test event and the removal
        "set_aside": 0,
        "failed": 0,
    }
    assert queue_counts(sqs, queue.queue_url) == (0, 0)
    events = _events(bucket, 4)
    assert [e.payload["key"] for e in events] == sorted(uploads)
    assert [e.resource["aws.s3.object.kind"] for e in events] == [
        "reasoner-log",
        "image",
        "jobspec",
        "other",
    ]
    for event in events:
        body = uploads[event.payload["key"]]
        assert event.resource.id == f"aws.s3.bucket.{bucket}"
        assert event.resource["aws.s3.bucket"] == bucket
        assert event.payload["size"] == len(body)
        assert event.payload["etag"] == hashlib.md5(body).hexdigest()
        assert event.payload["event_name"] == "ObjectCreated:Put"


def test_hand_sent_bodies_encoded_keys_several_records_envelopes_and_bad_bodies(
    aws, prefect_server
):
    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    bucket = _unique("hand")
    several = {
        "Records": [
            _record(bucket, "a+b%2Bc.png"),  # "a b+c.png"
            _record(bucket, "%E2%9C%93+ok%21.jpg", size=7),  # "✓ ok!.jpg"
            _record(bucket, "gone.png", name="ObjectRemoved:Delete"),
        ]
    }
    sns = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
        "Message": json.dumps({"Records": [_record(bucket, "via/sns+topic.rdfoxjob.json")]}),
    }
    eventbridge = {
        "version": "0",
        "source": "aws.s3",
        "detail-type": "Object Created",
        "time": datetime.now(UTC).isoformat(),
        "detail": {
            "bucket": {"name": bucket},
            "object": {"key": "eb/x y.log", "size": 5, "etag": "e5", "sequencer": "0A"},
            "reason": "PutObject",
        },
    }
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}
    not_json, request = "{not json", {"s3_uri": f"s3://{bucket}/x.png"}
    ids = _send(sqs, queue, several, sns, eventbridge, test_event, not_json, request)

    counts = _bridge(queue)

    assert (counts.received, counts.events, counts.deleted) == (6, 4, 3)
    assert (counts.ignored, counts.set_aside, counts.failed) == (1, 2, 0)
    assert queue_counts(sqs, queue.queue_url) == (0, 0)
    events = _events(bucket, 4)
    assert [(e.payload["key"], e.resource["aws.s3.object.kind"]) for e in events] == [
        ("a b+c.png", "image"),
        ("eb/x y.log", "other"),
        ("via/sns topic.rdfoxjob.json", "jobspec"),
        ("✓ ok!.jpg", "image"),
    ]
    assert events[1].payload["event_name"] == "ObjectCreated:Put"
    assert events[3].payload["size"] == 7

    dlq = queue.queue_url + "-dlq"
    aside = sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    reasons = {m["Body"]: m["MessageAttributes"]["infergraph_error"]["StringValue"] for m in aside}
    assert "not valid JSON" in reasons[not_json]
    assert "not an S3 event notification" in reasons[json.dumps(request)]
    sources = {m["MessageAttributes"]["infergraph_source"]["StringValue"] for m in aside}
    assert sources == {f"{queue.queue_url} message {ids[4]}", f"{queue.queue_url} message {ids[5]}"}


def test_an_eventbridge_rule_feeding_the_queue_gives_the_same_events(aws, prefect_server):
    """The EventBridge alternative: bucket → EventBridge → rule → SQS target → bridge."""
    queue = _queue(aws)
    s3, sqs, events = (aws_client(s, aws) for s in ("s3", "sqs", "events"))
    bucket = _unique("eb")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}},
    }
    events.put_rule(Name=bucket, EventPattern=json.dumps(pattern))
    arn = sqs.get_queue_attributes(QueueUrl=queue.queue_url, AttributeNames=["QueueArn"])
    events.put_targets(
        Rule=bucket, Targets=[{"Id": "bridge", "Arn": arn["Attributes"]["QueueArn"]}]
    )
    s3.put_object(Bucket=bucket, Key="jobs/a b:1.rdfoxjob.json", Body=b"{}")

    counts = _bridge(queue)

    assert (counts.received, counts.events, counts.deleted) == (1, 1, 1)
    (event,) = _events(bucket, 1)
    assert event.resource["aws.s3.object.kind"] == "jobspec"
    assert event.payload["key"] == "jobs/a b:1.rdfoxjob.json"  # EventBridge does not encode
    assert (event.payload["size"], event.payload["etag"]) == (2, hashlib.md5(b"{}").hexdigest())


@pytest.fixture
def closed_api() -> Iterator[str]:
    """PREFECT_API_URL pointing at a port nothing listens on."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


def test_an_unreachable_api_leaves_the_message_and_a_later_run_delivers_it(aws, prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    bucket = _unique("later")
    _send(sqs, queue, {"Records": [_record(bucket, "a.png"), _record(bucket, "b.png")]})

    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        down = _bridge(queue)
    assert (down.received, down.events, down.deleted, down.failed) == (1, 0, 0, 1)
    assert queue_counts(sqs, queue.queue_url) == (1, 0)  # released at once (retry delay 0)

    up = _bridge(queue)
    assert (up.received, up.events, up.deleted, up.failed) == (1, 2, 1, 0)
    assert queue_counts(sqs, queue.queue_url) == (0, 0)
    assert [e.payload["key"] for e in _events(bucket, 2)] == ["a.png", "b.png"]


class _Api:
    """A real HTTP server in the Prefect API's place that refuses chosen events."""

    def __init__(self, status_for: Callable[[list[dict[str, Any]]], int]) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # /csrf-token, /health
                self._answer(404 if "csrf" in self.path else 200)

            def do_POST(self):
                events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.posts.append(events)
                self._answer(status_for(events))

            def _answer(self, status: int) -> None:
                body = b"" if status in (200, 204) else b'{"detail": "refused"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [422, 500])
def test_refused_events_keep_only_their_own_message(aws, status):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def answer(events: list[dict[str, Any]]) -> int:
        return status if any("poison" in e["payload"]["key"] for e in events) else 204

    api = _Api(answer)
    queue = _queue(aws, retry_delay_seconds=30)
    sqs = aws_client("sqs", aws)
    _send(sqs, queue, *({"Records": [_record("b", key)]} for key in ("1.png", "poison", "2.png")))
    try:
        with temporary_settings({PREFECT_API_URL: api.url}):
            counts = _bridge(queue)
    finally:
        api.close()

    posted = [[e["payload"]["key"] for e in batch] for batch in api.posts]
    assert sorted(posted[0]) == ["1.png", "2.png", "poison"]  # one request per receive
    if status == 422:  # this content is refused: the others go through and are deleted
        assert (counts.received, counts.events, counts.deleted, counts.failed) == (3, 2, 2, 1)
        assert sorted(posted[1:]) == [["1.png"], ["2.png"], ["poison"]]  # each alone
        assert queue_counts(sqs, queue.queue_url) == (0, 1)  # hidden for the retry delay
    else:  # the API fails as a whole: nothing is deleted, the run stops
        assert (counts.received, counts.events, counts.deleted, counts.failed) == (3, 0, 0, 3)
        assert len(posted) == 1
        assert queue_counts(sqs, queue.queue_url) == (0, 3)
    events = api.posts[0]
    assert {e["event"] for e in events} == {EVENT}
    assert all(e["id"] == str(uuid.UUID(e["id"])) for e in events)


def test_a_service_run_waits_for_the_api_instead_of_burning_receives(aws, closed_api):
    queue = _queue(aws)
    sqs = aws_client("sqs", aws)
    _send(sqs, queue, {"Records": [_record("b", "a.png")]})
    stopper = Stopper()
    threading.Timer(2.5, stopper.event.set).start()

    started = time.monotonic()
    counts = _bridge(queue, idle_polls=0, stopper=stopper)

    assert time.monotonic() - started < 6
    assert (counts.received, counts.failed) == (1, 1)
    again = sqs.receive_message(
        QueueUrl=queue.queue_url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"  # one bridge receive


def test_a_redelivered_notification_starts_no_second_automation_run(aws, prefect_server):
    """The server skips an event id it has already processed: checked with an automation."""
    from prefect.client.orchestration import get_client
    from prefect.events.actions import DoNothing
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    bucket = _unique("dedup")
    with get_client(sync_client=True) as client:
        automation = client.create_automation(
            AutomationCore(
                name=bucket,
                trigger=EventTrigger(
                    expect={EVENT},
                    match={"prefect.resource.id": f"aws.s3.bucket.{bucket}"},
                    posture=Posture.Reactive,
                    threshold=1,
                ),
                actions=[DoNothing()],
            )
        )

        def firings() -> list[str]:
            """Ids of the events that fired the automation, one per firing."""
            flt = EventFilter(event=EventNameFilter(name=["prefect.automation.triggered"]))
            page = client.read_events(flt, limit=50)
            return [
                r.id.removeprefix("prefect.event.")
                for e in page.events
                if e.resource.id == f"prefect.automation.{automation}"
                for r in e.related
                if r.role == "triggering-event"
            ]

        def fired_once(done: Callable[[list[str]], bool], timeout: float = 20) -> list[str]:
            deadline = time.monotonic() + timeout
            while not done(fired := firings()) and time.monotonic() < deadline:
                time.sleep(0.3)
            return fired

        def stored(key: str, count: int) -> list[str]:
            def ids() -> list[str]:
                got = [str(e.id) for e in _events(bucket, 0) if e.payload["key"] == key]
                return got if len(got) >= count else []

            return wait_until(ids, timeout=20, interval=0.3, what=f"stored events of {key}")

        queue = _queue(aws)
        sqs = aws_client("sqs", aws)
        # Until the server's trigger service has loaded the automation, probe it.
        for n in range(40):
            _send(sqs, queue, {"Records": [_record(bucket, f"probe-{n}.txt", time=None)]})
            _bridge(queue)
            if fired_once(bool, timeout=0.5):
                break
        assert fired_once(bool)

        upload = _record(bucket, "x.png", object={"sequencer": "0001"})
        again = _record(bucket, "x.png", object={"sequencer": "0002"})  # uploaded again
        _send(sqs, queue, {"Records": [upload]}, {"Records": [upload]}, {"Records": [again]})
        counts = _bridge(queue)
        assert (counts.events, counts.deleted) == (3, 3)

        ids = sorted(stored("x.png", 2))
        assert len(ids) == 2  # the redelivered id was stored once
        fired_once(lambda fired: set(ids) <= set(fired))
        # Evidence that the duplicate has been through the trigger service: an upload sent
        # only now has fired too, and the server evaluates events in the order they came.
        _send(sqs, queue, {"Records": [_record(bucket, "y.png", object={"sequencer": "0003"})]})
        assert _bridge(queue).events == 1
        [later] = stored("y.png", 1)
        fired = fired_once(lambda fired: later in fired)
        assert later in fired
        assert sorted(i for i in fired if i in ids) == ids  # one run per upload, not per message


# -- the command ---------------------------------------------------------------------


def _command_env(tmp_path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k == "PREFECT_HOME"
    }
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(tmp_path / "home"))
    return env


def test_the_command_once_drains_and_exits(aws, prefect_server, tmp_path):
    queue = _queue(aws)
    block = _unique("s3-events")
    queue.save(block)
    sqs = aws_client("sqs", aws)
    bucket = _unique("cli")
    _send(sqs, queue, {"Records": [_record(bucket, "in/a+b.png")]}, "not json")

    done = subprocess.run(
        [sys.executable, "-m", "infergraph.events", "--queue", block, "--once"],
        cwd=REPO,
        env=_command_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts == {
        "received": 2,
        "events": 1,
        "deleted": 1,
        "ignored": 0,
        "set_aside": 1,
        "failed": 0,
    }
    assert "not valid JSON" in done.stderr
    assert [e.payload["key"] for e in _events(bucket, 1)] == ["in/a b.png"]
    assert queue_counts(sqs, queue.queue_url) == (0, 0)


@pytest.mark.timeout(240)  # the session's Prefect server may start inside this test
def test_the_command_serves_until_sigterm_stops_it(aws, prefect_server, tmp_path):
    queue = _queue(aws, wait_time_seconds=20)
    block = _unique("s3-events")
    queue.save(block)
    sqs = aws_client("sqs", aws)
    bucket = _unique("svc")
    proc = subprocess.Popen(
        [sys.executable, "-m", "infergraph.events", "--queue", block],
        cwd=REPO,
        env=_command_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _send(sqs, queue, {"Records": [_record(bucket, "live.png")]})
        assert [e.payload["key"] for e in _events(bucket, 1, timeout=60)] == ["live.png"]
        # Deleted after its event was accepted: the loop is on its way back to a long poll.
        wait_until(lambda: queue_counts(sqs, queue.queue_url) == (0, 0), what="the delete")
        proc.send_signal(signal.SIGTERM)
        # Sent after the signal: a long poll left running would receive it within its 20 s.
        _send(sqs, queue, {"Records": [_record(bucket, "late.png")]})
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    counts = json.loads(out.strip().splitlines()[-1])
    assert (counts["received"], counts["deleted"]) == (1, 1), err  # the poll was cut short
    assert "SIGTERM: stopping" in err
    assert sum(queue_counts(sqs, queue.queue_url)) == 1  # the late message is still queued


def test_sigint_cuts_a_long_poll_short(aws, closed_api):
    """In this process: the handler interrupts a 20-second receive at once."""
    queue = _queue(aws, wait_time_seconds=20)
    stopper = Stopper()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stopper.install()
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        started = time.monotonic()
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            counts = bridge_s3_events(S3EventQueue(queue), client, idle_polls=0, stopper=stopper)
        assert 1.0 < time.monotonic() - started < 4.0
    finally:
        timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert stopper.event.is_set() and counts.received == 0
