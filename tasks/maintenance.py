"""The maintenance flow's tasks: thin wrappers over the sweep and the stale-run check."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.dynamodb import DynamoDBTable
from blocks.sns import SnsTopic
from blocks.sqs import SqsQueue
from infergraph.blockref import resolve_block
from infergraph.inference.notices import CompletionNotices
from infergraph.inference.stale_runs import crash_stale_runs
from infergraph.inference.sweep import sweep_requests


@task(name="crash-dead-runs", cache_policy=NO_CACHE)
def crash_dead_runs(stale_after: float | None = None) -> list[str]:
    """RUNNING flow runs without heartbeats set to CRASHED; their ids."""
    return crash_stale_runs(stale_after)


@task(name="sweep-stuck-requests", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def sweep_stuck_requests(
    requests_table: str | DynamoDBTable,
    queue: str | SqsQueue | None,
    action: str,
    expired_after: float,
    notify_topic: str | SnsTopic | None = None,
) -> dict[str, Any]:
    """Stuck requests finished as errors or requeued (``infergraph.inference.sweep``)."""
    table = resolve_block(requests_table, DynamoDBTable)
    source = resolve_block(queue, SqsQueue) if queue else None
    topic = resolve_block(notify_topic, SnsTopic) if notify_topic else None
    notices = CompletionNotices(topic, table.credentials, flow_run_id="sweep")
    report = sweep_requests(table, source, action, expired_after, notices=notices)
    return report.as_dict()
