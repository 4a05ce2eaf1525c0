"""How an inference run ends in the Prefect UI: its last log lines, name, tags and state.

The runs list then shows ``samples/ · 363 images · 3 errors`` (or ``sqs://… · idle`` with
an ``idle`` tag for a queue drain that found nothing), filtering the logs by WARNING
finds every failed image, and the run's state says ``Completed: 360 of 363 images, 3
errors`` rather than a bare ``Completed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infergraph.inference.artifacts import publish_artifacts
from infergraph.inference.reporting import RunSummary, counted
from infergraph.inference.sources.base import source_label
from infergraph.runs import IDLE, artifact_key, current_run_tags, describe_run, entry_point


def tell_outcome(summary: RunSummary, source: str | Sequence[str] | None, log: Any) -> list[str]:
    """Log the run's end, rename and tag it, publish its artifacts; return their keys."""
    for line in filter(None, [summary.more_errors_line(), *summary.problems]):
        log.warning("%s", line)
    log.info("%s", summary.summary_line())
    label = source_label(source)
    if summary.images:
        errors = f" · {counted(summary.errors, 'error')}" if summary.errors else ""
        describe_run(f"{label} · {counted(summary.images, 'image')}{errors}")
    else:
        describe_run(f"{label} · {IDLE}", add_tags=[IDLE])
    return publish_artifacts(summary, artifact_key("inference", entry_point(current_run_tags())))


def completed(summary: RunSummary) -> Any:
    """The run's final state: Completed, with the counts as its message and the summary as data."""
    from prefect.states import Completed

    return Completed(message=summary.state_message(), data=summary.as_dict())
