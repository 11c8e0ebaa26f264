"""The read-only console on PostgreSQL, and the full-text query language on both backends.

``tests/test_query.py`` holds the two backends to the same answers on a real run; this module
looks at what only the server console has to get right, quickly (the scripted model, no
embedded one): which statements it lets through and which it refuses by name
(:func:`clonechat.read.console.check_server_statement`), how ``:name`` parameters are bound,
that a refused statement leaves every table, the schema, the sequences and the session as they
were, that each statement is alone in a READ ONLY transaction, and that rows read as on SQLite.
Then FTS5's query syntax: the same random queries asked of SQLite's FTS5 and, rebuilt as a
``tsquery``, of PostgreSQL, over the same texts, find the same texts (or are refused alike).
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clonechat.cli import app
from clonechat.errors import QueryError
from clonechat.location import DbLocation, ServerDatabase, db_location
from clonechat.read import console
from clonechat.read.search import UnsupportedSearchError, parse_fts5, tsquery
from clonechat.read.server_sql import RefusedError, bind, check_server_statement, tokenize
from tests.conftest import BACKENDS
from tests.helpers import raw_sql
from tests.pg_server import PostgresServer, free_port
from tests.test_query import fingerprint

SPEC = """\
name = "console"
replicates = 2
max_turns = 3
model_a = "scripted"
[prediction]
self_predict = true
[coordination]
tasks = ["number"]
when = "both"
[[conditions]]
template = "no-frame"
"""


def scripted_run(location: DbLocation, folder: Path) -> DbLocation:
    (folder / "console.toml").write_text(SPEC)
    result = CliRunner().invoke(app, ["batch", str(folder / "console.toml"), "--db", str(location)])
    assert result.exit_code == 0, result.output
    return location


@pytest.fixture(scope="module")
def server_db(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDatabase]:
    """A small run by the scripted model (dialogues, predictions, coordination answers) on the server."""
    name = f"console_{os.getpid()}"
    location = db_location(pg_server.create_database(name))
    assert isinstance(location, ServerDatabase)
    yield scripted_run(location, tmp_path_factory.mktemp("console-server"))  # type: ignore[misc]
    pg_server.drop_database(name)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def scripted_db(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DbLocation:
    """The scripted run as an SQLite file, or on the server."""
    if backend == "postgresql":
        found: DbLocation = request.getfixturevalue("server_db")
        return found
    folder = tmp_path_factory.mktemp("console")
    return scripted_run(folder / "runs.db", folder)


# --- what a statement is -----------------------------------------------------------------------


@given(st.lists(st.sampled_from([*"ab :;'\"$-/*\\eEU&(?)%\n.", "$$", "$q$", "--", "/*", "*/", "::"])).map("".join))
@settings(max_examples=400, deadline=None)
def test_tokens_join_back_to_the_statement(sql: str) -> None:
    assert "".join(t.text for t in tokenize(sql)) == sql


READS = [
    "SELECT 1",
    "  select * from v_turn -- ; DELETE FROM node",
    "SELECT 'DELETE FROM node; DROP TABLE x'",
    "SELECT $$ ; INSERT INTO node VALUES (1) $$",
    "SELECT $tag$ ; UPDATE node SET x = 1 $tag$",
    "SELECT E'it\\'s ; DELETE FROM node'",
    'SELECT "update" FROM (SELECT 1 AS "update") t',
    "SELECT 1 /* ; /* nested ; */ DELETE FROM node */",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
    "(SELECT 1) UNION (SELECT 2)",
    "VALUES (1, 2)",
    "TABLE experiment",
    "EXPLAIN SELECT * FROM node",
    "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM node",
    "SHOW transaction_read_only",
    "SELECT pg_sleep(0)",
    "SELECT id FROM node FOR UPDATE",  # a row lock: the server refuses it (see SERVER_WRITES)
    "SELECT 1;",
    "SELECT 1; -- and a comment",
]
REFUSED = [
    ("DELETE FROM node", "DELETE on node"),
    ("delete from public.node", "DELETE on node"),
    ('DELETE FROM "node"', "DELETE on node"),
    ("UPDATE ONLY node AS n SET content = ''", "UPDATE on node"),
    ("INSERT INTO score (node_id) VALUES ('x')", "INSERT on score"),
    ("MERGE INTO node USING node s ON false WHEN MATCHED THEN DELETE", "MERGE on node"),
    ("WITH d AS (DELETE FROM node RETURNING 1) SELECT * FROM d", "DELETE on node"),
    ("WITH x AS (SELECT 1) UPDATE dialogue SET status = 'x'", "UPDATE on dialogue"),
    ("EXPLAIN ANALYZE DELETE FROM node", "DELETE on node"),
    ("SELECT * INTO copied FROM node", "SELECT INTO copied"),
    ("TRUNCATE node", "TRUNCATE node"),
    ("CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1", "CREATE TEMP VIEW v"),
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON node (id)", "CREATE INDEX i"),
    ("CREATE INDEX ON node (id)", "CREATE INDEX"),
    ("DROP MATERIALIZED VIEW IF EXISTS m", "DROP MATERIALIZED VIEW m"),
    ("ALTER TABLE node RENAME TO gone", "ALTER TABLE node"),
    ("BEGIN", "a transaction (BEGIN/COMMIT)"),
    ("START TRANSACTION READ WRITE", "a transaction (BEGIN/COMMIT)"),
    ("COMMIT", "a transaction (BEGIN/COMMIT)"),
    ("END", "a transaction (BEGIN/COMMIT)"),
    ("ROLLBACK", "a transaction (BEGIN/COMMIT)"),
    ("ABORT", "a transaction (BEGIN/COMMIT)"),
    ("PREPARE TRANSACTION 'x'", "a transaction (BEGIN/COMMIT)"),
    ("SAVEPOINT s", "SAVEPOINT"),
    ("RELEASE SAVEPOINT s", "SAVEPOINT"),
    ("SET TRANSACTION READ WRITE", "SET TRANSACTION"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "SET SESSION CHARACTERISTICS"),
    ("SET default_transaction_read_only = off", "SET default_transaction_read_only"),
    ("set local statement_timeout = 0", "SET statement_timeout"),
    ("RESET ALL", "RESET all"),
    ("LISTEN channel", "LISTEN"),
    ("NOTIFY channel", "NOTIFY"),
    ("COPY node TO STDOUT", "COPY"),
    ("DO $$ BEGIN DELETE FROM node; END $$", "DO"),
    ("CALL something()", "CALL"),
    ("LOCK TABLE node", "LOCK"),
    ("VACUUM FULL", "VACUUM"),
    ("ANALYZE node", "ANALYZE"),
    ("PREPARE p AS SELECT 1", "PREPARE"),
    ("EXECUTE p", "EXECUTE"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "DECLARE"),
    ("DISCARD ALL", "DISCARD"),
    ("GRANT ALL ON node TO public", "GRANT"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "set_config()"),
    ("SELECT pg_catalog.set_config('a.b', 'c', false)", "set_config()"),
    ("SELECT \"set_config\"('a.b', 'c', false)", "set_config()"),
    ("SELECT U&\"\\0073et_config\"('a.b', 'c', false)", "set_config()"),
    ("SELECT U&\"!0073et_config\" UESCAPE '!' ('a.b', 'c', false)", "set_config()"),
    ("SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
    ("SELECT pg_try_advisory_xact_lock(1)", "pg_try_advisory_xact_lock()"),
    ("SELECT pg_terminate_backend(pg_backend_pid())", "pg_terminate_backend()"),
    ("SELECT pg_cancel_backend(1)", "pg_cancel_backend()"),
    ("SELECT lo_import('/etc/passwd')", "lo_import()"),
    ("SELECT nextval('score_id_seq')", "nextval()"),
    ("SELECT pg_notify('channel', 'x')", "pg_notify()"),
    ("SELECT query_to_xml('SELECT pg_advisory_lock(1)', true, true, '')", "query_to_xml()"),
    ("SELECT * FROM dblink('x', 'DELETE FROM node') AS t(x int)", "dblink()"),
    ("SELECT gin_clean_pending_list('node_fts')", "gin_clean_pending_list()"),
    ("ATTACH DATABASE ':memory:' AS other", "ATTACH"),
    ("REPLACE INTO experiment (id) VALUES ('x')", "INSERT on experiment"),
    ("PRAGMA query_only = 0", "PRAGMA query_only = 0"),
]


@pytest.mark.parametrize("sql", READS)
def test_reads_go_through(sql: str) -> None:
    statement = check_server_statement(sql)
    assert statement is not None
    assert all(t.kind != "semicolon" for t in statement.tokens)


@pytest.mark.parametrize(("sql", "what"), REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_every_other_statement_is_refused_by_name(sql: str, what: str) -> None:
    with pytest.raises(RefusedError) as refused:
        check_server_statement(sql)
    assert refused.value.what == what


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; DELETE FROM node",
        "SELECT 1;DELETE FROM node",
        "SELECT 1; SELECT 2",
        "SELECT ';'; COMMIT",
        "SELECT 1 -- x\n; DELETE FROM node",
        "SELECT $$;$$; DELETE FROM node",
    ],
)
def test_several_statements_are_one_line(sql: str) -> None:
    with pytest.raises(QueryError, match=r"^give one SQL statement at a time$"):
        check_server_statement(sql)


def test_what_is_not_a_postgresql_statement_is_an_sql_error() -> None:
    for sql in ("PRAGMA table_info(node)", "FROBNICATE node", "42"):
        with pytest.raises(QueryError, match=r"^SQL error: "):
            check_server_statement(sql)
    assert check_server_statement("  -- nothing\n") is None


def test_parameters_are_bound_by_name_outside_literals_and_casts() -> None:
    sql, values = bind(tokenize("SELECT ':x', x::text, :x, :y || '%' FROM t WHERE a[1:n] = 1"), {"x": 1, "y": "a"})
    assert sql == "SELECT ':x', x::text, %(x)s, %(y)s || '%%' FROM t WHERE a[1:n] = 1"
    assert values == {"x": 1, "y": "a"}
    assert bind(tokenize("SELECT '%' -- :x"), {}) == ("SELECT '%' -- :x", None), "nothing to bind: sent as it is"
    assert bind(tokenize("SELECT ?, '?', ?"), [1, 2]) == ("SELECT %s, '?', %s", [1, 2])
    with pytest.raises(QueryError, match="no value for the parameter :d"):
        bind(tokenize("SELECT :d"), {})


# --- the console on a server ---------------------------------------------------------------------

#: Writes only a PostgreSQL database has (beside test_query.WRITES), as ``clonechat query`` says
#: them; each must leave every table, the schema and the sequences as they were.
SERVER_WRITES = [
    ("SET TRANSACTION READ WRITE", "refused SET TRANSACTION"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "refused set_config()"),
    ("SELECT pg_advisory_lock(42)", "refused pg_advisory_lock()"),
    ("WITH d AS (DELETE FROM node RETURNING 1) SELECT count(*) FROM d", "refused DELETE on node"),
    ("SELECT id FROM node FOR UPDATE", "refused SELECT FOR UPDATE"),
    ("SELECT * INTO copied FROM node", "refused SELECT INTO copied"),
    ("TRUNCATE node CASCADE", "refused TRUNCATE node"),
    ("COPY node FROM STDIN", "refused COPY"),
    ("DO $$ BEGIN DELETE FROM node; END $$", "refused DO"),
    ("LOCK TABLE node IN ACCESS EXCLUSIVE MODE", "refused LOCK"),
    ("COMMIT", "refused a transaction (BEGIN/COMMIT)"),
    ("SELECT nextval('score_id_seq')", "refused nextval()"),
    ("SELECT query_to_xml('DELETE FROM node', true, true, '')", "refused query_to_xml()"),
    ("SELECT lo_create(0)", "refused lo_create()"),
    ("EXPLAIN ANALYZE DELETE FROM node", "refused DELETE on node"),
    ("SELECT 1; COMMIT; DELETE FROM node", "give one SQL statement at a time"),
    ("/* ; */ DELETE FROM node", "refused DELETE on node"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "refused CREATE FUNCTION f"),
]


@pytest.mark.parametrize(("statement", "message"), SERVER_WRITES, ids=[w[0][:30] for w in SERVER_WRITES])
def test_a_refused_write_leaves_the_server_database_as_it_was(
    server_db: ServerDatabase, statement: str, message: str
) -> None:
    before = fingerprint(server_db)
    result = CliRunner().invoke(app, ["query", statement, "--db", str(server_db)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {message}"
        + ("" if "one SQL" in message else f": queries on {server_db} are read-only (nothing was changed)")
    ]
    assert fingerprint(server_db) == before


def advisory_locks(location: ServerDatabase) -> int:
    with raw_sql(location) as conn:
        return int(conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").scalar_one())


def test_each_statement_reads_alone_in_a_read_only_transaction(server_db: ServerDatabase) -> None:
    with console.read_only(server_db) as conn:
        assert conn.execute("SHOW transaction_read_only").fetchall() == [("on",)]
        assert conn.execute("SHOW transaction_isolation").fetchall() == [("repeatable read",)]
        transactions = {
            conn.execute(
                "SELECT virtualtransaction FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'virtualxid'"
            ).fetchall()[0][0]
            for _ in range(3)
        }
        assert len(transactions) == 3, "one transaction per statement"
        for statement, _message in SERVER_WRITES:
            with pytest.raises(QueryError):
                conn.execute(statement).fetchall()
            # Nothing outlived the refusal: not a setting of the session, not a lock.
            assert conn.execute("SHOW default_transaction_read_only").fetchall() == [("off",)]
            assert conn.execute("SHOW transaction_read_only").fetchall() == [("on",)]
            assert advisory_locks(server_db) == 0
        assert conn.execute("SELECT count(*) FROM node").fetchall()[0][0] > 0


def test_rows_left_unread_do_not_stop_the_next_statement(scripted_db: DbLocation) -> None:
    with console.read_only(scripted_db) as conn:
        nodes = conn.execute("SELECT id FROM node ORDER BY id")
        first = next(iter(nodes))
        assert conn.execute("SELECT count(*) FROM node").fetchall()[0][0] > 1
        explained = conn.execute("EXPLAIN SELECT * FROM node")
        assert explained.columns and next(iter(explained))
        assert conn.execute("SELECT id FROM node ORDER BY id").fetchall()[0] == first
        unread = conn.execute("SELECT id FROM node")
    with pytest.raises(QueryError):  # its connection is closed
        list(unread)


def test_an_error_while_rows_stream_is_one_line_and_the_console_goes_on(scripted_db: DbLocation) -> None:
    with console.read_only(scripted_db) as conn:
        with pytest.raises(QueryError, match=r"^SQL error: .*(no such column|does not exist)"):
            conn.execute("SELECT nosuch FROM node")
        # An overflow at the 3,000th row (on the server, after the first rows were fetched).
        with pytest.raises(QueryError, match=r"^SQL error: .*(overflow|out of range)"):
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
                "SELECT CASE WHEN i = 3000 THEN abs(-9223372036854775807 - 1) ELSE i END FROM n"
            ).fetchall()
        assert conn.execute("SELECT count(*) FROM dialogue").fetchall() == [(2,)]


def test_rows_read_as_on_sqlite(scripted_db: DbLocation) -> None:
    """JSON as text, times as SQLite's stored text, 0/1 for truth, int or float for numbers."""
    with console.read_only(scripted_db) as conn:
        (settings_text, created, clone_pair, rate) = conn.execute(
            "SELECT c.settings, d.created_at, v.clone_pair, round(v.turns * 1.0, 2) FROM v_dialogue v "
            "JOIN dialogue d ON d.id = v.dialogue_id JOIN condition c ON c.id = d.condition_id "
            "ORDER BY d.created_at LIMIT 1"
        ).fetchall()[0]
        assert isinstance(settings_text, str) and settings_text.startswith("{")
        assert isinstance(created, str) and len(created) == len("2026-01-01 00:00:00.000000") and created[10] == " "
        assert clone_pair == 1 and isinstance(clone_pair, int)
        assert rate == 3.0 and isinstance(rate, float)
        assert conn.execute("SELECT count(*) AS n, sum(turns) AS t FROM v_dialogue").fetchall() == [(2, 6)]
        assert conn.execute("SELECT :n + 1 AS n", {"n": 1}).fetchall() == [(2,)]


