"""Download, decode and preprocess the images of one batch.

Process-wide thread pools, shared by every batch in flight: an I/O pool
(``concurrency`` threads) that only waits on S3, and a decode pool that decodes
and preprocesses. Decoding is CPU work that holds the GIL between C calls, so
more decode threads than cores only adds contention; downloads are waiting, so
they get many threads. Small images are worse still: their decode is mostly
Python holding the GIL, and a second decode thread only takes turns with the
first (a digit PNG decodes 20% slower with two), so images that prepare in under
``SMALL_IMAGE_SECONDS`` go through one thread, larger ones one per core. Only the (small)
model input outlives a record's step: a batch of large photos never sits in
memory as full-size pixels all at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infergraph.aws.errors import is_transient
from infergraph.aws.storage import is_s3_uri, read_uri
from infergraph.inference.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decoded
from infergraph.inference.decode_budget import process_budget
from infergraph.inference.records import ImageRecord
from infergraph.predictors.base import Predictor, RecordError, RecordMeta

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials


@dataclass(frozen=True)
class FetchOptions:
    """How images are read: S3 credentials, parallel downloads per process, pixel limit."""

    credentials: AwsCredentials | None = None
    concurrency: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Rows also carry the reference batch CLI's fields (records.REFERENCE_FIELDS).
    reference_fields: bool = False


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
    process_budget()  # before the pools' threads exist: it also caps malloc's arenas
    decode = _pool("decode", _COST.decode_threads())
    outcomes: list[Future[PreparedRecord]] = []
    for record in records:
        if is_s3_uri(record.uri) and not record.error:
            download = _pool("io", options.concurrency).submit(
                _timed_read, record.uri, options.credentials
            )
            outcomes.append(_then(download, decode, record, predictor, options))
        else:
            outcomes.append(decode.submit(_prepare_one, record, predictor, options))
    wait(outcomes)  # one wake-up: waking per image cost 3 context switches each
    return [f.result() for f in outcomes]


#: Below this many seconds per image, decoding is GIL-bound: one thread does it best.
SMALL_IMAGE_SECONDS = 0.005


class _PrepareCost:
    """A running mean of the CPU seconds one image takes to prepare, in this process.

    CPU time of the preparing thread, not wall time: under load (the flow's own
    threads, a server on the same cores) a digit's wall time swung from 0.4 to 10 ms
    against 5 ms, so runs flipped between one and two threads at random, and two
    threads slowed decoding, which raised the wall time further.
    """

    def __init__(self) -> None:
        self.mean: float | None = None

    def add(self, seconds: float) -> None:
        self.mean = seconds if self.mean is None else 0.9 * self.mean + 0.1 * seconds

    def decode_threads(self) -> int:
        small = self.mean is not None and self.mean < SMALL_IMAGE_SECONDS
        return 1 if small else os.cpu_count() or 2


_COST = _PrepareCost()
_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(kind: str, size: int) -> ThreadPoolExecutor:
    key = (kind, max(1, size))
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(key[1], thread_name_prefix=f"{kind}-pool")
        return _pools[key]


def _timed_read(uri: str, credentials: AwsCredentials | None) -> tuple[bytes, float]:
    started = time.perf_counter()
    data = read_uri(uri, credentials)
    return data, time.perf_counter() - started


def _then(
    download: Future[tuple[bytes, float]],
    decode: ThreadPoolExecutor,
    record: ImageRecord,
    predictor: Predictor,
    options: FetchOptions,
) -> Future[PreparedRecord]:
    """Queue the decode when the download lands, without a decode thread waiting for it."""
    outcome: Future[PreparedRecord] = Future()

    def downloaded(done: Future[tuple[bytes, float]]) -> None:
        try:
            data, seconds = done.result()
        except Exception as exc:
            outcome.set_result(_unreadable(record, exc))
            return
        _relay(decode.submit(_prepare_one, record, predictor, options, data, seconds), outcome)

    download.add_done_callback(downloaded)
    return outcome


def _relay(source: Future[PreparedRecord], target: Future[PreparedRecord]) -> None:
    def copy(done: Future[PreparedRecord]) -> None:
        error = done.exception()
        if error is None:
            target.set_result(done.result())
        else:
            target.set_exception(error)

    source.add_done_callback(copy)


def _unreadable(record: ImageRecord, exc: BaseException) -> PreparedRecord:
    meta = RecordMeta(record.record_id, record.uri, dict(record.fields))
    error = RecordError(f"cannot read {record.uri}: {_reason(exc)}")
    return PreparedRecord(meta, error, is_transient(exc))


def _prepare_one(
    record: ImageRecord,
    predictor: Predictor,
    options: FetchOptions,
    data: bytes | None = None,
    seconds: float | None = None,
) -> PreparedRecord:
    """Read (unless already downloaded), decode and preprocess one record."""
    meta = RecordMeta(record.record_id, record.uri, dict(record.fields))
    if record.error:
        return PreparedRecord(meta, RecordError(record.error))
    if data is None:
        try:
            data, seconds = _timed_read(record.uri, options.credentials)
        except Exception as exc:
            return _unreadable(record, exc)
    started = time.thread_time()  # CPU time: waits for the GIL would make small images look big
    try:
        # The decode budget is held through preprocessing: the full-size pixels live until then.
        with decoded(data, record.uri, options.max_pixels) as image:
            del data
            height, width = image.shape[:2]
            meta = RecordMeta(record.record_id, record.uri, meta.fields, width, height, seconds)
            prepared = PreparedRecord(meta, predictor.prepare(image, meta))
        _COST.add(time.thread_time() - started)
        return prepared
    except ImageDecodeError as exc:
        return PreparedRecord(meta, RecordError(str(exc)), retryable=exc.busy)


def _reason(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message') or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
