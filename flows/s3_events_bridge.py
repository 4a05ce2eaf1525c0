"""The S3 events bridge as a Prefect flow: S3 notifications on a queue → Prefect events.

A self-hosted Prefect server has no webhooks, so S3 notifies an SQS queue and this flow
turns each created object into one ``aws.s3.object.created`` event that deployment
triggers match (see ``infergraph/events/service.py`` for the event's shape, and
``python -m infergraph.events`` for the same bridge as a long-running service).
"""

from __future__ import annotations

import sys

from prefect import flow
from prefect.states import Completed, State

from infergraph.events.service import DEFAULT_QUEUE, BridgeError, counts_text, run_bridge
from infergraph.logs import run_logger
from infergraph.runs import IDLE, describe_run


@flow(name="s3-events-bridge", flow_run_name="sqs://{queue} → events")
def s3_events_bridge(
    queue: str = DEFAULT_QUEUE,
    max_messages: int = 10,
    idle_polls: int = 1,
    message_limit: int | None = None,
    wait_seconds: int | None = None,
) -> State[dict[str, int]]:
    """Turn the S3 notifications waiting on a queue into aws.s3.object.created events.

    Args:
        queue: Name of the SqsQueue block of the queue S3 (or EventBridge) notifies.
        max_messages: Messages per receive (1-10); their events go in one request.
        idle_polls: Stop after this many empty long polls in a row (0: never stop).
        message_limit: Stop after receiving this many messages (empty: no limit).
        wait_seconds: Long-poll wait per receive, 0-20 s (empty: the block's setting).
    """
    counts = run_bridge(queue, max_messages, idle_polls, message_limit, wait_seconds)
    run_logger(__name__).info("s3-events bridge: %s", counts_text(counts))
    if counts.received:
        describe_run(f"sqs://{queue} → {counts.events} events")
    else:  # the every-minute fallback mostly finds nothing: easy to tell apart in the list
        describe_run(f"sqs://{queue} · {IDLE}", add_tags=[IDLE])
    if counts.failed:
        raise BridgeError(
            f"the events of {counts.failed} message(s) were not accepted by the Prefect API; "
            f"those messages stay on the queue ({counts_text(counts)})"
        )
    told = f"{counts.received} messages, {counts.events} events" if counts.received else IDLE
    return Completed(message=f"Completed: {told}", data=counts.as_dict())


if __name__ == "__main__":
    from infergraph.events.service import main

    sys.exit(main())
