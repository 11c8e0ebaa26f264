"""The read-only SQL console: any statement a user types, for ``clonechat query``,
``open_run_db(...).sql`` and the ready-made queries (search, keyword rates, the frames).

The connection is :func:`clonechat.read.connect.open_sqlite`'s (the one schema check). Two
locks, so analysis can never change or delete data: the file is opened ``mode=ro`` and
``query_only`` (SQLite itself refuses any write), and an authorizer refuses every statement
that is not a read before it runs (INSERT, UPDATE, DELETE, DROP, CREATE, ALTER, ATTACH, DETACH, VACUUM, a PRAGMA
that sets something), naming what was refused. The second lock gives the clear message and
also covers what ``mode=ro`` alone would allow: ATTACH of another file, or a temporary table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clonechat.errors import QueryError
from clonechat.read.connect import existing_sqlite

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
#: Pragmas that only report something, allowed with or without an argument.
_REPORTING_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "database_list",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
}
#: Pragmas that set something when given a value, allowed only without one.
_QUERYABLE_PRAGMAS = {"user_version", "schema_version", "data_version", "page_count", "page_size", "encoding"}

#: The authorizer's action codes (sqlite3.h), by the statement a user would recognise.
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in (
        "CREATE_INDEX",
        "CREATE_TABLE",
        "CREATE_TEMP_INDEX",
        "CREATE_TEMP_TABLE",
        "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW",
        "CREATE_TRIGGER",
        "CREATE_VIEW",
        "DELETE",
        "DROP_INDEX",
        "DROP_TABLE",
        "DROP_TEMP_INDEX",
        "DROP_TEMP_TABLE",
        "DROP_TEMP_TRIGGER",
        "DROP_TEMP_VIEW",
        "DROP_TRIGGER",
        "DROP_VIEW",
        "INSERT",
        "PRAGMA",
        "UPDATE",
        "ATTACH",
        "DETACH",
        "ALTER_TABLE",
        "REINDEX",
        "ANALYZE",
        "CREATE_VTABLE",
        "DROP_VTABLE",
        "SAVEPOINT",
    )
}
_ACTION_NAMES[sqlite3.SQLITE_TRANSACTION] = "a transaction (BEGIN/COMMIT)"
_TABLE_ACTIONS = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}


_SCHEMA_TABLES = {"sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema"}


def _describe(action: int, arg1: str | None, arg2: str | None) -> str:
    name = _ACTION_NAMES.get(action, f"operation {action}")
    if action == sqlite3.SQLITE_ATTACH and arg1 == "":
        return "VACUUM"  # VACUUM works by attaching a temporary copy
    if action in _TABLE_ACTIONS and arg1:
        return f"{name} on {arg1}"
    if action == sqlite3.SQLITE_PRAGMA:
        return f"PRAGMA {arg1} = {arg2}" if arg2 is not None else f"PRAGMA {arg1}"
    if name.startswith(("DROP", "CREATE")) and arg1:
        return f"{name} {arg1}"
    return name


class _Guard:
    """The authorizer: allows reads and records what it refused."""

    def __init__(self) -> None:
        self.refused: list[tuple[int, str | None, str | None]] = []

    def __call__(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            pragma = (arg1 or "").lower()
            if pragma in _REPORTING_PRAGMAS or (pragma in _QUERYABLE_PRAGMAS and arg2 is None):
                return sqlite3.SQLITE_OK
        if action in _TABLE_ACTIONS and arg1 in _SCHEMA_TABLES:
            # SQLite asks this while it sets up a virtual table (FTS5, json_each) for reading,
            # and before the DDL action (CREATE/DROP ...) it then refuses by name. SQLite never
            # lets a statement write the schema tables directly, and mode=ro stops it anyway.
            return sqlite3.SQLITE_OK
        self.refused.append((action, arg1, arg2))
        return sqlite3.SQLITE_DENY

    def summary(self) -> str | None:
        """What was refused, as a user would name it (``DROP TABLE node``)."""
        return _describe(*self.refused[0]) if self.refused else None


@dataclass
class ReadOnlyConnection:
    """A connection that can only read; :meth:`execute` turns every refusal and SQL error
    into a one-line :class:`QueryError`."""

    path: Path
    raw: sqlite3.Connection
    guard: _Guard

    def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> sqlite3.Cursor:
        self.guard.refused.clear()
        try:
            return self.raw.execute(sql, params)
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> QueryError:
        refused = self.guard.summary()
        if refused is not None or "readonly" in str(exc) or "may not be modified" in str(exc):
            what = refused or "a write"
            return QueryError(f"refused {what}: queries on {self.path} are read-only (nothing was changed)")
        if "one statement at a time" in str(exc):
            return QueryError("give one SQL statement at a time")
        return QueryError(f"SQL error: {exc}")

    def close(self) -> None:
        self.raw.close()


def connect(path: Path | str) -> ReadOnlyConnection:
    """A read-only connection to the run database at ``path`` (checked: it exists, is a
    clonechat database, and has the schema this clonechat reads)."""
    db_path = Path(path)
    raw = existing_sqlite(db_path)
    guard = _Guard()
    raw.set_authorizer(guard)
    return ReadOnlyConnection(db_path, raw, guard)


@contextmanager
def read_only(path: Path | str) -> Iterator[ReadOnlyConnection]:
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


def run(conn: ReadOnlyConnection, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> QueryResult:
    """Run one statement; rows are streamed from SQLite as they are read."""
    cursor = conn.execute(sql, params)
    columns = [d[0] for d in cursor.description or ()]

    def rows() -> Iterator[tuple[Any, ...]]:
        # Not ``yield from``: that would close the cursor when an abandoned generator is
        # collected, after the connection it belongs to may already be closed.
        try:
            for row in cursor:  # noqa: UP028
                yield row
        except sqlite3.Error as exc:
            raise conn._error(exc) from None

    return QueryResult(columns, rows())
