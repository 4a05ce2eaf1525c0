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
from infergraph.inference.boxes import lay_out, parse_layout
from infergraph.inference.records import BoxLayout, ResultChunk

logger = logging.getLogger(__name__)


class SinkError(ValueError):
    """The sink specification cannot be used."""


#: The option every sink takes for a detector's boxes (see infergraph/inference/boxes.py).
BOXES_OPTION = {"boxes": "a detector's boxes: rows (one row per box, the default) or json"}


class Sink(ABC):
    """Receives chunks of result rows."""

    name: str = "sink"
    #: How a detector's boxes are written; set from the ``?boxes=`` option.
    boxes: BoxLayout = BoxLayout.ROWS
    #: Each chunk becomes an object named by its key, so a rerun rewrites the same
    #: objects only if its batches are the same (see batch_sizing.stable_batches).
    named_by_chunk: bool = False

    def laid_out(self, chunk: ResultChunk) -> list[dict[str, Any]]:
        """The chunk's rows as this sink writes them (boxes laid out per :attr:`boxes`)."""
        return lay_out(chunk.results, self.boxes)

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
        text = "".join(json.dumps(r, default=str) + "\n" for r in self.laid_out(chunk))
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
        rows = self.laid_out(chunk)
        if not rows:
            return
        with self._locked() as handle:
            handle.seek(0)
            first_line = handle.readline()
            header = not first_line
            if self.columns is None:
                if header:
                    self.columns = list(rows[0])
                else:
                    self.columns = next(csv.reader([first_line]))
            extra = {k for r in rows for k in r} - set(self.columns) - self._warned
            if extra:
                self._warned |= extra
                logger.warning(
                    "%s: dropping columns not in the header: %s", self.name, sorted(extra)
                )
            handle.seek(0, io.SEEK_END)
            handle.write(csv_text(rows, self.columns, header))


SinkFactory = Callable[[str, dict[str, Any]], Sink]
#: URI scheme → factory, for sinks defined elsewhere (``dynamodb``, ``s3``, ``sqs``).
SINK_SCHEMES: dict[str, SinkFactory] = {}

DEFAULT_SINKS = ("results/predictions.csv", "results/predictions.jsonl")


def open_sink(spec: str | Sink, **options: Any) -> Sink:
    """Turn one entry of a flow's ``sinks`` parameter into a :class:`Sink`.

    ``*.csv`` and ``*.jsonl`` paths are local files (rewritten each run; a
    ``?boxes=json`` suffix is their one option); any ``scheme://…`` must be
    registered in :data:`SINK_SCHEMES`.
    """
    if isinstance(spec, Sink):
        return spec
    scheme, sep, _ = spec.partition("://")
    if sep and scheme != "file":
        factory = SINK_SCHEMES.get(scheme)
        if factory is None:
            known = ", ".join(sorted({"file", *SINK_SCHEMES}))
            raise SinkError(f"sink {spec!r}: unknown scheme {scheme!r} (known: {known})")
        sink = factory(spec, options)
        sink.boxes = box_layout(spec)
        return sink
    text, _, query = spec.partition("?")
    path = local_path(text)
    local: Sink
    if path.suffix == ".csv":
        local = CsvFileSink(path, options.get("columns"))
    elif path.suffix in (".jsonl", ".ndjson"):
        local = JsonLinesFileSink(path)
    else:
        raise SinkError(f"sink {spec!r}: a local sink must end in .csv or .jsonl")
    if query:
        name, eq, value = query.partition("=")
        if name != "boxes" or not eq or "&" in value:
            raise SinkError(f"sink {spec!r}: a local file's only option is ?boxes=rows|json")
    local.boxes = box_layout(spec)
    return local


def box_layout(spec: str) -> BoxLayout:
    """The ``boxes=`` option of a sink string (rows when absent)."""
    from urllib.parse import parse_qs

    values = parse_qs(spec.partition("?")[2], keep_blank_values=True).get("boxes")
    try:
        return parse_layout(values[-1] if values else None, f"sink {spec!r}")
    except ValueError as exc:
        raise SinkError(str(exc)) from None
