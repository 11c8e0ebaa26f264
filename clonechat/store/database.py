"""Opening the run database: pragmas, transactions, migrations, and clear errors.

SQLite in WAL mode lets readers (the TUI, ``clonechat query``) work while the single writer
commits. The writer's transactions start with ``BEGIN IMMEDIATE`` so a second writing process
waits on ``busy_timeout`` at the start of a transaction instead of failing half-way through it.

On PostgreSQL (``--db postgresql://...``, psycopg 3) many processes on many hosts write at
once: each write transaction is READ COMMITTED with row locks where rows are shared (the
plan, leases), and readers get REPEATABLE READ, READ ONLY transactions, so a read of several
statements sees one snapshot, as on SQLite.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.pool import NullPool

# The constants' home is clonechat.constants (the CLI needs them without SQLAlchemy); they are
# re-exported here for the code that has always imported them from the store.
from clonechat.constants import BUSY_TIMEOUT_MS as BUSY_TIMEOUT_MS
from clonechat.constants import DB_ENV_VAR as DB_ENV_VAR
from clonechat.constants import DEFAULT_DB as DEFAULT_DB
from clonechat.errors import StoreError
from clonechat.location import DbLocation, ServerDatabase, db_location
from clonechat.read.connect import server_engine, server_reason
from clonechat.store import migrations

if TYPE_CHECKING:
    from sqlmodel import Session

T = TypeVar("T")


def default_db_path() -> DbLocation:
    """``$CLONECHAT_DB`` if set, else ``runs/clonechat.db`` under the current directory."""
    return db_location(os.environ.get(DB_ENV_VAR) or DEFAULT_DB)


def _make_engine(location: DbLocation, *, immediate: bool) -> Engine:
    if isinstance(location, ServerDatabase):
        return server_engine(location, read_only=False)
    path = location
    uri = f"file:{path}"
    engine = create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000),
        # One connection per checkout; the writer is one task and readers are short-lived, and
        # it keeps file handles from leaking across threads and forks.
        poolclass=NullPool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite otherwise
        # issues its own deferred BEGIN).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """A clonechat run database file.

    ``Database.open`` checks the file, upgrades its schema and returns an object with a writer
    engine (used only by the store writer) and a reader engine for everything else.
    """

    def __init__(self, path: DbLocation, writer: Engine, reader: Engine) -> None:
        self.path = path
        self.writer_engine = writer
        self.reader_engine = reader

    @property
    def on_server(self) -> bool:
        """Whether this is a PostgreSQL database (many writers) rather than an SQLite file."""
        return isinstance(self.path, ServerDatabase)

    @classmethod
    def open(cls, path: DbLocation | str | None = None, *, create: bool = True) -> Database:
        location = db_location(path) if path is not None else default_db_path()
        if isinstance(location, ServerDatabase):
            return cls._open_server(location)
        db_path = location
        if db_path.is_dir():
            raise StoreError(f"database path {db_path} is a directory")
        if not db_path.exists():
            if not create:
                raise StoreError(f"no database at {db_path}")
            try:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create database folder {db_path.parent}: {exc.strerror or exc}") from None
        writer = _make_engine(db_path, immediate=True)
        try:
            with writer.begin() as conn:
                _check_is_clonechat(conn, db_path)
                migrations.migrate(conn)
                # Imported here: the writes module loads SQLModel and the table models, which
                # the read-only viewers (``clonechat query``) reach this module without needing.
                from clonechat.store import writes

                # Nodes some other tool inserted since the last write are indexed now.
                writes.index_new_nodes(conn)
        except StoreError:
            writer.dispose()
            raise
        except (OperationalError, DatabaseError) as exc:
            writer.dispose()
            reason = str(exc.orig) if exc.orig is not None else str(exc)
            if isinstance(exc, OperationalError) and "unable to open" in reason:
                raise StoreError(f"cannot open database {db_path}: {reason}") from None
            raise StoreError(f"{db_path} is not a usable SQLite database: {reason}") from None
        return cls(db_path, writer, _make_engine(db_path, immediate=False))

    @classmethod
    def _open_server(cls, location: ServerDatabase) -> Database:
        writer = server_engine(location, read_only=False)
        try:
            with writer.begin() as conn:
                # One migrating process at a time, server-wide for this database: two workers
                # started in the same second must not both create the tables.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7216)")
                _check_is_clonechat(conn, location)
                migrations.migrate(conn)
        except StoreError:
            writer.dispose()
            raise
        except (OperationalError, DatabaseError) as exc:
            writer.dispose()
            raise StoreError(f"cannot use database {location}: {server_reason(exc)}") from None
        return cls(location, writer, server_engine(location, read_only=True))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session on its own connection (safe while the writer commits)."""
        from sqlmodel import Session  # imported on use, like ``writes`` above

        with Session(self.reader_engine) as session:
            yield session

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction (``BEGIN IMMEDIATE``) right now. For offline
        tools such as ``clonechat score`` that run outside a writer task; SQLite's busy timeout
        lets them share the file with a batch that is still writing."""
        with self.writer_engine.begin() as conn:
            return fn(conn)

    def close(self) -> None:
        self.writer_engine.dispose()
        self.reader_engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_is_clonechat(conn: Connection, path: DbLocation) -> None:
    from clonechat.read.connect import check_version

    check_version(*migrations.schema_of(conn), path, upgrading=True)
