"""Versioned schema migrations: a list of frozen steps, applied in order, each once.

The steps themselves (their SQL, and the one backfill) live in
:mod:`clonechat.store.migration_steps`, which imports no live clonechat code: a step that has
shipped never changes its effect, whatever the models, metrics or views become. Never edit a
step that has shipped; append a new one. ``tests/test_migrations.py`` checks that a fresh
database, one upgraded from every earlier version and ``SQLModel.metadata`` all describe the
same schema, and records each shipped step's SHA-256.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping

from sqlalchemy import Connection, text

from clonechat import constants
from clonechat.read.connect import schema_state, server_schema_state
from clonechat.store import migration_steps as steps

#: A script is SQL (statements run in order) or a function for what SQL cannot do (a backfill).
Script = str | Callable[[Connection], object]
#: A step is one script for both backends, or a script per dialect (``sqlite``, ``postgresql``)
#: where their SQL differs.
Step = Script | Mapping[str, Script]


def _both(sqlite: Script, postgresql: Script) -> Mapping[str, Script]:
    return {"sqlite": sqlite, "postgresql": postgresql}


MIGRATIONS: list[tuple[str, Step]] = [
    (
        "core tables: experiments, conditions, prompts, dialogues, node tree",
        _both(steps.CORE_TABLES, steps.PG_CORE_TABLES),
    ),
    (
        "scores, and predictions linked to the turn they predict",
        _both(steps.SCORES_AND_TARGETS, steps.PG_SCORES_AND_TARGETS),
    ),
    ("side-channel variants: which prediction, which coordination task", steps.VARIANTS),
    (
        "per-turn conversation metrics, and full-text search over node content",
        _both(steps.TURN_METRICS_AND_SEARCH, steps.PG_TURN_METRICS_AND_SEARCH),
    ),
    (
        "metrics for the turns stored before there were metrics",
        _both(steps.backfill_turn_metrics_v1, steps.pg_backfill_turn_metrics_v1),
    ),
    ("views for the common questions", _both(steps.VIEWS_V1, steps.PG_VIEWS_V1)),
    (
        "the scorer version in force: v_score, read by v_prediction and v_coordination",
        _both(steps.SCORES_IN_FORCE, steps.PG_SCORES_IN_FORCE),
    ),
    (
        "batch workers on many hosts: workers, leases with fencing tokens, the grant history",
        _both(steps.WORKERS_AND_LEASES, steps.PG_WORKERS_AND_LEASES),
    ),
    (
        "frontier models: reasoning traces (searchable apart), reasoning tokens, cache writes, cost",
        _both(steps.REASONING_AND_COST, steps.PG_REASONING_AND_COST),
    ),
]


def script_for(step: Step, dialect: str) -> Script:
    """The script of ``step`` that runs on ``dialect``."""
    if isinstance(step, Mapping):
        return step[dialect]
    return step


SCHEMA_VERSION = len(MIGRATIONS)
if SCHEMA_VERSION != constants.SCHEMA_VERSION:
    raise RuntimeError(
        f"clonechat.constants.SCHEMA_VERSION is {constants.SCHEMA_VERSION} but there are {SCHEMA_VERSION} "
        "migration steps: set it to the number of steps"
    )


def statements(script: str) -> list[str]:
    """The statements of an SQL script, split where SQLite says a statement is complete (a
    trigger's body has semicolons of its own)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip().rstrip(";"))
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


_VERSION_TABLE = "clonechat_migrations"


def schema_of(conn: Connection) -> tuple[int, bool]:
    """The schema version of the database ``conn`` is on and whether it has other tables, read
    the one way readers read it (:func:`clonechat.read.connect.schema_state`), inside the
    caller's transaction."""
    if conn.dialect.name != "sqlite":
        return server_schema_state(conn)
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return schema_state(raw)


def current_version(conn: Connection) -> int:
    return schema_of(conn)[0]


def migrate(conn: Connection, target: int = SCHEMA_VERSION) -> list[int]:
    """Apply pending steps up to ``target`` inside the caller's transaction; return those applied."""
    sqlite = conn.dialect.name == "sqlite"
    conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} ("
            f"version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
            f"applied_at {'DATETIME' if sqlite else 'TIMESTAMP'} NOT NULL)"
        )
    )
    now = "datetime('now')" if sqlite else "(now() AT TIME ZONE 'utc')"
    applied: list[int] = []
    version = current_version(conn)
    for number, (description, step) in enumerate(MIGRATIONS[:target], start=1):
        if number <= version:
            continue
        script = script_for(step, conn.dialect.name)
        if callable(script):
            script(conn)
        else:
            for statement in statements(script):
                # psycopg reads % as a placeholder even without parameters; SQLite has none.
                conn.exec_driver_sql(statement if sqlite else statement.replace("%", "%%"))
        conn.execute(
            text(f"INSERT INTO {_VERSION_TABLE} (version, description, applied_at) VALUES (:v, :d, {now})"),
            {"v": number, "d": description},
        )
        applied.append(number)
    return applied
