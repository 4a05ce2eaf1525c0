"""Local AWS for trying the whole AWS path on one machine.

``python -m infergraph.devstack up`` starts moto in server mode in the background
(loopback only; pid file and log under ``~/.infergraph/local-aws``, keyed by port), creates the
buckets, queues (each with a dead-letter queue and redrive policy), tables (the
requests table with a ``state`` index, the reasoning jobs table with its status
index), topics and S3 event notifications (objects created under
``s3://infergraph-local/incoming/``, jobspecs and reasoner logs go to the
``s3-events`` queue that the bridge turns into Prefect events) listed in
:data:`resources.RESOURCES`, writes ``blocks.yaml`` describing blocks that point at them
(including every block ``prefect.yaml`` names), saves those blocks through
:mod:`infergraph.blockconfig`, and uploads the sample images. ``status`` shows
what is running and how full the queues and tables are; ``enqueue`` sends
sample requests; ``down`` stops the emulator (its data lives in memory only).

The generated ``blocks.yaml`` is also the template for real AWS: replace the
endpoint and URLs (or set ``INFERGRAPH_AWS_ENDPOINT_URL=``) and apply it with
``python -m infergraph.blockconfig apply``; the flows do not change.

To add resources for another flow, append to :data:`resources.RESOURCES` (a bucket,
queue, table or topic with the block name it should be saved under, and
``extra_blocks`` for block types of your own).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from infergraph.aws.sqs_leases import queue_depth
from infergraph.cli_errors import UsageError, UsageParser, command
from infergraph.devstack.emulator import Emulator
from infergraph.devstack.resources import (  # noqa: F401  (the devstack's public names)
    CREDENTIALS_BLOCK,
    DEFAULT_PORT,
    DEPLOYMENT_CREDENTIALS_BLOCK,
    HOME,
    REGION,
    RESOURCES,
    Bucket,
    Notification,
    Queue,
    Resources,
    Table,
    Topic,
    _samples,
    block_config,
    configure_notifications,
    create_queue,
    create_table,
    provision,
    upload,
)


def up(
    port: int = DEFAULT_PORT,
    endpoint: str | None = None,
    samples: bool = True,
    home: Path = HOME,
) -> str:
    """Start (or reuse) the emulator, create everything, save the blocks; the endpoint.

    With ``endpoint``, use an emulator that is already running there instead.
    """
    from prefect_aws import AwsCredentials

    from infergraph import blockconfig as block_configuration

    emulator = Emulator(home, port)
    if endpoint is None:
        state = emulator.running() or emulator.start()
        endpoint = state["endpoint"]
        print(f"moto server at {endpoint} (pid {state['pid']}, log {emulator.log_file})")
    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=REGION,
        aws_client_parameters={"endpoint_url": endpoint},
    )
    made = provision(credentials)
    for kind, names in made.items():
        print(f"{kind}s: {', '.join(_short(kind, v) for v in names.values())}")
    config = block_config(endpoint, made, home=emulator.home)
    emulator.home.mkdir(parents=True, exist_ok=True)
    config_path = emulator.home / "blocks.yaml"
    config_path.write_text(to_yaml(config), encoding="utf-8")
    saved = block_configuration.apply(config)
    print(f"saved {len(saved)} blocks from {config_path}:")
    for entry in saved:
        print(f"  {entry.slug}/{entry.name}")
    if samples:
        for folder, target in RESOURCES.uploads:
            print(f"uploaded {upload(credentials, folder, target)} files to {target}")
    return endpoint


def _short(kind: str, value: str) -> str:
    """A resource as ``up`` prints it: names, not the emulator's URLs and ARNs."""
    return value.rsplit("/" if kind == "queue" else ":", 1)[-1]


