"""What a run did, in numbers: kept as counters so memory stays flat however many images pass.

Also how those numbers read to a person: the run's state message, its one-line summary,
the outcome shown on its artifacts, and one WARNING log line per failed image (capped).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infergraph.inference.records import BOXES, row_ok

MAX_LISTED_ERRORS = 1000
#: Failed images logged one WARNING line each; the rest are counted in one line.
MAX_WARNED_ERRORS = 20
MAX_DETAIL = 200


@dataclass
class RunSummary:
    """Counts for the log, the flow's return value and the run's artifacts."""

    source: str = ""
    images: int = 0
    predicted: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    written: int = 0
    boxes: int = 0
    retried_groups: int = 0
    write_failures: int = 0
    per_class: Counter[str] = field(default_factory=Counter)
    class_ids: dict[str, Any] = field(default_factory=dict)
    error_list: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Settings shown with the counts (predictor, sinks, batching), label → value.
    settings: dict[str, str] = field(default_factory=dict)
    #: Called with one line per failed image, up to MAX_WARNED_ERRORS (the run's logger).
    warn: Callable[[str], Any] | None = None
    prepare_seconds: float = 0.0
    predict_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    #: Part of ``elapsed`` spent waiting for input that did not come; not counted in the rate.
    idle_seconds: float = 0.0
    #: Called with the summary after each ``add_rows`` (the CLI's progress line).
    listener: Callable[[RunSummary], Any] | None = None

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.images += 1
            if not row_ok(row):
                self.errors += 1
                uri, error = str(row.get("uri")), str(row.get("error"))
                if len(self.error_list) < MAX_LISTED_ERRORS:
                    self.error_list.append((uri, error))
                if self.warn and self.errors <= MAX_WARNED_ERRORS:
                    self.warn(f"failed: {self.image_name(uri)}: {readable_error(uri, error)}")
                continue
            self.predicted += 1
            boxes = row.get(BOXES)
            if isinstance(boxes, list):  # a detector: classes are counted per box
                self.boxes += len(boxes)
                self.per_class.update(str(b.get("label", b.get("class_id"))) for b in boxes)
                continue
            name = str(row.get("category_name", row.get("class_id", "")))
            self.per_class[name] += 1
            self.class_ids.setdefault(name, row.get("class_id"))
            label = row.get("label")
            if label not in (None, ""):
                self.labelled += 1
                self.correct += int(str(label) == name)
        if self.listener is not None:
            self.listener(self)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def images_per_second(self) -> float:
        busy = self.elapsed - self.idle_seconds
        return self.images / busy if busy > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def image_name(self, uri: str) -> str:
        """``uri`` relative to the source's folder or prefix, which the run shows once."""
        root = self.source if self.source.endswith("/") else ""
        return uri[len(root) :] if root and uri.startswith(root) and uri != root else uri

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "images": self.images,
            "predicted": self.predicted,
            "errors": self.errors,
            "written": self.written,
            **({"boxes": self.boxes} if self.boxes else {}),
            "retried_groups": self.retried_groups,
            "write_failures": self.write_failures,
            "accuracy": self.accuracy,
            "images_per_second": round(self.images_per_second, 2),
            "elapsed_seconds": round(self.elapsed, 3),
            "idle_seconds": round(self.idle_seconds, 3),
            "per_class": dict(sorted(self.per_class.items())),
            "problems": list(self.problems),
        }

    # -- how the numbers read -----------------------------------------------------------------

    def outcome(self) -> str:
        """The run in one phrase, for artifact descriptions: ``3 of 363 failed · accuracy …``."""
        if not self.images:
            return "no images"
        parts = [
            f"{self.errors} of {self.images} failed"
            if self.errors
            else f"{counted(self.images, 'image')}, none failed"
        ]
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.1%} of {self.labelled} labelled")
        if self.write_failures:
            parts.append(f"{self.write_failures} results not written")
        return " · ".join(parts)

    def state_message(self) -> str:
        """The run's state message: ``Completed: 360 of 363 images, 3 errors``."""
        if not self.images:
            return "Completed: idle, no images to classify"
        if not self.errors:
            return f"Completed: {counted(self.images, 'image')}"
        errors = counted(self.errors, "error")
        return f"Completed: {self.predicted} of {counted(self.images, 'image')}, {errors}"

    def summary_line(self) -> str:
        """The line logged at the end of a run."""
        parts = [f"{self.images} images ({self.predicted} predicted, {self.errors} errors)"]
        if self.boxes:
            parts.append(f"{self.boxes} boxes")
        parts.append(f"{self.written} rows written")
        if self.write_failures:
            parts.append(f"{self.write_failures} write failures")
        if self.retried_groups:
            parts.append(f"{self.retried_groups} groups left for retry")
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.2%} of {self.labelled} labelled")
        parts.append(f"{self.images_per_second:.1f} images/s over {self.elapsed:.2f} s")
        if self.idle_seconds >= 0.05:
            parts[-1] += f" ({self.idle_seconds:.2f} s of it waiting for input)"
        return "done: " + " · ".join(parts)

    def more_errors_line(self) -> str | None:
        """The line counting the failed images not logged one by one."""
        hidden = self.errors - MAX_WARNED_ERRORS
        if hidden <= 0:
            return None
        return f"… and {hidden} more failed images (all are listed in the run's errors artifact)"


def counted(n: int, noun: str) -> str:
    """``1 image``, ``3 images``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def readable_error(uri: str, error: str) -> str:
    """``error`` without ``uri`` (the image is named beside it), cut to a readable length."""
    text = error.removeprefix(f"{uri}: ").replace(f" {uri}:", ":").replace(uri, "the image")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def error_kind(detail: str) -> str:
    """What kind of failure a (readable) error message describes, for grouping."""
    if "over the limit" in detail and "pixels" in detail:
        return "too many pixels (possible decompression bomb)"
    parts = re.split(r":\s|\s\(|;\s", detail, maxsplit=2)
    kind = parts[0]
    if kind == "cannot read" and len(parts) > 1:
        kind = f"{kind}: {parts[1]}"
    return kind if len(kind) <= 60 else kind[:59] + "…"
