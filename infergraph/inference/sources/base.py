"""Where images come from: the source interface, local files and explicit URIs.

A source yields :class:`ImageRecord` references lazily, in a deterministic
order, and hears back when a group of records is safely written (``ack``) or
must be tried again later (``nack``). Sources that need AWS (an S3 prefix, an
SQS queue) register a URI scheme in :data:`SOURCE_SCHEMES`.
"""

from __future__ import annotations

import csv
import glob
import io
import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from infergraph.aws.storage import local_path
from infergraph.inference.batch_sizing import BatchSize, sizer
from infergraph.inference.records import ImageRecord

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MANIFEST = "manifest.csv"


class SourceError(ValueError):
    """The source specification cannot be used (a typo'd path, an unknown scheme)."""


class Source(ABC):
    """Yields image references and learns which groups of them are done."""

    description: str = "source"
    #: Records come in groups (messages) that name their result chunks; else a
    #: chunk is named by the records of its batch.
    grouped: bool = False
    #: Seconds spent waiting for input that did not come (a queue's empty polls).
    idle_seconds: float = 0.0

    @abstractmethod
    def records(self) -> Iterator[ImageRecord]:
        """Every record, lazily, in a stable order."""

    def batches(self, batch_size: BatchSize) -> Iterator[list[ImageRecord]]:
        """Records in lists of at most ``batch_size`` (asked again for each list)."""
        size = sizer(batch_size)
        records = iter(self.records())
        while batch := list(itertools.islice(records, size())):
            yield batch

    def count(self) -> int | None:
        """How many records there are, when that is cheap to learn (for an ETA); else None."""
        return None

    def ack(self, groups: Sequence[str]) -> None:
        """Every record of these groups is written to every sink."""

    def nack(self, groups: Sequence[str], reason: str) -> None:
        """These groups failed in a way a later attempt may fix."""

    def heartbeat(self) -> None:
        """Called regularly while work is in flight (e.g. to extend leases)."""

    def close(self) -> None:
        """Release anything the source holds."""


class UriList(Source):
    """An explicit list of local paths and/or ``s3://`` URIs, each fetched as given."""

    def __init__(self, uris: Iterable[str], fields: dict[str, dict[str, Any]] | None = None):
        self.uris = list(uris)
        self.fields = fields or {}
        self.description = f"{len(self.uris)} listed image(s)"

    def records(self) -> Iterator[ImageRecord]:
        for uri in self.uris:
            yield ImageRecord(uri=uri, fields=dict(self.fields.get(uri, {})))

    def count(self) -> int:
        return len(self.uris)


class LocalFolder(Source):
    """Image files under a folder (recursively) or matching a glob, in sorted order.

    A ``manifest.csv`` beside the images (a ``file`` column plus any others, for
    example ``label``) adds its columns to each image's result; with a ``label``
    column the run reports its accuracy.
    """

    def __init__(self, root: str | Path, pattern: str | None = None):
        self.root = Path(root)
        self.pattern = pattern
        self.description = f"{self.root / pattern}" if pattern else f"{self.root}/"
        self.manifest = _read_manifest(self.root / MANIFEST)

    def records(self) -> Iterator[ImageRecord]:
        for path in self._paths():
            name = path.relative_to(self.root).as_posix()
            yield ImageRecord(uri=str(path), fields=dict(self.manifest.get(name, {})))

    def count(self) -> int:
        """A second walk of the folder: cheap beside reading its images."""
        return sum(1 for _ in self._paths())

    def _paths(self) -> Iterator[Path]:
        if self.pattern:
            matches = glob.iglob(self.pattern, root_dir=self.root, recursive=True)
            yield from (self.root / m for m in sorted(matches) if (self.root / m).is_file())
            return
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    yield Path(folder) / name


def parse_manifest(text: str, where: str) -> dict[str, dict[str, str]]:
    """A manifest's rows by file name: every column but ``file`` becomes a request field."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "file" not in reader.fieldnames:
        raise SourceError(f"{where}: a manifest needs a 'file' column")
    return {
        row["file"]: {k: v for k, v in row.items() if k != "file" and k is not None}
        for row in reader
    }


def _read_manifest(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    return parse_manifest(path.read_text(encoding="utf-8-sig"), str(path))


SourceFactory = Callable[[str, dict[str, Any]], Source]
#: URI scheme → factory, for sources defined elsewhere (``s3`` prefixes, ``sqs`` queues).
SOURCE_SCHEMES: dict[str, SourceFactory] = {}


def open_source(spec: str | Sequence[str] | Source, **options: Any) -> Source:
    """Turn a flow's ``source`` parameter into a :class:`Source`.

    - a list: explicit local paths and/or ``s3://bucket/key`` URIs;
    - ``s3://bucket/key.png``: that one object;
    - any other ``scheme://…`` registered in :data:`SOURCE_SCHEMES`
      (e.g. ``s3://bucket/prefix/`` for a prefix, ``sqs://…`` for a queue);
    - a local folder, a glob (``photos/**/*.jpg``) or a single file.
    """
    if isinstance(spec, Source):
        return spec
    if not isinstance(spec, str):
        return UriList(spec)
    scheme, sep, _ = spec.partition("://")
    if sep and scheme != "file":
        factory = SOURCE_SCHEMES.get(scheme)
        if factory is not None:
            return factory(spec, options)
        if scheme == "s3":
            return UriList([spec])
        known = ", ".join(sorted({"s3", "file", *SOURCE_SCHEMES}))
        raise SourceError(f"source {spec!r}: unknown scheme {scheme!r} (known: {known})")
    path = local_path(spec)
    if path.is_dir():
        return LocalFolder(path)
    if path.is_file():
        return UriList([str(path)])
    if glob.has_magic(str(path)):
        root, pattern = _split_glob(path)
        if root.is_dir():
            return LocalFolder(root, pattern)
    raise SourceError(f"source {spec!r}: no such file, folder or glob")


def _split_glob(path: Path) -> tuple[Path, str]:
    """``photos/2024/**/*.jpg`` → (``photos/2024``, ``**/*.jpg``)."""
    parts = path.parts
    first = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    return Path(*parts[:first]) if first else Path("."), str(Path(*parts[first:]))


def source_label(spec: str | Sequence[str] | Source | None, default: str = "samples/") -> str:
    """A short name for a source, to name runs by: ``samples/``, ``s3://bucket/in/``, ``3 images``.

    Local folders go by their own name (the absolute path means little in a runs list);
    URIs are kept whole; a list of one goes by that one image.
    """
    if isinstance(spec, Source):  # built for the run, e.g. by --from-env
        return spec.description
    if not spec:
        return default
    if not isinstance(spec, str):
        items = list(spec)
        return source_label(items[0]) if len(items) == 1 else f"{len(items)} listed images"
    if "://" in spec:
        return spec
    path = Path(spec)
    if any(ch in path.name for ch in "*?["):
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return f"{path.name}/" if spec.endswith("/") or path.is_dir() else path.name or spec
