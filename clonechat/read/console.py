"""The read-only SQL console: any statement a user types, for ``clonechat query``,
``open_run_db(...).sql`` and the ready-made queries (search, keyword rates, the frames).

One interface, :class:`ReadOnlyConnection` (:meth:`~ReadOnlyConnection.execute` one statement,
``close``), and one implementation per backend, because each backend locks differently. Both
refuse every write before it runs, naming it in one line (``refused DROP TABLE node: queries on
runs/clonechat.db are read-only (nothing was changed)``), and both have a second lock behind
that one:

- **SQLite** (:class:`SqliteConsole`): the connection is
  :func:`clonechat.read.connect.open_sqlite`'s (the one schema check), opened ``mode=ro`` and
  ``query_only`` (SQLite itself refuses any write), and an authorizer refuses every statement
  that is not a read before it runs (INSERT, UPDATE, DELETE, DROP, CREATE, ALTER, ATTACH, DETACH,
  VACUUM, a PRAGMA that sets something). The authorizer gives the clear message and also covers
  what ``mode=ro`` alone would allow: ATTACH of another file, or a temporary table.
- **PostgreSQL** (:class:`~clonechat.read.server_console.ServerConsole`): every statement runs
  in a transaction of its own, ``REPEATABLE READ, READ ONLY``, rolled back once its rows are
  read, so the server refuses any write (its "cannot execute X in a read-only transaction" is
  mapped to the same message). A read-only transaction still allows a few things that outlive it
  or end it, so before anything is sent the statement's tokens are checked
  (:func:`~clonechat.read.server_sql.check_server_statement`): one statement only, and only
  SELECT, WITH, VALUES, TABLE, EXPLAIN or SHOW (no transaction control, no SET/RESET,
  LISTEN/NOTIFY, COPY, DO, CALL, LOCK, VACUUM...), no data-modifying statement inside a WITH, no
  function with side effects (advisory locks, ``set_config``, signalling other backends, large
  objects, sequences, functions that run SQL text). The statement then goes out with the
  extended protocol (a server-side cursor, or psycopg's stream), which carries one statement and
  nothing after it.

Rows look the same on both: JSON columns as their stored text, timestamps as SQLite stores them
(naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``), booleans as 0/1, numerics as int or float, so a
query, its CSV or JSON output and the pandas frames read the same whichever backend holds the
run. ``:name`` parameters work on both (and ``?`` with a sequence of values).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clonechat.errors import QueryError
from clonechat.location import DbLocation, ServerDatabase, db_location
from clonechat.read.connect import existing_sqlite
from clonechat.read.server_sql import ONE_STATEMENT, Params

if TYPE_CHECKING:
    pass

#: How a timestamp reads back from either backend: the text SQLite stores (naive UTC).
STORED_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True)
class Dialect:
    """The backend a console talks to, spelled like SQLAlchemy's (``conn.dialect.name``), so
    the read layer picks its dialect's SQL the same way on a console and on an engine."""

    name: str


SQLITE = Dialect("sqlite")
POSTGRESQL = Dialect("postgresql")


@dataclass(frozen=True)
class QueryResult:
    """A statement's column names and its rows, streamed (iterate once)."""

    columns: list[str]
    rows: Iterator[tuple[Any, ...]]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self.rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)


class ReadOnlyConnection(ABC):
    """A connection that can only read. :meth:`execute` runs one statement and turns every
    refusal and SQL error into a one-line :class:`QueryError`."""

    location: DbLocation
    dialect: Dialect

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> QueryResult:
        """Run one statement; its rows are read as they are iterated."""

    @abstractmethod
    def close(self) -> None: ...

    def refused(self, what: str) -> QueryError:
        """The one message every refused write gets, on either backend."""
        return QueryError(f"refused {what}: queries on {self.location} are read-only (nothing was changed)")


def connect(location: DbLocation | str) -> ReadOnlyConnection:
    """A read-only connection to the run database at ``location`` (checked: it exists, is a
    clonechat database, and has the schema this clonechat reads)."""
    where = db_location(location)
    if isinstance(where, ServerDatabase):
        from clonechat.read.server_console import ServerConsole

        return ServerConsole.open(where)
    return SqliteConsole.open(where)


@contextmanager
def read_only(location: DbLocation | str) -> Iterator[ReadOnlyConnection]:
    conn = connect(location)
    try:
        yield conn
    finally:
        conn.close()


def run(conn: ReadOnlyConnection, sql: str, params: Params = ()) -> QueryResult:
    """Run one statement; rows are streamed from the database as they are read."""
    return conn.execute(sql, params)


# -- SQLite: mode=ro, query_only and an authorizer ---------------------------------------------

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


class SqliteConsole(ReadOnlyConnection):
    """The console on an SQLite file: ``mode=ro``, ``query_only`` and the authorizer."""

    dialect = SQLITE

    def __init__(self, path: Path, raw: sqlite3.Connection, guard: _Guard) -> None:
        self.location = path
        self.raw = raw
        self.guard = guard

    @classmethod
    def open(cls, path: Path) -> SqliteConsole:
        raw = existing_sqlite(path)
        guard = _Guard()
        raw.set_authorizer(guard)
        return cls(path, raw, guard)

    def execute(self, sql: str, params: Params = ()) -> QueryResult:
        self.guard.refused.clear()
        try:
            cursor = self.raw.execute(sql, params)
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise self._error(exc) from None
        return QueryResult([d[0] for d in cursor.description or ()], self._rows(cursor))

    def _rows(self, cursor: sqlite3.Cursor) -> Iterator[tuple[Any, ...]]:
        # Not ``yield from``: that would close the cursor when an abandoned generator is
        # collected, after the connection it belongs to may already be closed.
        try:
            for row in cursor:  # noqa: UP028
                yield row
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> QueryError:
        refused = self.guard.summary()
        if refused is not None or "readonly" in str(exc) or "may not be modified" in str(exc):
            return self.refused(refused or "a write")
        if "one statement at a time" in str(exc):
            return QueryError(ONE_STATEMENT)
        return QueryError(f"SQL error: {exc}")

    def close(self) -> None:
        self.raw.close()
