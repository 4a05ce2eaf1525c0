"""The inference pipeline's vocabulary, in one place.

An ``ImageRecord`` goes in; a ``ResultRow`` comes out with a ``RowStatus``; rows travel
to sinks in ``ResultChunk``s. A queued request moves through ``RequestState``s, and a
received message gets a ``Claim`` decision before any of its records is worked on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A reference to one image (never its bytes, so batches of these stay small).

    ``fields`` are the request's own fields, carried into the result. ``group``
    names the unit that is acknowledged as a whole (an SQS message); a group's
    results are written together, and only once all ``group_size`` of its
    records have one. ``error`` is set by a source that already knows the request
    is unusable: the record then skips fetching and is reported as that error.
    """

    uri: str
    fields: dict[str, Any] = field(default_factory=dict)
    record_id: str = ""
    group: str | None = None
    group_size: int = 1
    error: str | None = None

    def __post_init__(self) -> None:
        if not self.record_id:
            request = self.fields.get("request_id")
            rid = f"{request}|{self.uri}" if request is not None else self.uri
            object.__setattr__(self, "record_id", rid)


@dataclass(slots=True)
class ResultChunk:
    """Results that are written and acknowledged together.

    ``key`` is deterministic for the same input (a queue message id, or the
    identity of a listing batch), so a sink that names its output after it
    replaces, rather than duplicates, what an interrupted run already wrote.
    """

    key: str
    results: list[dict[str, Any]]
    groups: list[str] = field(default_factory=list)


class RowStatus(StrEnum):
    """A result row's outcome. A StrEnum: rows stay plain JSON for every sink."""

    OK = "ok"
    ERROR = "error"


class ResultRow(TypedDict, total=False):
    """One image's result as every sink receives it.

    The identity and outcome keys are always there; the request's own fields and the
    predictor's ``output_fields`` (class, label, score…) are added beside them.
    """

    record_id: str
    uri: str
    status: RowStatus
    error: str | None


def row_ok(row: dict[str, Any]) -> bool:
    return row.get("status") == RowStatus.OK


class RequestState(StrEnum):
    """A request's state in the requests table: queued → processing → completed | error.

    A finished request is announced once ``NOTIFIED`` is set on it: the completion
    notice was published (or there was none to send). A redelivered message whose
    requests are finished but not notified publishes before it is deleted.
    """

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"


class Claim(StrEnum):
    """What the requests table decides for a received message before its records run."""

    PROCESS = "process"  # work on it
    FINISHED = "finished"  # a late duplicate of finished requests: delete it unprocessed
    BUSY = "busy"  # another run holds its requests: hide it until that run's lease ends


#: Requests-table attribute: when the request's completion notice went out.
NOTIFIED = "notified_at_timestamp"
#: Requests-table attribute: the end of the claiming run's lease (epoch seconds).
LEASE_UNTIL = "lease_until"
#: Seconds a lease ends before its message's invisibility does, so a redelivered
#: message never meets the lease of the run it was redelivered from.
LEASE_MARGIN = 2.0


class SweepAction(StrEnum):
    """What the sweep does with a request stuck in ``processing``."""

    ERROR = "error"  # finish it as an error, with the reason
    REQUEUE = "requeue"  # send it to the queue again, alone, and set it back to queued
