"""Where results go: the sink interface and the local CSV / JSON Lines files.

A sink's ``write`` must be idempotent per chunk key: the pipeline delivers at
least once, so after a crash the same chunk may be written again. Sinks that
need AWS (DynamoDB, S3 CSV, SQS) register a URI scheme in :data:`SINK_SCHEMES`.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infergraph.aws.storage import local_path
from infergraph.inference.records import ResultChunk

logger = logging.getLogger(__name__)


class SinkError(ValueError):
    """The sink specification cannot be used."""


class Sink(ABC):
    """Receives chunks of result rows."""

    name: str = "sink"

    def open(self) -> None:
        """Prepare for a run; called once, in the flow's process, before any write."""

    @abstractmethod
    def write(self, chunk: ResultChunk) -> None:
        """Store a chunk; writing the same chunk key again must not duplicate it."""

    def close(self) -> None:
        """Finish the run; called once, in the flow's process."""


def cell(value: Any) -> Any:
    """A CSV cell: nested values as compact JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str)
    return value


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str], header: bool) -> str:
    """Rows as RFC 4180 CSV (quoted where needed), in ``columns`` order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows({k: cell(row.get(k)) for k in columns} for row in rows)
    return buffer.getvalue()


class _LocalFile(Sink):
    """One file per run, appended to under a lock that also holds across processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._lock = threading.Lock()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        with self._lock, open(self.path, "a+", encoding="utf-8", newline="") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                handle.flush()
                fcntl.flock(handle, fcntl.LOCK_UN)


class JsonLinesFileSink(_LocalFile):
    """Results as JSON Lines: one object per image, nested values kept nested."""

    def write(self, chunk: ResultChunk) -> None:
        text = "".join(json.dumps(r, default=str) + "\n" for r in chunk.results)
        with self._locked() as handle:
            handle.write(text)


class CsvFileSink(_LocalFile):
    """Results as CSV; the columns are fixed by ``columns`` or by the first row written.

    Columns a later row adds are dropped with a warning: a CSV file has one header.
    """

    def __init__(self, path: str | Path, columns: Sequence[str] | None = None) -> None:
        super().__init__(path)
        self.columns = list(columns) if columns else None
        self._warned: set[str] = set()

    def write(self, chunk: ResultChunk) -> None:
        if not chunk.results:
            return
        with self._locked() as handle:
            handle.seek(0)
            first_line = handle.readline()
            header = not first_line
            if self.columns is None:
                if header:
                    self.columns = list(chunk.results[0])
                else:
                    self.columns = next(csv.reader([first_line]))
            extra = {k for r in chunk.results for k in r} - set(self.columns) - self._warned
            if extra:
                self._warned |= extra
                logger.warning(
                    "%s: dropping columns not in the header: %s", self.name, sorted(extra)
                )
            handle.seek(0, io.SEEK_END)
            handle.write(csv_text(chunk.results, self.columns, header))


SinkFactory = Callable[[str, dict[str, Any]], Sink]
#: URI scheme → factory, for sinks defined elsewhere (``dynamodb``, ``s3``, ``sqs``).
SINK_SCHEMES: dict[str, SinkFactory] = {}

DEFAULT_SINKS = ("results/predictions.csv", "results/predictions.jsonl")


def open_sink(spec: str | Sink, **options: Any) -> Sink:
    """Turn one entry of a flow's ``sinks`` parameter into a :class:`Sink`.

    ``*.csv`` and ``*.jsonl`` paths are local files (rewritten each run); any
    ``scheme://…`` must be registered in :data:`SINK_SCHEMES`.
    """
    if isinstance(spec, Sink):
        return spec
    scheme, sep, _ = spec.partition("://")
    if sep and scheme != "file":
        factory = SINK_SCHEMES.get(scheme)
        if factory is None:
            known = ", ".join(sorted({"file", *SINK_SCHEMES}))
            raise SinkError(f"sink {spec!r}: unknown scheme {scheme!r} (known: {known})")
        return factory(spec, options)
    path = local_path(spec)
    if path.suffix == ".csv":
        return CsvFileSink(path, options.get("columns"))
    if path.suffix in (".jsonl", ".ndjson"):
        return JsonLinesFileSink(path)
    raise SinkError(f"sink {spec!r}: a local sink must end in .csv or .jsonl")
