"""Opening a run database to read it: one connection factory, one schema check.

Viewers (``ls``, ``show``, the TUI's browser and viewer, ``query``/``search``/``export``, ``open_run_db``)
open the file with ``mode=ro`` and ``PRAGMA query_only``: nothing they do can write to it, they
never create a database that is not there, and they never migrate (``Database.open`` would, in
an ``IMMEDIATE`` transaction that queues behind a running batch and upgrades a file the user
only wanted to look at). :func:`open_sqlite` is the factory; the SQLAlchemy engine of
:class:`Reader` is built on it, so both paths see the same checks. :func:`check_version` is the
one place that says whether this clonechat can use a file's schema, for readers and the writer.
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

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

_VERSION_TABLE = "clonechat_migrations"
_TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
_VERSION_SQL = f"SELECT COALESCE(MAX(version), 0) FROM {_VERSION_TABLE}"


def check_version(version: int, has_other_tables: bool, path: Path, *, upgrading: bool = False) -> int:
    """``version`` if this clonechat can use the file (0: no clonechat tables yet), else a
    StoreError that says what to do. A reader needs the current schema; the writer
    (``upgrading``) accepts any older one, because it is about to migrate it."""
    current = SCHEMA_VERSION
    if version == 0:
        if has_other_tables:
            raise StoreError(f"{path} is an SQLite database but not a clonechat one (it has other tables)")
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


def schema_state_of(path: Path) -> tuple[int, bool] | None:
    """:func:`schema_state` of the file at ``path``, or ``None`` if it cannot be read as
    SQLite; nothing is checked or changed."""
    try:
        conn = connect_readonly(path)
    except sqlite3.Error:
        return None
    try:
        return schema_state(conn)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


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


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc)


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


def nothing_to_read(db_path: Path | str) -> StoreError:
    """What a command that was asked about a particular database says when there is none: no
    file, or one without clonechat's tables (the TUI shows an empty browser instead)."""
    path = Path(db_path)
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

    path: Path

    @property
    def reader_engine(self) -> Engine | Connection: ...


class Reader:
    """A run database opened for reading only (see :func:`open_reader`), or one moment of one
    (see :func:`snapshot`: then it reads through a single open connection)."""

    def __init__(self, path: Path, bind: Engine | Connection) -> None:
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


@contextmanager
def open_reader(db_path: Path | str) -> Iterator[Reader | None]:
    """A :class:`Reader` on ``db_path`` after the schema check, closed on exit; ``None`` if
    there is no database yet (see :func:`open_sqlite`). Failures reading it are StoreErrors
    naming the file."""
    checked = open_sqlite(db_path)
    if checked is None:
        yield None
        return
    checked.close()
    path = Path(db_path)
    reader = Reader(path, reader_engine(path))
    try:
        yield reader
    except (StoreError, NotFoundError):
        raise
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, (SQLAlchemyError, sqlite3.Error)):
            raise StoreError(f"cannot read {path}: {_reason(exc)}") from None
        raise
    finally:
        reader.close()


@contextmanager
def open_existing(db_path: Path | str) -> Iterator[Reader]:
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
