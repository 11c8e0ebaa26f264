"""What the store writes differently on SQLite and PostgreSQL, in one place.

The write functions are the same on both backends; only three things differ: the ``INSERT ...
ON CONFLICT DO NOTHING`` construct (each dialect's own), the DB-API placeholder of the bulk
inserts on the hot path (``?`` for sqlite3, ``%s`` for psycopg), and how a JSON or timestamp
value is handed to the driver (SQLite takes the text SQLAlchemy would have written; psycopg
takes the value, with the session's zone set to UTC).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite


def is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def insert_ignoring(conn: Connection, table: Any) -> sqlite.Insert | postgresql.Insert:
    """``INSERT`` into ``table`` in this connection's dialect (call ``.on_conflict_do_nothing()``)."""
    return sqlite.insert(table) if is_sqlite(conn) else postgresql.insert(table)


def sqlite_value(value: Any) -> Any:
    """A column value as SQLAlchemy stores it in SQLite (JSON text, naive UTC timestamp text),
    so rows written by the bulk inserts read back exactly like rows written through the ORM."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def server_value(value: Any) -> Any:
    """A column value for psycopg: JSON as its text (the column's type casts it), timestamps
    as naive UTC (the columns are ``TIMESTAMP``, as SQLite's are naive UTC text)."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def insert_rows(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: Sequence[str] = ()
) -> int:
    """``INSERT ... ON CONFLICT DO NOTHING`` of many rows as one DB-API ``executemany`` (the
    hot path: SQLAlchemy's per-row bind processing cost several times more per turn). Values
    are converted for the driver here; returns how many rows were new where the driver says.
    ``conflict`` names the unique columns whose clash means "already stored" (then a clash on
    anything else, such as a surrogate id, is an error rather than a silently dropped row)."""
    if not rows:
        return 0
    placeholder = "?" if is_sqlite(conn) else "%s"
    convert = sqlite_value if is_sqlite(conn) else server_value
    target = f"({', '.join(conflict)}) " if conflict else ""
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(placeholder for _ in columns)}) "
        f"ON CONFLICT {target}DO NOTHING"
    )
    result = conn.exec_driver_sql(sql, [tuple(convert(v) for v in row) for row in rows])
    return int(result.rowcount or 0)


def lock_for(conn: Connection, key: str) -> None:
    """Serialise transactions that work on ``key`` until the caller's transaction ends: a
    PostgreSQL advisory lock (many processes, many hosts). SQLite needs none: its write
    transactions (``BEGIN IMMEDIATE``) already run one at a time."""
    if not is_sqlite(conn):
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))", {"key": key})
