"""Read bytes from a local path or an ``s3://`` URI.

One place that knows how URIs map to storage, shared by the image fetcher and by
predictors that load model files from S3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); raises ValueError for anything else."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    """A filesystem path for a plain path or a ``file://`` URI."""
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else Path(uri)


def read_uri(uri: str, credentials: AwsCredentials | None = None, s3_client: Any = None) -> bytes:
    """The whole object at ``uri``: an S3 object or a local file."""
    if is_s3_uri(uri):
        from infergraph.aws.clients import aws_client

        bucket, key = split_s3_uri(uri)
        client = s3_client or aws_client("s3", credentials, bulk=True)
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return local_path(uri).read_bytes()
