"""Hold results until their acknowledgement group is complete.

A queue message may carry several images, spread over several batches. Its
results are written together once all of them exist, and the message is
deleted only after that write, so a crash at any point leaves the message on
the queue (at least once) and a rewrite of the same group key replaces what
was written before (no duplicates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infergraph.inference.records import ImageRecord, ResultChunk


@dataclass(slots=True)
class _Group:
    size: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    retry: bool = False


def batch_key(records: Sequence[ImageRecord]) -> str:
    """A key that is the same whenever the same records form a batch."""
    digest = hashlib.sha256("\n".join(r.record_id for r in records).encode()).hexdigest()
    return f"batch-{digest[:20]}"


class GroupTracker:
    """Collects result rows per group and releases each group when it is whole."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}

    def add(
        self,
        records: Sequence[ImageRecord],
        rows: Sequence[dict[str, Any]],
        retryable: Sequence[bool],
    ) -> tuple[list[ResultChunk], list[str]]:
        """Take a batch's rows; return the chunks now ready to write and the groups to retry."""
        ready: list[ResultChunk] = []
        retry: list[str] = []
        loose = [(r, row) for r, row in zip(records, rows, strict=True) if r.group is None]
        if loose:
            ready.append(ResultChunk(batch_key([r for r, _ in loose]), [row for _, row in loose]))
        for record, row, again in zip(records, rows, retryable, strict=True):
            if record.group is None:
                continue
            group = self._groups.setdefault(record.group, _Group(record.group_size))
            group.rows.append(row)
            group.retry |= again
            if len(group.rows) >= group.size:
                del self._groups[record.group]
                if group.retry:
                    retry.append(record.group)
                else:
                    ready.append(ResultChunk(record.group, group.rows, [record.group]))
        return ready, retry
