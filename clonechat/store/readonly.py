"""Reading a run database without any way of changing it.

Viewers (the TUI, ``clonechat query``/``search``/``export``, ``open_run_db``) open the file
with ``mode=ro``: nothing they do can write to it, they never create a database that is not
there, and they never migrate (``Database.open`` would, in an ``IMMEDIATE`` transaction that
queues behind a running batch and upgrades a file the user only wanted to look at).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from clonechat.errors import NotFoundError, StoreError
from clonechat.store import migrations
from clonechat.store.database import BUSY_TIMEOUT_MS, Database


def readonly_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def readonly_engine(path: Path) -> Engine:
    """An engine whose connections open ``path`` read-only (``mode=ro``): the TUI never writes
    what it only shows, and never creates a database that is not there."""
    uri = readonly_uri(path)
    return create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000),
        poolclass=NullPool,
    )


def check_version(version: int, has_other_tables: bool, path: Path) -> int:
    """``version`` if this clonechat reads the file as it is (0: no clonechat tables yet);
    otherwise a StoreError that says what to do."""
    if version == 0:
        if has_other_tables:
            raise StoreError(f"{path} is an SQLite database but not a clonechat one")
        return 0
    if version < migrations.SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, this clonechat reads {migrations.SCHEMA_VERSION}: "
            f"run 'clonechat ls --db {path}' once to upgrade it"
        )
    if version > migrations.SCHEMA_VERSION:
        raise StoreError(f"{path} is newer than this clonechat understands: upgrade clonechat")
    return version


def readable_schema(conn: Connection, path: Path) -> int:
    """The file's schema version if this clonechat reads it as it is (see :func:`check_version`).
    A viewer never migrates: that would write to a file the user only wanted to look at, and
    queue behind a running batch."""
    version = migrations.current_version(conn)
    return check_version(version, bool(migrations.user_tables(conn)), path)


@contextmanager
def readonly_database(db_path: Path | str) -> Iterator[Database | None]:
    """A :class:`Database` on ``db_path`` whose connections are read-only, after the schema
    check; ``None`` if there is no database yet (a fresh checkout is an empty browser, not an
    error, and we must not create the file). ``Database.open`` is not used: it migrates, in an
    ``IMMEDIATE`` transaction that would queue behind a busy batch. Any failure reading it
    is a StoreError naming the file."""
    path = Path(db_path)
    if path.is_dir():
        raise StoreError(f"database path {path} is a directory")
    if not path.exists():
        yield None
        return
    engine = readonly_engine(path)
    try:
        with engine.connect() as conn:
            version = readable_schema(conn, path)
        yield None if version == 0 else Database(path, engine, engine)
    except (StoreError, NotFoundError):
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc)
        raise StoreError(f"cannot read {path}: {reason}") from None
    finally:
        engine.dispose()
