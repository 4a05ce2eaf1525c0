"""Neptune's Gremlin CSV load format, loaded into an embedded Gremlin graph (gremlite).

No Gremlin Server can run here (it ships only as a Java distribution outside the
package registries), so the local store keeps property graphs in gremlite: SQLite
behind gremlinpython's ``RemoteConnection``, queried with real gremlinpython
traversals. Rows are checked the way Neptune counts them: a malformed row is a
parsing error, a value that does not fit its column type a datatype mismatch, an
edge whose vertex is missing an insert error.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SYSTEM_COLUMNS = {"~id", "~label", "~from", "~to"}
ID = "~id"  # gremlite assigns its own ids: Neptune's id is kept as this property

_CONVERT = {
    "byte": int,
    "short": int,
    "int": int,
    "long": int,
    "float": float,
    "double": float,
    "string": str,
    "bool": lambda v: {"true": True, "false": False}[v.lower()],
    "boolean": lambda v: {"true": True, "false": False}[v.lower()],
    "date": lambda v: datetime.fromisoformat(v).isoformat(),
}


@dataclass
class CsvFile:
    uri: str
    kind: str  # "vertex" | "edge" | "" when the header is unusable
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0


def _error(code: str, uri: str, record: int, message: str) -> dict[str, Any]:
    return {"errorCode": code, "errorMessage": message, "fileName": uri, "recordNum": record}


def parse_gremlin_csv(data: bytes, uri: str) -> CsvFile:
    """One vertex or edge file: typed rows plus Neptune-style per-record errors."""
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    names = [h.strip() for h in header]
    if {"~from", "~to"} <= set(names):
        kind, required = "edge", ("~id", "~from", "~to", "~label")
    elif "~id" in names:
        kind, required = "vertex", ("~id",)
    else:
        return CsvFile(
            uri, "", errors=[_error("PARSING_ERROR", uri, 1, "no ~id column in the header")]
        )
    missing = [c for c in required if c not in names]
    if missing:
        return CsvFile(uri, "", errors=[_error("PARSING_ERROR", uri, 1, f"missing {missing}")])
    columns = []
    for name in names:
        prop, _, kind_name = name.partition(":")
        many = kind_name.endswith("[]")
        kind_name = (kind_name.removesuffix("[]") or "string").lower()
        if name not in SYSTEM_COLUMNS and kind_name not in _CONVERT:
            return CsvFile(
                uri, "", errors=[_error("PARSING_ERROR", uri, 1, f"unknown type in {name!r}")]
            )
        columns.append((name if name in SYSTEM_COLUMNS else prop, kind_name, many))
    parsed = CsvFile(uri, kind)
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        parsed.records += 1
        if len(row) != len(columns):
            parsed.errors.append(
                _error(
                    "PARSING_ERROR", uri, number, f"{len(row)} fields, header has {len(columns)}"
                )
            )
            continue
        record: dict[str, Any] = {}
        try:
            for (name, kind_name, many), cell in zip(columns, row, strict=True):
                if cell == "":
                    continue
                if name in SYSTEM_COLUMNS:
                    record[name] = cell
                else:
                    convert = _CONVERT[kind_name]
                    values = [convert(v) for v in cell.split(";")] if many else [convert(cell)]
                    record[name] = values
        except (ValueError, KeyError) as exc:
            parsed.errors.append(
                _error("DATATYPE_MISMATCH", uri, number, f"{name}: {cell!r} ({exc})")
            )
            continue
        if any(not record.get(c) for c in required):
            parsed.errors.append(_error("PARSING_ERROR", uri, number, f"empty {required} value"))
            continue
        parsed.rows.append(record)
    return parsed


_graphs: dict[str, Any] = {}
_lock = threading.Lock()


class PropertyGraph:
    """A gremlite graph file, used through gremlinpython traversals."""

    def __init__(self, path: Path):
        from gremlin_python.process.anonymous_traversal import traversal
        from gremlite import SQLiteConnection

        key = str(path.resolve())
        with _lock:
            if key not in _graphs:
                path.parent.mkdir(parents=True, exist_ok=True)
                _graphs[key] = SQLiteConnection(str(path), timeout=60.0)
        self.remote = _graphs[key]
        self.g = traversal().with_(self.remote)

    def has_vertex(self, vertex_id: str) -> bool:
        return bool(self.g.V().has(ID, vertex_id).count().next())

    def has_edge(self, edge_id: str) -> bool:
        return bool(self.g.E().has(ID, edge_id).count().next())

    def counts(self) -> tuple[int, int]:
        return int(self.g.V().count().next()), int(self.g.E().count().next())

    def insert(self, files: list[CsvFile]) -> tuple[int, int]:
        """Add every row (vertices first); returns (added, duplicates). Commits once."""
        added = duplicates = 0
        for file in sorted(files, key=lambda f: f.kind != "vertex"):
            for row in file.rows:
                if file.kind == "vertex":
                    if self.has_vertex(row[ID]):
                        duplicates += 1
                        continue
                    step = self.g.add_v(row.get("~label", "vertex")).property(ID, row[ID])
                else:
                    if self.has_edge(row[ID]):
                        duplicates += 1
                        continue
                    step = (
                        self.g.V()
                        .has(ID, row["~from"])
                        .as_("a")
                        .V()
                        .has(ID, row["~to"])
                        .add_e(row["~label"])
                        .from_("a")
                        .property(ID, row[ID])
                    )
                for name, values in row.items():
                    if name not in SYSTEM_COLUMNS:
                        for value in values:
                            step = step.property(name, value)
                step.next()  # gremlite 0.1 does not know 3.8's iterate() (discard) step
                added += 1
        self.remote.commit()
        return added, duplicates
