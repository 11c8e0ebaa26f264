"""Opening a run database to read it: one connection factory, one schema check.

Viewers (``ls``, ``show``, the TUI's browser and viewer, ``query``/``search``/``export``, ``open_run_db``)
open the file with ``mode=ro`` and ``PRAGMA query_only``: nothing they do can write to it, they
never create a database that is not there, and they never migrate (``Database.open`` would, in
an ``IMMEDIATE`` transaction that queues behind a running batch and upgrades a file the user
only wanted to look at). :func:`open_sqlite` is the factory; the SQLAlchemy engine of
:class:`Reader` is built on it, so both paths see the same checks. :func:`check_version` is the
one place that says whether this clonechat can use a file's schema, for readers and the writer.

A PostgreSQL database (``--db postgresql://...``) is read through :func:`server_engine`'s
REPEATABLE READ, READ ONLY transactions: the server itself refuses any write, and a read of
several statements sees one snapshot, as SQLite's deferred read transaction does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from clonechat.constants import BUSY_TIMEOUT_MS, SCHEMA_VERSION
from clonechat.errors import NotFoundError, StoreError
from clonechat.location import DbLocation, ServerDatabase, db_location

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

_VERSION_TABLE = "clonechat_migrations"
_TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
_VERSION_SQL = f"SELECT COALESCE(MAX(version), 0) FROM {_VERSION_TABLE}"


def check_version(version: int, has_other_tables: bool, path: DbLocation, *, upgrading: bool = False) -> int:
    """``version`` if this clonechat can use the file (0: no clonechat tables yet), else a
    StoreError that says what to do. A reader needs the current schema; the writer
    (``upgrading``) accepts any older one, because it is about to migrate it."""
    current = SCHEMA_VERSION
    if version == 0:
        if has_other_tables:
            kind = "a PostgreSQL database" if isinstance(path, ServerDatabase) else "an SQLite database"
            raise StoreError(f"{path} is {kind} but not a clonechat one (it has other tables)")
        return 0
    if version > current:
        raise StoreError(
            f"{path} has schema version {version}, newer than this clonechat understands ({current}): upgrade clonechat"
        )
    if version < current and not upgrading:
        raise StoreError(
            f"{path} has schema version {version}, this clonechat reads {current}: "
            f"run 'clonechat db upgrade --db {path}' once to upgrade it"
        )
    return version


def schema_state(conn: sqlite3.Connection) -> tuple[int, bool]:
    """The file's schema version (0 before clonechat created its tables) and whether it has
    tables that are not clonechat's."""
    tables = {str(row[0]) for row in conn.execute(_TABLES_SQL)}
    if _VERSION_TABLE not in tables:
        return 0, bool(tables)
    return int(conn.execute(_VERSION_SQL).fetchone()[0]), False


_SERVER_TABLES_SQL = (
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
)


def server_schema_state(conn: Connection) -> tuple[int, bool]:
    """:func:`schema_state` of a PostgreSQL database (its tables in the current schema)."""
    from sqlalchemy import text

    tables = {str(row[0]) for row in conn.execute(text(_SERVER_TABLES_SQL))}
    if _VERSION_TABLE not in tables:
        return 0, bool(tables)
    return int(conn.execute(text(_VERSION_SQL)).scalar_one()), False


