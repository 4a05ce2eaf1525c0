"""The artifacts of an inference run: a summary table, a per-class table, the errors.

Written for people: percentages with their denominators, classes with their labels and
ids, errors grouped by kind with image names relative to the source. The outcome goes in
each artifact's description, which the UI shows on cards and history pages; keys carry
the entry point (``inference-queue-summary``), so a queue drain never hides an on-demand
run's card, and a run that processed nothing publishes nothing.
"""

from __future__ import annotations

from collections import defaultdict

from infergraph.inference.reporting import RunSummary, error_kind, readable_error


def publish_artifacts(summary: RunSummary, key_prefix: str = "inference") -> list[str]:
    """Publish the run's artifacts under ``key_prefix``; return their keys (none for 0 images)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    if not summary.images:
        return []
    outcome = summary.outcome()
    keys = [f"{key_prefix}-summary", f"{key_prefix}-classes", f"{key_prefix}-errors"]
    create_table_artifact(
        key=keys[0], table=summary_table(summary), description=f"Summary: {outcome}"
    )
    create_table_artifact(
        key=keys[1],
        table=class_table(summary),
        description=f"Predicted classes of {summary.predicted} images",
    )
    create_markdown_artifact(
        key=keys[2], markdown=errors_markdown(summary), description=f"Errors: {outcome}"
    )
    return keys


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole:.1%})" if whole else str(part)


def summary_table(summary: RunSummary) -> list[dict[str, str]]:
    """Rows of ``what``/``value`` text: settings first, then the counts."""
    s = summary
    rows = [("source", s.source), *s.settings.items()]
    rows += [
        ("images", str(s.images)),
        ("predicted", _share(s.predicted, s.images)),
        ("failed", _share(s.errors, s.images)),
        ("labelled", _share(s.labelled, s.predicted)),
    ]
    if s.boxes:
        rows.append(("boxes", str(s.boxes)))
    if s.accuracy is not None:
        rows.append(("accuracy", f"{s.accuracy:.1%} ({s.correct} of {s.labelled} labelled)"))
    written = str(s.written)
    if s.written == s.images and s.errors:  # every row, the failed images' rows too
        written += f" ({s.predicted} predictions, {s.errors} error rows)"
    rows.append(("rows written", written))
    if s.write_failures:
        rows.append(("rows not written", str(s.write_failures)))
    if s.retried_groups:
        rows.append(("groups left for retry", str(s.retried_groups)))
    rows.append(("throughput", f"{s.images_per_second:.1f} images/s over {s.elapsed:.1f} s"))
    rows += [("problem", p) for p in s.problems]
    return [{"what": k, "value": v} for k, v in rows]


def class_table(summary: RunSummary) -> list[dict[str, str]]:
    """One row per predicted class: label, id, count and share (of boxes, for a detector)."""
    unit, whole = ("boxes", summary.boxes) if summary.boxes else ("images", summary.predicted)
    return [
        {
            "label": name,
            "class id": "" if summary.class_ids.get(name) is None else str(summary.class_ids[name]),
            unit: _share(count, whole),
        }
        for name, count in sorted(summary.per_class.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def errors_markdown(summary: RunSummary) -> str:
    """Failed images grouped by kind, each named relative to the source."""
    if not summary.errors and not summary.problems:
        return f"# No errors\n\nAll {summary.images} images of `{summary.source}` were classified."
    lines = [f"# {summary.errors} of {summary.images} images failed", ""]
    if summary.errors:
        lines += [f"Images are named relative to `{summary.source}`.", ""]
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for uri, error in summary.error_list:
        detail = readable_error(uri, error)
        groups[error_kind(detail)].append((summary.image_name(uri), detail))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    if ordered:
        lines += ["| kind of error | images |", "|---|---|"]
        lines += [f"| {_cell(kind)} | {len(items)} |" for kind, items in ordered]
    for kind, items in ordered:
        lines += ["", f"## {_line(kind)} · {len(items)}", ""]
        lines += [f"- `{_code(name)}`: {_line(detail)}" for name, detail in items]
    if summary.errors > len(summary.error_list):
        lines.append(f"\n… and {summary.errors - len(summary.error_list)} more, not listed.")
    if summary.problems:
        lines += ["", "## Run problems", "", *[f"- {_line(p)}" for p in summary.problems]]
    return "\n".join(lines)


def _line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _line(text).replace("|", "\\|")


def _code(text: str) -> str:
    return _line(text).replace("`", "'")
