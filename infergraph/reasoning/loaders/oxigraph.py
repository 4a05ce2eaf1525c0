"""A local stand-in for Neptune's bulk loader: Oxigraph, embedded or as a server.

It keeps Neptune's statuses and counters, so a job loaded here reads like one loaded
into Neptune; its load records live in the store itself (one named graph).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import httpx
from botocore.exceptions import ClientError

from blocks.oxigraph import OxigraphStore
from infergraph.aws.clients import aws_client
from infergraph.aws.errors import is_transient
from infergraph.aws.storage import is_s3_uri, local_path, split_s3_uri
from infergraph.reasoning.jobspec import RDF_FORMATS
from infergraph.reasoning.loaders.base import (
    MAX_ERROR_LOGS,
    RECORDS_GRAPH,
    LoadRefused,
    LoadRequest,
    LoadStatus,
    count_query,
    count_what,
)
from infergraph.reasoning.loaders.status import L

RECORD_PREDICATE = "urn:infergraph:loader-job-status"


class OxigraphLoader:
    """Neptune's loader semantics over Oxigraph, in process (``path``) or served (``url``).

    A load runs to completion inside :meth:`start` (local data is small enough), and its
    status is stored in the store itself (graph ``urn:infergraph:loader-jobs``) so a later
    flow run in another process reads it back exactly like Neptune's ``GET /loader/{id}``.
    Files are parsed before anything is inserted, so ``failOnError`` leaves the graph
    untouched on a parse error. ``mode`` and ``parallelism`` are recorded, not acted on:
    RDF inserts are idempotent and there is one local writer.
    """

    kind = "oxigraph"

    def __init__(self, store: OxigraphStore):
        self.block = store
        self.backend: _Backend = (
            _Server(store.url) if store.url else _Embedded(Path(store.path or ""))
        )

    def defaults(self) -> tuple[str | None, str | None]:
        return None, None

    def start(self, request: LoadRequest) -> str:
        if request.format == "opencypher" or (request.format == "csv" and self.block.url):
            raise LoadRefused(
                L.LOAD_FAILED_INVALID_REQUEST,
                f"the local store loads RDF ({', '.join(sorted(RDF_FORMATS))}) and, when it has a "
                f"path, Gremlin CSV; format {request.format!r} here needs Neptune",
            )
        load_id = str(uuid.uuid4())
        started = time.time()
        status = LoadStatus(
            load_id, L.LOAD_IN_PROGRESS, {"fullUri": request.source, "startTime": int(started)}
        )
        self._save(status, request)
        try:
            status = self._run(load_id, request, started)
        except Exception as exc:  # the record must never stay IN_PROGRESS after we return
            status = _failed(
                load_id, request, started, L.LOAD_UNEXPECTED_ERROR, f"{type(exc).__name__}: {exc}"
            )
            self._save(status, request)
            if is_transient(exc):
                raise
            return load_id
        self._save(status, request)
        return load_id

    def status(self, load_id: str) -> LoadStatus:
        record = self.backend.get_record(load_id)
        if record is None:
            raise LookupError(f"no load {load_id!r} in the local graph store")
        return LoadStatus(**record["status"])

    def cancel(self, load_id: str) -> None:
        current = self.status(load_id)
        if current.status not in (L.LOAD_NOT_STARTED, L.LOAD_IN_QUEUE):
            raise RuntimeError(
                f"load {load_id} is {current.status}: only queued loads can be cancelled"
            )
        current.status = L.LOAD_CANCELLED_BY_USER
        self._save(current, LoadRequest.from_record(self.backend.get_record(load_id)["request"]))

    def verify(self, request: LoadRequest) -> dict[str, Any] | None:
        if request.format == "csv":
            vertices, edges = self.property_graph().counts()
            return {
                "what": "vertices and edges in the property graph",
                "query": "g.V().count(); g.E().count()",
                "count": vertices + edges,
                "vertices": vertices,
                "edges": edges,
            }
        query = count_query(request)
        return {"what": count_what(request), "query": query, "count": self.backend.count(query)}

    def property_graph(self) -> Any:
        from infergraph.reasoning.loaders.property_graph import PropertyGraph

        path = Path(self.block.path or "")
        return PropertyGraph(path.with_name(path.name + ".property-graph.sqlite"))

    # -- the load itself -------------------------------------------------------------------------

    def _run(self, load_id: str, request: LoadRequest, started: float) -> LoadStatus:
        for dependency in request.dependencies:
            record = self.backend.get_record(dependency)
            state = record["status"]["status"] if record else "unknown"
            if state != L.LOAD_COMPLETED:
                return _failed(
                    load_id,
                    request,
                    started,
                    L.LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED,
                    f"dependency {dependency} is {state}",
                )
        try:
            files = list(_list_source(request.source, self.block))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = (
                "LOAD_S3_ACCESS_DENIED_ERROR"
                if code in ("AccessDenied", "NoSuchBucket", "403")
                else "LOAD_S3_READ_ERROR"
            )
            return _failed(
                load_id, request, started, status, f"{code}: cannot list {request.source}"
            )
        if not files:
            return _failed(
                load_id, request, started, "LOAD_S3_READ_ERROR", f"no files under {request.source}"
            )
        with ThreadPoolExecutor(max_workers=8) as pool:
            contents = list(pool.map(lambda uri: (uri, _read(uri, self.block)), files))
        if request.format == "csv":
            return self._run_csv(load_id, request, started, contents)
        errors: list[dict[str, Any]] = []
        parsed: list[tuple[str, bytes, int]] = []
        records = 0
        for uri, data in contents:
            good, count, file_errors = _parse(data, request, uri)
            errors.extend(file_errors)
            records += count
            if good:
                parsed.append((uri, good, count))
        parsing_errors = len(errors)
        overall = {
            "fullUri": request.source,
            "runNumber": 1,
            "retryNumber": 0,
            "startTime": int(started),
            "totalRecords": records,
            "totalDuplicates": 0,
            "parsingErrors": parsing_errors,
            "datatypeMismatchErrors": 0,
            "insertErrors": 0,
        }
        if errors and request.fail_on_error:
            overall["totalTimeSpent"] = int(time.time() - started)
            failed_feeds = len({e["fileName"] for e in errors})
            feeds = [{L.LOAD_FAILED: failed_feeds}]
            if len(files) > failed_feeds:
                feeds.append({L.LOAD_NOT_STARTED: len(files) - failed_feeds})
            return LoadStatus(load_id, L.LOAD_FAILED, overall, feeds, errors[:MAX_ERROR_LOGS])
        before = self.backend.size()
        for _uri, data, _count in parsed:
            self.backend.insert(data, request)
        added = self.backend.size() - before
        overall["totalDuplicates"] = max(records - added, 0)
        overall["totalTimeSpent"] = int(time.time() - started)
        feeds = [{L.LOAD_COMPLETED: len(parsed)}]
        if len(parsed) < len(files):
            feeds.append({L.LOAD_FAILED: len(files) - len(parsed)})
        return LoadStatus(load_id, L.LOAD_COMPLETED, overall, feeds, errors[:MAX_ERROR_LOGS])

    def _run_csv(
        self, load_id: str, request: LoadRequest, started: float, contents: list[tuple[str, bytes]]
    ) -> LoadStatus:
        """Gremlin CSV: validate every row (edges against known vertices), then insert."""
        from infergraph.reasoning.loaders.property_graph import ID, parse_gremlin_csv

        graph = self.property_graph()
        files = [parse_gremlin_csv(data, uri) for uri, data in contents]
        errors = [e for f in files for e in f.errors]
        vertex_ids = {row[ID] for f in files if f.kind == "vertex" for row in f.rows}
        for f in (f for f in files if f.kind == "edge"):
            kept = []
            for row in f.rows:
                absent = [
                    v
                    for v in (row["~from"], row["~to"])
                    if v not in vertex_ids and not graph.has_vertex(v)
                ]
                if absent:
                    errors.append(
                        {
                            "errorCode": "FROM_OR_TO_VERTEX_ARE_MISSING",
                            "errorMessage": f"edge {row[ID]}: no vertex {', '.join(absent)}",
                            "fileName": f.uri,
                            "recordNum": 0,
                        }
                    )
                else:
                    kept.append(row)
            f.rows = kept
        codes = [e["errorCode"] for e in errors]
        overall = {
            "fullUri": request.source,
            "runNumber": 1,
            "retryNumber": 0,
            "startTime": int(started),
            "totalRecords": sum(f.records for f in files),
            "totalDuplicates": 0,
            "parsingErrors": codes.count("PARSING_ERROR"),
            "datatypeMismatchErrors": codes.count("DATATYPE_MISMATCH"),
            "insertErrors": codes.count("FROM_OR_TO_VERTEX_ARE_MISSING"),
        }
        failed_files = {e["fileName"] for e in errors}
        if errors and request.fail_on_error:
            overall["totalTimeSpent"] = int(time.time() - started)
            feeds = [{L.LOAD_FAILED: len(failed_files)}]
            if len(files) > len(failed_files):
                feeds.append({L.LOAD_NOT_STARTED: len(files) - len(failed_files)})
            return LoadStatus(load_id, L.LOAD_FAILED, overall, feeds, errors[:MAX_ERROR_LOGS])
        _added, duplicates = graph.insert([f for f in files if f.kind])
        overall["totalDuplicates"] = duplicates
        overall["totalTimeSpent"] = int(time.time() - started)
        feeds = [{L.LOAD_COMPLETED: len(files) - len(failed_files)}]
        if failed_files:
            feeds.append({L.LOAD_FAILED: len(failed_files)})
        return LoadStatus(load_id, L.LOAD_COMPLETED, overall, feeds, errors[:MAX_ERROR_LOGS])

    def _save(self, status: LoadStatus, request: LoadRequest) -> None:
        self.backend.put_record(
            status.load_id, {"status": asdict(status), "request": request.record()}
        )


def _failed(
    load_id: str, request: LoadRequest, started: float, status: str, message: str
) -> LoadStatus:
    overall = {
        "fullUri": request.source,
        "runNumber": 1,
        "retryNumber": 0,
        "startTime": int(started),
        "totalTimeSpent": int(time.time() - started),
        "totalRecords": 0,
        "totalDuplicates": 0,
        "parsingErrors": 0,
        "datatypeMismatchErrors": 0,
        "insertErrors": 0,
    }
    error = {
        "errorCode": status,
        "errorMessage": message,
        "fileName": request.source,
        "recordNum": 0,
    }
    return LoadStatus(load_id, status, overall, [{status: 1}], [error])


def _list_source(source: str, block: OxigraphStore) -> Iterator[str]:
    """Every file Neptune would load for ``source``: one object, or all objects under a prefix."""
    if is_s3_uri(source):
        bucket, prefix = split_s3_uri(source)
        paginator = aws_client("s3", block.credentials).get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    yield f"s3://{bucket}/{obj['Key']}"
        return
    path = local_path(source)
    if path.is_file():
        yield str(path)
    elif path.is_dir():
        yield from (str(p) for p in sorted(path.rglob("*")) if p.is_file())


def _read(uri: str, block: OxigraphStore) -> bytes:
    if is_s3_uri(uri):
        bucket, key = split_s3_uri(uri)
        return aws_client("s3", block.credentials).get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def _rdf_format(name: str) -> Any:
    from pyoxigraph import RdfFormat

    return {
        "ntriples": RdfFormat.N_TRIPLES,
        "nquads": RdfFormat.N_QUADS,
        "turtle": RdfFormat.TURTLE,
        "rdfxml": RdfFormat.RDF_XML,
    }[name]


def _parse(data: bytes, request: LoadRequest, uri: str) -> tuple[bytes, int, list[dict[str, Any]]]:
    """(loadable bytes, record count, Neptune-style parse errors) for one file.

    Line formats are checked line by line after a failure, so one bad record costs one
    record (as in Neptune) rather than the file.
    """
    from pyoxigraph import parse

    fmt = _rdf_format(request.format)
    try:
        count = sum(1 for _ in parse(data, fmt, base_iri=request.base_uri))
        return data, count, []
    except SyntaxError as exc:
        if request.format not in ("ntriples", "nquads"):
            return b"", 0, [_parse_error(uri, 0, str(exc))]
    good: list[bytes] = []
    errors = []
    count = 0
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            n = sum(1 for _ in parse(line, fmt))
        except SyntaxError as exc:
            errors.append(_parse_error(uri, number, str(exc)))
            continue
        count += n
        good.append(line)
    return b"\n".join(good) + b"\n", count, errors


def _parse_error(uri: str, record: int, message: str) -> dict[str, Any]:
    return {
        "errorCode": "PARSING_ERROR",
        "errorMessage": message,
        "fileName": uri,
        "recordNum": record,
    }


# -- where the local graph lives ---------------------------------------------------------------


class _Backend(Protocol):
    def insert(self, data: bytes, request: LoadRequest) -> None: ...
    def size(self) -> int: ...
    def count(self, query: str) -> int: ...
    def put_record(self, load_id: str, record: dict[str, Any]) -> None: ...
    def get_record(self, load_id: str) -> dict[str, Any] | None: ...


_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def _record_update(load_id: str, record: dict[str, Any]) -> str:
    subject = f"<urn:infergraph:load:{load_id}>"
    literal = json.dumps(json.dumps(record))
    return (
        f"DELETE WHERE {{ GRAPH <{RECORDS_GRAPH}> {{ {subject} <{RECORD_PREDICATE}> ?o }} }};\n"
        f"INSERT DATA {{ GRAPH <{RECORDS_GRAPH}> {{ {subject} <{RECORD_PREDICATE}> {literal} }} }}"
    )


def _record_query(load_id: str) -> str:
    return (
        f"SELECT ?o WHERE {{ GRAPH <{RECORDS_GRAPH}> "
        f"{{ <urn:infergraph:load:{load_id}> <{RECORD_PREDICATE}> ?o }} }}"
    )


class _Embedded:
    """pyoxigraph on disk, one open handle per process (RocksDB allows one writer process)."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def store(self) -> Any:
        key = str(self.path.resolve())
        with _stores_lock:
            if key not in _stores:
                _stores[key] = _open_store(self.path)
            return _stores[key]

    def insert(self, data: bytes, request: LoadRequest) -> None:
        from pyoxigraph import NamedNode

        to_graph = (
            NamedNode(request.named_graph)
            if request.named_graph and request.format != "nquads"
            else None
        )
        self.store.load(
            data, _rdf_format(request.format), base_iri=request.base_uri, to_graph=to_graph
        )

    def size(self) -> int:
        return len(self.store)

    def count(self, query: str) -> int:
        return int(next(iter(self.store.query(query)))[0].value)

    def put_record(self, load_id: str, record: dict[str, Any]) -> None:
        self.store.update(_record_update(load_id, record))

    def get_record(self, load_id: str) -> dict[str, Any] | None:
        rows = list(self.store.query(_record_query(load_id)))
        return json.loads(rows[0][0].value) if rows else None