def server_engine(location: ServerDatabase, *, read_only: bool) -> Engine:
    """The one engine factory for a PostgreSQL database. Readers: REPEATABLE READ, READ ONLY
    (one snapshot per read; the server refuses any write). Writers: READ COMMITTED, with row
    locks where processes share rows. The pool keeps a few connections: opening one costs
    milliseconds, a turn's commit well under one."""
    from sqlalchemy import create_engine

    return create_engine(
        location.sqlalchemy_url,
        isolation_level="REPEATABLE READ" if read_only else "READ COMMITTED",
        execution_options={"postgresql_readonly": True} if read_only else {},
        pool_size=2,
        max_overflow=8,
        pool_pre_ping=True,
        # Timestamps are stored as naive UTC on both backends: the session's zone is UTC, so an
        # aware datetime converts the same whatever the server's TimeZone setting is.
        connect_args={
            "connect_timeout": 10,
            "application_name": "clonechat",
            # A writer paused inside a transaction (SIGSTOP, a partition) must not hold its row
            # locks for ever: the server ends such a session, and the lease it held expires.
            "options": "-c timezone=UTC" + ("" if read_only else " -c idle_in_transaction_session_timeout=10000"),
            # A connection whose packets go unanswered this long fails instead of hanging (a cut
            # link), so the worker stops rather than waiting on TCP's retransmissions for minutes.
            "tcp_user_timeout": 15000,
            "keepalives_idle": 10,
        },
    )


