"""The unit of work: one image to classify, and where its result must be acknowledged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
