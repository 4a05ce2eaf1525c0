"""The postgres://<block>/<table> sink against the test session's real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from blocks.postgres import PostgresDatabase
from flows.inference import inference
from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import SinkError, open_sink
from infergraph.inference.sinks.postgres import SinkUnavailable
from infergraph.inference.specs import SpecError

pytestmark = pytest.mark.usefixtures("prefect_server")
SAMPLES = Path(__file__).resolve().parent.parent / "infergraph" / "detection" / "samples"
BLOCK = "results-db"


@pytest.fixture
def database(postgres_server) -> str:
    """A saved PostgresDatabase block; each test's tables dropped first."""
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS results CASCADE")
        conn.execute("CREATE SCHEMA results")
    PostgresDatabase(url=postgres_server.conninfo, sslmode="disable").save(BLOCK, overwrite=True)
    return postgres_server.conninfo


def query(conninfo: str, text: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(text).fetchall()


def test_flow_writes_one_row_per_box_and_a_rerun_adds_none(database: str) -> None:
    sink = f"postgres://{BLOCK}/results.boxes"
    summary = inference(
        source=str(SAMPLES / "*.jpg"),
        predictor="infergraph.detection.predictor:Detector",
        sinks=[sink],
        batch_size=5,
    )
    rows = query(database, "SELECT record_id, result->>'label', written_at FROM results.boxes")
    assert len(rows) == summary["boxes"] > 12
    assert {r[1] for r in rows} == {"item", "container"}
    inference(
        source=str(SAMPLES / "*.jpg"),
        predictor="infergraph.detection.predictor:Detector",
        sinks=[sink, f"postgres://{BLOCK}/results.images?boxes=json"],
        batch_size=4,
    )
    again = query(database, "SELECT record_id, written_at FROM results.boxes")
    assert sorted(r[0] for r in again) == sorted(r[0] for r in rows)
    assert min(r[1] for r in again) > max(r[2] for r in rows)  # every row rewritten in place
    images = query(database, "SELECT jsonb_array_length(result->'boxes') FROM results.images")
    assert len(images) == 12 and sum(n for (n,) in images) == len(rows)


def test_same_chunk_twice_updates_and_last_row_of_a_key_wins(database: str) -> None:
    sink = open_sink(f"postgres://{BLOCK}/plain")
    sink.open()
    try:
        rows = [
            {"record_id": "a", "uri": "a.png", "status": "ok", "error": None, "score": 0.1},
            {"record_id": "b", "uri": "b.png", "status": "error", "error": "bad", "score": None},
            {"record_id": "a", "uri": "a.png", "status": "ok", "error": None, "score": 0.2},
        ]
        sink.write(ResultChunk("chunk-1", rows))
        rows[2]["score"] = float("nan")
        sink.write(ResultChunk("chunk-1", rows))
    finally:
        sink.close()
    got = query(database, "SELECT record_id, status, error, result->>'score' FROM plain ORDER BY 1")
    assert got == [("a", "ok", None, "nan"), ("b", "error", "bad", None)]


def test_identifiers_are_quoted_never_spliced(database: str) -> None:
    name = 'x"; DROP SCHEMA results CASCADE; --'
    sink = open_sink(f"postgres://{BLOCK}/results.{name}")
    sink.open()
    sink.write(ResultChunk("k", [{"record_id": "r", "uri": "u", "status": "ok", "error": None}]))
    sink.close()
    assert query(
        database, f'SELECT record_id FROM results."{name.replace(chr(34), 2 * chr(34))}"'
    ) == [("r",)]


def test_mistakes_are_named(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE results.other (id int)")
    sink = open_sink(f"postgres://{BLOCK}/results.other")
    with pytest.raises(SinkError, match="without the results columns record_id"):
        sink.open()
    sink.close()
    with pytest.raises(SinkError, match="no such table"):
        open_sink(f"postgres://{BLOCK}/results.missing?create=false").open()
    with pytest.raises(
        SpecError, match="expected postgres://<PostgresDatabase block name>/<table>"
    ):
        open_sink(f"postgres://{BLOCK}")
    with pytest.raises(ValueError, match="no PostgresDatabase block named 'nope'"):
        open_sink("postgres://nope/t")
    PostgresDatabase(url="postgresql://nobody@127.0.0.1:1/db", sslmode="disable").save(
        "down-db", overwrite=True
    )
    with pytest.raises(SinkUnavailable, match="unreachable"):
        open_sink("postgres://down-db/t").open()
