"""Check a command line's cheap parts before any data is read, so mistakes are quick.

Local paths and the predictor are checked before Prefect starts; block names,
AWS credentials and buckets right after (they need the Prefect API), before the
flow run starts. Each mistake is a :class:`~infergraph.cli_errors.UsageError`
naming the fix.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from prefect_aws import AwsCredentials

from blocks.dynamodb import DynamoDBTable
from blocks.sns import SnsTopic
from blocks.sqs import SqsQueue
from infergraph.aws.local import (
    LOCAL_CREDENTIALS_BLOCK,
    default_chain_has_credentials,
    local_credentials,
)
from infergraph.blockref import resolve_block
from infergraph.cli_errors import LOCAL_AWS_UP, UsageError, no_such_bucket
from infergraph.inference.sources.base import SourceError, open_source
from infergraph.predictors.loading import PredictorSpecError, resolve_predictor_class

#: Blocks named by scheme strings: sqs://<SqsQueue>, dynamodb://<DynamoDBTable>.
BLOCK_SCHEMES = {"sqs": SqsQueue, "dynamodb": DynamoDBTable}


def check_local(sources: Sequence[str], predictor: str) -> None:
    """Local sources exist and the predictor class imports (no Prefect needed)."""
    for source in sources:
        if "://" in source and not source.startswith("file://"):
            continue
        try:
            open_source(source)
        except SourceError as exc:
            raise UsageError(
                str(exc), "give an existing folder, file or glob (or s3://…, sqs://<queue block>)"
            ) from exc
    try:
        resolve_predictor_class(predictor)
    except PredictorSpecError as exc:
        raise UsageError(
            str(exc), "pass --predictor package.module:Class (a Predictor subclass)"
        ) from exc


def check_blocks(
    sources: Sequence[str],
    sinks: Sequence[str],
    aws_credentials: str | None,
    requests_table: str | None,
    notify_topic: str | None,
) -> str | None:
    """Every named block exists and S3 is reachable; the credentials block to use.

    An S3 source or sink without ``--aws-credentials`` uses the queue's credentials
    with an sqs:// source (as the flow does), else the local block when local AWS
    is up (and says so), else the default AWS chain, which must find credentials
    (also said).
    """
    specs = [*sources, *sinks]
    queue_credentials = (
        None  # an sqs:// source lends its queue's credentials to S3 (the flow's rule)
    )
    for spec in specs:
        scheme, sep, rest = spec.partition("://")
        if sep and scheme in BLOCK_SCHEMES and rest:
            block = resolve_block(rest.split("?", 1)[0].rstrip("/"), BLOCK_SCHEMES[scheme])
            if spec in sources and isinstance(block, SqsQueue):
                queue_credentials = block.credentials
    if requests_table:
        resolve_block(requests_table, DynamoDBTable)
    if notify_topic:
        resolve_block(notify_topic, SnsTopic)
    buckets = sorted(
        {s.split("://", 1)[1].split("/", 1)[0] for s in specs if s.startswith("s3://")}
    )
    credentials = resolve_block(aws_credentials, AwsCredentials) if aws_credentials else None
    if credentials is None and queue_credentials is not None:
        credentials = queue_credentials
    elif buckets and credentials is None:
        credentials = local_credentials()
        if credentials is not None:
            aws_credentials = LOCAL_CREDENTIALS_BLOCK
            print(
                f"using --aws-credentials {LOCAL_CREDENTIALS_BLOCK} (local AWS is up; "
                "pass --aws-credentials to choose another)",
                file=sys.stderr,
            )
        elif default_chain_has_credentials():
            print(
                "no --aws-credentials: using real AWS through the default AWS chain (for "
                f"local AWS: {LOCAL_AWS_UP}, then --aws-credentials {LOCAL_CREDENTIALS_BLOCK})",
                file=sys.stderr,
            )
        else:
            raise UsageError(
                "no AWS credentials for " + ", ".join(f"s3://{b}" for b in buckets),
                f"pass --aws-credentials {LOCAL_CREDENTIALS_BLOCK} (local AWS: {LOCAL_AWS_UP}) "
                "or configure AWS (aws configure)",
            )
    for bucket in buckets:
        check_bucket(bucket, credentials)
    return aws_credentials


def check_bucket(bucket: str, credentials: AwsCredentials | None) -> None:
    """The bucket exists (one HEAD request); connection and credential errors propagate."""
    from botocore.exceptions import ClientError

    from infergraph.aws.clients import aws_client

    try:
        aws_client("s3", credentials).head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise no_such_bucket(bucket) from None
        if code in ("403", "AccessDenied"):
            return  # listing or reading may still be allowed; the run will say
        raise
