"""What a run did, in numbers: kept as counters so memory stays flat however many images pass."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from infergraph.inference.records import BOXES, row_ok

MAX_LISTED_ERRORS = 1000


@dataclass
class RunSummary:
    """Counts for the terminal, the flow's return value and the run's artifacts."""

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
    error_list: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    prepare_seconds: float = 0.0
    predict_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.images += 1
            if not row_ok(row):
                self.errors += 1
                if len(self.error_list) < MAX_LISTED_ERRORS:
                    self.error_list.append((str(row.get("uri")), str(row.get("error"))))
                continue
            self.predicted += 1
            boxes = row.get(BOXES)
            if isinstance(boxes, list):  # a detector: classes are counted per box
                self.boxes += len(boxes)
                self.per_class.update(str(b.get("label", b.get("class_id"))) for b in boxes)
                continue
            name = str(row.get("category_name", row.get("class_id", "")))
            self.per_class[name] += 1
            label = row.get("label")
            if label not in (None, ""):
                self.labelled += 1
                self.correct += int(str(label) == name)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def images_per_second(self) -> float:
        return self.images / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

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
            "per_class": dict(sorted(self.per_class.items())),
            "problems": list(self.problems),
        }

    def text(self) -> str:
        """The few lines printed at the end of a run."""
        lines = [
            f"source:     {self.source}",
            f"images:     {self.images} ({self.predicted} predicted, {self.errors} errors)"
            + (f", {self.boxes} boxes" if self.boxes else ""),
            f"written:    {self.written} rows"
            + (f", {self.write_failures} write failures" if self.write_failures else "")
            + (f", {self.retried_groups} groups left for retry" if self.retried_groups else ""),
        ]
        if self.accuracy is not None:
            lines.append(f"accuracy:   {self.accuracy:.2%} of {self.labelled} labelled images")
        lines.append(f"throughput: {self.images_per_second:.1f} images/s over {self.elapsed:.2f}s")
        for uri, error in self.error_list[:5]:
            lines.append(f"  error: {error}" if uri in error else f"  error: {uri}: {error}")
        if self.errors > 5:
            lines.append(f"  … {self.errors - 5} more errors (see the run's error artifact)")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


def publish_artifacts(summary: RunSummary, key_prefix: str = "inference") -> None:
    """A table of counts and a markdown list of per-record errors, on the flow run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    data = summary.as_dict()
    table = [
        {"metric": k, "value": v}
        for k, v in data.items()
        if k not in ("per_class", "problems") and v is not None
    ]
    table += [{"metric": f"class {k}", "value": v} for k, v in data["per_class"].items()]
    create_table_artifact(
        key=f"{key_prefix}-summary", table=table, description="Images, errors, classes, throughput"
    )
    create_markdown_artifact(
        key=f"{key_prefix}-errors",
        markdown=errors_markdown(summary),
        description="Per-record errors",
    )


def errors_markdown(summary: RunSummary) -> str:
    if not summary.errors and not summary.problems:
        return f"# No errors\n\nAll {summary.images} images were classified."
    lines = [f"# {summary.errors} of {summary.images} images failed", ""]
    if summary.error_list:
        lines += ["| image | error |", "|---|---|"]
        lines += [f"| `{_md(u)}` | {_md(e)} |" for u, e in summary.error_list]
    if summary.errors > len(summary.error_list):
        lines.append(f"\n… and {summary.errors - len(summary.error_list)} more.")
    if summary.problems:
        lines += ["", "## Run problems", *[f"- {_md(p)}" for p in summary.problems]]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
