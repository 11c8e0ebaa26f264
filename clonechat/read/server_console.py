"""The read-only console on PostgreSQL (see :mod:`clonechat.read.console` for the guarantees):
each statement checked by :mod:`clonechat.read.server_sql`, then run in a ``REPEATABLE READ,
READ ONLY`` transaction of its own, with values read back as SQLite gives them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, cast

from clonechat.errors import QueryError, StoreError
from clonechat.location import ServerDatabase
from clonechat.read.console import POSTGRESQL, STORED_TIME_FORMAT, QueryResult, ReadOnlyConnection
from clonechat.read.server_sql import Params, RefusedError, bind, check_server_statement

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Engine
    from sqlalchemy.pool import PoolProxiedConnection

_READ_ONLY_ERROR = re.compile(r"cannot execute (.+?) in a read-only transaction")
#: Rows a server-side cursor brings over at a time.
_FETCH_ROWS = 2000


def _plain_values(conn: psycopg.Connection[Any]) -> None:
    """Make the connection load values as the SQLite console gives them (see the module
    docstring): JSON as its text, timestamps as SQLite's stored text, booleans as 0/1,
    numerics as int (no fraction written) or float."""
    from datetime import UTC

    from psycopg.adapt import Buffer, Loader
    from psycopg.types.datetime import TimestampLoader, TimestamptzLoader
    from psycopg.types.string import TextLoader

    class StoredTime(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._parse = TimestampLoader(oid, context)

        def load(self, data: Buffer) -> str:
            return self._parse.load(data).strftime(STORED_TIME_FORMAT)

    class StoredUtcTime(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._parse = TimestamptzLoader(oid, context)

        def load(self, data: Buffer) -> str:
            return self._parse.load(data).astimezone(UTC).strftime(STORED_TIME_FORMAT)

    class ZeroOne(Loader):
        def load(self, data: Buffer) -> int:
            return 1 if bytes(data) == b"t" else 0

    class IntOrFloat(Loader):
        def load(self, data: Buffer) -> int | float:
            text = bytes(data).decode()
            return int(text) if text.lstrip("-").isdigit() else float(text)

    for type_name in ("json", "jsonb"):
        conn.adapters.register_loader(type_name, TextLoader)
    conn.adapters.register_loader("timestamp", StoredTime)
    conn.adapters.register_loader("timestamptz", StoredUtcTime)
    conn.adapters.register_loader("bool", ZeroOne)
    conn.adapters.register_loader("numeric", IntOrFloat)


class ServerConsole(ReadOnlyConnection):
    """The console on a PostgreSQL database: each statement checked, then run alone in its own
    READ ONLY transaction, which ends (rolled back) once its rows are read or the next
    statement starts."""

    dialect = POSTGRESQL

    def __init__(self, location: ServerDatabase, engine: Engine, raw: PoolProxiedConnection) -> None:
        import psycopg

        self.location = location
        self._engine = engine
        self._raw = raw
        pg = raw.driver_connection
        assert isinstance(pg, psycopg.Connection)
        self.pg: psycopg.Connection[Any] = pg
        #: Closes the running statement's cursor or stream.
        self._release: Callable[[], None] | None = None

    @classmethod
    def open(cls, location: ServerDatabase) -> ServerConsole:
        """The checked console (the schema check of :mod:`clonechat.read.connect`)."""
        from psycopg import IsolationLevel
        from sqlalchemy.exc import SQLAlchemyError

        from clonechat.read.connect import checked_server_engine, nothing_to_read, server_reason

        engine = checked_server_engine(location)
        if engine is None:
            raise nothing_to_read(location)
        try:
            raw = engine.raw_connection()
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"cannot read {location}: {server_reason(exc)}") from None
        console = cls(location, engine, raw)
        pg = console.pg
        pg.rollback()  # whatever the pool's check left open
        pg.autocommit = False
        pg.read_only = True
        pg.isolation_level = IsolationLevel.REPEATABLE_READ
        _plain_values(pg)
        return console

    def execute(self, sql: str, params: Params = ()) -> QueryResult:
        import psycopg

        self._finish()
        try:
            statement = check_server_statement(sql)
        except RefusedError as refused:
            raise self.refused(refused.what) from None
        if statement is None:
            return QueryResult([], iter(()))
        query, values = bind(statement.tokens, params)
        try:
            if statement.cursor:
                return self._declared(query, values)
            return self._streamed(query, values)
        except psycopg.Error as exc:
            self._finish()
            raise self._error(exc) from None

    def _declared(self, query: str, values: Params | None) -> QueryResult:
        """A SELECT as a server-side cursor: its columns at once, its rows in batches."""
        cursor = self.pg.cursor(name="clonechat_console")
        cursor.itersize = _FETCH_ROWS
        self._release = cursor.close
        cursor.execute(query, values)
        columns = [d.name for d in cursor.description or ()]
        return QueryResult(columns, self._rows(iter(cursor), []))

    def _streamed(self, query: str, values: Params | None) -> QueryResult:
        """EXPLAIN or SHOW (no cursor can hold them), streamed; both always return rows, so the
        columns are known from the first."""
        cursor = self.pg.cursor()
        rows = cast("Generator[tuple[Any, ...], None, None]", cursor.stream(query, values))
        self._release = rows.close  # stops the stream: psycopg cancels what is left of it
        first = next(rows, None)
        columns = [d.name for d in cursor.description or ()]
        return QueryResult(columns, self._rows(rows, [] if first is None else [first]))

    def _rows(self, rows: Iterator[tuple[Any, ...]], ahead: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        import psycopg

        if self.pg.closed:  # read after close(), as an SQLite cursor would be
            raise QueryError("SQL error: the connection is closed")
        try:
            yield from ahead
            for row in rows:  # noqa: UP028 - see SqliteConsole._rows
                yield row
        except psycopg.Error as exc:
            self._finish()
            raise self._error(exc) from None
        self._finish()

    def _finish(self) -> None:
        """End the previous statement, read to the end or not: close its cursor (or stream) and
        roll its transaction back (a read-only transaction has nothing to keep)."""
        import psycopg

        release, self._release = self._release, None
        try:
            if release is not None:
                release()
            self.pg.rollback()
        except psycopg.Error:
            pass  # the connection is gone: the next statement says so

    def _error(self, exc: Exception) -> QueryError | StoreError:
        import psycopg

        lines = str(exc).strip().splitlines()
        first = lines[0] if lines else type(exc).__name__
        refused = _READ_ONLY_ERROR.search(first)
        if refused is not None or getattr(exc, "sqlstate", None) == "25006":
            return self.refused(refused.group(1) if refused else "a write")
        if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
            return StoreError(f"cannot read {self.location}: {first}")
        return QueryError(f"SQL error: {first}")

    def close(self) -> None:
        try:
            self._finish()
        finally:
            self._raw.close()
            self._engine.dispose()