def test_a_missing_or_foreign_server_database_is_one_line(pg_url: str, pg_server: PostgresServer) -> None:
    result = CliRunner().invoke(app, ["query", "SELECT 1", "--db", pg_url])
    assert result.exit_code == 1 and "has no clonechat tables yet" in result.output, result.output
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    result = CliRunner().invoke(app, ["query", "SELECT 1", "--db", pg_url])
    assert result.exit_code == 1 and "not a clonechat one" in result.output, result.output
    unanswered = pg_server.url("nowhere").replace(f":{pg_server.port}/", f":{free_port()}/")
    result = CliRunner().invoke(app, ["query", "SELECT 1", "--db", unanswered])
    assert result.exit_code == 1 and "cannot read" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


# --- FTS5's query syntax on both backends ---------------------------------------------------------

#: Words only, between ASCII separators: a symbol between words is a word to PostgreSQL's parser
#: on a database of the C locale (see clonechat.read.search), as the test server's are.
VOCABULARY = ["alpha", "beta", "gamma", "délta", "Alphabet", "betamax", "x", "y", "it’s", "naïve"]
ATOMS = [
    "alpha", "beta", "gamma", "delta", "délta", "DELTA", "naive", "alph*", "bet*", "Alp*", '"alpha beta"',
    '"beta alpha"', '"alpha beta"*', "alpha + beta", "x", '"x y"', "alphabet", '""', '"alpha, beta"', "x_y",
    '"gamma."*', "alpha*beta", "* alpha", '"it’s"', '"it s"', "(", ")", "NOT", "AND alpha", '"a""b"',
    "\"x' | 'y\"", '"a\\b"', "what's", "naïve*",
]  # fmt: skip


