"""The migration path, on SQLite and on PostgreSQL: a fresh database, one upgraded from every
earlier version and the SQLModel models agree (PostgreSQL's documented extras aside); an
upgrade keeps every row and gives the metrics, views and search of a fresh database, and the
views read back the same rows on both backends; shipped steps are frozen (recorded hashes, no
live imports, and the frozen metrics backfill gives exactly the rows the live metrics code gives).

A test that takes ``backend`` runs on both; its databases come from ``new_database`` (files, or
databases on the session's PostgreSQL server). Schemas are read back with SQLAlchemy's
reflection (``inspect``) and rows with plain SQL, so one comparison serves both backends.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import itertools
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from psycopg.types.string import TextLoader
from sqlalchemy import Connection, Engine, UniqueConstraint, create_engine, event, text
from sqlalchemy import inspect as reflect
from sqlalchemy.pool import NullPool
from sqlalchemy.types import JSON, DateTime, Float, Integer, String, TypeDecorator, TypeEngine
from sqlmodel import SQLModel

from clonechat.location import DbLocation, ServerDatabase, db_location
from clonechat.store import migration_steps, migrations, schema_doc, turn_metrics
from clonechat.store.database import Database
from clonechat.store.views import VIEW_DOCS
from tests.pg_server import PostgresServer

# --- databases on either backend ----------------------------------------------------------------

_database_numbers = itertools.count(1)


@pytest.fixture
def new_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str], DbLocation]]:
    """Empty databases on the test's backend, as many as it needs (``name`` tells them apart):
    files under ``tmp_path``, or new databases on the session's server, dropped afterwards."""
    if backend == "sqlite":
        yield lambda name: tmp_path / f"{name}.db"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    created: list[str] = []

    def create(name: str) -> DbLocation:
        database = f"m{os.getpid()}_{next(_database_numbers)}_{name}"
        created.append(database)
        return db_location(server.create_database(database))

    yield create
    for database in created:
        server.drop_database(database)


def on_server(location: DbLocation) -> bool:
    return isinstance(location, ServerDatabase)


def engine_for(location: DbLocation) -> Engine:
    """A plain engine (no pool left behind to hold the database open), in UTC on the server as
    the store's engines are."""
    if isinstance(location, ServerDatabase):
        return create_engine(location.sqlalchemy_url, poolclass=NullPool, connect_args={"options": "-c timezone=UTC"})
    return create_engine(f"sqlite:///{location}", poolclass=NullPool)


