"""The one SNS notice each job ends with: its subject, its body, and publishing it.

The subject format is the reference's (``Inference Result Notification for {job_id} -
{status}``) with the status printed as its name, and kept inside SNS's 100-character
subject limit by shortening the middle of an over-long job id, never the status.
"""

from __future__ import annotations

from typing import Any

from blocks.sns import SnsTopic
from infergraph.reasoning.jobs import Job, JobStatus
from infergraph.reasoning.rdfox_log import human_duration

SUBJECT_LIMIT = 100
MIN_STATUS = 24
MAX_LISTED_ERRORS = 10


def notice_subject(job_id: str, status: str) -> str:
    """The reference subject, cut to SNS's 100-character limit only when it must be.

    First the status loses its tail (its start still says what happened), then the job id
    its middle (its end tells the jobs of one dataset apart).
    """
    head, sep, status = "Inference Result Notification for ", " - ", str(status)
    room = SUBJECT_LIMIT - len(head) - len(sep)
    if len(job_id) + len(status) > room:
        keep = max(room - len(job_id), MIN_STATUS)
        if keep < len(status):
            status = status[: keep - 3] + "..."
    if len(job_id) + len(status) > room:
        keep = room - len(status) - 3
        job_id = job_id[: keep // 3] + "..." + job_id[len(job_id) - (keep - keep // 3) :]
    return f"{head}{job_id}{sep}{status}"


def is_success(status: str) -> bool:
    return status == JobStatus.NEPTUNE_LOAD_COMPLETED


def notice_body(job: Job) -> str:
    """Plain text for people: what happened, how long it took, what was loaded, what failed."""
    a = job.attrs
    stats = a.get("reasoner", {}) or {}
    load = a.get("load", {}) or {}
    overall = load.get("overall", {}) or {}
    counts = stats.get("counts") or {}
    errors = _errors(job)
    # The reference's body first, in its terms, so its readers find what they look for.
    lines = [
        f"Dataset: {job.dataset}",
        f"Completed: {a.get('completed_at') or a.get('updated_at', 'unknown')}",
        f"Status: {job.status}",
        f"Full chain count: {_n(counts.get('fullChainCount'))}",
        f"Partial chain count: {_n(counts.get('partialChainCount'))}",
        f"Error count: {_error_count(overall, errors)}",
        f"Time to infer: {_hours(stats.get('inference_seconds'))} hours",
        f"Time to load: {_hours(overall.get('totalTimeSpent'))} hours",
        "",
        f"Job: {job.job_id}",
        f"Outcome: {'success' if is_success(job.status) else 'FAILED'}",
    ]
    if a.get("runner"):
        lines.append(f"Runner: {a['runner']}")
    if stats:
        lines.append(
            "Reasoning time: "
            + ", ".join(
                f"{label} {human_duration(stats.get(f'{key}_seconds'))}"
                for label, key in (
                    ("load", "load"),
                    ("inference", "inference"),
                    ("queries", "query"),
                    ("total", "total"),
                )
            )
        )
        if stats.get("edb_facts") is not None or stats.get("idb_facts") is not None:
            facts = f"Facts: EDB {_n(stats.get('edb_facts'))}, IDB {_n(stats.get('idb_facts'))}"
            if stats.get("bytes_per_entry") is not None:
                facts += f" ({stats['bytes_per_entry']} bytes per entry)"
            lines.append(facts)
        lines.append(
            "Chain counts: "
            + (", ".join(f"{k} {_n(v)}" for k, v in sorted(counts.items())) or "none reported")
        )
        exported = stats.get("exported") or {}
        lines.append(
            f"Exported: {_n(sum(exported.values()) if exported else None)} triples"
            + (" (" + ", ".join(f"{k} {_n(v)}" for k, v in sorted(exported.items())) + ")")
            * bool(exported)
        )
    if load:
        lines.append(f"Load id: {load.get('load_id', 'none')} ({load.get('store', 'graph store')})")
        if overall:
            lines.append(
                f"Time to load: {human_duration(overall.get('totalTimeSpent'))}; "
                f"triples loaded: {_n(overall.get('totalRecords'))} "
                f"({_n(overall.get('totalDuplicates'))} duplicates)"
            )
            lines.append(
                f"Load errors: parsing {_n(overall.get('parsingErrors'))}, datatype mismatch "
                f"{_n(overall.get('datatypeMismatchErrors'))}, "
                f"insert {_n(overall.get('insertErrors'))}"
            )
        verification = a.get("verification")
        if verification:
            lines.append(
                f"Verified in the graph: {_n(verification.get('count'))} "
                f"{verification.get('what', '')}".rstrip()
            )
    lines.extend(f"Warning: {w}" for w in a.get("warnings") or [])
    lines.extend(f"Jobspec warning: {w}" for w in a.get("jobspec_warnings") or [])
    lines.append("Errors: none" if not errors else "Errors:")
    lines.extend(f"  - {e}" for e in errors[:MAX_LISTED_ERRORS])
    if len(errors) > MAX_LISTED_ERRORS:
        lines.append(f"  … and {len(errors) - MAX_LISTED_ERRORS} more")
    for label, key in (("Jobspec", "jobspec_uri"), ("Output", "output_prefix"), ("Log", "log_uri")):
        if a.get(key):
            lines.append(f"{label}: {a[key]}")
    return "\n".join(lines) + "\n"


def publish_notice(topic: SnsTopic, job: Job) -> str:
    """Publish ``job``'s notice; returns the SNS message id."""
    params: dict[str, Any] = {
        "TopicArn": topic.topic_arn,
        "Subject": notice_subject(job.job_id, job.status),
        "Message": notice_body(job),
        "MessageAttributes": {
            "job_id": {"DataType": "String", "StringValue": job.job_id},
            "dataset": {"DataType": "String", "StringValue": job.dataset},
            "status": {"DataType": "String", "StringValue": str(job.status)},
            "outcome": {
                "DataType": "String",
                "StringValue": "success" if is_success(job.status) else "error",
            },
        },
    }
    if topic.topic_arn.endswith(".fifo"):
        # FIFO topics also drop the duplicate a crash between publish and record could cause.
        params["MessageGroupId"] = job.dataset
        params["MessageDeduplicationId"] = f"{job.job_id}-{job.status}"[:128]
    return topic.client().publish(**params)["MessageId"]


def _errors(job: Job) -> list[str]:
    a = job.attrs
    errors = []
    if a.get("reason") and not is_success(job.status):
        errors.append(str(a["reason"]))
    for entry in (a.get("load", {}) or {}).get("errors", []) or []:
        where = entry.get("fileName") or ""
        errors.append(
            f"{entry.get('errorCode', 'ERROR')}: {entry.get('errorMessage', '')} {where}".strip()
        )
    return errors


def _error_count(overall: dict[str, Any], errors: list[str]) -> int:
    """Records the loader rejected, or else the errors listed (a failure's reason counts)."""
    counted = sum(
        int(overall.get(k) or 0)
        for k in ("parsingErrors", "datatypeMismatchErrors", "insertErrors")
    )
    return max(counted, len(errors))


def _hours(seconds: Any) -> str:
    return "unknown" if seconds is None else f"{float(seconds) / 3600:.2f}"


def _n(value: Any) -> str:
    if value is None:
        return "unknown"
    return f"{value:,}" if isinstance(value, int) else str(value)
