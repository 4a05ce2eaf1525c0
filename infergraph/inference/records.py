"""The inference pipeline's vocabulary, in one place.

An ``ImageRecord`` goes in; a ``ResultRow`` comes out with a ``RowStatus``; rows travel
to sinks in ``ResultChunk``s. A queued request moves through ``RequestState``s, and a
received message gets a ``Claim`` decision before any of its records is worked on.
A detector's result carries a list of ``Box``es; sinks lay them out by ``BoxLayout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from typing_extensions import TypedDict  # pydantic validates it on Python 3.11 (API models)


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


class Box(TypedDict):
    """One detected object, in absolute pixels of the decoded (EXIF-upright) image."""

    class_id: int
    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


#: The keys of a :class:`Box`, in column order.
BOX_FIELDS: tuple[str, ...] = tuple(Box.__annotations__)
#: The result field holding a detector's boxes, and the one counting them.
BOXES = "boxes"
BOX_COUNT = "box_count"
#: Added to a per-box row: the box's position in its image's list, and the image's record id.
BOX_INDEX = "box_index"
IMAGE_RECORD_ID = "image_record_id"


class BoxLayout(StrEnum):
    """How a sink writes a result's boxes (the ``?boxes=`` sink option)."""

    ROWS = "rows"  # one row per box, keyed by box_record_id (the default)
    JSON = "json"  # one row per image, the list kept whole (JSON text in CSV cells)


def box_record_id(record_id: str, index: int) -> str:
    """The deterministic record id of an image's ``index``-th box: a rerun rewrites, never adds."""
    return f"{record_id}#box{index}"


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


class SuccessState(StrEnum):
    """The ``state`` a request gets when all its images succeeded (the requests table's choice).

    ``completed`` is infergraph's; some deployments of the reference batch CLI wrote
    ``processed`` and have readers (GSIs, APIs) that look for it.
    """

    COMPLETED = "completed"
    PROCESSED = "processed"


#: Fields the reference batch CLI put in its rows, added by the ``reference_fields`` run option.
REFERENCE_FIELDS = ("bucket", "key", "download_time", "errors")


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
