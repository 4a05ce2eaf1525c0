"""The sweep: requests stuck in ``processing`` are finished or sent again.

A request stays ``processing`` for ever when its message went to the dead-letter
queue (a crash loop, a poison message) or when its run died and the message was
lost. The sweep finds those whose lease has ended and whose message is in the
dead-letter queue, or whose lease ended more than ``expired_after`` seconds ago,
and either marks them ``error`` with the reason (``SweepAction.ERROR``) or sends
each request again, alone, and sets it back to ``queued`` (``REQUEUE``).
Requests under a live lease are never touched: every update is conditional on
the lease having ended.

With notices, errored requests are announced, and so are finished requests whose
notice never went out (a publish failed) once ``announce_after`` seconds passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from blocks.dynamodb import DynamoDBTable
from blocks.sqs import SqsQueue
from infergraph.aws.dead_letters import dead_letter_url, peek
from infergraph.aws.dynamodb import deserialize, serialize
from infergraph.aws.errors import describe_aws_error
from infergraph.inference.notices import CompletionNotices
from infergraph.inference.records import (
    NOTIFIED,
    RequestState,
    ResultChunk,
    RowStatus,
    SuccessState,
    SweepAction,
)
from infergraph.inference.requests_table import RequestsTable, stored_rows
from infergraph.inference.sources.messages import DEFAULT_IMAGE_KEYS, MalformedMessage, parse_body
from infergraph.logs import run_logger

#: Attributes the pipeline writes on a request; the rest is the producer's request.
BOOKKEEPING = frozenset(
    {
        "state",
        "attempts",
        "processed_by",
        "lease_until",
        "started_at_timestamp",
        "updated_at_timestamp",
        "completed_at_timestamp",
        "result",
        "errors",
        NOTIFIED,
        "swept_at_timestamp",
    }
)
#: Set on the requests the sweep finished as errors: a redrive may reopen them.
SWEPT = "swept_at_timestamp"
#: The lease has ended (or there never was one): nobody works on the request.
UNHELD = "#state = :processing AND (attribute_not_exists(lease_until) OR lease_until < :now)"


@dataclass
class SweepReport:
    processing: int = 0
    in_dead_letter: int = 0
    expired: int = 0
    marked_error: int = 0
    requeued: int = 0
    announced: int = 0
    left_in_work: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        return (
            f"{self.processing} request(s) in processing: {self.in_dead_letter} with their "
            f"message in the dead-letter queue, {self.expired} with a long-expired lease, "
            f"{self.left_in_work} left in work; {self.marked_error} marked error, "
            f"{self.requeued} requeued, {self.announced} announced"
            + (f"; {len(self.problems)} problem(s)" if self.problems else "")
        )


def sweep_requests(
    table: DynamoDBTable,
    queue: SqsQueue | None = None,
    action: SweepAction | str = SweepAction.ERROR,
    expired_after: float = 3600.0,
    notices: CompletionNotices | None = None,
    announce_after: float = 300.0,
) -> SweepReport:
    """Finish or requeue stuck requests of ``table``; ``queue`` is where they came from."""
    action = SweepAction(action)
    log = run_logger(__name__)
    report = SweepReport()
    parked, dlq_name = _parked_requests(table, queue, report) if queue else (set(), "")
    tracker = RequestsTable(table, run_id="sweep", notices=notices)
    to_announce: list[dict[str, Any]] = []
    now = time.time()
    for item in _scan(table):
        state = item.get("state")
        if state in (*SuccessState, RequestState.ERROR):  # finished
            updated = float(item.get("updated_at_timestamp") or 0)
            if notices and NOTIFIED not in item and updated < now - announce_after:
                to_announce.extend(stored_rows(item))
            continue
        if state != RequestState.PROCESSING:
            continue
        report.processing += 1
        lease = float(item.get("lease_until") or 0)
        key = table.key_of(item)
        if lease >= now:
            report.left_in_work += 1
            continue
        if _hashable(key) in parked:
            report.in_dead_letter += 1
            reason = f"its message is in the dead-letter queue {dlq_name}"
        elif lease < now - expired_after:
            report.expired += 1
            reason = (
                f"its lease ended {now - lease:.0f} s ago (flow run "
                f"{item.get('processed_by', '?')}) and no result was written"
            )
        else:
            report.left_in_work += 1
            continue
        request = {k: v for k, v in item.items() if k not in BOOKKEEPING}
        try:
            if action == SweepAction.REQUEUE and queue is not None:
                _requeue(table, queue, key, request)
                report.requeued += 1
            else:
                row = {**request, "status": RowStatus.ERROR, "error": f"swept: {reason}"}
                if _mark_error(table, key, row):
                    report.marked_error += 1
                    to_announce.append(row)
        except ClientError as exc:
            report.problems.append(f"request {key}: {describe_aws_error(exc)}")
    if notices and to_announce:
        report.problems += tracker.announce([ResultChunk("sweep", to_announce)])
        report.announced = len(to_announce)
    log.info("sweep of %s: %s", table.table_name, report.text())
    return report


def _parked_requests(
    table: DynamoDBTable, queue: SqsQueue, report: SweepReport
) -> tuple[set[tuple[Any, ...]], str]:
    """Keys of the requests whose message is in ``queue``'s dead-letter queue."""
    client = queue.client()
    url = queue.dead_letter_queue_url or dead_letter_url(client, queue.queue_url)
    if not url:
        report.problems.append(f"queue {queue.queue_name} has no dead-letter queue")
        return set(), ""
    keys = {_hashable(key) for key in _request_keys(table, peek(client, url))}
    return keys, url.rstrip("/").rsplit("/", 1)[-1]


