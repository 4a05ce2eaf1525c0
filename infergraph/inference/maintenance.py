"""``python flows/maintenance.py``: sweep, redrive and the crash check from the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from infergraph.cli_errors import UsageParser
from infergraph.inference.records import SweepAction
from infergraph.local_prefect import local_settings


def main(sweep_flow: Any, argv: list[str] | None = None) -> int:
    """Parse ``argv``; ``sweep`` runs ``sweep_flow`` (passed in: the library never imports it)."""
    parser = UsageParser(description="Maintenance of the inference pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser("sweep", help="crash dead runs; finish or requeue stuck requests")
    sweep.add_argument("--requests-table", default="inference-requests", help="DynamoDBTable block")
    sweep.add_argument("--queue", default="inference-requests", help="SqsQueue block ('' for none)")
    sweep.add_argument("--action", choices=[a.value for a in SweepAction], default="error")
    sweep.add_argument(
        "--expired-after", type=float, default=3600.0, help="seconds since the lease ended"
    )
    sweep.add_argument("--notify-topic", help="SnsTopic block: announce what the sweep finishes")
    sweep.add_argument("--stale-after", type=float, help="silent seconds (default: 3 beats)")

    redrive = commands.add_parser("redrive", help="move dead-letter messages back to the queue")
    redrive.add_argument("--queue", default="inference-requests", help="SqsQueue block")
    redrive.add_argument("--limit", type=int, help="move at most this many messages")
    redrive.add_argument(
        "--requests-table",
        default="inference-requests",
        help="DynamoDBTable block whose swept requests are reopened ('' for none)",
    )

    crash = commands.add_parser("crash-stale", help="mark RUNNING runs without heartbeats CRASHED")
    crash.add_argument("--stale-after", type=float, help="seconds without any event")

    install = commands.add_parser(
        "install-automation", help="create the server-side automation that crashes dead runs"
    )
    install.add_argument("--within", type=float, help="seconds to wait for the next heartbeat")

    args = parser.parse_args(argv)
    with local_settings():
        try:
            result = _run(args, sweep_flow)
        except ValueError as exc:  # a missing block, a queue without a dead-letter queue
            raise SystemExit(f"{args.command}: {exc}") from None
    print(json.dumps(result, default=str))
    return 0


def _run(args: argparse.Namespace, sweep_flow: Any) -> Any:
    if args.command == "sweep":
        return sweep_flow(
            requests_table=args.requests_table,
            queue=args.queue or None,
            action=args.action,
            expired_after=args.expired_after,
            notify_topic=args.notify_topic,
            stale_after=args.stale_after,
        )
    if args.command == "redrive":
        return {"moved": redrive_queue(args.queue, args.limit, args.requests_table or None)}
    if args.command == "crash-stale":
        from infergraph.inference.stale_runs import crash_stale_runs

        return {"crashed_runs": crash_stale_runs(args.stale_after)}
    from infergraph.inference.stale_runs import install_crash_automation

    return {"automation": install_crash_automation(args.within)}


def redrive_queue(queue: Any, limit: int | None = None, requests_table: Any = None) -> int:
    """Move the queue block's dead-letter messages back to it; how many moved.

    With the requests table, requests the sweep finished as errors are reopened first.
    """
    from blocks.dynamodb import DynamoDBTable
    from blocks.sqs import SqsQueue
    from infergraph.aws.dead_letters import DeadLetterError, dead_letter_url, redrive
    from infergraph.blockref import resolve_block
    from infergraph.inference.sweep import reopen_swept

    block = resolve_block(queue, SqsQueue)
    table = resolve_block(requests_table, DynamoDBTable) if requests_table else None
    client = block.client()

    def reopen(messages: list[dict[str, Any]]) -> None:
        if table is not None:
            reopen_swept(table, messages)

    try:
        url = block.dead_letter_queue_url or dead_letter_url(client, block.queue_url)
        if not url:
            raise ValueError(f"queue {block.queue_name} has no dead-letter queue to redrive")
        return redrive(client, url, block.queue_url, limit, before_send=reopen)
    except DeadLetterError as exc:
        raise ValueError(str(exc)) from exc
