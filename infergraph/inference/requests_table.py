"""The DynamoDB requests table: one item per request, moved through its states.

``state`` goes ``queued → processing → completed | error``. Every move is a
conditional update, so a late duplicate delivery can never move a finished
request back. Other attributes of the item (whatever the producer stored, e.g.
``collection_id``) are kept.

Moving to ``processing`` is also a claim with a lease: a run takes a request
only if it is new, ``queued``, or ``processing`` under an expired lease (its run
died). A queue may deliver one message to two consumers (SQS standard queues
are at-least-once); the second finds the request claimed or finished and leaves
it alone, so each request is processed once.

The lease ends with the message's invisibility (a little before it) and the
visibility heartbeat renews both, so a message redelivered after its run died
meets an expired lease and is taken at once. A lease that has not expired but
whose holder's flow run is no longer running (``run_alive``) is taken over too.

With ``notices`` set, a finished request is announced: its completion notice is
published after it is finished and ``notified_at_timestamp`` written once the
publish succeeded; a redelivered message whose finished requests lack the marker
publishes their notices from the stored results before it is deleted.

Attributes written: ``state``, ``attempts`` (incremented by each claim),
``processed_by`` (the flow run id), ``lease_until``, ``started_at_timestamp``,
``updated_at_timestamp`` and, when finished, ``completed_at_timestamp``,
``result`` (JSON: the result row, or a list of rows when several images share a
request id), ``errors`` (list of strings) and ``notified_at_timestamp``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from blocks.dynamodb import DynamoDBTable
from infergraph.aws.dynamodb import deserialize, serialize
from infergraph.aws.errors import describe_aws_error
from infergraph.inference.notices import CompletionNotices
from infergraph.inference.records import (
    NOTIFIED,
    Claim,
    ImageRecord,
    RequestState,
    ResultChunk,
    RowStatus,
    SuccessState,
    row_ok,
)
from infergraph.inference.sinks.base import Sink
from infergraph.inference.writing import write_chunks
from infergraph.logs import run_logger

QUEUED, PROCESSING, COMPLETED, ERROR = RequestState
PROCESS, FINISHED, BUSY = Claim
#: A request this run may take: new, queued, or held under an expired lease (or by us).
CLAIM_CONDITION = (
    "attribute_not_exists(#state) OR #state = :queued OR (#state = :processing AND "
    "(attribute_not_exists(lease_until) OR lease_until < :now OR processed_by = :run))"
)
#: A request held under a live lease by a run that is no longer running.
TAKEOVER_CONDITION = "#state = :processing AND processed_by = :holder"
#: A request this run still holds.
MINE_CONDITION = "#state = :processing AND processed_by = :run"
#: A request that is not finished yet.
OPEN_CONDITION = "attribute_not_exists(#state) OR #state IN (:queued, :processing)"
CLAIMED = "claimed"


class RequestsTable(Sink):
    """Claims requests as they are received and finishes them when their results are written."""

    def __init__(
        self,
        table: DynamoDBTable,
        concurrency: int = 16,
        run_id: str | None = None,
        success_state: str = SuccessState.COMPLETED,
        notices: CompletionNotices | None = None,
        run_alive: Callable[[str], bool] | None = None,
    ) -> None:
        self.table = table
        self.success_state = SuccessState(success_state)  # completed, or processed for old readers
        self.run_id = run_id or "-"
        self.concurrency = concurrency
        self.notices = notices
        self.run_alive = run_alive
        self.name = f"requests table {table.table_name}"
        self.late_duplicates = 0
        self.taken_over = 0
        self.renotified = 0
        self.problems: list[str] = []
        self._busy_until: dict[str, float] = {}
        self._count_lock = threading.Lock()
        self._log = run_logger(__name__)

    # -- claiming ------------------------------------------------------------------

    def claim(
        self, groups: Mapping[str, Sequence[ImageRecord]], lease_seconds: float
    ) -> dict[str, str]:
        """Claim every group's requests; per group ``process``, ``finished`` or ``busy``.

        ``finished``: every record is a request that is already completed or in
        error (a late duplicate); those not yet announced are announced first, and
        if that fails the group is ``busy`` so its message stays for a retry.
        ``busy``: another live run holds one of them (a duplicate delivery); this
        run's claims in that group are given back. A
        claim that fails for another reason is reported and the group processed:
        the state is bookkeeping and must not stop the work.
        """
        keys = {
            group: {_hashable(k): k for r in records if (k := self._key(r.fields)) is not None}
            for group, records in groups.items()
        }
        unique = {h: k for group_keys in keys.values() for h, k in group_keys.items()}
        # The lease's end is fixed now, not when each update gets its turn in the pool.
        deadline = time.time() + max(0.0, lease_seconds)
        claimed = self._each(self._claim_one, unique.values(), deadline)
        outcomes = {h: outcome for h, (outcome, _) in zip(unique, claimed, strict=True)}
        olds = {h: old for h, (_, old) in zip(unique, claimed, strict=True)}
        decisions: dict[str, str] = {}
        for group, records in groups.items():
            states = [outcomes[h] for h in keys[group]]
            self._busy_until.pop(group, None)
            if BUSY in states:
                mine = [keys[group][h] for h in keys[group] if outcomes[h] == CLAIMED]
                self._each(self._release_one, mine)
                decisions[group] = BUSY
                leases = [float(olds[h].get("lease_until", 0)) for h in keys[group]]
                self._busy_until[group] = max(leases, default=0.0)
            elif states and set(states) == {FINISHED} and all(self._key(r.fields) for r in records):
                unannounced = [olds[h] for h in keys[group] if NOTIFIED not in olds[h]]
                decisions[group] = FINISHED if self._announce_stored(unannounced) else BUSY
            else:
                decisions[group] = PROCESS
        return decisions

    def busy_seconds(self, group: str) -> float | None:
        """Seconds until the lease that made ``group`` busy ends (None: unknown)."""
        until = self._busy_until.get(group)
        return None if not until else max(0.0, until - time.time())

    def renew(self, groups: Mapping[str, Sequence[ImageRecord]], lease_seconds: float) -> None:
        """Extend this run's leases on the groups' requests (their messages were extended)."""
        unique = {
            _hashable(k): k
            for records in groups.values()
            for r in records
            if (k := self._key(r.fields)) is not None
        }
        self._each(self._renew_one, unique.values(), time.time() + max(0.0, lease_seconds))

    def mark_processing(self, records: Sequence[ImageRecord]) -> list[str]:
        """Claim a batch's requests without deciding anything (sources that do not redeliver)."""
        before = len(self.problems)
        self.claim({"batch": records}, lease_seconds=0)
        return self.problems[before:]

    def _claim_one(self, key: dict[str, Any], deadline: float) -> tuple[str, dict[str, Any]]:
        """(outcome, the item as it was when the claim was refused)."""
        outcome, old = self._update_claim(key, deadline, CLAIM_CONDITION, {":queued": QUEUED})
        holder = str(old.get("processed_by") or "")
        if outcome == BUSY and self._holder_gone(holder):  # its lease outlives it: take over
            outcome, old = self._update_claim(
                key, deadline, TAKEOVER_CONDITION, {":holder": holder}
            )
            if outcome == CLAIMED:
                with self._count_lock:
                    self.taken_over += 1
                self._log.info("%s: took %s over from flow run %s", self.name, key, holder)
        return outcome, old

    def _holder_gone(self, holder: str) -> bool:
        if self.run_alive is None or holder in ("", "-", self.run_id):
            return False
        return not self.run_alive(holder)

    def _update_claim(
        self, key: dict[str, Any], deadline: float, condition: str, extra: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        now = time.time()
        values = {
            ":processing": PROCESSING,
            ":now": _stamp(now),
            ":lease": _stamp(deadline),
            ":run": self.run_id,
            ":one": 1,
            **extra,
        }
        try:
            self.table.client().update_item(
                TableName=self.table.table_name,
                Key=serialize(key),
                UpdateExpression=(
                    "SET #state = :processing, processed_by = :run, lease_until = :lease, "
                    "started_at_timestamp = :now, updated_at_timestamp = :now ADD attempts :one"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=serialize(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                self._problem(f"{self.name}: cannot claim {key}: {describe_aws_error(exc)}")
                return PROCESS, {}
            old = deserialize(exc.response.get("Item", {}))
            if old.get("state") in (*SuccessState, ERROR):
                return FINISHED, old
            return BUSY, old
        return CLAIMED, {}

    def _renew_one(self, key: dict[str, Any], deadline: float) -> None:
        now = time.time()
        try:
            self.table.client().update_item(
                TableName=self.table.table_name,
                Key=serialize(key),
                UpdateExpression="SET lease_until = :lease, updated_at_timestamp = :now",
                ConditionExpression=MINE_CONDITION,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=serialize(
                    {
                        ":processing": PROCESSING,
                        ":run": self.run_id,
                        ":now": _stamp(now),
                        ":lease": _stamp(deadline),
                    }
                ),
            )
        except ClientError as exc:  # finished meanwhile, or taken over: nothing to renew
            if _code(exc) != "ConditionalCheckFailedException":
                self._problem(f"{self.name}: cannot renew {key}: {describe_aws_error(exc)}")

    def _release_one(self, key: dict[str, Any]) -> None:
        """Give back a claim this run made for a group it will not process."""
        try:
            self.table.client().update_item(
                TableName=self.table.table_name,
                Key=serialize(key),
                UpdateExpression="SET #state = :queued REMOVE lease_until ADD attempts :minus",
                ConditionExpression=MINE_CONDITION,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=serialize(
                    {
                        ":queued": QUEUED,
                        ":processing": PROCESSING,
                        ":run": self.run_id,
                        ":minus": -1,
                    }
                ),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                self._problem(f"{self.name}: cannot release {key}: {describe_aws_error(exc)}")

    # -- finishing -----------------------------------------------------------------

    def write(self, chunk: ResultChunk) -> None:
        """Finish every request of the chunk; any failure but a late duplicate raises."""
        requests: dict[Any, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for row in chunk.results:
            key = self._key(row)
            if key is not None:
                requests.setdefault(_hashable(key), (key, []))[1].append(row)
        failures = [e for e in self._each(self._finish_one, requests.values()) if e is not None]
        if failures:
            raise failures[0]

    def _finish_one(self, request: tuple[dict[str, Any], list[dict[str, Any]]]) -> Exception | None:
        key, rows = request
        errors = [str(r.get("error")) for r in rows if not row_ok(r)]
        try:
            self.table.client().update_item(
                TableName=self.table.table_name,
                Key=serialize(key),
                UpdateExpression=(
                    "SET #state = :state, #result = :result, #errors = :errors, "
                    "completed_at_timestamp = :now, updated_at_timestamp = :now "
                    "REMOVE lease_until"
                ),
                ConditionExpression=OPEN_CONDITION,
                ExpressionAttributeNames={
                    "#state": "state",
                    "#result": "result",
                    "#errors": "errors",
                },
                ExpressionAttributeValues=serialize(
                    {
                        ":state": ERROR if errors else self.success_state,
                        ":result": json.dumps(rows[0] if len(rows) == 1 else rows, default=str),
                        ":errors": errors,
                        ":now": _stamp(time.time()),
                        ":queued": QUEUED,
                        ":processing": PROCESSING,
                    }
                ),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                return exc
            with self._count_lock:
                self.late_duplicates += 1
            self._log.info("%s: %s was already finished; left as it is", self.name, key)
        return None

    # -- announcing ----------------------------------------------------------------

    def announce(self, chunks: Sequence[ResultChunk]) -> list[str]:
        """``after_write`` hook: publish the chunks' notices, then mark what went out."""
        if self.notices is None:
            return []
        problems, unsent = self.notices.publish(chunks)
        rows = [r for c in chunks for r in c.results]
        self._mark_notified([r for r in rows if self.notices.request_id(r) not in unsent])
        return problems

    def _announce_stored(self, items: Sequence[dict[str, Any]]) -> bool:
        """Publish the notices of finished requests from their stored results; True if sent."""
        if self.notices is None or not items:
            return True
        rows = [row for item in items for row in stored_rows(item)]
        problems, unsent = self.notices.publish([ResultChunk("redelivered", rows)])
        for problem in problems:
            self._problem(f"{self.name}: {problem}")
        self._mark_notified([r for r in rows if self.notices.request_id(r) not in unsent])
        with self._count_lock:
            self.renotified += len(items)
        self._log.info("%s: announced %d finished request(s) again", self.name, len(items))
        return not unsent

    def _mark_notified(self, rows: Sequence[dict[str, Any]]) -> None:
        unique = {_hashable(k): k for r in rows if (k := self._key(r)) is not None}
        self._each(self._notified_one, unique.values())

    def _notified_one(self, key: dict[str, Any]) -> None:
        try:
            self.table.client().update_item(
                TableName=self.table.table_name,
                Key=serialize(key),
                UpdateExpression="SET #notified = :now",
                ConditionExpression="#state IN (:completed, :processed, :error)",
                ExpressionAttributeNames={"#state": "state", "#notified": NOTIFIED},
                ExpressionAttributeValues=serialize(
                    {
                        ":now": _stamp(time.time()),
                        ":completed": COMPLETED,
                        ":processed": SuccessState.PROCESSED,
                        ":error": ERROR,
                    }
                ),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                self._problem(f"{self.name}: cannot mark {key} notified: {describe_aws_error(exc)}")

    # -- helpers -------------------------------------------------------------------

    def _each(self, fn: Any, items: Any, *args: Any) -> list[Any]:
        """``fn(item, *args)`` for every item, concurrently, results in order."""
        items = list(items)
        if len(items) <= 1:
            return [fn(i, *args) for i in items]
        with ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
            return list(pool.map(lambda i: fn(i, *args), items))

    def _key(self, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """The request's key, or None for a record that is not a tracked request."""
        try:
            key = self.table.key_of(dict(fields))
        except KeyError:
            return None
        return None if any(v in (None, "") for v in key.values()) else key

    def _problem(self, text: str) -> None:
        self._log.warning(text)
        with self._count_lock:
            if len(self.problems) < 100:
                self.problems.append(text)


class ThenRequestsTable(Sink):
    """The result sinks (concurrently), then the requests table.

    A request is marked finished only once its results are in every sink; if a
    sink fails, the request stays ``processing`` and its message is retried.
    """

    def __init__(self, sinks: Sequence[Sink], table: RequestsTable) -> None:
        self.sinks = list(sinks)
        self.table = table
        self.name = " + ".join([*(s.name for s in self.sinks), table.name])

    def open(self) -> None:
        for sink in [*self.sinks, self.table]:
            sink.open()

    def write(self, chunk: ResultChunk) -> None:
        if self.sinks:
            write_chunks(self.sinks, [chunk])
        self.table.write(chunk)

    def close(self) -> None:
        for sink in [*self.sinks, self.table]:
            sink.close()


def stored_rows(item: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished item's result rows, or one row built from its state and errors."""
    try:
        result = json.loads(item.get("result") or "null")
    except (TypeError, ValueError):
        result = None
    if isinstance(result, dict):
        return [result]
    if isinstance(result, list) and all(isinstance(r, dict) for r in result) and result:
        return result
    fields = {k: v for k, v in item.items() if k not in ("result", "errors")}
    errors = [str(e) for e in item.get("errors") or []]
    status = RowStatus.ERROR if item.get("state") == ERROR else RowStatus.OK
    return [{**fields, "status": status, "error": "; ".join(errors) or None}]


def _hashable(key: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in key.items()))


def _stamp(seconds: float) -> Decimal:
    return Decimal(f"{seconds:.3f}")


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")