def random_query(rng: random.Random, depth: int = 0) -> str:
    if depth > 2 or rng.random() < 0.35:
        return rng.choice(ATOMS)
    if rng.random() < 0.2:
        return "(" + random_query(rng, depth + 1) + ")"
    return random_query(rng, depth + 1) + rng.choice([" ", " AND ", " OR ", " NOT "]) + random_query(rng, depth + 1)


@pytest.fixture
def fold_server(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A server database with clonechat's schema: its ``clonechat_fold`` and its index expression."""
    from clonechat.store.database import Database

    Database.open(db_location(pg_url)).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


def test_fts5_queries_find_the_same_texts_on_both_backends(fold_server: psycopg.Connection[Any]) -> None:
    rng = random.Random(16)
    texts = [
        rng.choice([" ", ", ", ". ", " - "]).join(rng.choice(VOCABULARY) for _ in range(rng.randint(0, 6)))
        for _ in range(300)
    ]
    with closing(sqlite3.connect(":memory:")) as lite:
        lite.execute("CREATE VIRTUAL TABLE f USING fts5(content, tokenize = 'unicode61 remove_diacritics 2')")
        lite.executemany("INSERT INTO f (rowid, content) VALUES (?, ?)", enumerate(texts))

        def fold(parts: list[str]) -> list[str]:
            query = "SELECT clonechat_fold(p) FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, at) ORDER BY at"
            return [row[0] for row in fold_server.execute(query, (parts,))] if parts else []

        asked = refused = 0
        got: object
        for _ in range(1500):
            query = random_query(rng)
            try:
                expected: object = {r[0] for r in lite.execute("SELECT rowid FROM f WHERE f MATCH ?", (query,))}
            except sqlite3.OperationalError:
                expected = "invalid"
            try:
                ask = tsquery(parse_fts5(query), fold)
            except QueryError as exc:
                got = "unsupported" if isinstance(exc, UnsupportedSearchError) else str(exc)[: len("SQL error: ")]
                got = "invalid" if got == "SQL error: " else got
            else:
                got = (
                    {
                        row[0]
                        for row in fold_server.execute(
                            "SELECT i - 1 FROM unnest(%s::text[]) WITH ORDINALITY AS d(content, i) "
                            "WHERE to_tsvector('simple', clonechat_fold(content)) @@ to_tsquery('simple', %s)",
                            (texts, ask),
                        )
                    }
                    if ask
                    else set()
                )
            assert got == expected, (query, ask if got != "invalid" else None)
            asked += 1
            refused += expected == "invalid"
        assert asked == 1500 and 100 < refused < 1000, "both valid and invalid queries were asked"


def test_a_tsquery_quotes_every_word() -> None:
    same = list
    assert tsquery(parse_fts5('dance "eternal spiral" OR conscious* NOT dream'), same) == (
        "((('dance') & ('eternal spiral')) | (('conscious':*) & !('dream')))"
    )
    assert tsquery(parse_fts5("\"x' | 'y\\\\z\""), same) == "('x'' | ''y\\\\\\\\z')"
    assert tsquery(parse_fts5('"spiral dan"*'), same) == "('spiral ' <-> 'dan':*)"
    assert tsquery(parse_fts5('"" AND dance'), same) == ""


@pytest.mark.parametrize(
    ("query", "what"),
    [
        ("NEAR(a b)", "NEAR(...)"),
        ("^start", "^ (the start"),
        ("content:dance", "a column filter"),
        ("-content:x", "a column filter"),
    ],
)
def test_what_only_fts5_can_ask_is_refused_in_one_line(query: str, what: str) -> None:
    with pytest.raises(UnsupportedSearchError) as refused:
        parse_fts5(query, on="postgresql://db")
    assert str(refused.value).startswith(f"search {query!r}: {what}") and "\n" not in str(refused.value)