def _open_store(path: Path, wait: float = 60.0) -> Any:
    """Open (creating) the store, waiting while another process holds it."""
    from pyoxigraph import Store

    path.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        try:
            return Store(str(path))
        except OSError as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class _Server:
    """An ``oxigraph serve`` instance over the SPARQL 1.1 protocol and Graph Store protocol."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(timeout=300)

    def insert(self, data: bytes, request: LoadRequest) -> None:
        content_type = {
            "ntriples": "application/n-triples",
            "nquads": "application/n-quads",
            "turtle": "text/turtle",
            "rdfxml": "application/rdf+xml",
        }[request.format]
        if request.format == "nquads":
            params = {}
        elif request.named_graph:
            params = {"graph": request.named_graph}
        else:
            params = {"default": ""}
        reply = self.http.post(
            f"{self.url}/store", params=params, content=data, headers={"Content-Type": content_type}
        )
        reply.raise_for_status()

    def size(self) -> int:
        return self.count(
            "SELECT (COUNT(*) AS ?n) WHERE { { ?s ?p ?o } UNION { GRAPH ?g { ?s ?p ?o } } }"
        )

    def _select(self, query: str) -> list[dict[str, Any]]:
        reply = self.http.post(
            f"{self.url}/query",
            data={"query": query},
            headers={"Accept": "application/sparql-results+json"},
        )
        reply.raise_for_status()
        return reply.json()["results"]["bindings"]

    def count(self, query: str) -> int:
        rows = self._select(query)
        return int(rows[0]["n"]["value"]) if rows else 0

    def put_record(self, load_id: str, record: dict[str, Any]) -> None:
        reply = self.http.post(
            f"{self.url}/update", data={"update": _record_update(load_id, record)}
        )
        reply.raise_for_status()

    def get_record(self, load_id: str) -> dict[str, Any] | None:
        rows = self._select(_record_query(load_id))
        return json.loads(rows[0]["o"]["value"]) if rows else None
