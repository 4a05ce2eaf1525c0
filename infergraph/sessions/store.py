"""The session store in PostgreSQL (psycopg 3): migrations, idempotent writes, reads.

Migrations are plain SQL files (``migrations/NNNN_name.sql``) applied in order,
each in its own transaction, under an advisory lock, and recorded in
``infergraph_schema_version``: a handful of fixed tables do not need a migration
framework, and plain SQL is what a DBA reviews. (Alembic, which Prefect brings,
would add a Python migration environment for four tables.)

Every write is keyed on deterministic keys (arm, session, image name, box index,
command number) with ``ON CONFLICT``, so a duplicate image or a rerun after a
crash rewrites rows instead of duplicating them. Identifiers are never built from
input; every value is a bound parameter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

LOCK_KEY = 0x1F6E_5E55  # advisory lock held while migrating


class StoreError(RuntimeError):
    """The database could not be reached or refused a write; retrying later is safe."""


class UnknownSessionError(LookupError):
    """A session id the store has never seen (or one shared by several arms)."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every shipped migration, in order."""
    folder = resources.files("infergraph.sessions") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS infergraph_schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM infergraph_schema_version")}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql)  # type: ignore[arg-type]  # shipped files, not input
            conn.execute(
                "INSERT INTO infergraph_schema_version (version, name) VALUES (%s, %s)",
                (version, name),
            )
            applied.append(version)
    return applied


@dataclass(frozen=True, slots=True)
class ImageRow:
    image_name: str
    base_pw: int | None
    width: int
    height: int
    uri: str | None
    detected: bool


