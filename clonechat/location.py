"""Where the run database is: an SQLite file (the embedded default) or a PostgreSQL server.

``--db`` and ``$CLONECHAT_DB`` take either a path or a ``postgresql://user@host:port/dbname``
URL; :func:`db_location` is the one place that tells them apart. A server URL may carry a
password: :class:`ServerDatabase` keeps it for connecting and shows the URL without it
everywhere else (messages, progress lines, summaries), so it never reaches a log, a report or
the database itself. Like :mod:`clonechat.constants`, this module imports nothing heavy: the
CLI parses ``--db`` before it loads SQLAlchemy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from clonechat.constants import DB_ENV_VAR, DEFAULT_DB

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True)
class ServerDatabase:
    """A PostgreSQL database named by URL. ``str()`` is the URL without its password."""

    url: str

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy's psycopg 3 driver."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(scheme="postgresql+psycopg"))

    @property
    def libpq_url(self) -> str:
        """The URL as libpq (psycopg, psql) spells it."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(scheme="postgresql"))

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return urlunsplit(parts._replace(scheme="postgresql"))
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(scheme="postgresql", netloc=f"{user}:***@{host}{port}"))

    def exists(self) -> bool:
        """A server database is there to be asked (whether it answers is the connection's question)."""
        return True


#: A run database: a file, or a database on a PostgreSQL server.
DbLocation = Path | ServerDatabase


def is_server_url(value: str) -> bool:
    return value.split("://", 1)[0].lower() in _SCHEMES and "://" in value


def db_location(value: str | Path | ServerDatabase | None = None) -> DbLocation:
    """``value`` as a location (``None``: ``$CLONECHAT_DB``, else ``runs/clonechat.db``)."""
    if value is None:
        value = os.environ.get(DB_ENV_VAR) or DEFAULT_DB
    if isinstance(value, (Path, ServerDatabase)):
        return value
    return ServerDatabase(value) if is_server_url(value) else Path(value)


def is_server(location: DbLocation) -> bool:
    return isinstance(location, ServerDatabase)