def server_reason(exc: BaseException) -> str:
    """The server's (or psycopg's) first line, without SQLAlchemy's echo of the statement."""
    original = getattr(exc, "orig", None)
    lines = str(original if original is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def schema_state_of(location: DbLocation) -> tuple[int, bool] | None:
    """:func:`schema_state` of the database at ``location``, or ``None`` if it cannot be read
    (not SQLite, no file, a server that does not answer); nothing is checked or changed."""
    if isinstance(location, ServerDatabase):
        from sqlalchemy.exc import SQLAlchemyError

        engine = server_engine(location, read_only=True)
        try:
            with engine.connect() as conn:
                return server_schema_state(conn)
        except SQLAlchemyError:
            return None
        finally:
            engine.dispose()
    if not location.is_file():
        return None
    try:
        raw = connect_readonly(location)
    except sqlite3.Error:
        return None
    try:
        return schema_state(raw)
    except sqlite3.Error:
        return None
    finally:
        raw.close()


def readonly_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A raw connection that cannot write (``mode=ro`` and ``query_only``), in autocommit mode
    so each statement sees the newest committed data; no schema check (see :func:`open_sqlite`)."""
    conn = sqlite3.connect(
        readonly_uri(path), uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = ON")
    return conn


def _usable_path(db_path: Path | str) -> Path | None:
    path = Path(db_path)
    if path.is_dir():
        raise StoreError(f"database path {path} is a directory")
    return path if path.exists() else None


def open_sqlite(db_path: Path | str) -> sqlite3.Connection | None:
    """The checked read-only connection to ``db_path``; ``None`` if there is no database yet or
    it has no clonechat tables (a fresh checkout is empty, not an error, and is not created).
    Any failure is a StoreError naming the file."""
    path = _usable_path(db_path)
    if path is None:
        return None
    try:
        conn = connect_readonly(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    try:
        version = check_version(*schema_state(conn), path)
    except StoreError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot read {path}: {exc}") from None
    if version == 0:
        conn.close()
        return None
    return conn


def nothing_to_read(db_path: DbLocation | str) -> StoreError:
    """What a command that was asked about a particular database says when there is none: no
    file, or one without clonechat's tables (the TUI shows an empty browser instead)."""
    path = db_location(db_path)
    if not path.exists():
        return StoreError(f"no database at {path}")
    return StoreError(f"{path} has no clonechat tables yet: run something first")


def existing_sqlite(db_path: Path | str) -> sqlite3.Connection:
    """:func:`open_sqlite` on a database that must exist (the caller closes the connection)."""
    conn = open_sqlite(db_path)
    if conn is None:
        raise nothing_to_read(db_path)
    return conn


def stored_time(value: str | datetime) -> datetime:
    """A stored timestamp as an aware UTC datetime. Raw queries get SQLite's text (naive UTC,
    as SQLAlchemy writes it); the engine's records carry aware UTC times, so readers return those."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Readable(Protocol):
    """Anything the read functions can read from: a :class:`Reader`, the writer's
    :class:`~clonechat.store.database.Database` (its reader engine) in a process that writes, or
    a :func:`snapshot` of either (one connection, so every read sees the same moment)."""

    path: DbLocation

    @property
    def reader_engine(self) -> Engine | Connection: ...


class Reader:
    """A run database opened for reading only (see :func:`open_reader`), or one moment of one
    (see :func:`snapshot`: then it reads through a single open connection)."""

    def __init__(self, path: DbLocation, bind: Engine | Connection) -> None:
        self.path = path
        self._bind = bind

    @property
    def reader_engine(self) -> Engine | Connection:
        return self._bind

    def close(self) -> None:
        from sqlalchemy import Engine

        if isinstance(self._bind, Engine):
            self._bind.dispose()


def reader_engine(path: Path) -> Engine:
    """A SQLAlchemy engine whose connections come from :func:`connect_readonly` (one per use:
    safe across the TUI's worker threads, never held while a batch writes). Each connection's
    statements run in one deferred read transaction, as on the writer's ``Database`` reader: a
    read of several statements sees one snapshot, whichever :class:`Readable` it is given."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    engine = create_engine("sqlite://", creator=lambda: connect_readonly(path), poolclass=NullPool)

    @event.listens_for(engine, "begin")
    def _snapshot(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def checked_server_engine(location: ServerDatabase) -> Engine | None:
    """A read-only engine on a PostgreSQL database after the schema check (``None``: no
    clonechat tables yet); a failure to connect is a StoreError naming the database."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = server_engine(location, read_only=True)
    try:
        with engine.connect() as conn:
            version = check_version(*server_schema_state(conn), location)
    except StoreError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot read {location}: {server_reason(exc)}") from None
    if version == 0:
        engine.dispose()
        return None
    return engine


def _server_reader(location: ServerDatabase) -> Reader | None:
    """A checked :class:`Reader` on a PostgreSQL database (``None``: no clonechat tables yet)."""
    engine = checked_server_engine(location)
    return None if engine is None else Reader(location, engine)


def _file_reader(path: Path) -> Reader | None:
    checked = open_sqlite(path)
    if checked is None:
        return None
    checked.close()
    return Reader(path, reader_engine(path))


@contextmanager
def open_reader(db_path: DbLocation | str) -> Iterator[Reader | None]:
    """A :class:`Reader` on ``db_path`` after the schema check, closed on exit; ``None`` if
    there is no database yet (see :func:`open_sqlite`). Failures reading it are StoreErrors
    naming the file (or the server database)."""
    path = db_location(db_path)
    reader = _server_reader(path) if isinstance(path, ServerDatabase) else _file_reader(path)
    if reader is None:
        yield None
        return
    try:
        yield reader
    except (StoreError, NotFoundError):
        raise
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, (SQLAlchemyError, sqlite3.Error)):
            raise StoreError(f"cannot read {path}: {server_reason(exc)}") from None
        raise
    finally:
        reader.close()


@contextmanager
def open_existing(db_path: DbLocation | str) -> Iterator[Reader]:
    """:func:`open_reader` on a database that must exist (``show``, ``export``, ``query``...)."""
    with open_reader(db_path) as reader:
        if reader is None:
            raise nothing_to_read(db_path)
        yield reader


@contextmanager
def connection(db: Readable) -> Iterator[Connection]:
    """One short read connection (its own, so a read never waits on or blocks the writer), or
    the snapshot's connection inside :func:`snapshot`."""
    from sqlalchemy import Engine

    bind = db.reader_engine
    if not isinstance(bind, Engine):  # a snapshot's connection: already open, not ours to close
        yield bind
        return
    with bind.connect() as conn:
        yield conn


@contextmanager
def snapshot(db: Readable) -> Iterator[Readable]:
    """``db`` pinned to one moment: every read function given the result sees the database as
    it was at the first read, whatever a batch commits meanwhile (WAL keeps that version for
    the open read transaction). For a read made of several questions, such as a report."""
    from sqlalchemy import Engine

    bind = db.reader_engine
    if not isinstance(bind, Engine):
        yield db
        return
    with bind.connect() as conn:
        yield Reader(db.path, conn)