class SessionStore:
    """Reads and writes of sessions, images, objects and commands over a connection pool."""

    def __init__(self, conninfo: str, pool_size: int = 4, timeout: float = 10.0) -> None:
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
        )

    @classmethod
    def from_block(cls, block: Any) -> SessionStore:
        return cls(block.conninfo(), pool_size=block.pool_size)

    def open(self) -> SessionStore:
        """Open the pool and bring the schema up to date."""
        try:
            self.pool.open(wait=True, timeout=self.pool.timeout)
        except Exception as exc:
            raise StoreError(f"PostgreSQL is unreachable: {exc}") from None
        with self.connection() as conn:
            migrate(conn)
        return self

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> SessionStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL failed: {str(exc).strip()}") from None
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise StoreError(f"PostgreSQL is unreachable: {exc}") from None
            raise

    # ---- writes -------------------------------------------------------------------------

    def add_image(
        self,
        arm_id: str,
        session_id: str,
        image_name: str,
        *,
        kind: str,
        data: bytes,
        width: int,
        height: int,
        base_pw: int | None,
        uri: str | None,
    ) -> bool:
        """Record a received picture; False when the same bytes were already recorded."""
        digest = hashlib.sha256(data).hexdigest()
        with self.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO sessions (arm_id, session_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (arm_id, session_id),
            )
            row = conn.execute(
                "INSERT INTO images (arm_id, session_id, image_name, kind, base_pw, width, height,"
                " uri, sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (arm_id, session_id, image_name, kind) DO UPDATE SET"
                " base_pw = EXCLUDED.base_pw, width = EXCLUDED.width, height = EXCLUDED.height,"
                " uri = EXCLUDED.uri, sha256 = EXCLUDED.sha256, received_at = now(),"
                " detected = images.detected AND images.sha256 = EXCLUDED.sha256"
                " RETURNING (xmax = 0) AS inserted",
                (arm_id, session_id, image_name, kind, base_pw, width, height, uri, digest),
            ).fetchone()
        return bool(row and row[0])

    def put_boxes(
        self, arm_id: str, session_id: str, image_name: str, boxes: Sequence[dict[str, Any]]
    ) -> None:
        """Replace one image's boxes (idempotent: same image, same rows)."""
        with self.connection() as conn, conn.transaction():
            conn.execute(
                "DELETE FROM objects WHERE arm_id = %s AND session_id = %s AND image_name = %s"
                " AND box_index >= %s",
                (arm_id, session_id, image_name, len(boxes)),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO objects (arm_id, session_id, image_name, box_index, class_id,"
                    " label, score, x1, y1, x2, y2) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s) ON CONFLICT (arm_id, session_id, image_name, box_index) DO UPDATE"
                    " SET class_id = EXCLUDED.class_id, label = EXCLUDED.label,"
                    " score = EXCLUDED.score, x1 = EXCLUDED.x1, y1 = EXCLUDED.y1,"
                    " x2 = EXCLUDED.x2, y2 = EXCLUDED.y2, servo0 = NULL, servo1 = NULL,"
                    " object_no = NULL, cluster = NULL",
                    [
                        (
                            arm_id,
                            session_id,
                            image_name,
                            i,
                            b["class_id"],
                            b["label"],
                            b["score"],
                            b["x1"],
                            b["y1"],
                            b["x2"],
                            b["y2"],
                        )
                        for i, b in enumerate(boxes)
                    ],
                )
            conn.execute(
                "UPDATE images SET detected = true WHERE arm_id = %s AND session_id = %s"
                " AND image_name = %s AND kind = 'proc'",
                (arm_id, session_id, image_name),
            )

    def save_plan(
        self,
        arm_id: str,
        session_id: str,
        placements: Sequence[tuple[str, int, float, float, int | None, int | None]],
        commands: Sequence[tuple[list[list[float]], int]],
    ) -> None:
        """Store arm coordinates, object numbers, clusters and commands in one transaction.

        ``placements``: (image name, box index, servo0, servo1, object number, cluster).
        ``commands``: (command, cluster) in pick order. A rerun replaces them all.
        """
        with self.connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE objects SET servo0 = %s, servo1 = %s, object_no = %s, cluster = %s"
                    " WHERE arm_id = %s AND session_id = %s AND image_name = %s"
                    " AND box_index = %s",
                    [
                        (s0, s1, no, cl, arm_id, session_id, name, idx)
                        for name, idx, s0, s1, no, cl in placements
                    ],
                )
            conn.execute(
                "DELETE FROM commands WHERE arm_id = %s AND session_id = %s", (arm_id, session_id)
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO commands (arm_id, session_id, seq, item_servo0, item_servo1,"
                    " container_servo0, container_servo1, cluster)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (arm_id, session_id, seq, c[0][0], c[0][1], c[1][0], c[1][1], cluster)
                        for seq, (c, cluster) in enumerate(commands)
                    ],
                )
            conn.execute(
                "UPDATE sessions SET status = 'planned', ended_at = now()"
                " WHERE arm_id = %s AND session_id = %s",
                (arm_id, session_id),
            )

    # ---- reads --------------------------------------------------------------------------

    def arm_of(self, session_id: str) -> str:
        """The arm a session belongs to (the arm's commands request names no arm)."""
        with self.connection() as conn:
            arms = [
                r[0]
                for r in conn.execute(
                    "SELECT arm_id FROM sessions WHERE session_id = %s ORDER BY arm_id",
                    (session_id,),
                )
            ]
        if not arms:
            raise UnknownSessionError(f"unknown session {session_id!r}: no picture was received")
        if len(arms) > 1:
            raise UnknownSessionError(
                f"session {session_id!r} exists for several arms ({', '.join(arms)}): "
                "name the arm_id"
            )
        return arms[0]

    def images(self, arm_id: str, session_id: str) -> list[ImageRow]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT image_name, base_pw, width, height, uri, detected FROM images"
                " WHERE arm_id = %s AND session_id = %s AND kind = 'proc'"
                " ORDER BY base_pw DESC NULLS LAST, image_name",
                (arm_id, session_id),
            ).fetchall()
        return [ImageRow(*r) for r in rows]

    def boxes(self, arm_id: str, session_id: str) -> list[dict[str, Any]]:
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT image_name, box_index, class_id, label, score, x1, y1, x2, y2,"
                " servo0, servo1, object_no, cluster FROM objects"
                " WHERE arm_id = %s AND session_id = %s ORDER BY image_name, box_index",
                (arm_id, session_id),
            ).fetchall()

    def commands(self, arm_id: str, session_id: str) -> list[list[list[float]]]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT item_servo0, item_servo1, container_servo0, container_servo1"
                " FROM commands WHERE arm_id = %s AND session_id = %s ORDER BY seq",
                (arm_id, session_id),
            ).fetchall()
        return [[[a, b], [c, d]] for a, b, c, d in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table (the demo prints them)."""
        with self.connection() as conn:
            return {
                table: conn.execute(query).fetchone()[0]  # type: ignore[index]
                for table, query in (
                    ("sessions", "SELECT count(*) FROM sessions"),
                    ("images", "SELECT count(*) FROM images"),
                    ("objects", "SELECT count(*) FROM objects"),
                    ("commands", "SELECT count(*) FROM commands"),
                )
            }
