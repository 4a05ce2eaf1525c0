"""``python flows/reasoning.py``: the reasoning flows from the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from infergraph.aws.storage import split_s3_uri
from infergraph.cli_errors import command
from infergraph.reasoning.steps import (
    DEFAULT_GRAPH_STORE,
    DEFAULT_JOBS_TABLE,
    DEFAULT_NOTICES,
    credentials_block,
)

DESCRIPTION = """Run the reasoning flows by hand: schedule a job from its jobspec, process a
reasoner log, refresh bulk loads and send notices, or write the example dataset."""


@command()
def main(
    schedule_reasoning_job: Any,
    process_inference: Any,
    refresh_bulk_loads: Any,
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv`` and run one of the flows (passed in: the library never imports flows)."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs-table", default=DEFAULT_JOBS_TABLE, help="DynamoDBTable block name")
    parser.add_argument("--notices", default=DEFAULT_NOTICES, help="SnsTopic block name")
    parser.add_argument(
        "--graph-store", default=DEFAULT_GRAPH_STORE, help="slug/name of the store block"
    )
    parser.add_argument("--aws-credentials", default=None, help="AwsCredentials block name")
    parser.add_argument(
        "--kubernetes-credentials", default=None, help="KubernetesCredentials block name"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    schedule = sub.add_parser("schedule", help="schedule the job of s3://BUCKET/KEY")
    schedule.add_argument("uri", help="s3://bucket/key of a *.rdfoxjob.json")
    schedule.add_argument(
        "--process", action="store_true", help="process a local run's log at once"
    )
    process = sub.add_parser("process", help="process s3://BUCKET/{dataset}/{job_id}/rdfox.log")
    process.add_argument("uri")
    sub.add_parser("refresh", help="refresh bulk loads and send notices")
    example = sub.add_parser(
        "example", help="write the example dataset to a folder or s3:// prefix"
    )
    example.add_argument("dest")
    example.add_argument(
        "--triples", type=int, default=10_000, help="about this many (whole transactions)"
    )
    example.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    common = {"jobs_table": args.jobs_table, "notices": args.notices}
    if args.command == "example":
        from infergraph.reasoning.examples import write_example

        creds = credentials_block(args.aws_credentials)
        data = write_example(args.dest, args.triples, args.seed, credentials=creds)
        print(
            f"wrote {data.triple_count} triples (asked for about {args.triples}: whole "
            f"transactions), rules and queries to {args.dest}"
        )
        return 0
    if args.command == "schedule":
        bucket, key = split_s3_uri(args.uri)
        result = schedule_reasoning_job(
            bucket,
            key,
            **common,
            aws_credentials=args.aws_credentials,
            kubernetes_credentials=args.kubernetes_credentials,
            process_after_local_run=args.process,
            graph_store=args.graph_store,
        )
    elif args.command == "process":
        bucket, key = split_s3_uri(args.uri)
        result = process_inference(
            bucket,
            key,
            **common,
            graph_store=args.graph_store,
            aws_credentials=args.aws_credentials,
        )
    else:
        result = refresh_bulk_loads(
            **common,
            graph_store=args.graph_store,
            kubernetes_credentials=args.kubernetes_credentials,
        )
    print(json.dumps(result, indent=2, default=str))
    return 0
