"""The PostgreSQL session store against a real server started by the test session."""

from __future__ import annotations

import psycopg
import pytest

from blocks.postgres import PostgresDatabase
from infergraph.sessions.store import SessionStore, StoreError, UnknownSessionError, migrate

BOXES = [
    {"class_id": 0, "label": "item", "score": 0.9, "x1": 1, "y1": 2, "x2": 30, "y2": 40},
    {"class_id": 1, "label": "container", "score": 0.8, "x1": 100, "y1": 2, "x2": 300, "y2": 240},
]


@pytest.fixture
def store(pg_conninfo: str):
    with SessionStore(pg_conninfo, pool_size=2) as opened:
        yield opened


def test_migrations_apply_once_and_are_recorded(store: SessionStore) -> None:
    with store.connection() as conn:
        assert migrate(conn) == []  # already applied by open()
        versions = conn.execute("SELECT version, name FROM infergraph_schema_version").fetchall()
    assert versions == [(1, "0001_sessions.sql")]


def test_duplicate_image_and_rerun_write_no_duplicate_rows(store: SessionStore) -> None:
    args = dict(kind="proc", data=b"jpeg", width=640, height=480, base_pw=1400, uri=None)
    assert store.add_image("arm-1", "S1", "1400.jpg", **args) is True
    assert store.add_image("arm-1", "S1", "1400.jpg", **args) is False
    store.put_boxes("arm-1", "S1", "1400.jpg", BOXES)
    store.put_boxes("arm-1", "S1", "1400.jpg", BOXES)
    commands = [([[1.0, 2.0], [3.0, 4.0]], 0)]
    placements = [("1400.jpg", 0, 1.0, 2.0, 0, 0), ("1400.jpg", 1, 3.0, 4.0, 1, None)]
    store.save_plan("arm-1", "S1", placements, commands)
    store.save_plan("arm-1", "S1", placements, commands)
    assert store.counts() == {"sessions": 1, "images": 1, "objects": 2, "commands": 1}
    assert store.commands("arm-1", "S1") == [[[1.0, 2.0], [3.0, 4.0]]]
    assert [b["cluster"] for b in store.boxes("arm-1", "S1")] == [0, None]
    # Fewer boxes on a re-detection: the stale ones go.
    store.put_boxes("arm-1", "S1", "1400.jpg", BOXES[:1])
    assert store.counts()["objects"] == 1
    assert [i.detected for i in store.images("arm-1", "S1")] == [True]


def test_identifiers_from_the_wire_are_values_not_sql(store: SessionStore) -> None:
    hostile = "S1'; DROP TABLE sessions; --"
    store.add_image(
        'arm"x',
        hostile,
        "1000.jpg",
        kind="proc",
        data=b"x",
        width=1,
        height=1,
        base_pw=1000,
        uri=None,
    )
    assert store.arm_of(hostile) == 'arm"x'
    assert store.counts()["sessions"] == 1


def test_unknown_and_ambiguous_sessions_are_named(store: SessionStore) -> None:
    with pytest.raises(UnknownSessionError, match="unknown session 'S404'"):
        store.arm_of("S404")
    for arm in ("arm-1", "arm-2"):
        store.add_image(
            arm, "S7", "1000.jpg", kind="proc", data=b"x", width=1, height=1, base_pw=1000, uri=None
        )
    with pytest.raises(UnknownSessionError, match="several arms"):
        store.arm_of("S7")


def test_database_down_is_a_store_error_not_a_hang(postgres_server, pg_conninfo: str) -> None:
    store = SessionStore(pg_conninfo, pool_size=1, timeout=2).open()
    try:
        postgres_server.stop("immediate")
        with pytest.raises(StoreError, match="PostgreSQL"):
            store.add_image(
                "arm-1",
                "S1",
                "1000.jpg",
                kind="proc",
                data=b"x",
                width=1,
                height=1,
                base_pw=1000,
                uri=None,
            )
    finally:
        postgres_server.restart()
        store.close()
    with psycopg.connect(pg_conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_block_keeps_the_password_secret_and_out_of_the_url() -> None:
    block = PostgresDatabase(
        url="postgresql://sorter@db.example.com:5432/arms", password="s3cret", sslmode="require"
    )
    assert "s3cret" not in repr(block)
    info = block.conninfo()
    assert "password=s3cret" in info and "sslmode=require" in info
    with pytest.raises(ValueError, match="put it in the password field"):
        PostgresDatabase(url="postgresql://sorter:s3cret@db/arms")
