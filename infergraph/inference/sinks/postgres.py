"""Result rows into a PostgreSQL table, idempotently (psycopg 3).

Spec: ``postgres://<PostgresDatabase block name>/<table>`` (or ``<schema>.<table>``),
options ``?create=false`` (the table must exist) and ``?boxes=json``.

Results of any predictor land in one fixed shape: the row's identity and outcome
as columns, the whole row as ``jsonb`` (queryable with ``result->>'score'``), so
one table serves every model without a column per output field. A chunk is
copied (``COPY``) into a temporary staging table and upserted from there in the
same transaction, keyed on ``record_id`` (deterministic, per box for a
detector): writing the same chunk again updates its rows instead of adding
copies. Table names are quoted identifiers and every value a bound or copied
parameter: nothing from the spec or the rows is spliced into SQL text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from blocks.postgres import PostgresDatabase
from infergraph.blockref import resolve_block
from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import BOXES_OPTION, SINK_SCHEMES, Sink, SinkError
from infergraph.inference.specs import parse_spec

OPTIONS = {"create": "create the table if it is missing (default true)", **BOXES_OPTION}
#: The table's columns and types; ``record_id`` is the key an upsert conflicts on.
COLUMNS = {
    "record_id": "text PRIMARY KEY",
    "uri": "text",
    "status": "text NOT NULL",
    "error": "text",
    "result": "jsonb NOT NULL",
    "chunk_key": "text NOT NULL",
    "written_at": "timestamptz NOT NULL DEFAULT now()",
}
COPIED = ("record_id", "uri", "status", "error", "result", "chunk_key")
STAGING = "infergraph_results_staging"


class SinkUnavailable(ConnectionError):
    """PostgreSQL could not be reached or dropped the connection; a retry may succeed."""


class PostgresResultsSink(Sink):
    """One table row per result row (per box for a detector, by default)."""

    def __init__(
        self, database: PostgresDatabase, table: tuple[str, ...], create: bool = True
    ) -> None:
        self.database = database
        self.table = table
        self.create = create
        self.name = f"postgres://{'.'.join(table)}"
        self.pool: ConnectionPool | None = None

    def open(self) -> None:
        conninfo = self.database.conninfo()
        try:  # one direct attempt first: a refused connection fails now, not after the pool's wait
            psycopg.connect(conninfo, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise SinkUnavailable(f"{self.name}: PostgreSQL is unreachable: {exc}") from None
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=self.database.pool_size,
            open=False,
            kwargs={"connect_timeout": 10},
        )
        try:
            self.pool.open(wait=True, timeout=15)
        except Exception as exc:
            self.pool = None
            raise SinkUnavailable(f"{self.name}: PostgreSQL is unreachable: {exc}") from None
        with self._connection() as conn:
            if self.create:
                conn.execute(self._create_sql())
            self._check_columns(conn)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def write(self, chunk: ResultChunk) -> None:
        rows = self.laid_out(chunk)
        if not rows:
            return
        target = sql.Identifier(*self.table)
        staging = sql.Identifier(STAGING)
        names = sql.SQL(", ").join(map(sql.Identifier, COPIED))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in COPIED[1:]
        )
        with self._connection() as conn, conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (record_id text, uri text, status text, "
                    "error text, result jsonb, chunk_key text, ord int) ON COMMIT DELETE ROWS"
                ).format(staging)
            )
            with conn.cursor().copy(
                sql.SQL("COPY {} ({}, ord) FROM STDIN").format(staging, names)
            ) as copy:
                for ord_, row in enumerate(rows):
                    copy.write_row((*_values(row, chunk.key), ord_))
            # The last row of a record id wins, as in the other sinks.
            conn.execute(
                sql.SQL(
                    "INSERT INTO {target} ({names}) SELECT DISTINCT ON (record_id) {names} "
                    "FROM {staging} ORDER BY record_id, ord DESC "
                    "ON CONFLICT (record_id) DO UPDATE SET {updates}, written_at = now()"
                ).format(target=target, names=names, staging=staging, updates=updates)
            )

    def _create_sql(self) -> sql.Composed:
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
            for name, kind in COLUMNS.items()
        )
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            sql.Identifier(*self.table), columns
        )

    def _check_columns(self, conn: psycopg.Connection) -> None:
        schema = self.table[0] if len(self.table) == 2 else None
        found = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = COALESCE(%s, current_schema())",
                (self.table[-1], schema),
            )
        }
        if not found:
            raise SinkError(f"{self.name}: no such table (drop ?create=false to create it)")
        missing = [c for c in COLUMNS if c not in found]
        if missing:
            raise SinkError(
                f"{self.name}: the table exists without the results columns "
                f"{', '.join(missing)}; name a new table for results"
            )

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; connection-level failures become :class:`SinkUnavailable`."""
        if self.pool is None:
            raise SinkError(f"{self.name}: write before open()")
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise SinkUnavailable(f"{self.name}: {str(exc).strip()}") from exc


def _values(row: dict[str, Any], chunk_key: str) -> tuple[Any, ...]:
    status = row.get("status")
    return (
        str(row.get("record_id", "")),
        None if row.get("uri") is None else str(row["uri"]),
        "" if status is None else str(status),
        None if row.get("error") is None else str(row["error"]),
        json.dumps(_json_safe(row), default=str),
        chunk_key,
    )


def _json_safe(value: Any) -> Any:
    """jsonb has no NaN/Infinity and no NUL character: those become strings / are dropped."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def open_postgres(spec: str, options: dict[str, Any]) -> PostgresResultsSink:
    """The ``postgres://<PostgresDatabase block>/<table>`` sink factory."""
    parsed = parse_spec(spec, "sink", OPTIONS)
    block, _, table = parsed.target.partition("/")
    parts = tuple(table.split(".")) if table else ()
    if not block or not parts or len(parts) > 2 or not all(parts):
        raise parsed.error(
            "expected postgres://<PostgresDatabase block name>/<table> or .../<schema>.<table>"
        )
    return PostgresResultsSink(
        resolve_block(block, PostgresDatabase), parts, create=parsed.boolean("create", True)
    )


SINK_SCHEMES["postgres"] = open_postgres