def status(port: int = DEFAULT_PORT) -> int:
    state = Emulator(port=port).running()
    if state is None:
        print(f"local AWS is not running on port {port} (start it: {_up_command(port)})")
        return 1
    from prefect_aws import AwsCredentials

    from infergraph.aws.clients import aws_client

    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=REGION,
        aws_client_parameters={"endpoint_url": state["endpoint"]},
    )
    print(f"moto server at {state['endpoint']} (pid {state['pid']})")
    sqs, dynamodb = aws_client("sqs", credentials), aws_client("dynamodb", credentials)
    for url in sqs.list_queues().get("QueueUrls", []):
        waiting, in_flight = queue_depth(sqs, url)
        print(f"  queue {url.rsplit('/', 1)[-1]}: {waiting} waiting, {in_flight} in flight")
    for name in dynamodb.list_tables().get("TableNames", []):
        count = dynamodb.scan(TableName=name, Select="COUNT")["Count"]
        print(f"  table {name}: {count} items")
    return 0


def enqueue(
    count: int, per_message: int, endpoint: str | None = None, port: int = DEFAULT_PORT
) -> int:
    """Send ``count`` sample requests in messages of ``per_message``; mark them queued."""
    from prefect_aws import AwsCredentials

    from infergraph.aws.clients import aws_client
    from infergraph.aws.dynamodb import serialize

    endpoint = endpoint or (Emulator(port=port).running() or {}).get("endpoint")
    if not endpoint:
        raise UsageError("local AWS is not running", _up_command(port), exit_code=1)
    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=REGION,
        aws_client_parameters={"endpoint_url": endpoint},
    )
    sqs, dynamodb = aws_client("sqs", credentials), aws_client("dynamodb", credentials)
    sns = aws_client("sns", credentials)
    url = sqs.get_queue_url(QueueName="inference-requests")["QueueUrl"]
    topic = sns.create_topic(Name="inference-notices")["TopicArn"]
    images = sorted(p.name for p in _samples().glob("*.png"))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    requests = [
        {
            "request_id": f"req-{stamp}-{i:05d}",
            "s3_uri": f"s3://infergraph-local/samples/{images[i % len(images)]}",
            "collection_id": "samples",
            "sns_topic_arn": topic,
        }
        for i in range(count)
    ]
    for request in requests:
        item = {"request_id": request["request_id"], "state": "queued", **request}
        dynamodb.put_item(TableName="inference-requests", Item=serialize(item))
    for start in range(0, count, per_message):
        sqs.send_message(
            QueueUrl=url, MessageBody=json.dumps(requests[start : start + per_message])
        )
    return count


def _up_command(port: int) -> str:
    suffix = "" if port == DEFAULT_PORT else f" --port {port}"
    return f"python -m infergraph.devstack up{suffix}"


def to_yaml(config: dict[str, dict[str, dict[str, Any]]]) -> str:
    import yaml

    head = "# Blocks for infergraph, written by `python -m infergraph.devstack up`.\n"
    return head + yaml.safe_dump(config, sort_keys=False)


@command(prefect=False)  # only ``up`` needs Prefect, and sets it up itself
def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(
        prog="python -m infergraph.devstack", description="Run AWS locally (moto) for infergraph."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("up", help="start moto, create resources, save blocks, upload samples")
    cmd.add_argument("--endpoint", help="use an emulator that is already running at this URL")
    cmd.add_argument("--no-samples", action="store_true", help="do not upload the sample images")
    commands = [cmd]
    commands.append(sub.add_parser("status", help="show the emulator, queues and tables"))
    commands.append(sub.add_parser("down", help="stop the emulator (its data is lost)"))
    cmd = sub.add_parser("enqueue", help="send sample requests to the inference-requests queue")
    cmd.add_argument("--count", type=int, default=100)
    cmd.add_argument("--per-message", type=int, default=10)
    commands.append(cmd)
    for each in commands:
        each.add_argument(
            "--port", type=int, default=DEFAULT_PORT, help="the emulator's port (one per port)"
        )
    args = parser.parse_args(argv)
    if args.command == "up":
        from infergraph.local_prefect import local_settings

        with local_settings():
            up(args.port, args.endpoint, samples=not args.no_samples)
        return 0
    if args.command == "status":
        return status(args.port)
    if args.command == "down":
        stopped = Emulator(port=args.port).stop()
        where = f"local AWS on port {args.port}"
        print(f"stopped {where}" if stopped else f"{where} was not running")
        return 0
    sent = enqueue(args.count, args.per_message, port=args.port)
    print(f"sent {sent} requests to inference-requests (state 'queued' in the requests table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
