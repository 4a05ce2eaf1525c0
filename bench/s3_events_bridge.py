"""Benchmark: S3 notifications bridged to Prefect events per second, against the SQS floor.

    python bench/s3_events_bridge.py                  # 400 messages, 2 repeats (~1 min)
    python bench/s3_events_bridge.py --messages 1000 --repeats 3

Starts moto in server mode and a temporary Prefect API (SQLite, as ``prefect server
start``), fills a queue with one-record S3 notifications and drains it three ways:
the bridge as shipped (10 messages per receive, their events in one POST), the
bridge with one message per receive (one POST per message), and receive + delete
alone with no events (the queue's own ceiling on this machine). Cells are
interleaved and the best repeat is kept. Everything shares the machine's cores,
so absolute rates are lower bounds; the ratios are what matter.

Prints a table and writes JSON (default ``bench/out/s3_events_bridge.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from infergraph.devstack.emulator import start_moto  # noqa: E402  (needs REPO on the path)

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
for name, value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    os.environ[name] = value


def _fill(sqs: Any, url: str, count: int, bucket: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    bodies = [
        json.dumps(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Put",
                        "eventTime": now,
                        "s3": {
                            "bucket": {"name": bucket},
                            "object": {"key": f"in/{i:06d}.png", "size": 3, "eTag": f"e{i}"},
                        },
                    }
                ]
            }
        )
        for i in range(count)
    ]
    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


def _floor(queue: Any) -> None:
    """Receive and delete only: what the queue allows without any events."""
    sqs = queue.client()
    while True:
        got = sqs.receive_message(QueueUrl=queue.queue_url, MaxNumberOfMessages=10)
        messages = got.get("Messages", [])
        if not messages:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        sqs.delete_message_batch(QueueUrl=queue.queue_url, Entries=entries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "s3_events_bridge.json")
    args = parser.parse_args()

    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness
    from prefect_aws import AwsCredentials

    from blocks.sqs import SqsQueue
    from infergraph.aws.clients import aws_client
    from infergraph.devstack import Queue, create_queue
    from infergraph.events.bridge import S3EventQueue, bridge_s3_events

    moto, endpoint = start_moto()
    results: dict[str, list[float]] = {"bridge": [], "bridge_1_per_post": [], "sqs_floor": []}
    try:
        creds = AwsCredentials(
            region_name="us-east-1", aws_client_parameters={"endpoint_url": endpoint}
        )
        sqs = aws_client("sqs", creds)
        with prefect_test_harness(server_startup_timeout=180):
            for repeat in range(args.repeats):
                for cell in results:
                    name = f"bench-{cell.replace('_', '-')}-{repeat}"
                    url = create_queue(sqs, Queue(name))
                    queue = SqsQueue(queue_url=url, credentials=creds, wait_time_seconds=0)
                    _fill(sqs, url, args.messages, name)
                    started = time.perf_counter()
                    if cell == "sqs_floor":
                        _floor(queue)
                    else:
                        per_receive = 1 if cell == "bridge_1_per_post" else 10
                        with get_client(sync_client=True) as client:
                            counts = bridge_s3_events(
                                S3EventQueue(queue, max_messages=per_receive),
                                client,
                                wait_seconds=0,
                            )
                        assert counts.events == args.messages, counts
                    results[cell].append(args.messages / (time.perf_counter() - started))
    finally:
        moto.terminate()
        moto.wait(timeout=10)
    best = {cell: max(rates) for cell, rates in results.items()}
    print(f"{args.messages} one-record notifications, best of {args.repeats}")
    print(f"{'cell':<20}{'messages/s':>12}{'vs floor':>10}")
    for cell, rate in best.items():
        print(f"{cell:<20}{rate:>12.1f}{rate / best['sqs_floor']:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"messages": args.messages, "repeats": results, "best": best}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
