"""Maintenance of the inference pipeline: dead runs crashed, stuck requests swept.

    python flows/maintenance.py sweep --requests-table inference-requests --queue inference-requests
    python flows/maintenance.py redrive --queue inference-requests      # DLQ → queue
    python flows/maintenance.py install-automation                       # server-side crash check

Deployed on a schedule (prefect.yaml: ``sweep-requests``).
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from tasks.maintenance import crash_dead_runs, sweep_stuck_requests


@flow(name="sweep-requests", log_prints=True)
def sweep_requests(
    requests_table: str = "inference-requests",
    queue: str | None = "inference-requests",
    action: str = "error",
    expired_after: float = 3600.0,
    notify_topic: str | None = None,
    stale_after: float | None = None,
) -> dict[str, Any]:
    """Crash flow runs whose process died, then finish or requeue requests stuck in processing.

    Args:
        requests_table: DynamoDBTable block of the requests table.
        queue: SqsQueue block the requests came from; its dead-letter queue tells
            which requests were parked there (None: only expired leases count).
        action: 'error' (finish them as errors, with the reason) or 'requeue'.
        expired_after: Seconds after its lease ended that a request counts as stuck.
        notify_topic: SnsTopic block: announce swept requests and missed notices.
        stale_after: Seconds without a heartbeat before a RUNNING run is crashed
            (default: three of the run's own heartbeat periods).
    """
    crashed = crash_dead_runs(stale_after)
    report = sweep_stuck_requests(requests_table, queue, action, expired_after, notify_topic)
    print(f"crashed {len(crashed)} dead flow run(s); swept: {report}")
    return {**report, "crashed_runs": crashed}


if __name__ == "__main__":
    from infergraph.inference.maintenance import main

    sys.exit(main(sweep_requests))
