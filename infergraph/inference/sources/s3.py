"""Images under an S3 prefix, listed lazily page by page.

``s3://bucket/prefix/`` (or ``s3://bucket``) lists every object under the
prefix whose name ends in an image suffix; ``s3://bucket/photos/*.jpg`` matches a
shell-style pattern against the whole key (``*`` also crosses ``/``); any other
``s3://bucket/key`` is that one object. S3 lists keys in a fixed (binary) order,
so the same listing forms the same batches, and a rerun replaces rather than
duplicates what an interrupted run wrote.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from infergraph.aws.clients import aws_client
from infergraph.aws.errors import describe_aws_error
from infergraph.inference.records import ImageRecord
from infergraph.inference.sources.base import (
    IMAGE_SUFFIXES,
    MANIFEST,
    Source,
    SourceError,
    UriList,
    parse_manifest,
)
from infergraph.inference.specs import parse_spec

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials

OPTIONS = {
    "suffixes": "comma-separated key endings to keep; empty keeps every object",
    "manifest": f"read {MANIFEST} under the prefix for extra columns (default true)",
}


class S3Prefix(Source):
    """Every image object under ``s3://bucket/prefix``, optionally matching a pattern.

    A ``manifest.csv`` directly under the prefix (a ``file`` column with keys
    relative to the prefix, plus any other columns such as ``label``) adds its
    columns to each image's result, as for a local folder.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        credentials: AwsCredentials | None = None,
        suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
        pattern: str | None = None,
        manifest: bool = True,
        page_size: int = 1000,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.credentials = credentials
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.pattern = pattern
        self.read_manifest = manifest
        self.page_size = page_size
        self.description = f"s3://{bucket}/{pattern or prefix}"

    def records(self) -> Iterator[ImageRecord]:
        client = aws_client("s3", self.credentials, bulk=True)
        manifest = self._manifest(client) if self.read_manifest else {}
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=self.prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if self._wanted(key):
                        fields = dict(manifest.get(key[len(self.prefix) :], {}))
                        yield ImageRecord(uri=f"s3://{self.bucket}/{key}", fields=fields)
        except ClientError as exc:
            raise SourceError(f"cannot list {self.description}: {describe_aws_error(exc)}") from exc

    def _wanted(self, key: str) -> bool:
        if key.endswith("/") or key == self.prefix + MANIFEST:
            return False
        if self.pattern is not None and not fnmatchcase(key, self.pattern):
            return False
        return not self.suffixes or key.lower().endswith(self.suffixes)

    def _manifest(self, client: Any) -> dict[str, dict[str, str]]:
        uri = f"s3://{self.bucket}/{self.prefix}{MANIFEST}"
        try:
            body = client.get_object(Bucket=self.bucket, Key=self.prefix + MANIFEST)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return {}
            raise SourceError(f"cannot read {uri}: {describe_aws_error(exc)}") from exc
        return parse_manifest(body.read().decode("utf-8-sig"), uri)


def open_s3(spec: str, options: dict[str, Any]) -> Source:
    """The ``s3://`` source factory: one object, a prefix, or a key pattern."""
    key = spec[len("s3://") :].partition("/")[2]
    if "?" not in spec and key and not key.endswith("/") and not glob.has_magic(key):
        return UriList([spec])  # one object, its key taken literally
    parsed = parse_spec(spec, "source", OPTIONS)
    bucket, _, key = parsed.target.partition("/")
    if not bucket:
        raise parsed.error("no bucket name")
    credentials = options.get("credentials")
    suffixes = parsed.strings("suffixes", IMAGE_SUFFIXES)
    manifest = parsed.boolean("manifest", True)
    if glob.has_magic(key):
        literal = key[: min(key.find(c) for c in "*?[" if c in key)]
        return S3Prefix(bucket, literal, credentials, suffixes, pattern=key, manifest=False)
    if not key or key.endswith("/"):
        return S3Prefix(bucket, key, credentials, suffixes, manifest=manifest)
    raise parsed.error("options apply to a prefix (ending in /) or a pattern, not one object")