@contextmanager
def connected(location: DbLocation) -> Iterator[Connection]:
    """One transaction on ``location``, committed on exit."""
    engine = engine_for(location)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def query(location: DbLocation, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (none for a statement that returns none), in a transaction of its own."""
    with connected(location) as conn:
        result = conn.execute(text(sql), params)
        return [tuple(row) for row in result] if result.returns_rows else []


# --- schemas, as reflection reports them ----------------------------------------------------------

#: Table name -> part (columns, primary_key, foreign_keys, unique, indexes) -> sorted entries.
Schema = dict[str, dict[str, list[tuple[Any, ...]]]]

#: The families a column type is compared by against the models (whose types are SQLAlchemy's
#: generic ones): VARCHAR and TEXT are strings, INTEGER and BIGINT integers, FLOAT, REAL and
#: DOUBLE PRECISION floats, DATETIME and TIMESTAMP datetimes. First match wins (JSON is no
#: String, but keep it first all the same).
FAMILIES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (JSON, "json"),
    (DateTime, "datetime"),
    (Float, "float"),
    (Integer, "integer"),
    (String, "string"),
)


def family(column_type: TypeEngine[Any]) -> str:
    """``column_type``'s family (a model's ``TypeDecorator`` by what it stores)."""
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    for generic, name in FAMILIES:
        if isinstance(column_type, generic):
            return name
    return f"unknown {column_type!r}"


def data_tables(conn: Connection) -> list[str]:
    """The tables compared: not the migration bookkeeping, nor SQLite's full-text index and its
    shadow tables (compared as objects, with the triggers)."""
    sqlite = conn.dialect.name == "sqlite"
    return [
        name
        for name in reflect(conn).get_table_names()
        if name != "clonechat_migrations" and not (sqlite and name.startswith("node_fts"))
    ]


def schema_of(location: DbLocation, *, by_family: bool = False) -> Schema:
    """Tables, columns (type, nullability), primary keys, foreign keys, unique column sets and
    other indexes, normalised so column order and how a uniqueness is declared (``UNIQUE`` in
    ``CREATE TABLE``, or ``CREATE UNIQUE INDEX``, named differently) do not matter. Types are
    exact (as the dialect spells them), or by family for comparing with the models."""
    with connected(location) as conn:
        reflected = reflect(conn)
        schema: Schema = {}
        for table in data_tables(conn):
            indexes = reflected.get_indexes(table)
            schema[table] = {
                "columns": sorted(
                    (
                        c["name"],
                        family(c["type"]) if by_family else c["type"].compile(dialect=conn.dialect).upper(),
                        c["nullable"],
                    )
                    for c in reflected.get_columns(table)
                ),
                "primary_key": [tuple(reflected.get_pk_constraint(table)["constrained_columns"])],
                "foreign_keys": sorted(
                    (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]))
                    for fk in reflected.get_foreign_keys(table)
                ),
                "unique": sorted(
                    {tuple(u["column_names"]) for u in reflected.get_unique_constraints(table)}
                    | {tuple(i["column_names"]) for i in indexes if i["unique"]}
                ),
                "indexes": sorted(
                    (i["name"], tuple(i.get("expressions") or i["column_names"])) for i in indexes if not i["unique"]
                ),
            }
        return schema


#: What only PostgreSQL has, as reflection reports it, and why (docs/schema.md, "On PostgreSQL"):
#: ``node.rowid``, the order nodes were stored in (SQLite's implicit rowid, made a column), and
#: the full-text index, an expression index where SQLite has the FTS5 table ``node_fts``.
PG_ROWID_COLUMN = ("rowid", "BIGINT", False)
PG_ROWID_UNIQUE = ("rowid",)
PG_FTS_INDEX = ("node_fts", ("to_tsvector('simple'::regconfig, clonechat_fold(content::text))",))
#: The reasoning's own full-text index (step 9), beside the messages'.
PG_FTS_REASONING_INDEX = ("node_fts_reasoning", ("to_tsvector('simple'::regconfig, clonechat_fold(reasoning::text))",))


def shared_schema(location: DbLocation, *, by_family: bool = False) -> Schema:
    """:func:`schema_of` without PostgreSQL's documented extras (each asserted to be there, as
    documented), so a server database compares with the models as a file does."""
    schema = schema_of(location, by_family=by_family)
    if on_server(location):
        node = schema["node"]
        rowid = (PG_ROWID_COLUMN[0], "integer", False) if by_family else PG_ROWID_COLUMN
        for part, extra in (
            ("columns", rowid),
            ("unique", PG_ROWID_UNIQUE),
            ("indexes", PG_FTS_INDEX),
            ("indexes", PG_FTS_REASONING_INDEX),
        ):
            assert extra in node[part], f"node on PostgreSQL lacks its documented {extra}"
            node[part].remove(extra)
    return schema


def model_schema() -> Schema:
    """:func:`schema_of` of ``SQLModel.metadata`` itself (types by family)."""
    schema: Schema = {}
    for table in SQLModel.metadata.sorted_tables:
        schema[table.name] = {
            "columns": sorted((c.name, family(c.type), bool(c.nullable)) for c in table.columns),
            "primary_key": [tuple(c.name for c in table.primary_key.columns)],
            "foreign_keys": sorted(
                (
                    tuple(e.parent.name for e in fk.elements),
                    fk.referred_table.name,
                    tuple(e.column.name for e in fk.elements),
                )
                for fk in table.foreign_key_constraints
            ),
            "unique": sorted(
                {tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, UniqueConstraint)}
                | {tuple(c.name for c in i.columns) for i in table.indexes if i.unique}
            ),
            "indexes": sorted((str(i.name), tuple(c.name for c in i.columns)) for i in table.indexes if not i.unique),
        }
    return schema


def differences(found: Schema, expected: Schema) -> list[str]:
    """Where ``found`` is not ``expected``, one line per table and part (empty: the same)."""
    out: list[str] = []
    for table in sorted(found.keys() | expected.keys()):
        if table not in found or table not in expected:
            out.append(f"{table}: only in the {'expected' if table not in found else 'found'} schema")
            continue
        for part in sorted(found[table].keys() | expected[table].keys()):
            has, wants = found[table].get(part, []), expected[table].get(part, [])
            if has != wants:
                extra = [x for x in has if x not in wants]
                missing = [x for x in wants if x not in has]
                out.append(f"{table} {part}: has {extra}, lacks {missing}")
    return out


def model_reference(location: DbLocation) -> Schema:
    """The exact schema SQLAlchemy itself makes of the models on ``location``'s backend
    (``create_all`` on an empty database), to compare types as the dialect spells them.

    One substitution on PostgreSQL: SQLModel declares its datetimes ``DateTime(timezone=True)``
    (``UTCDateTime``), which ``create_all`` renders ``TIMESTAMP WITH TIME ZONE``; the run
    database keeps naive UTC ``TIMESTAMP`` on both backends (the store converts, and its
    sessions are in UTC), as docs/schema.md says, so the reference takes that."""
    engine = engine_for(location)
    try:
        SQLModel.metadata.create_all(engine)
    finally:
        engine.dispose()
    schema = schema_of(location)
    for table in schema.values():
        table["columns"] = sorted(
            (name, "TIMESTAMP WITHOUT TIME ZONE" if kind == "TIMESTAMP WITH TIME ZONE" else kind, null)
            for name, kind, null in table["columns"]
        )
    return schema


def timestamp_columns(location: DbLocation) -> list[tuple[str, str, bool]]:
    """Every datetime column of the tables, and whether it keeps a time zone."""
    with connected(location) as conn:
        reflected = reflect(conn)
        return [
            (table, c["name"], bool(getattr(c["type"], "timezone", False)))
            for table in data_tables(conn)
            for c in reflected.get_columns(table)
            if isinstance(c["type"], DateTime)
        ]


#: PostgreSQL's schema objects that reflection of tables does not show: views (with their SQL),
#: functions not from an extension, extensions, triggers.
_PG_OBJECTS = """
SELECT 'view', c.relname, pg_get_viewdef(c.oid) FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'v'
UNION ALL
SELECT 'function', p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace AND NOT EXISTS (
    SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension', e.extname, e.extversion FROM pg_extension e
UNION ALL
SELECT 'trigger', t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE NOT t.tgisinternal
ORDER BY 2, 1
"""


def objects_of(location: DbLocation) -> list[tuple[Any, ...]]:
    """The views and triggers (SQLite), or views, functions, extensions and triggers
    (PostgreSQL), each with its definition."""
    if on_server(location):
        return query(location, _PG_OBJECTS)
    return query(location, "SELECT type, name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') ORDER BY name")


def view_columns(location: DbLocation) -> dict[str, list[str]]:
    """Each view's columns, in order, as a query of it returns them."""
    with connected(location) as conn:
        return {
            view: list(conn.execute(text(f"SELECT * FROM {view} LIMIT 0")).keys())
            for view in sorted(reflect(conn).get_view_names())
        }


def view_rows(location: DbLocation) -> dict[str, list[tuple[Any, ...]]]:
    """Every view's rows, comparable across backends: timestamps as SQLite stores them (naive
    UTC text), JSON as its text (psycopg would parse it; SQLite hands over the text), and the
    rows sorted (a view has no order)."""
    with connected(location) as conn:
        if on_server(location):
            driver = cast("psycopg.Connection[Any]", conn.connection.driver_connection)
            driver.adapters.register_loader("json", TextLoader)

        def plain(value: object) -> object:
            return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value

        return {
            view: sorted(
                (tuple(plain(v) for v in row) for row in conn.exec_driver_sql(f"SELECT * FROM {view}")),
                key=repr,
            )
            for view in sorted(reflect(conn).get_view_names())
        }


# --- fresh databases and the models ---------------------------------------------------------------


def test_fresh_database_matches_models(backend: str, new_database: Callable[[str], DbLocation]) -> None:
    fresh = new_database("fresh")
    Database.open(fresh).close()
    # Against SQLModel.metadata itself: tables, columns, type families, nullability, keys, indexes.
    assert differences(shared_schema(fresh, by_family=True), model_schema()) == []
    # Against what SQLAlchemy makes of the models on this backend: types exactly as spelled.
    assert differences(shared_schema(fresh), model_reference(new_database("models"))) == []
    # Timestamps are naive UTC on both backends.
    assert [c for c in timestamp_columns(fresh) if c[2]] == []
    assert timestamp_columns(fresh), "the reflection saw the timestamp columns"


def test_reopening_applies_nothing(backend: str, new_database: Callable[[str], DbLocation]) -> None:
    location = new_database("x")
    Database.open(location).close()
    with connected(location) as conn:
        assert migrations.migrate(conn) == []


@pytest.mark.parametrize(("replacement", "same_family"), [("REAL", True), ("INTEGER", False)])
def test_the_comparisons_see_a_changed_column_type(
    backend: str,
    new_database: Callable[[str], DbLocation],
    monkeypatch: pytest.MonkeyPatch,
    replacement: str,
    same_family: bool,
) -> None:
    """The comparisons are not blind: a scratch copy of the steps whose step 1 (on this backend
    only) declares ``node.latency_ms`` another type makes a database the exact comparison
    rejects, and the family comparison too unless the type is another float."""
    description, step = migrations.MIGRATIONS[0]
    assert isinstance(step, Mapping)
    original = migrations.script_for(step, backend)
    assert isinstance(original, str) and original.count("    latency_ms FLOAT,\n") == 1
    changed = {**step, backend: original.replace("    latency_ms FLOAT,\n", f"    latency_ms {replacement},\n")}
    monkeypatch.setattr(migrations, "MIGRATIONS", [(description, changed), *migrations.MIGRATIONS[1:]])
    mutated = new_database("mutated")
    Database.open(mutated).close()

    exact = differences(shared_schema(mutated), model_reference(new_database("models")))
    assert len(exact) == 1 and exact[0].startswith("node columns: has [('latency_ms', "), exact
    by_family = differences(shared_schema(mutated, by_family=True), model_schema())
    if same_family:
        assert by_family == []
    else:
        assert by_family == [
            "node columns: has [('latency_ms', 'integer', True)], lacks [('latency_ms', 'float', True)]"
        ]


def test_what_only_postgresql_has_is_what_the_schema_doc_says(pg_url: str) -> None:
    """The server database's extras are exactly the documented ones: ``node.rowid`` an identity
    column, the ``unaccent`` extension, the function ``clonechat_fold``, the GIN index
    ``node_fts`` over the expression the doc gives (so the doc's search query uses it), and no
    trigger; the doc's PostgreSQL section names each."""
    location = db_location(pg_url)
    Database.open(location).close()
    with connected(location) as conn:
        rowid = next(c for c in reflect(conn).get_columns("node") if c["name"] == "rowid")
        assert (rowid["type"].compile(dialect=conn.dialect), rowid["nullable"]) == ("BIGINT", False)
        assert rowid.get("identity", {}).get("always") is True
    objects = [(kind, name) for kind, name, _definition in objects_of(location) if kind != "view"]
    assert objects == [("function", "clonechat_fold"), ("extension", "plpgsql"), ("extension", "unaccent")]
    assert query(location, "SELECT provolatile FROM pg_proc WHERE proname = 'clonechat_fold'") == [("i",)]

    with connected(location) as conn:
        # The doc's expression is the index's: an index made from it is defined the same way.
        conn.exec_driver_sql(f"CREATE INDEX doc_fts ON node USING gin ({schema_doc.PG_FTS_EXPRESSION})")
        definitions = conn.execute(
            text("SELECT pg_get_indexdef('node_fts'::regclass), pg_get_indexdef('doc_fts'::regclass)")
        ).one()
        assert definitions[0] == definitions[1].replace("doc_fts", "node_fts")
        conn.exec_driver_sql("DROP INDEX doc_fts")
        # And the doc's search query is answered from it (on a table this small the planner
        # would rather scan, so scans are made dear).
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {schema_doc.PG_SEARCH_EXAMPLE}")))
        assert "node_fts" in plan, plan

    section = schema_doc.POSTGRESQL
    for named in ("`node.rowid`", "`node_fts`", "`clonechat_fold`", "`unaccent`", schema_doc.PG_FTS_EXPRESSION):
        assert named in section


def test_views_have_the_same_names_and_columns_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    """Same views, same columns in the same order; on the server no view column is a boolean or
    a timestamp with a time zone (0/1 and naive UTC, as on SQLite)."""
    file, server = tmp_path / "x.db", db_location(pg_url)
    for location in (file, server):
        Database.open(location).close()
    columns = view_columns(file)
    assert columns == view_columns(server)
    assert len(columns) == len(VIEW_DOCS) and all(columns.values())
    typed = query(
        server,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(:views) "
        "AND data_type IN ('boolean', 'timestamp with time zone')",
        views=list(columns),
    )
    assert typed == []


# --- frozen steps ---------------------------------------------------------------------------------

#: SHA-256 of each shipped step: its SQL, or a function step's source. A step that has shipped
#: never changes; a new step records its hash here when it ships.
#: Each shipped step's SHA-256 on each backend (a step with one script has the same on both).
SHIPPED_SHA256 = {
    1: {
        "sqlite": "712d0d773f490617facc97c0b595a4efca0ac6e8a408e9d15465a8473684f357",
        "postgresql": "c4966552505256c623106df7c1fe5a3746ea1574ee21dddf499448ce5d1e7ef1",
    },
    2: {
        "sqlite": "c3e67818db0067c99d5e2fee9e79431b191c519d4792124799e8c307e30ba3b0",
        "postgresql": "03f07105a5efc147b8353f31cd93d749562619c79b19689f2846e8a7b024bd25",
    },
    3: {
        "sqlite": "e4b17669f6dd03d0997680d9ea2ab62e5bd0c8b499e5382a218330c3dcfe567c",
        "postgresql": "e4b17669f6dd03d0997680d9ea2ab62e5bd0c8b499e5382a218330c3dcfe567c",
    },
    4: {
        "sqlite": "1a6d8b25d78c86878396a7766fb2f6487c34c9ba706ea312ff80c62bbc417bb4",
        "postgresql": "b29c777df83c6cc8431e893ef7b5c9be35b05a0c9d586d124fa4786b8214f5e2",
    },
    5: {
        "sqlite": "420fa5f0fb416eff45c8319c630fc6de87aac5e678acb5310db203cc80fb0253",
        "postgresql": "e9cf95876c73aced159fbc54630f81a71d305384a6caaeeb57b211866f098388",
    },
    6: {
        "sqlite": "0e46b3ef88e441926c8fa7e99a2be073a74e09afc2e97197b321e9b6b146aa6e",
        "postgresql": "8e23f32e01e8ae9f6db4f33def89d909c4e28414388afa5d789fd762816bb578",
    },
    7: {
        "sqlite": "2f86233d308efc0395c259e51c01be5aeeb5475d7b7531b4c057551d80ccc0fc",
        "postgresql": "4e53ce61b0ad5bb2391a5ee191caada83f2e3fc27b1b1696ae2c18a54602546d",
    },
    8: {
        "sqlite": "761d8504a9deee9f105d80f7023a444f604e29cca447a4c596433674590bab76",
        "postgresql": "70786abe564703473427f4a1d35e972590cc3ae74bb3cf8916cbc85f082fb659",
    },
    9: {
        "sqlite": "f5c8ddc763e5330314de5301daffe3165b3c8216a9d073ad2f8b59aa1dbda451",
        "postgresql": "7584dc84a0e466deaffefd1501c031d1a96d6e6182aaef5110f8121f079eab75",
    },
}
DIALECTS = ("sqlite", "postgresql")


def step_text(script: migrations.Script) -> str:
    return script if isinstance(script, str) else inspect.getsource(script)


def test_shipped_steps_are_unchanged() -> None:
    for number, (_description, step) in enumerate(migrations.MIGRATIONS, start=1):
        assert number in SHIPPED_SHA256, f"step {number} is new: record its SHA-256 in SHIPPED_SHA256 when it ships"
        for dialect in DIALECTS:
            digest = hashlib.sha256(step_text(migrations.script_for(step, dialect)).encode()).hexdigest()
            assert digest == SHIPPED_SHA256[number][dialect], (
                f"step {number} ({dialect}) has shipped: never edit it, append a new step"
            )


def test_every_step_lives_in_the_frozen_module() -> None:
    frozen = {id(value) for value in vars(migration_steps).values()}
    for number, (_description, step) in enumerate(migrations.MIGRATIONS, start=1):
        for dialect in DIALECTS:
            script = migrations.script_for(step, dialect)
            assert id(script) in frozen, f"step {number} ({dialect}) is not defined in clonechat.store.migration_steps"
            if callable(script):
                assert script.__module__ == migration_steps.__name__


def test_the_frozen_steps_import_no_live_code() -> None:
    """Only the standard library, SQLAlchemy and ``regex``, anywhere in the module (a step
    that imported the models, the metrics or the views would change with them)."""
    tree = ast.parse(Path(migration_steps.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None, "no relative imports"
            imported.add(node.module)
    assert imported, "the parse found the module's imports"
    allowed = set(sys.stdlib_module_names) | {"__future__", "sqlalchemy", "regex"}
    assert {name for name in imported if name.split(".")[0] not in allowed} == set()


# --- data as each schema version could hold it, in plain SQL ---------------------------------------

T0 = "2026-01-01 00:00:00.000000"

#: Turn contents that exercise every branch of the metric code: ASCII with and without
#: apostrophes, curly apostrophes, case folding that changes lengths, emoji sequences, CJK,
#: Unicode spaces, nothing visible, under three words, loops.
TEXTS = {
    "hello": "I'm glad to be here — let's talk about the café! 😀😀",
    "tis": "'Tis a fine day... isn't it? I’m here too; the café’s open.",
    "loop": "the the the the the the",
    "fold": "Straße STRASSE straße ß İstanbul ǅemal ﬁne",
    "emoji": "👍🏽 👨‍👩‍👧 🇩🇪 ✨✨✨ ok ok ok ©®™",
    "edit": "A researcher's edit: zyxwvutq?! isn't it 'quoted' -- dogs' toys",
    "cjk": "日本語のテキスト、句読点。and mixed ascii words",
    "blank": "   \t\n ",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ _under_score_ x_y",
    "accents": "naïve coöperate résumé RÉSUMÉ 123 4.5 x_y",
    "spaces": "Ok.\u00a0Ok.\u2003ok — 'ok' ‘ok’ “ok” ok’s",
    "quotes": "''' ’’ '",
    "two": "a b",
    "umlaut": "Ünïcödé ÜNÏCÖDÉ ünïcödé",
    "oks": "ok ok ok ok ok",
    "again": "hello world again",
    "again2": "hello world again and again",
}

#: node id, dialogue, parent, speaker, turn index, text key (or literal opening), model. In
#: insertion order (rowid): the second dialogue first, and branches interleaved, so the tree
#: walk's order and its copies of a branch's state are exercised.
TREE: list[tuple[str, str, str | None, str, int, str, str | None]] = [
    ("M00", "D2", None, "researcher", 0, "Say hello.", None),
    ("M01", "D2", "M00", "A", 1, "again", "m"),
    ("M02", "D2", "M01", "B", 2, "again", "n"),
    ("M03", "D2", "M02", "A", 3, "again2", "m"),
    ("N00", "D1", None, "researcher", 0, "Hello, you two. Talk about café culture ☕ cafeterias", None),
    ("N01", "D1", "N00", "A", 1, "hello", "m"),
    ("N02", "D1", "N01", "B", 2, "tis", "m"),
    ("N03E", "D1", "N02", "A", 3, "edit", "researcher-edit"),
    ("N03", "D1", "N02", "A", 3, "loop", "m"),
    ("N04", "D1", "N03", "B", 4, "fold", "m"),
    ("N04E", "D1", "N03E", "B", 4, "cjk", "m"),
    ("N05", "D1", "N04", "A", 5, "emoji", "m"),
    ("N05E", "D1", "N04E", "A", 5, "blank", "m"),
    ("N06E", "D1", "N05E", "B", 6, "punct", "m"),
    ("N01F", "D1", "N00", "B", 1, "accents", "m"),
    ("N06E2", "D1", "N05E", "A", 6, "oks", "researcher-edit"),
    ("N02F", "D1", "N01F", "A", 2, "spaces", "m"),
    ("N06", "D1", "N05", "B", 6, "quotes", "m"),
    ("N06E3", "D1", "N05E", "B", 6, "umlaut", "m"),
    ("N07", "D1", "N06", "A", 7, "two", "m"),
    ("N03F", "D1", "N02F", "B", 3, "loop", "m"),
]
TURN_IDS = [row[0] for row in TREE if row[3] != "researcher"]
HEADS = {"D1": "N07", "D2": "M03"}


class _Pyformat:
    """A connection that takes sqlite3's ``?`` placeholders in ``exec_driver_sql`` on psycopg
    (whose placeholder is ``%s``, so a literal ``%`` is ``%%``): the module's plain SQL, and the
    frozen backfill's insert when ``populate`` plays a version's writer on the server."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.execute(*args, **kwargs)

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any:
        return self._conn.exec_driver_sql(statement.replace("%", "%%").replace("?", "%s"), parameters)


def populate(conn: Connection, version: int) -> None:
    """What a database at schema ``version`` could hold, written the way that version's
    clonechat would have (plain SQL: today's writer knows columns old schemas lack). The SQL is
    the same on both backends but for the placeholders, and for SQLite's search index, which
    its writer fed and PostgreSQL's server keeps itself."""
    sqlite = conn.dialect.name == "sqlite"
    db = conn if sqlite else cast(Connection, _Pyformat(conn))
    sql = db.exec_driver_sql
    sql(f"INSERT INTO experiment VALUES ('E1', 'exp', 'name = \"exp\"', 'spechash', '{T0}')")
    sql(
        "INSERT INTO prompt_template VALUES (?, ?, ?, ?, ?)",
        [("PT1", "conditions", "clone-aware", "You talk to {{ other }}.", T0), ("PT2", "openings", "hi", "Hi.", T0)],
    )
    sql(
        "INSERT INTO condition VALUES (?, 'E1', ?, ?, ?, ?, ?, ?)",
        [
            ("C1", "clone-aware", "clone-aware", "m", "m", '{"temperature": 0.7}', T0),
            ("C2", "told-human", "told-human", "m", "n", "{}", T0),
        ],
    )
    sql(
        "INSERT INTO prompt VALUES (?, ?, ?, ?, ?)",
        [("PA", "PT1", "You talk to a copy of yourself.", '{"other": "a copy"}', T0), ("PO", "PT2", "Hi.", "{}", T0)],
    )
    sql(
        "INSERT INTO dialogue (id, condition_id, replicate, seed, status, stop_reason, error, first_speaker, "
        "max_turns, token_budget, stop_phrase, model_a, model_b, system_prompt_a, system_prompt_b, "
        "opening_prompt, settings, head_node_id, created_at, updated_at) "
        "VALUES (?, ?, 1, ?, ?, ?, NULL, 'A', 8, NULL, '^C^C', ?, ?, 'PA', 'PA', 'PO', ?, ?, ?, ?)",
        [
            ("D1", "C1", 7, "completed", "max_turns", "m", "m", '{"a": {"temperature": 0.7}}', HEADS["D1"], T0, T0),
            ("D2", "C2", None, "interrupted", None, "m", "n", "{}", HEADS["D2"], T0, T0),
        ],
    )
    node = (
        "INSERT INTO node (id, dialogue_id, parent_id, speaker, kind, turn_index, content, model, params, "
        "prompt_tokens, completion_tokens, latency_ms, finish_reason, error, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for node_id, dialogue_id, parent, speaker, index, key, model in TREE:
        kind, content = ("opening", key) if speaker == "researcher" else ("turn", TEXTS[key])
        tokens = (10 * index, 5) if kind == "turn" else (None, None)
        sql(
            node,
            (
                node_id,
                dialogue_id,
                parent,
                speaker,
                kind,
                index,
                content,
                model,
                '{"temperature": 0.7}',
                *tokens,
                12.5 if kind == "turn" else None,
                "stop" if kind == "turn" else None,
                None,
                T0,
            ),
        )
    sql(node, ("NERR", "D1", "N05", "B", "error", 6, "", "m", "{}", None, None, None, None, "timeout", T0))
    if version >= 2:
        side = "variant, " if version >= 3 else ""
        sql(
            f"INSERT INTO node (id, dialogue_id, parent_id, speaker, kind, turn_index, content, model, params, "
            f"target_node_id, {side}created_at) VALUES (?, 'D1', 'N02', 'B', 'prediction', 3, ?, 'm', '{{}}', "
            f"'N03', {'?, ' if side else ''}?)",
            ("NP1", "I predict predictwordq the the", *(["partner"] if side else []), T0),
        )
        sql(
            "INSERT INTO score (node_id, scorer, version, value, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("NP1", "jaccard", "1", 0.25, '{"against": "N03"}', T0),
                ("NP1", "jaccard~shuffled", "1", 0.125, '{"against": "N05"}', T0),
            ],
        )
    if version >= 3:
        for node_id, speaker, content in (("NCA", "A", "Blue!"), ("NCB", "B", "blue")):
            sql(
                "INSERT INTO node (id, dialogue_id, parent_id, speaker, kind, turn_index, content, model, params, "
                "variant, created_at) VALUES (?, 'D1', 'N02', ?, 'coordination', 2, ?, 'm', '{}', 'color@before', ?)",
                (node_id, speaker, content, T0),
            )
        sql(
            "INSERT INTO score (node_id, scorer, version, value, detail, created_at) "
            "VALUES (?, 'answer', '1', NULL, ?, ?)",
            [("NCA", '{"answer": "blue"}', T0), ("NCB", '{"answer": "blue"}', T0)],
        )
    if version >= 4:
        # That version's writer indexed what it stored, and computed metrics for new turns:
        # the metrics of version 1, which are what the frozen step computes.
        if sqlite:
            sql("INSERT INTO node_fts (rowid, content) SELECT rowid, content FROM node ORDER BY rowid")
        migration_steps.backfill_turn_metrics_v1(db)
        if version == 4:  # D1's turns were stored before there were metrics: step 5 fills them in
            sql("DELETE FROM turn_metrics WHERE dialogue_id = 'D1'")


def make_database(location: DbLocation, version: int) -> None:
    engine = engine_for(location)
    if not on_server(location):
        event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA foreign_keys = ON"))
    try:
        with engine.begin() as conn:
            assert migrations.migrate(conn, target=version) == list(range(1, version + 1))
            populate(conn, version)
    finally:
        engine.dispose()


def snapshot(location: DbLocation) -> dict[str, tuple[list[str], dict[Any, tuple[Any, ...]]]]:
    """Every table's columns and rows (the migration bookkeeping and SQLite's search index
    tables aside), by rowid on SQLite (the search index's ``content_rowid`` relies on it), by
    primary key on PostgreSQL (where ``node.rowid`` is a column, compared with the row)."""
    with connected(location) as conn:
        reflected = reflect(conn)
        out: dict[str, tuple[list[str], dict[Any, tuple[Any, ...]]]] = {}
        for table in data_tables(conn):
            columns = [c["name"] for c in reflected.get_columns(table)]
            if on_server(location):
                key = [columns.index(c) for c in reflected.get_pk_constraint(table)["constrained_columns"]]
                found = conn.exec_driver_sql(f"SELECT * FROM {table}")
                rows = {tuple(r[i] for i in key): tuple(r) for r in found}
            else:
                rows = {r[0]: tuple(r[1:]) for r in conn.exec_driver_sql(f"SELECT rowid, * FROM {table}")}
            out[table] = (columns, rows)
        return out


def live_metrics(location: DbLocation) -> dict[str, dict[str, object]]:
    """Each turn's metrics as today's ``turn_metrics`` computes them, replaying its path."""
    with connected(location) as conn:
        turns = conn.execute(
            text("SELECT id, dialogue_id, parent_id, speaker, content FROM node WHERE kind = 'turn'")
        ).all()
        out: dict[str, dict[str, object]] = {}
        for node_id, dialogue_id, parent_id, speaker, content in turns:
            metrics = turn_metrics.state_after(conn, parent_id).advance(node_id, dialogue_id, speaker, content)
            out[node_id] = {name: getattr(metrics, name) for name in turn_metrics.TurnMetrics.__dataclass_fields__}
        return out


def search(location: DbLocation, words: str) -> set[Any]:
    """The nodes a full-text search finds: FTS5's ``MATCH`` on SQLite, the documented tsquery
    over the index's expression on PostgreSQL."""
    if on_server(location):
        found = query(
            location,
            f"SELECT id FROM node WHERE {schema_doc.PG_FTS_EXPRESSION} "
            "@@ websearch_to_tsquery('simple', clonechat_fold(:words))",
            words=words,
        )
    else:
        found = query(
            location,
            "SELECT n.id FROM node_fts JOIN node n ON n.rowid = node_fts.rowid WHERE node_fts MATCH :words",
            words=words,
        )
    return {r[0] for r in found}


# --- the frozen backfill against today's metrics ------------------------------------------------


@pytest.mark.parametrize("partial", [False, True], ids=["no-metrics", "some-metrics"])
def test_frozen_backfill_gives_the_rows_live_metrics_give(tmp_path: Path, partial: bool) -> None:
    """The frozen step 5 writes exactly the rows (values, types, order) that
    ``turn_metrics.backfill`` writes, on a forked dialogue with varied text. (On SQLite: the
    storage classes ``typeof`` shows are SQLite's; the computation is the same on both.)"""
    if turn_metrics.METRICS_VERSION != 1:
        pytest.skip("the live metrics moved past version 1; the frozen copy stays pinned by its SHA-256")
    frozen, live = tmp_path / "frozen.db", tmp_path / "live.db"
    make_database(frozen, 4)
    if not partial:
        with closing(sqlite3.connect(frozen)) as conn:
            conn.execute("DELETE FROM turn_metrics")
            conn.commit()
    shutil.copy(frozen, live)
    before = len(query(frozen, "SELECT * FROM turn_metrics"))
    assert before == (3 if partial else 0)  # D2's turns
    for path, backfill in ((frozen, migration_steps.backfill_turn_metrics_v1), (live, turn_metrics.backfill)):
        with connected(path) as conn:
            assert backfill(conn) == len(TURN_IDS) - before
    columns = [r[1] for r in query(frozen, "PRAGMA table_info('turn_metrics')")]
    dump = f"SELECT rowid, {', '.join(f'{c}, typeof({c})' for c in columns)} FROM turn_metrics ORDER BY rowid"
    assert query(frozen, dump) == query(live, dump)
    assert len(query(frozen, dump)) == len(TURN_IDS)


# --- upgrading a database of every earlier version ---------------------------------------------

UPGRADES = [
    pytest.param(
        backend,
        version,
        id=f"{backend}-v{version}",
    )
    for backend in ("sqlite", "postgresql")
    for version in range(1, migrations.SCHEMA_VERSION)
]


@pytest.mark.parametrize("version", range(1, migrations.SCHEMA_VERSION))
def test_an_empty_database_of_every_earlier_version_upgrades_to_the_fresh_schema(
    backend: str, new_database: Callable[[str], DbLocation], version: int
) -> None:
    """The schema alone, on both backends: ``migrate(conn, target=version)``, then
    ``Database.open``, gives the tables, views and other objects a fresh database has, and the
    models' (on the server for every version, where the data test below cannot yet)."""
    old, fresh = new_database("old"), new_database("fresh")
    with connected(old) as conn:
        assert migrations.migrate(conn, target=version) == list(range(1, version + 1))
    Database.open(old).close()
    Database.open(fresh).close()
    assert differences(schema_of(old), schema_of(fresh)) == []
    assert objects_of(old) == objects_of(fresh)
    assert differences(shared_schema(old, by_family=True), model_schema()) == []


@pytest.mark.parametrize(("backend", "version"), UPGRADES)
def test_a_database_of_every_earlier_version_upgrades_whole(
    backend: str, new_database: Callable[[str], DbLocation], tmp_path: Path, version: int
) -> None:
    old = new_database("old")
    make_database(old, version)
    before = snapshot(old)
    assert {table: len(rows) for table, (_, rows) in before.items() if rows} == {
        "experiment": 1,
        "prompt_template": 2,
        "condition": 2,
        "prompt": 2,
        "dialogue": 2,
        "node": len(TREE) + 1 + (version >= 2) + 2 * (version >= 3),
        **({"score": 2 + 2 * (version >= 3)} if version >= 2 else {}),
        **({"turn_metrics": 3 if version == 4 else len(TURN_IDS)} if version >= 4 else {}),
    }

    Database.open(old).close()  # upgrades

    fresh = new_database("fresh")
    Database.open(fresh).close()
    assert differences(schema_of(old), schema_of(fresh)) == []
    assert differences(shared_schema(old, by_family=True), model_schema()) == []
    assert objects_of(old) == objects_of(fresh)
    assert query(old, "SELECT version FROM clonechat_migrations ORDER BY version") == [
        (v,) for v in range(1, migrations.SCHEMA_VERSION + 1)
    ]
    if on_server(old):  # the server checks every constraint as rows arrive; none is left unchecked
        assert query(old, "SELECT conname FROM pg_constraint WHERE NOT convalidated") == []
    else:
        assert query(old, "PRAGMA integrity_check") == [("ok",)]
        assert query(old, "PRAGMA foreign_key_check") == []

    # Every row survives unchanged; columns added since are NULL in it.
    after = snapshot(old)
    for table, (columns, rows) in before.items():
        new_columns, new_rows = after[table]
        kept = {
            key: tuple(dict(zip(new_columns, row, strict=True))[c] for c in columns) for key, row in new_rows.items()
        }
        assert {key: kept[key] for key in rows} == rows, table
        if table != "turn_metrics":
            assert len(new_rows) == len(rows), table
        added = [i for i, c in enumerate(new_columns) if c not in columns]
        assert all(new_rows[key][i] is None for key in rows for i in added), table

    # Every turn has the metrics today's code computes for it.
    metrics_columns, metrics_rows = after["turn_metrics"]
    stored = {row[0]: dict(zip(metrics_columns, row, strict=True)) for row in metrics_rows.values()}
    assert set(stored) == set(TURN_IDS) and len(metrics_rows) == len(TURN_IDS)
    assert stored == live_metrics(old)

    # The views answer.
    dialogues = query(old, "SELECT dialogue_id, turns, turn_nodes FROM v_dialogue ORDER BY dialogue_id")
    assert dialogues == [("D1", 7, sum(r[1] == "D1" for r in TREE) - 1), ("D2", 3, 3)]
    leaves = {r[0] for r in TREE} - {r[2] for r in TREE}
    assert {r[0] for r in query(old, "SELECT path_id FROM v_path")} == leaves
    head_path = {r[0] for r in query(old, "SELECT node_id FROM v_path WHERE is_head = 1 AND dialogue_id = 'D1'")}
    assert head_path == {f"N0{i}" for i in range(8)}
    turns = query(old, "SELECT node_id, on_head, edited, chars FROM v_turn")
    assert sorted(r[0] for r in turns) == sorted(TURN_IDS)
    assert all(r[3] is not None for r in turns)
    assert {r[0] for r in turns if r[1]} == (head_path - {"N00"}) | {"M01", "M02", "M03"}
    assert {r[0] for r in turns if r[2]} == {"N03E", "N06E2"}
    predictions = query(
        old, "SELECT prediction_id, target_id, variant, scorer, value, shuffled_value FROM v_prediction"
    )
    variant = "partner" if version >= 3 else None
    assert predictions == ([("NP1", "N03", variant, "jaccard", 0.25, 0.125)] if version >= 2 else [])
    coordination = query(old, "SELECT dialogue_id, task, phase, answer_a, answer_b, matched FROM v_coordination")
    assert coordination == ([("D1", "color", "before", "blue", "blue", 1)] if version >= 3 else [])

    # Full-text search finds what was stored before the upgrade (diacritics folded).
    assert search(old, "zyxwvutq") == {"N03E"}
    assert search(old, "cafe") == {"N00", "N01", "N02"}
    assert search(old, "predictwordq") == ({"NP1"} if version >= 2 else set())
    assert search(old, "blue") == ({"NCA", "NCB"} if version >= 3 else set())
    if on_server(old):
        assert query(old, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'node_fts'::regclass") == [(True,)]
    else:
        query(old, "INSERT INTO node_fts (node_fts) VALUES ('integrity-check')")

    if on_server(old):
        # The same data, upgraded the same way in a file, reads back the same through every view.
        twin = tmp_path / "twin.db"
        make_database(twin, version)
        Database.open(twin).close()
        rows_in_file, rows_on_server = view_rows(twin), view_rows(old)
        assert rows_on_server == rows_in_file
        assert all(rows_in_file[view] for view in ("v_dialogue", "v_path", "v_turn"))
