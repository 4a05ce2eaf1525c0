"""Download, decode and preprocess the images of one batch, concurrently.

Each record goes through read → decode → ``preprocess_input`` in one worker
thread, so only the (small) model input outlives the step: a batch of large
photos never sits in memory as full-size pixels all at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from predictors.base import Predictor, RecordError, RecordMeta
from tasks.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from tasks.errors import is_transient
from tasks.records import ImageRecord
from tasks.storage import read_uri

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials


@dataclass(frozen=True)
class FetchOptions:
    """How a batch's images are read: credentials for S3, parallelism, pixel limit."""

    credentials: AwsCredentials | None = None
    concurrency: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(slots=True)
class PreparedRecord:
    """A record's model input, or why it has none (and whether a retry may help)."""

    meta: RecordMeta
    value: Any
    retryable: bool = False


def prepare_batch(
    records: Sequence[ImageRecord], predictor: Predictor, options: FetchOptions
) -> list[PreparedRecord]:
    """Read, decode and preprocess every record; failures become per-record errors."""
    if not records:
        return []
    workers = max(1, min(options.concurrency, len(records)))
    if workers == 1:
        return [_prepare_one(r, predictor, options) for r in records]
    with ThreadPoolExecutor(workers, thread_name_prefix="fetch") as pool:
        return list(pool.map(lambda r: _prepare_one(r, predictor, options), records))


def _prepare_one(
    record: ImageRecord, predictor: Predictor, options: FetchOptions
) -> PreparedRecord:
    meta = RecordMeta(record.record_id, record.uri, dict(record.fields))
    if record.error:
        return PreparedRecord(meta, RecordError(record.error))
    try:
        data = read_uri(record.uri, options.credentials)
    except Exception as exc:
        return PreparedRecord(
            meta, RecordError(f"cannot read {record.uri}: {_reason(exc)}"), is_transient(exc)
        )
    try:
        image = decode_image(data, record.uri, options.max_pixels)
    except ImageDecodeError as exc:
        return PreparedRecord(meta, RecordError(str(exc)))
    del data
    meta = RecordMeta(record.record_id, record.uri, meta.fields, image.shape[1], image.shape[0])
    return PreparedRecord(meta, predictor.prepare(image, meta))


def _reason(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message') or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
