"""Reasoning job records in DynamoDB: atomic ids, the state machine, conditional writes.

Every write that changes a job's status is conditional on the status (and version)
the writer read, so two flow runs racing on one job cannot both win: the loser gets
:class:`StaleTransition` and re-reads instead of overwriting. Job numbers come from
an atomic per-dataset, per-day counter item rather than from counting rows (the
reference's race).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from blocks.dynamodb import DynamoDBTable
from infergraph.aws.dynamodb import deserialize, plain, serialize
from infergraph.reasoning.loaders.status import LOADER_IN_PROGRESS, LOADER_STATUSES, LOADER_TERMINAL
from infergraph.reasoning.settings import id_delimiter

MAX_ID_ATTEMPTS = 50
COUNTER_PREFIX = "#counter#"
STATUS_ATTRIBUTE = "status"
INDEX_SORT_ATTRIBUTE = "updated_at"
DEFAULT_INDEX = "status-index"
#: The pseudo-dataset under which jobspecs too broken to name a dataset are recorded.
INVALID_JOBSPEC_DATASET = "_invalid_jobspec"


class JobStatus(StrEnum):
    """Job states (NOTES §3). A StrEnum so f-strings print ``SCHEDULED``, not the repr."""

    CREATED = "CREATED"
    SCHEDULED = "SCHEDULED"
    SCHEDULE_FAILED = "SCHEDULE_FAILED"
    INFERENCE_COMPLETE = "INFERENCE_COMPLETE"
    INFERENCE_FAILED = "INFERENCE_FAILED"
    NEPTUNE_LOAD_NOT_STARTED = "NEPTUNE_LOAD_NOT_STARTED"
    NEPTUNE_LOAD_IN_QUEUE = "NEPTUNE_LOAD_IN_QUEUE"
    NEPTUNE_LOAD_IN_PROGRESS = "NEPTUNE_LOAD_IN_PROGRESS"
    NEPTUNE_LOAD_COMPLETED = "NEPTUNE_LOAD_COMPLETED"
    NEPTUNE_LOAD_CANCELLED_BY_USER = "NEPTUNE_LOAD_CANCELLED_BY_USER"
    NEPTUNE_LOAD_CANCELLED_DUE_TO_ERRORS = "NEPTUNE_LOAD_CANCELLED_DUE_TO_ERRORS"
    NEPTUNE_LOAD_UNEXPECTED_ERROR = "NEPTUNE_LOAD_UNEXPECTED_ERROR"
    NEPTUNE_LOAD_FAILED = "NEPTUNE_LOAD_FAILED"
    NEPTUNE_LOAD_S3_READ_ERROR = "NEPTUNE_LOAD_S3_READ_ERROR"
    NEPTUNE_LOAD_S3_ACCESS_DENIED_ERROR = "NEPTUNE_LOAD_S3_ACCESS_DENIED_ERROR"
    NEPTUNE_LOAD_COMMITTED_W_WRITE_CONFLICTS = "NEPTUNE_LOAD_COMMITTED_W_WRITE_CONFLICTS"
    NEPTUNE_LOAD_DATA_DEADLOCK = "NEPTUNE_LOAD_DATA_DEADLOCK"
    NEPTUNE_LOAD_DATA_FAILED_DUE_TO_FEED_MODIFIED_OR_DELETED = (
        "NEPTUNE_LOAD_DATA_FAILED_DUE_TO_FEED_MODIFIED_OR_DELETED"
    )
    NEPTUNE_LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED = (
        "NEPTUNE_LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED"
    )
    NEPTUNE_LOAD_FAILED_INVALID_REQUEST = "NEPTUNE_LOAD_FAILED_INVALID_REQUEST"
    SUCCESS_NOTIFICATION_SENT = "SUCCESS_NOTIFICATION_SENT"
    ERROR_NOTIFICATION_SENT = "ERROR_NOTIFICATION_SENT"

    @classmethod
    def for_loader(cls, loader_status: str) -> JobStatus:
        """``LOAD_COMPLETED`` → ``NEPTUNE_LOAD_COMPLETED``; unknown statuses are an error."""
        if loader_status not in LOADER_STATUSES:
            raise ValueError(f"unknown loader status {loader_status!r}")
        return cls(f"NEPTUNE_{loader_status}")


S = JobStatus
LOAD_IN_PROGRESS_STATES = frozenset(S.for_loader(s) for s in LOADER_IN_PROGRESS)
LOAD_TERMINAL_STATES = frozenset(S.for_loader(s) for s in LOADER_TERMINAL)
#: States whose job still owes its owner exactly one notice.
NOTICE_PENDING_STATES = LOAD_TERMINAL_STATES | {S.SCHEDULE_FAILED, S.INFERENCE_FAILED}
FINAL_STATES = frozenset({S.SUCCESS_NOTIFICATION_SENT, S.ERROR_NOTIFICATION_SENT})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.CREATED: frozenset({S.SCHEDULED, S.SCHEDULE_FAILED}),
    S.SCHEDULED: frozenset({S.INFERENCE_COMPLETE, S.INFERENCE_FAILED}),
    # A load the loader refuses outright ends in the matching terminal load state.
    S.INFERENCE_COMPLETE: frozenset({S.NEPTUNE_LOAD_IN_PROGRESS} | LOAD_TERMINAL_STATES),
    **{state: LOAD_IN_PROGRESS_STATES | LOAD_TERMINAL_STATES for state in LOAD_IN_PROGRESS_STATES},
    S.NEPTUNE_LOAD_COMPLETED: frozenset({S.SUCCESS_NOTIFICATION_SENT}),
    **{
        state: frozenset({S.ERROR_NOTIFICATION_SENT})
        for state in NOTICE_PENDING_STATES - {S.NEPTUNE_LOAD_COMPLETED}
    },
    S.SUCCESS_NOTIFICATION_SENT: frozenset(),
    S.ERROR_NOTIFICATION_SENT: frozenset(),
}


class TransitionRefused(RuntimeError):
    """A status change that was not written; the job record is unchanged."""

    def __init__(self, job_id: str, source: str, target: str, why: str):
        self.job_id, self.source, self.target = job_id, source, target
        super().__init__(f"job {job_id}: {source} → {target} refused: {why}")


class IllegalTransition(TransitionRefused):
    """The state machine has no such edge."""


class StaleTransition(TransitionRefused):
    """Someone else changed the job since it was read (its status or version moved on)."""

    def __init__(self, job_id: str, source: str, target: str, current: Job | None):
        self.current = current
        now = f"it is now {current.status} (version {current.version})" if current else "it is gone"
        super().__init__(job_id, source, target, f"stale read: {now}")


class JobNotFound(LookupError):
    pass


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """One job record; ``attrs`` holds every attribute beyond the keys, status and version."""

    dataset: str
    sort_key: str
    status: JobStatus
    version: int
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return f"{self.dataset}{id_delimiter()}{self.sort_key}"

    def get(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


def dataset_of_job_id(job_id: str) -> str:
    """``transactions_2024-05-01_000`` → ``transactions`` (dataset names may hold the delimiter)."""
    d = re.escape(id_delimiter())
    match = re.fullmatch(rf"(.+){d}[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}{d}[0-9]{{3,}}", job_id)
    if match is None:
        raise ValueError(
            f"{job_id!r} is not a job id ({{dataset}}{id_delimiter()}YYYY-MM-DD{id_delimiter()}NNN)"
        )
    return match.group(1)


def split_job_id(job_id: str, dataset: str) -> str:
    """The sort key (``YYYY-MM-DD_NNN``) of ``job_id``, which must belong to ``dataset``."""
    prefix = f"{dataset}{id_delimiter()}"
    if not job_id.startswith(prefix) or len(job_id) <= len(prefix):
        raise ValueError(f"job id {job_id!r} does not belong to dataset {dataset!r}")
    return job_id[len(prefix) :]


class JobStore:
    """The jobs table: pk = dataset, sk = ``YYYY-MM-DD_NNN``, a GSI on status."""

    def __init__(self, table: DynamoDBTable, clock: Callable[[], str] = utcnow):
        if not table.sort_key:
            raise ValueError(f"jobs table block for {table.table_name!r} needs a sort_key")
        self.table = table
        self.pk = table.partition_key
        self.sk = table.sort_key
        self.index = table.index_name or DEFAULT_INDEX
        self.clock = clock
        self.collisions = 0

    @property
    def client(self) -> Any:
        return self.table.client()

    # -- table ---------------------------------------------------------------------------------

    def create_table(self) -> None:
        """Create the table and its status index (for local setups and tests); no-op if present."""
        try:
            self.client.create_table(
                TableName=self.table.table_name,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": self.pk, "AttributeType": "S"},
                    {"AttributeName": self.sk, "AttributeType": "S"},
                    {"AttributeName": STATUS_ATTRIBUTE, "AttributeType": "S"},
                    {"AttributeName": INDEX_SORT_ATTRIBUTE, "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": self.pk, "KeyType": "HASH"},
                    {"AttributeName": self.sk, "KeyType": "RANGE"},
                ],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": self.index,
                        "KeySchema": [
                            {"AttributeName": STATUS_ATTRIBUTE, "KeyType": "HASH"},
                            {"AttributeName": INDEX_SORT_ATTRIBUTE, "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        self.client.get_waiter("table_exists").wait(TableName=self.table.table_name)

    # -- creation ------------------------------------------------------------------------------

    def allocate_sort_key(self, dataset: str, day: str) -> str:
        """``YYYY-MM-DD_NNN`` (NNN from 000): an atomic ADD on the dataset's counter for ``day``."""
        reply = self.client.update_item(
            TableName=self.table.table_name,
            Key=self._key(dataset, f"{COUNTER_PREFIX}{day}"),
            UpdateExpression="ADD next_number :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        # The counter counts jobs; the first job of the day is _000, as in the reference.
        number = int(reply["Attributes"]["next_number"]["N"]) - 1
        return f"{day}{id_delimiter()}{number:03d}"

    def create(self, dataset: str, **attrs: Any) -> Job:
        """A new job in CREATED with a freshly allocated id (UTC date)."""
        now = self.clock()
        for _attempt in range(MAX_ID_ATTEMPTS):
            sort_key = self.allocate_sort_key(dataset, now[:10])
            try:
                return self._put_new(dataset, sort_key, now, attrs)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                # Only if the counter handed out a taken number (DynamoDB's ADD is atomic,
                # but an emulator's or a restored counter may not be): take the next one.
                self.collisions += 1
        raise RuntimeError(f"no free job id for {dataset} after {MAX_ID_ATTEMPTS} attempts")

    def _put_new(self, dataset: str, sort_key: str, now: str, attrs: dict[str, Any]) -> Job:
        job = Job(dataset, sort_key, S.CREATED, 1)
        item = {
            self.pk: dataset,
            self.sk: sort_key,
            "job_id": job.job_id,
            STATUS_ATTRIBUTE: str(S.CREATED),
            "version": 1,
            "created_at": now,
            INDEX_SORT_ATTRIBUTE: now,
            "history": [{"status": str(S.CREATED), "at": now}],
            **{k: v for k, v in attrs.items() if v is not None},
        }
        # Never overwrite a job, whatever the counter said.
        self.client.put_item(
            TableName=self.table.table_name,
            Item=self._serialize(item),
            ConditionExpression="attribute_not_exists(#pk)",
            ExpressionAttributeNames={"#pk": self.pk},
        )
        return self._job(item)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, dataset: str, sort_key: str) -> Job:
        reply = self.client.get_item(
            TableName=self.table.table_name, Key=self._key(dataset, sort_key), ConsistentRead=True
        )
        if "Item" not in reply:
            job_id = f"{dataset}{id_delimiter()}{sort_key}"
            raise JobNotFound(f"no job {job_id} in {self.table.table_name}")
        return self._job(self._deserialize(reply["Item"]))

    def get_by_id(self, job_id: str, dataset: str) -> Job:
        return self.get(dataset, split_job_id(job_id, dataset))

    def by_status(self, status: JobStatus) -> Iterator[Job]:
        """Jobs in ``status`` from the status index, oldest update first (eventually consistent)."""
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table.table_name,
            IndexName=self.index,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE},
            ExpressionAttributeValues={":s": {"S": str(status)}},
        ):
            for item in page.get("Items", []):
                yield self._job(self._deserialize(item))

    # -- writes --------------------------------------------------------------------------------

    def transition(
        self, job: Job, target: JobStatus, reason: str | None = None, **attrs: Any
    ) -> Job:
        """Move ``job`` to ``target`` iff the state machine allows it and nobody moved it first."""
        if target not in TRANSITIONS[job.status]:
            raise IllegalTransition(job.job_id, job.status, target, "not a permitted transition")
        return self._write(job, target, reason, attrs)

    def update(self, job: Job, **attrs: Any) -> Job:
        """Store attributes without changing status (still refused if the job moved on)."""
        return self._write(job, job.status, None, attrs)

    def claim_notice(self, job: Job, token: str, lease_seconds: float) -> Job | None:
        """Take the right to send ``job``'s notice; None if another run holds a live claim.

        A claim older than ``lease_seconds`` that never became ``notice_sent_at`` belongs
        to a run that died between claim and publish, and may be taken over.
        """
        now = self.clock()
        expired = _shift(now, -lease_seconds)
        try:
            reply = self.client.update_item(
                TableName=self.table.table_name,
                Key=self._key(job.dataset, job.sort_key),
                UpdateExpression="SET notice_claim = :token, notice_claimed_at = :now, "
                "#v = #v + :one",
                ConditionExpression="#s = :status AND attribute_not_exists(notice_sent_at) AND "
                "(attribute_not_exists(notice_claimed_at) OR notice_claimed_at < :expired)",
                ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE, "#v": "version"},
                ExpressionAttributeValues={
                    ":token": {"S": token},
                    ":now": {"S": now},
                    ":one": {"N": "1"},
                    ":status": {"S": str(job.status)},
                    ":expired": {"S": expired},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return self._job(self._deserialize(reply["Attributes"]))

    def _write(self, job: Job, target: JobStatus, reason: str | None, attrs: dict[str, Any]) -> Job:
        now = self.clock()
        entry: dict[str, Any] = {"status": str(target), "at": now}
        if reason:
            entry["reason"] = reason
        sets = {
            STATUS_ATTRIBUTE: str(target),
            "version": job.version + 1,
            INDEX_SORT_ATTRIBUTE: now,
            **{k: v for k, v in attrs.items() if v is not None},
        }
        if reason:
            sets["reason"] = reason
        removes = [k for k, v in attrs.items() if v is None]
        names: dict[str, str] = {"#s": STATUS_ATTRIBUTE, "#v": "version", "#h": "history"}
        values: dict[str, Any] = {
            ":from": str(job.status),
            ":version": job.version,
            ":entry": [entry] if target != job.status else [],
            ":empty": [],
        }
        clauses = []
        for i, (name, value) in enumerate(sets.items()):
            names[f"#a{i}"] = name
            values[f":a{i}"] = value
            clauses.append(f"#a{i} = :a{i}")
        clauses.append("#h = list_append(if_not_exists(#h, :empty), :entry)")
        expression = "SET " + ", ".join(clauses)
        if removes:
            for i, name in enumerate(removes):
                names[f"#r{i}"] = name
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        try:
            reply = self.client.update_item(
                TableName=self.table.table_name,
                Key=self._key(job.dataset, job.sort_key),
                UpdateExpression=expression,
                ConditionExpression="#s = :from AND #v = :version",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**serialize(values)},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            try:
                current = self.get(job.dataset, job.sort_key)
            except JobNotFound:
                current = None
            raise StaleTransition(job.job_id, job.status, target, current) from None
        return self._job(self._deserialize(reply["Attributes"]))

    # -- (de)serialisation ---------------------------------------------------------------------

    def _key(self, dataset: str, sort_key: str) -> dict[str, Any]:
        return {self.pk: {"S": dataset}, self.sk: {"S": sort_key}}

    def _serialize(self, item: dict[str, Any]) -> dict[str, Any]:
        return serialize(item)

    def _deserialize(self, item: dict[str, Any]) -> dict[str, Any]:
        return plain(deserialize(item))

    def _job(self, item: dict[str, Any]) -> Job:
        item = dict(item)
        dataset = item.pop(self.pk)
        sort_key = item.pop(self.sk)
        status = JobStatus(item.pop(STATUS_ATTRIBUTE))
        version = int(item.pop("version"))
        return Job(dataset, sort_key, status, version, item)


def _shift(iso: str, seconds: float) -> str:
    from datetime import timedelta

    moved = datetime.fromisoformat(iso) + timedelta(seconds=seconds)
    return moved.isoformat(timespec="milliseconds")
