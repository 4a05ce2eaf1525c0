"""Run a reasoning job on this machine: pyoxigraph instead of a cluster, a licence and RDFox.

Same inputs (the dataset folder), same outputs (N-Triples under
``s3://{output_bucket}/{dataset}/{job_id}/data/``) and a log in the reasoner's format
(``rdfox.log``, uploaded last because its arrival starts the next flow), so
everything downstream treats both runners alike. Rules are SPARQL UPDATE files
applied in order, round after round, until a round adds nothing (a fixpoint).
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect_aws import AwsCredentials

from infergraph.aws.clients import aws_client
from infergraph.aws.storage import is_s3_uri, local_path, split_s3_uri
from infergraph.reasoning.datalog import (
    DatalogError,
    Program,
    materialise_datalog,
    parse_datalog,
)
from infergraph.reasoning.datalog.evaluate import compile_program
from infergraph.reasoning.jobspec import JobSpec
from infergraph.reasoning.rdfox_log import TIME_FORMAT
from infergraph.reasoning.settings import log_name

MAX_ROUNDS = 200
#: Rule files by suffix; a dataset's rule files in any other format are an error, never skipped.
RULE_FORMATS = {".ru": "SPARQL Update", ".dlog": "RDFox Datalog"}
RUNNABLE_RULES = frozenset({".ru", ".dlog"})
DATA_SUFFIXES = {
    ".nt": "N_TRIPLES",
    ".nq": "N_QUADS",
    ".ttl": "TURTLE",
    ".trig": "TRIG",
    ".rdf": "RDF_XML",
    ".owl": "RDF_XML",
    ".jsonld": "JSON_LD",
}


class LocalRunFailed(RuntimeError):
    """The run stopped; ``log`` holds the reasoner-format log written so far (not yet uploaded)."""

    def __init__(self, message: str, log: str):
        self.log = log
        super().__init__(message)


@dataclass
class LocalRunResult:
    log_uri: str
    outputs: list[str]
    rounds: int
    log: str
    counts: dict[str, int] = field(default_factory=dict)


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _stamp() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def run_local_job(
    spec: JobSpec, job_id: str, credentials: AwsCredentials | None = None
) -> LocalRunResult:
    """Load, materialise, export and publish one job; :class:`LocalRunFailed` on any error."""
    log = _Log()
    with tempfile.TemporaryDirectory(prefix=f"reasoning-{job_id}-") as tmp:
        try:
            return _run(spec, job_id, credentials, Path(tmp), log)
        except LocalRunFailed:
            raise
        except Exception as exc:
            log(f"ERROR: {type(exc).__name__}: {exc}")
            raise LocalRunFailed(
                f"local reasoning failed: {type(exc).__name__}: {exc}", log.text
            ) from exc


def upload_log(
    spec: JobSpec, job_id: str, text: str, credentials: AwsCredentials | None = None
) -> str:
    uri = spec.output_prefix(job_id) + log_name()
    bucket, key = split_s3_uri(uri)
    aws_client("s3", credentials).put_object(
        Bucket=bucket, Key=key, Body=text.encode(), ContentType="text/plain"
    )
    return uri


def _run(
    spec: JobSpec, job_id: str, credentials: AwsCredentials | None, tmp: Path, log: _Log
) -> LocalRunResult:
    from pyoxigraph import RdfFormat, Store

    files = _dataset_files(spec.dataset_location, credentials)
    rules = _pick(spec.rules, files, tuple(RULE_FORMATS), spec.dataset_location)
    _check_rule_formats(rules, log)
    queries = _pick(spec.queries, files, ".rq", spec.dataset_location)
    data = sorted(uri for uri in files if _suffix(uri) in DATA_SUFFIXES)
    if not data:
        raise LocalRunFailed(
            f"no data files ({', '.join(sorted(DATA_SUFFIXES))}) in {spec.dataset_location}",
            log.text,
        )
    fetched = _fetch([*data, *rules, *queries], tmp / "data", credentials)
    # Datalog is parsed and stratified before any work: a construct the translation does not
    # cover fails the job here, naming file, line and construct.
    programs: list[Program] = []
    try:
        for uri in (u for u in rules if _suffix(u) == ".dlog"):
            programs.append(parse_datalog(fetched[uri].read_text(), uri))
        compile_program(programs)
    except DatalogError as exc:
        raise LocalRunFailed(str(exc), log.text) from None
    # In memory: rule rounds are update-heavy, ~15x faster than on disk. Memory per entry
    # (the reasoner's "Bytes per entry") is then the process's growth while it holds the store.
    memory_before = _rss()
    store = Store()
    log(f"A new data store '{spec.dataset}' was created and initialized.")
    log(f"Data store connection '{spec.dataset}' is active.")

    load_start = _stamp()
    rule_texts = []
    for uri in rules:
        started = time.perf_counter()
        log(f"Adding data in file '{uri}'.")
        if _suffix(uri) == ".ru":
            rule_texts.append((uri, fetched[uri].read_text()))
        log(f"Import operation took {time.perf_counter() - started:.3f} s.")
    log(f"Processed {len(rules)} rules, of which {len(rules)} were updated.")
    started = time.perf_counter()
    log(f"Adding data in {len(data)} files.")
    for uri in data:
        fmt = getattr(RdfFormat, DATA_SUFFIXES[_suffix(uri)])
        store.bulk_load(path=str(fetched[uri]), format=fmt)
    edb = len(store)
    log(f"Import operation took {time.perf_counter() - started:.3f} s.")
    log(f"Processed {edb} facts, of which {edb} were updated.")
    load_end = _stamp()
    log(f"LOADTIME-{load_start}|{load_end}")

    log("Materializing rules.")
    started = time.perf_counter()
    try:
        rounds = _materialise_all(store, programs, rule_texts)
    except (RuntimeError, SyntaxError, DatalogError) as exc:
        raise LocalRunFailed(str(exc), log.text) from None
    idb = len(store)
    log(f"Materialization time:      {time.perf_counter() - started:.3f} s.")
    log(f"Rules reached a fixpoint after {rounds} rounds.")
    log("-" * 100)
    log("Table | Entries | EDB | IDB")
    log(f"DefaultTriples | {edb:,} -> {idb:,} | 0 -> {edb:,} | 0 -> {idb:,}")
    log("-" * 100)
    inference_end = _stamp()
    log(f"INFERENCETIME-{load_end}|{inference_end}")

    out_dir = tmp / "output" / "data"
    out_dir.mkdir(parents=True)
    outputs: list[Path] = []
    counts: dict[str, int] = {}
    count_lines: list[str] = []
    for uri in queries:
        text = fetched[uri].read_text()
        name = uri.rsplit("/", 1)[-1]
        started = time.perf_counter()
        try:
            result = store.query(text)
        except SyntaxError as exc:
            raise LocalRunFailed(f"query file {uri} is not valid SPARQL: {exc}", log.text) from None
        if hasattr(result, "variables"):  # SELECT: named counts, printed at the end
            for row in result:
                for variable in result.variables:
                    value = row[variable]
                    if value is not None and value.value.lstrip("-").isdigit():
                        counts[variable.value] = int(value.value)
                        count_lines += [variable.value, value.value]
            continue
        if isinstance(result, bool):
            raise LocalRunFailed(
                f"query file {uri} is an ASK query: use CONSTRUCT or SELECT", log.text
            )
        target = out_dir / f"{name}.nt"
        log(f'output = "/output/{target.name}"')
        log('query.answer-format = "application/n-triples"')
        log(f"Answering query from file:   {uri}")
        log(f'Output will be printed to file "/output/{target.name}".')
        result.serialize(str(target), RdfFormat.N_TRIPLES)
        with target.open("rb") as fh:
            tuples = sum(1 for _ in fh)
        log(f"Number of returned tuples:   {tuples}")
        log(f"Total number of answers:     {tuples}")
        log(f"Total statement evaluation time: {time.perf_counter() - started:.3f} s")
        outputs.append(target)
    query_end = _stamp()
    log(f"QUERYTIME-{inference_end}|{query_end}")

    size = max(_rss() - memory_before, 0)
    log("---info---")
    log(f"    Name                           :  {spec.dataset}")
    log(f"    Aggregate size                 :  {size:,}")
    log(f"    Aggregate number of entries    :  {idb:,}")
    log(f"    Bytes per entry                :  {size / idb if idb else 0:.3f}")
    log(f"    Aggregate number of EDB facts  :  {edb:,}")
    log(f"    Aggregate number of IDB facts  :  {idb:,}")
    log("---endinfo---")
    # As in the reference script, TOTALTIME spans loading and materialisation.
    log(f"TOTALTIME-{load_start}|{inference_end}")
    log("running-counts")
    for line in count_lines:
        log(line)
    log("end-running-counts")
    del store

    prefix = spec.output_prefix(job_id)
    uploaded = _upload(outputs, prefix + "data/", credentials)
    log_uri = upload_log(spec, job_id, log.text, credentials)
    return LocalRunResult(log_uri, uploaded, rounds, log.text, counts)


def _materialise_all(store: Any, programs: list[Program], rule_texts: list[tuple[str, str]]) -> int:
    """Datalog (semi-naive) and SPARQL Update rules, alternately, until neither adds a fact."""
    if not rule_texts:
        return materialise_datalog(store, programs, MAX_ROUNDS) if programs else 1
    if not programs:
        return materialise(store, rule_texts)
    rounds = 0
    while True:
        before = len(store)
        rounds += materialise_datalog(store, programs, MAX_ROUNDS - rounds)
        rounds += materialise(store, rule_texts, MAX_ROUNDS - rounds)
        if len(store) == before:
            return rounds


def materialise(store: Any, rules: list[tuple[str, str]], max_rounds: int = MAX_ROUNDS) -> int:
    """Apply every (name, SPARQL Update) rule in order, round after round, until a round adds
    nothing; returns the number of rounds. Rules only insert, so the size is the test."""
    rounds = 0
    while True:
        rounds += 1
        if rounds > max_rounds:
            raise RuntimeError(
                f"rules did not reach a fixpoint within {max_rounds} rounds "
                f"({len(store)} facts): check them for unbounded derivations"
            )
        before = len(store)
        for name, text in rules:
            try:
                store.update(text)
            except SyntaxError as exc:
                raise SyntaxError(f"rule file {name} is not valid SPARQL Update: {exc}") from None
        if len(store) == before:
            return rounds


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _suffix(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _dataset_files(location: str, credentials: AwsCredentials | None) -> list[str]:
    if is_s3_uri(location):
        bucket, prefix = split_s3_uri(location)
        paginator = aws_client("s3", credentials).get_paginator("list_objects_v2")
        return [
            f"s3://{bucket}/{obj['Key']}"
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        ]
    folder = local_path(location)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {location} does not exist")
    return [str(p) for p in sorted(folder.rglob("*")) if p.is_file()]


def _check_rule_formats(rules: list[str], log: _Log) -> None:
    """Refuse, before any work, rule files this runner would otherwise silently not apply."""
    bad = [uri for uri in rules if _suffix(uri) not in RUNNABLE_RULES]
    if bad:
        kinds = sorted({RULE_FORMATS.get(_suffix(uri), f"'{_suffix(uri)}'") for uri in bad})
        runs = ", ".join(f"*{s} ({RULE_FORMATS[s]})" for s in sorted(RUNNABLE_RULES))
        raise LocalRunFailed(
            f"rule file(s) {', '.join(bad)} are {' / '.join(kinds)}, which the local runner "
            f"cannot run (it runs {runs}): convert them, or use runner 'kubernetes'",
            log.text,
        )


def _pick(
    explicit: list[str] | None, files: list[str], suffix: str | tuple[str, ...], base: str
) -> list[str]:
    """The jobspec's list (relative names resolved against the dataset), else all ``*suffix``."""
    suffixes = (suffix,) if isinstance(suffix, str) else suffix
    if explicit is None:
        return sorted(uri for uri in files if _suffix(uri) in suffixes)
    picked = []
    for name in explicit:
        uri = name if is_s3_uri(name) or name.startswith("/") else base + name
        if is_s3_uri(uri) and is_s3_uri(base) and uri.startswith(base) and uri not in files:
            raise FileNotFoundError(f"{name} is not in the dataset folder {base}")
        picked.append(uri)
    return picked


def _fetch(uris: list[str], dest: Path, credentials: AwsCredentials | None) -> dict[str, Path]:
    """Local paths for every input, downloading S3 objects concurrently."""
    dest.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[int, str]) -> tuple[str, Path]:
        i, uri = item
        if not is_s3_uri(uri):
            path = local_path(uri)
            if not path.is_file():
                raise FileNotFoundError(f"{uri} does not exist")
            return uri, path
        bucket, key = split_s3_uri(uri)
        target = dest / f"{i:05d}-{key.rsplit('/', 1)[-1]}"
        aws_client("s3", credentials).download_file(bucket, key, str(target))
        return uri, target

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(pool.map(one, enumerate(dict.fromkeys(uris))))


def _upload(paths: list[Path], prefix: str, credentials: AwsCredentials | None) -> list[str]:
    bucket, key_prefix = split_s3_uri(prefix)
    client: Any = aws_client("s3", credentials)

    def one(path: Path) -> str:
        client.upload_file(str(path), bucket, key_prefix + path.name)
        return f"s3://{bucket}/{key_prefix}{path.name}"

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, paths))
