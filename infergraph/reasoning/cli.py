"""``python flows/reasoning.py``: the reasoning flows from the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from infergraph.aws.storage import split_s3_uri
from infergraph.cli_errors import UsageParser, command
from infergraph.reasoning.jobs import dataset_of_job_id
from infergraph.reasoning.settings import jobspec_suffix
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
    cancel_reasoning_job: Any = None,
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv`` and run one of the flows (passed in: the library never imports flows)."""
    parser = UsageParser(
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
    upload = sub.add_parser(
        "upload", help="check a local jobspec and upload it (no aws CLI needed); prints its URI"
    )
    upload.add_argument("jobspec", help=f"a local *{jobspec_suffix()} file")
    upload.add_argument("dest", help="s3://bucket/prefix/ to upload it under (keeps its name)")
    sub.add_parser("refresh", help="refresh bulk loads, enforce timeouts and send notices")
    cancel = sub.add_parser("cancel", help="cancel a job (its Kubernetes Job or its bulk load)")
    cancel.add_argument("job_id", help="e.g. transactions_2024-05-01_000")
    example = sub.add_parser(
        "example", help="write the example dataset to a folder or s3:// prefix"
    )
    example.add_argument("dest")
    example.add_argument(
        "--triples", type=int, default=10_000, help="about this many (whole transactions)"
    )
    example.add_argument("--seed", type=int, default=42)
    example.add_argument(
        "--rules",
        choices=["datalog", "sparql"],
        default="datalog",
        help="rule form: RDFox Datalog (*.dlog, both runners) or SPARQL Update (*.ru, local)",
    )
    args = parser.parse_args(argv)
    common = {"jobs_table": args.jobs_table, "notices": args.notices}
    if args.command == "example":
        from infergraph.reasoning.examples import write_example

        creds = credentials_block(args.aws_credentials)
        data = write_example(
            args.dest, args.triples, args.seed, credentials=creds, rules=args.rules
        )
        print(
            f"wrote {data.triple_count} triples (asked for about {args.triples}: whole "
            f"transactions), rules and queries to {args.dest}"
        )
        return 0
    if args.command == "upload":
        return _upload(args.jobspec, args.dest, args.aws_credentials)
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
    elif args.command == "cancel":
        try:
            dataset_of_job_id(args.job_id)
        except ValueError as exc:
            parser.error(str(exc))
        result = cancel_reasoning_job(
            args.job_id,
            **common,
            graph_store=args.graph_store,
            kubernetes_credentials=args.kubernetes_credentials,
        )
        if result.get("refused"):
            print(f"not cancelled: {result['refused']}")
            return 1
    else:
        result = refresh_bulk_loads(
            **common,
            graph_store=args.graph_store,
            kubernetes_credentials=args.kubernetes_credentials,
            aws_credentials=args.aws_credentials,
        )
    print(json.dumps(result, indent=2, default=str))
    return 0


def _upload(path: str, dest: str, aws_credentials: str | None) -> int:
    """Validate first: a jobspec that would be refused is not uploaded (its problems are shown)."""
    from pathlib import Path

    from infergraph.aws.clients import aws_client
    from infergraph.aws.storage import is_s3_uri
    from infergraph.reasoning.jobspec import JobSpecError, parse_jobspec

    source = Path(path)
    if not source.name.endswith(jobspec_suffix()):
        print(f"{path}: a jobspec's name must end in {jobspec_suffix()} (the S3 trigger's suffix)")
        return 1
    if not is_s3_uri(dest):
        print(f"{dest}: the destination must be an s3://bucket/prefix/")
        return 1
    try:
        spec = parse_jobspec(source.read_bytes(), str(source))
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}")
        return 1
    except JobSpecError as exc:
        print(f"not uploaded: {exc}")
        return 1
    for warning in spec.warnings():
        print(f"warning: {warning}")
    bucket, prefix = split_s3_uri(dest if dest.endswith("/") else dest + "/")
    client = aws_client("s3", credentials_block(aws_credentials))
    client.put_object(Bucket=bucket, Key=prefix + source.name, Body=source.read_bytes())
    print(f"s3://{bucket}/{prefix}{source.name}")
    return 0