def _request_keys(table: DynamoDBTable, messages: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """The requests table keys of the requests these messages carry (malformed ones skipped)."""
    for message in messages:
        try:
            parsed = parse_body(message.get("Body", ""), DEFAULT_IMAGE_KEYS)
        except MalformedMessage:
            continue
        for request in parsed.requests:
            try:
                yield table.key_of(request.fields)
            except KeyError:
                continue


#: The attribute names the error and reopen updates write.
RESULT_NAMES = {"#state": "state", "#result": "result", "#errors": "errors"}


def _update_if(table: DynamoDBTable, key: dict[str, Any], **params: Any) -> bool:
    """One conditional update; False when its condition no longer holds (another run acted)."""
    try:
        table.client().update_item(TableName=table.table_name, Key=serialize(key), **params)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _mark_error(table: DynamoDBTable, key: dict[str, Any], row: dict[str, Any]) -> bool:
    now = _stamp(time.time())
    return _update_if(  # False: claimed or finished meanwhile
        table,
        key,
        UpdateExpression=(
            "SET #state = :error, #result = :result, #errors = :errors, "
            "completed_at_timestamp = :now, updated_at_timestamp = :now, "
            f"{SWEPT} = :now REMOVE lease_until"
        ),
        ConditionExpression=UNHELD,
        ExpressionAttributeNames=RESULT_NAMES,
        ExpressionAttributeValues=serialize(
            {
                ":error": RequestState.ERROR,
                ":processing": RequestState.PROCESSING,
                ":result": json.dumps(row, default=str),
                ":errors": [row["error"]],
                ":now": now,
            }
        ),
    )


def _requeue(
    table: DynamoDBTable, queue: SqsQueue, key: dict[str, Any], request: dict[str, Any]
) -> None:
    """Send first, then set back to queued: a crash in between leaves a duplicate, not a loss."""
    params: dict[str, Any] = {
        "QueueUrl": queue.queue_url,
        "MessageBody": json.dumps(request, default=_plain),
    }
    if queue.queue_url.endswith(".fifo"):
        params.update(MessageGroupId="infergraph-sweep", MessageDeduplicationId=str(time.time()))
    queue.client().send_message(**params)
    _update_if(
        table,
        key,
        UpdateExpression=(
            "SET #state = :queued, updated_at_timestamp = :now REMOVE lease_until, processed_by"
        ),
        ConditionExpression=UNHELD,
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues=serialize(
            {
                ":queued": RequestState.QUEUED,
                ":processing": RequestState.PROCESSING,
                ":now": _stamp(time.time()),
            }
        ),
    )


def _scan(table: DynamoDBTable) -> Iterator[dict[str, Any]]:
    client, kwargs = table.client(), {}
    while True:
        page = client.scan(TableName=table.table_name, **kwargs)
        yield from (deserialize(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _hashable(key: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in key.items()))


def _stamp(seconds: float) -> Decimal:
    return Decimal(f"{seconds:.3f}")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def reopen_swept(table: DynamoDBTable, messages: list[dict[str, Any]]) -> int:
    """Set the swept requests these messages carry back to ``queued``; how many.

    Called before their messages are redriven: a request the sweep finished as an
    error would otherwise make its redriven message a late duplicate, deleted
    unprocessed. Requests that finished on their own are left as they are.
    """
    reopened = 0
    for key in _request_keys(table, messages):
        reopened += _update_if(
            table,
            key,
            UpdateExpression=(
                f"SET #state = :queued, updated_at_timestamp = :now "
                f"REMOVE {SWEPT}, #result, #errors, {NOTIFIED}, completed_at_timestamp"
            ),
            ConditionExpression=f"#state = :error AND attribute_exists({SWEPT})",
            ExpressionAttributeNames=RESULT_NAMES,
            ExpressionAttributeValues=serialize(
                {
                    ":queued": RequestState.QUEUED,
                    ":error": RequestState.ERROR,
                    ":now": _stamp(time.time()),
                }
            ),
        )
    return reopened
