"""Result rows as CSV objects under an S3 prefix, one object per result chunk.

Spec: ``s3://bucket/prefix/?columns=request_id,uri,class_id,score&gzip=true&rows=1000``.

The object key is the chunk's deterministic key (the SQS message id, or the
identity of a listing batch): ``<prefix><key>.csv`` (``.csv.gz`` with gzip). A
chunk of more than ``rows`` rows is split into ``<key>-part-0001.csv``, … in
order, so the same chunk always produces the same objects and a rerun replaces
them rather than adding copies. Cells are quoted by the ``csv`` module; nested
values are compact JSON.
"""

from __future__ import annotations

import gzip
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from infergraph.aws.clients import aws_client
from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import BOXES_OPTION, Sink, csv_text
from infergraph.inference.specs import parse_spec

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials

OPTIONS = {
    "columns": "comma-separated columns, in order (default: every field, first seen first)",
    "gzip": "compress objects (.csv.gz)",
    "rows": "most rows per object; bigger chunks become numbered parts (default 1000)",
    **BOXES_OPTION,
}
DEFAULT_ROWS = 1000


class S3CsvSink(Sink):
    """CSV objects named after result chunks."""

    named_by_chunk = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        credentials: AwsCredentials | None = None,
        columns: tuple[str, ...] = (),
        compress: bool = False,
        rows: int = DEFAULT_ROWS,
    ) -> None:
        if rows < 1:
            raise ValueError("rows must be at least 1")
        self.bucket = bucket
        self.prefix = prefix
        self.credentials = credentials
        self.columns = list(columns)
        self.compress = compress
        self.rows = rows
        self.name = f"s3://{bucket}/{prefix}"

    def objects(self, chunk: ResultChunk) -> list[tuple[str, bytes]]:
        """(key, body) for each object the chunk becomes."""
        results = self.laid_out(chunk)
        if not results:
            return []
        columns = self.columns or _columns(results)
        parts = [results[i : i + self.rows] for i in range(0, len(results), self.rows)]
        suffix = ".csv.gz" if self.compress else ".csv"
        objects = []
        for number, rows in enumerate(parts, start=1):
            part = f"-part-{number:04d}" if len(parts) > 1 else ""
            body = csv_text(rows, columns, header=True).encode("utf-8")
            if self.compress:
                body = gzip.compress(body, mtime=0)
            objects.append((f"{self.prefix}{chunk.key}{part}{suffix}", body))
        return objects

    def write(self, chunk: ResultChunk) -> None:
        client = aws_client("s3", self.credentials)
        content_type = "application/gzip" if self.compress else "text/csv; charset=utf-8"

        def put(obj: tuple[str, bytes]) -> None:
            client.put_object(Bucket=self.bucket, Key=obj[0], Body=obj[1], ContentType=content_type)

        objects = self.objects(chunk)
        if len(objects) <= 1:
            for obj in objects:
                put(obj)
            return
        with ThreadPoolExecutor(min(8, len(objects))) as pool:
            for future in [pool.submit(put, o) for o in objects]:
                future.result()


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def open_s3_csv(spec: str, options: dict[str, Any]) -> S3CsvSink:
    """The ``s3://bucket/prefix/`` sink factory."""
    parsed = parse_spec(spec, "sink", OPTIONS)
    bucket, _, prefix = parsed.target.partition("/")
    if not bucket:
        raise parsed.error("no bucket name")
    if prefix and not prefix.endswith("/"):
        raise parsed.error("an S3 sink is a prefix: end it with '/' (objects are named per chunk)")
    return S3CsvSink(
        bucket,
        prefix,
        options.get("credentials"),
        columns=parsed.strings("columns"),
        compress=parsed.boolean("gzip"),
        rows=parsed.integer("rows", DEFAULT_ROWS, minimum=1) or DEFAULT_ROWS,
    )
