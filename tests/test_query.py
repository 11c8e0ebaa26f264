"""Querying a run database made by a real run on the embedded model (a batch with prediction,
self-prediction and coordination; a researcher's fork continued live; a dialogue resumed by a
second batch): the views, the read-only guarantee, full-text search in sync, keyword rates,
exports that read back to the same rows, the pandas API, and every documented example query,
in clonechat and in Datasette.

Every test that takes ``run`` runs twice, on an SQLite file and on a PostgreSQL database, each
made by the same commands (the ``backend`` fixture here is module-scoped, so each backend's run
is made once). The ``twins`` tests then hold the two backends to the same answers: the SQLite
run, copied row for row into PostgreSQL (same ids, same times), must search, export, list, show
and load into pandas exactly alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from clonechat.analysis.load import load_report_data
from clonechat.branching import fork_with_edit
from clonechat.cli import app
from clonechat.location import DbLocation, ServerDatabase, db_location
from clonechat.query import export as export_module
from clonechat.query.search import search
from clonechat.read import console as sql
from clonechat.read.connect import open_existing
from clonechat.read.console import STORED_TIME_FORMAT
from clonechat.read.export_rows import rows_sql
from clonechat.read.keywords import KEYWORD_RATE_SQL
from clonechat.store import turn_metrics
from clonechat.store.database import Database
from clonechat.tui.live import LiveDialogue, UiEvent
from tests.conftest import BACKENDS, sqlite_only
from tests.helpers import raw_sql
from tests.pg_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

SPEC = """\
name = "qa"
replicates = 2
max_turns = 4
seed = 23
concurrency = 2
model_a = "local"

[params]
max_tokens = 24

[prediction]
self_predict = true

[coordination]
tasks = ["number", "colour"]
when = "both"
max_tokens = 10

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "no-frame"
"""

EDIT = "The spiral 🌀 turns: zyxwvutq eternal dance, dance, dance."


@dataclass(frozen=True)
class Run:
    db: DbLocation
    spec: Path
    forked: str  # dialogue with a fork continued live
    edit_id: str
    resumed: str  # dialogue continued by a second batch


def cli(*args: str | Path | ServerDatabase) -> str:
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.output


def rows(db: DbLocation, query: str, **params: Any) -> list[tuple[Any, ...]]:
    """``query`` (``:name`` parameters) answered by plain SQL, not by the code under test."""
    with raw_sql(db) as conn:
        return [tuple(row) for row in conn.execute(query, params)]


async def _ignore(_event: UiEvent) -> None:
    pass


async def _fork_and_continue(db_path: DbLocation, dialogue_id: str) -> str:
    db = Database.open(db_path)
    try:
        (turn2,) = rows(
            db_path, "SELECT id FROM node WHERE dialogue_id = :d AND turn_index = 2 ORDER BY rowid", d=dialogue_id
        )[0:1]
        edit = await fork_with_edit(db, turn2[0], EDIT)
        await LiveDialogue(db, _ignore).resume(dialogue_id, edit.id)
        return edit.id
    finally:
        db.close()


def make_run(db: DbLocation, folder: Path) -> Run:
    spec = folder / "qa.toml"
    spec.write_text(SPEC)
    cli("batch", spec, "--db", db)
    ids = [r[0] for r in rows(db, "SELECT id FROM dialogue ORDER BY id")]
    forked, resumed = ids[0], ids[1]
    edit_id = anyio.run(_fork_and_continue, db, forked)
    # A crash left `resumed` interrupted with turns to go: the batch continues it.
    with raw_sql(db) as conn:
        conn.execute("UPDATE dialogue SET status = 'interrupted', max_turns = 6 WHERE id = :d", {"d": resumed})
    cli("batch", spec, "--db", db)
    cli("score", "qa", "--scorer", "chrf", "--db", db)
    return Run(db, spec, forked, edit_id, resumed)


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("query")
    return make_run(folder / "runs.db", folder)


@pytest.fixture(scope="module")
def server_database(pg_server: PostgresServer) -> Iterator[ServerDatabase]:
    """An empty database on the test server, for this module."""
    name = f"query_{os.getpid()}"
    location = db_location(pg_server.create_database(name))
    assert isinstance(location, ServerDatabase)
    yield location
    pg_server.drop_database(name)


@pytest.fixture(scope="module")
def server_run(server_database: ServerDatabase, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return make_run(server_database, tmp_path_factory.mktemp("query-server"))


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Module-scoped here (conftest's is per test), so each backend's run is made once."""
    return str(request.param)


@pytest.fixture(scope="module")
def run(backend: str, request: pytest.FixtureRequest) -> Run:
    found: Run = request.getfixturevalue("sqlite_run" if backend == "sqlite" else "server_run")
    return found


def containing(db: DbLocation, text: str) -> list[str]:
    """Ids of the nodes whose content contains ``text``, in storage order (the model may echo
    the edit's words)."""
    return [r[0] for r in rows(db, "SELECT id, content FROM node ORDER BY rowid") if text in r[1]]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(db: DbLocation) -> object:
    """What a refused write must leave as it was. A file: its bytes. A server database: each
    table's row count and a checksum of its rows in order, the schema's objects and
    functions, and the sequences' positions."""
    if isinstance(db, Path):
        return digest(db)
    state: dict[str, object] = {}
    with raw_sql(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        for table in sorted(tables):
            checksum = f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"
            state[table] = tuple(conn.execute(checksum).one())
        state["objects"] = conn.execute(
            "SELECT relname, relkind FROM pg_class WHERE relnamespace = current_schema()::regnamespace ORDER BY 1, 2"
        ).all()
        state["functions"] = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace ORDER BY 1"
        ).all()
        state["sequences"] = conn.execute("SELECT sequencename, last_value FROM pg_sequences ORDER BY 1").all()
    return state


def head_path(db: DbLocation, dialogue_id: str) -> list[tuple[str, int, str, str]]:
    """The head conversation walked in Python: (id, turn_index, speaker, content), root first."""
    nodes = {r[0]: r for r in rows(db, "SELECT id, parent_id, turn_index, speaker, content FROM node")}
    (head,) = rows(db, "SELECT head_node_id FROM dialogue WHERE id = :d", d=dialogue_id)[0]
    out = []
    while head is not None:
        node_id, parent, turn, speaker, content = nodes[head]
        out.append((node_id, turn, speaker, content))
        head = parent
    return out[::-1]


# --- the run itself -------------------------------------------------------------------------


@pytest.mark.model
def test_the_run_has_a_fork_and_a_resumed_dialogue(run: Run) -> None:
    (edit,) = rows(run.db, "SELECT speaker, kind, model FROM node WHERE id = :n", n=run.edit_id)
    assert edit[1] == "turn" and edit[2] == "researcher-edit"
    below = rows(run.db, "SELECT count(*) FROM node WHERE parent_id = :n AND kind = 'turn'", n=run.edit_id)
    assert below == [(1,)], "the fork was continued live"
    assert rows(run.db, "SELECT status, max_turns FROM dialogue WHERE id = :d", d=run.resumed) == [("completed", 6)]
    assert len([n for n in head_path(run.db, run.resumed) if n[1] > 0]) == 6


# --- views ------------------------------------------------------------------------------------


@pytest.mark.model
def test_v_dialogue_names_and_lengths(run: Run) -> None:
    got = {
        r[0]: r[1:]
        for r in rows(run.db, "SELECT dialogue_id, experiment, condition, turns, turn_nodes FROM v_dialogue")
    }
    assert len(got) == 4
    counts = dict(rows(run.db, "SELECT dialogue_id, count(*) FROM node WHERE kind = 'turn' GROUP BY dialogue_id"))
    for dialogue_id, (experiment, condition, turns, turn_nodes) in got.items():
        assert experiment == "qa" and condition in ("clone-aware", "no-frame")
        assert turns == len(head_path(run.db, dialogue_id)) - 1
        assert turn_nodes == counts[dialogue_id]
    assert got[run.resumed][2] == 6
    assert got[run.forked][3] > got[run.forked][2], "the fork's turns count among turn_nodes"


@pytest.mark.model
def test_v_path_lists_every_branch_and_marks_the_head(run: Run) -> None:
    paths = rows(
        run.db,
        "SELECT path_id, is_head, node_id FROM v_path WHERE dialogue_id = :d ORDER BY turn_index",
        d=run.forked,
    )
    by_path: dict[str, list[str]] = {}
    heads = set()
    for path_id, is_head, node_id in paths:
        by_path.setdefault(path_id, []).append(node_id)
        if is_head:
            heads.add(path_id)
    assert len(by_path) == 2, "the original conversation and the fork"
    (head,) = heads
    assert by_path[head] == [n[0] for n in head_path(run.db, run.forked)]
    assert run.edit_id in by_path[head]
    other = next(p for p in by_path if p != head)
    assert by_path[other][:2] == by_path[head][:2], "branches share the prefix above the fork"
    assert run.edit_id not in by_path[other]


@pytest.mark.model
def test_v_turn_flattens_every_turn_with_context_and_metrics(run: Run) -> None:
    turns = rows(
        run.db,
        "SELECT node_id, experiment, condition, speaker, model, edited, on_head, words, vocabulary FROM v_turn",
    )
    assert len(turns) == rows(run.db, "SELECT count(*) FROM node WHERE kind = 'turn'")[0][0]
    assert all(t[1] == "qa" and t[3] in ("A", "B") and t[7] is not None and t[8] is not None for t in turns)
    on_head = {t[0] for t in turns if t[6]}
    expected = {n[0] for d in rows(run.db, "SELECT id FROM dialogue") for n in head_path(run.db, d[0]) if n[1] > 0}
    assert on_head == expected
    assert [t[0] for t in turns if t[5]] == [run.edit_id]
    assert all(t[4] for t in turns)


@pytest.mark.model
def test_v_prediction_pairs_each_score_with_its_shuffled_control(run: Run) -> None:
    got = rows(
        run.db,
        "SELECT prediction_id, target_id, variant, scorer, version, value, shuffled_value "
        "FROM v_prediction WHERE scorer = 'chrf'",
    )
    predictions = rows(run.db, "SELECT id, target_node_id, variant FROM node WHERE kind = 'prediction'")
    assert {(p, t, v) for p, t, v, *_ in got} == set(predictions)
    scores = {(n, s, v): value for n, s, v, value in rows(run.db, "SELECT node_id, scorer, version, value FROM score")}
    for prediction, _target, _variant, _scorer, version, value, shuffled in got:
        assert scores[(prediction, "chrf", version)] == value
        assert scores[(prediction, "chrf~shuffled", version)] == shuffled
    assert not rows(run.db, "SELECT 1 FROM v_prediction WHERE scorer LIKE '%~shuffled'")


@pytest.mark.model
def test_v_coordination_agrees_with_the_report(run: Run) -> None:
    got = {
        (d, t, p): (a, b, m)
        for d, t, p, a, b, m in rows(
            run.db, "SELECT dialogue_id, task, phase, answer_a, answer_b, matched FROM v_coordination"
        )
    }
    with Database.open(run.db, create=False) as db:
        pairs = load_report_data(db, "qa").coordination
    assert len(got) == len(pairs) == 4 * 2 * 2
    for pair in pairs:
        assert got[(pair.dialogue_id, pair.task, pair.phase)] == (pair.answer_a, pair.answer_b, int(pair.match))


# --- turn metrics ----------------------------------------------------------------------------------


@pytest.fixture
def run_copy(run: Run, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DbLocation]:
    """A copy of the run's database, to change: a file's copy, or a server database made from
    the run's as a template."""
    if isinstance(run.db, Path):
        copy = tmp_path / "copy.db"
        with closing(sqlite3.connect(run.db)) as source, closing(sqlite3.connect(copy)) as target:
            source.backup(target)
        yield copy
        return
    import psycopg

    server: PostgresServer = request.getfixturevalue("pg_server")
    name = f"query_copy_{os.getpid()}"
    original = run.db.url.rsplit("/", 1)[1]
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{original}"')
    yield db_location(server.url(name))
    server.drop_database(name)


@pytest.mark.model
def test_metrics_stored_live_equal_metrics_replayed_from_the_tree(run: Run, run_copy: DbLocation) -> None:
    """Metrics computed as turns were stored (writer cache, resume in a new process, the fork)
    are exactly what a replay of each dialogue's tree gives."""
    live = rows(run_copy, "SELECT * FROM turn_metrics ORDER BY node_id")
    assert len(live) == rows(run_copy, "SELECT count(*) FROM node WHERE kind = 'turn'")[0][0]
    with raw_sql(run_copy) as conn:
        conn.execute("DELETE FROM turn_metrics")
    with Database.open(run_copy) as db:
        db.write(turn_metrics.backfill)
    assert rows(run_copy, "SELECT * FROM turn_metrics ORDER BY node_id") == live


def tables_of(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def columns_of(path: Path, table: str) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def tables_at_step(version: int, path: Path) -> set[str]:
    """The tables of an SQLite database made by the first ``version`` migration steps."""
    from sqlalchemy import create_engine

    from clonechat.store.migrations import migrate

    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            migrate(conn, target=version)
    finally:
        engine.dispose()
    return tables_of(path)


@pytest.mark.model
@sqlite_only("rebuilds an SQLite file from before step 4 (its views, triggers and FTS5 table)")
def test_an_old_database_is_upgraded_with_metrics_and_a_search_index(
    run: Run, run_copy: DbLocation, tmp_path: Path
) -> None:
    assert isinstance(run_copy, Path)
    with closing(sqlite3.connect(run_copy)) as conn:
        for name, kind in conn.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('view', 'trigger')"
        ).fetchall():
            conn.execute(f"DROP {kind.upper()} {name}")
        conn.execute("DROP TABLE node_fts")
        conn.execute("DROP TABLE node_fts_reasoning")  # step 9's (with its shadow tables)
        # ... and every table a later step made (turn_metrics, and those of the steps after 4),
        # and the columns the steps after 3 added to node.
        step3 = tmp_path / "step3.db"
        for table in tables_of(run_copy) - tables_at_step(3, step3):
            conn.execute(f"DROP TABLE {table}")
        for column in columns_of(run_copy, "node") - columns_of(step3, "node"):
            conn.execute(f"ALTER TABLE node DROP COLUMN {column}")
        conn.execute("DELETE FROM clonechat_migrations WHERE version > 3")
        conn.commit()
    Database.open(run_copy).close()
    assert rows(run_copy, "SELECT * FROM turn_metrics ORDER BY node_id") == rows(
        run.db, "SELECT * FROM turn_metrics ORDER BY node_id"
    )
    found = rows(
        run_copy, "SELECT n.id FROM node_fts JOIN node n ON n.rowid = node_fts.rowid WHERE node_fts MATCH 'zyxwvutq'"
    )
    assert sorted(r[0] for r in found) == sorted(containing(run_copy, "zyxwvutq"))
    assert run.edit_id in {r[0] for r in found}


# --- read-only ----------------------------------------------------------------------------------

WRITES = [
    ("INSERT INTO experiment (id, name, created_at) VALUES ('x', 'x', 'x')", "refused INSERT on experiment"),
    ("UPDATE node SET content = 'gone'", "refused UPDATE on node"),
    ("DELETE FROM node", "refused DELETE on node"),
    ("REPLACE INTO experiment (id, name, created_at) VALUES ('x', 'x', 'x')", "refused INSERT on experiment"),
    ("WITH x AS (SELECT 1) DELETE FROM score", "refused DELETE on score"),
    ("DROP TABLE node", "refused DROP TABLE node"),
    ("DROP VIEW v_turn", "refused DROP VIEW v_turn"),
    ("DROP TABLE node_fts", "refused DROP VTABLE node_fts"),
    ("DROP TRIGGER node_fts_delete", "refused DROP TRIGGER node_fts_delete"),
    ("DROP INDEX ix_node_parent_id", "refused DROP INDEX ix_node_parent_id"),
    ("CREATE TABLE t (x)", "refused CREATE TABLE t"),
    ("CREATE TEMP TABLE t (x)", "refused CREATE TEMP TABLE t"),
    ("CREATE INDEX i ON node (content)", "refused CREATE INDEX i"),
    ("CREATE VIEW v AS SELECT 1", "refused CREATE VIEW v"),
    ("ALTER TABLE node ADD COLUMN x", "refused ALTER TABLE"),
    ("ATTACH DATABASE ':memory:' AS other", "refused ATTACH"),
    ("DETACH DATABASE main", "refused DETACH"),
    ("VACUUM", "refused VACUUM"),
    ("REINDEX", "refused REINDEX"),
    ("ANALYZE", "refused CREATE TABLE sqlite_stat1"),  # its first step
    ("BEGIN", "refused a transaction"),
    ("SAVEPOINT s", "refused SAVEPOINT"),
    ("PRAGMA journal_mode = DELETE", "refused PRAGMA journal_mode = DELETE"),
    ("PRAGMA query_only = 0", "refused PRAGMA query_only = 0"),
    ("PRAGMA user_version = 7", "refused PRAGMA user_version = 7"),
    ("PRAGMA writable_schema = 1", "refused PRAGMA writable_schema = 1"),
    ("INSERT INTO node_fts (node_fts) VALUES ('delete-all')", "refused INSERT on node_fts"),
    ("UPDATE sqlite_master SET sql = ''", "refused"),
    ("SELECT 1; DELETE FROM node", "one SQL statement at a time"),
]
#: Where PostgreSQL names the same refusal differently (its full-text index is an index, and
#: ANALYZE is a statement of its own there). The server-only writes are in test_query_console.
SERVER_MESSAGES = {
    "DROP TABLE node_fts": "refused DROP TABLE node_fts",
    "ANALYZE": "refused ANALYZE",
}


@pytest.mark.model
@pytest.mark.parametrize(("statement", "message"), WRITES, ids=[w[0][:30] for w in WRITES])
def test_every_write_is_refused_and_nothing_changes(run: Run, backend: str, statement: str, message: str) -> None:
    before = fingerprint(run.db)
    result = CliRunner().invoke(app, ["query", statement, "--db", str(run.db)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    expected = SERVER_MESSAGES.get(statement, message) if backend == "postgresql" else message
    assert line.startswith("error: ") and expected in line, line
    assert line.endswith(f"queries on {run.db} are read-only (nothing was changed)") or "one SQL" in line, line
    assert fingerprint(run.db) == before
    if isinstance(run.db, Path):
        wal = run.db.with_name(run.db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.model
def test_query_prints_table_csv_and_json(run: Run) -> None:
    statement = "SELECT dialogue_id, turns FROM v_dialogue WHERE turns >= :n ORDER BY dialogue_id"
    expected = rows(run.db, "SELECT id, 0 FROM dialogue ORDER BY id")
    as_json = json.loads(cli("query", statement, "-p", "n=4", "--format", "json", "--db", run.db))
    assert [r["dialogue_id"] for r in as_json] == [e[0] for e in expected]
    as_csv = cli("query", statement, "-p", "n=6", "--format", "csv", "--db", run.db).splitlines()
    assert as_csv == ["dialogue_id,turns", f"{run.resumed},6"]
    table = cli("query", statement, "-p", "n=4", "--db", run.db)
    assert all(e[0] in table for e in expected) and "(4 rows)" in table


def test_query_on_a_missing_or_foreign_file_is_one_line(tmp_path: Path) -> None:
    for path, message in [
        (tmp_path / "none.db", "no database at"),
        (tmp_path, "is a directory"),
    ]:
        result = CliRunner().invoke(app, ["query", "SELECT 1", "--db", str(path)])
        assert result.exit_code == 1 and message in result.output, result.output
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    result = CliRunner().invoke(app, ["query", "SELECT 1", "--db", str(other)])
    assert result.exit_code == 1 and "not a clonechat one" in result.output
    assert not (tmp_path / "none.db").exists()


# --- full-text search ------------------------------------------------------------------------------


@pytest.mark.model
def test_the_index_is_in_sync_after_the_batch_the_fork_and_the_resume(run: Run) -> None:
    if isinstance(run.db, Path):
        with closing(sqlite3.connect(run.db)) as conn:
            # FTS5 compares the index with node.content, row by row; an error means out of sync.
            # (PostgreSQL's index is over an expression of node.content: the server keeps it.)
            conn.execute("INSERT INTO node_fts (node_fts, rank) VALUES ('integrity-check', 1)")
            assert (
                conn.execute("SELECT count(*) FROM node_fts").fetchone()
                == conn.execute("SELECT count(*) FROM node").fetchone()
            )
    # Every turn stored by the resume (a second process) and below the fork can be found by a word of it.
    late = rows(
        run.db,
        "SELECT id, content FROM node "
        "WHERE kind = 'turn' AND (dialogue_id = :d AND turn_index > 4 OR parent_id = :edit)",
        d=run.resumed,
        edit=run.edit_id,
    )
    assert len(late) == 3
    with sql.read_only(run.db) as conn:
        for node_id, content in late:
            word = max(re.findall(r"[A-Za-z]{4,}", content), key=len)
            assert node_id in {hit.node_id for hit in search(conn, f'"{word}"', limit=10_000)}, word


@pytest.mark.model
def test_search_command(run: Run) -> None:
    out = cli("search", "zyxwvutq", "--db", run.db)
    hits = containing(run.db, "zyxwvutq")
    assert "zyxwvutq" in out and run.forked[:10] in out and f"({len(hits)} message" in out
    as_json = json.loads(cli("search", "zyxwvutq OR eternal", "--format", "json", "--db", run.db))
    assert run.edit_id in {h["node_id"] for h in as_json}
    assert json.loads(cli("search", "zyxwvutq", "--experiment", "other", "--format", "json", "--db", run.db)) == []
    emoji = json.loads(cli("search", "🌀", "--format", "json", "--db", run.db))
    assert [h["node_id"] for h in emoji] == containing(run.db, "🌀") and run.edit_id in containing(run.db, "🌀")
    only_predictions = json.loads(cli("search", "the", "--kind", "prediction", "--format", "json", "--db", run.db))
    assert only_predictions and {h["kind"] for h in only_predictions} == {"prediction"}
    bad = CliRunner().invoke(app, ["search", 'what"s', "--db", str(run.db)])
    assert bad.exit_code == 2 and "not a valid full-text query" in bad.output


# --- keyword rates ----------------------------------------------------------------------------------


@pytest.mark.model
def test_keyword_rates_match_a_count_in_python(run: Run) -> None:
    words = ["dance", "🌀", "the"]
    got = json.loads(cli("keywords", *words, "--experiment", "qa", "--format", "json", "--db", run.db))
    assert len(got) == 4 * len(words)
    for row in got:
        turns = [n for n in head_path(run.db, row["dialogue_id"]) if n[1] > 0]
        texts = [n[3].lower() for n in turns]
        word = row["keyword"]
        assert row["turns"] == len(turns)
        assert row["turns_with"] == sum(word in t for t in texts)
        assert row["occurrences"] == sum(t.count(word) for t in texts)
    forked = {r["keyword"]: r for r in got if r["dialogue_id"] == run.forked}
    assert forked["dance"]["occurrences"] >= 3 and forked["🌀"]["occurrences"] >= 1
    assert json.loads(cli("keywords", "dance", "--experiment", "nope", "--format", "json", "--db", run.db)) == []


# --- export ------------------------------------------------------------------------------------


def stored(db: DbLocation, table: str) -> list[dict[str, Any]]:
    """The experiment's rows of ``table`` as the database holds them (times as stored text)."""
    (experiment,) = rows(db, "SELECT id FROM experiment WHERE name = 'qa'")[0]
    with raw_sql(db) as conn:
        return [
            {k: v.strftime(STORED_TIME_FORMAT) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
            for row in conn.execute(rows_sql(table), {"e": experiment})
        ]


@pytest.mark.model
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_exports_read_back_to_the_same_rows(run: Run, tmp_path: Path, fmt: str) -> None:
    out = cli("export", "qa", "--format", fmt, "--out", tmp_path, "--db", run.db)
    assert "4 dialogues of qa exported" in out
    for table in export_module.TABLES:
        expected = stored(run.db, table)
        assert expected, table
        assert export_module.read_table(tmp_path / f"{table}.{fmt}") == expected, table
    assert "rowid" not in export_module.read_table(tmp_path / f"node.{fmt}")[0]


@pytest.mark.model
def test_jsonl_export_reads_back_to_the_same_rows(run: Run, tmp_path: Path) -> None:
    cli("export", "qa", "--format", "jsonl", "--out", tmp_path, "--db", run.db)
    lines = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    assert [d["dialogue"]["id"] for d in lines] == [r["id"] for r in stored(run.db, "dialogue")]

    def as_stored(table: str, record: dict[str, Any]) -> dict[str, Any]:
        return {k: json.dumps(v) if k in export_module.JSON_COLUMNS.get(table, ()) else v for k, v in record.items()}

    for key, table in [("nodes", "node"), ("scores", "score"), ("turn_metrics", "turn_metrics")]:
        exported = [as_stored(table, r) for d in lines for r in d[key]]
        db_rows = stored(run.db, table)
        key_of = "id" if table != "turn_metrics" else "node_id"
        assert sorted(exported, key=lambda r: r[key_of]) == sorted(db_rows, key=lambda r: r[key_of]), table
    for d in lines:
        hashes = {p["hash"] for p in d["prompts"]}
        own = {d["dialogue"]["system_prompt_a"], d["dialogue"]["system_prompt_b"], d["dialogue"]["opening_prompt"]}
        # ... and the prediction and coordination prompts its settings name.
        assert own < hashes and all(h in json.dumps(d["dialogue"]["settings"]) for h in hashes - own)
        assert d["experiment"]["name"] == "qa" and d["condition"]["id"] == d["dialogue"]["condition_id"]
        # ... and the templates those prompts were rendered from (the fork's edit is its own).
        assert {p["template_hash"] for p in d["prompts"]} == {t["hash"] for t in d["prompt_templates"]}
    templates = {t["hash"]: t for d in lines for t in d["prompt_templates"]}
    by_hash = itemgetter("hash")
    assert sorted(templates.values(), key=by_hash) == sorted(stored(run.db, "prompt_template"), key=by_hash)


@pytest.mark.model
def test_markdown_export_is_each_conversation_in_order(run: Run, tmp_path: Path) -> None:
    cli("export", "qa", "--format", "markdown", "--out", tmp_path, "--db", run.db)
    text = (tmp_path / "qa.md").read_text()
    for (dialogue_id,) in rows(run.db, "SELECT id FROM dialogue"):
        at = text.index(dialogue_id)
        for _node, _turn, _speaker, content in head_path(run.db, dialogue_id):
            first_line = content.splitlines()[0] if content.strip() else ""
            if first_line:
                found = text.index(first_line, at)
                assert found > at
                at = found
    assert "edited by the researcher" in text and "predicted by" in text


@pytest.mark.model
def test_parquet_without_pyarrow_says_how_to_get_it(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = CliRunner().invoke(
        app, ["export", "qa", "--format", "parquet", "--out", str(tmp_path / "x"), "--db", str(run.db)]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: Parquet export needs pyarrow, an optional extra: "
        "pip install 'clonechat[parquet]' (or uv sync --extra parquet)"
    )
    assert not (tmp_path / "x").exists()


def test_export_of_an_unknown_experiment(backend: str, run_free_db: DbLocation) -> None:
    result = CliRunner().invoke(app, ["export", "nope", "--db", str(run_free_db)])
    assert result.exit_code == 1 and "no experiment named 'nope'" in result.output


@pytest.fixture
def run_free_db(db_path: DbLocation) -> DbLocation:
    """A database with one experiment and nothing run (an SQLite file, or a server database in
    a test that takes ``backend``)."""
    Database.open(db_path).close()
    with raw_sql(db_path) as conn:
        conn.execute("INSERT INTO experiment (id, name, created_at) VALUES ('E', 'adhoc', '2026-01-01 00:00:00')")
    return db_path


# --- pandas -------------------------------------------------------------------------------------


@pytest.mark.model
def test_open_run_db_gives_the_views_as_dataframes(run: Run) -> None:
    import clonechat
    from clonechat.errors import QueryError

    with clonechat.open_run_db(str(run.db)) as r:
        assert len(r.dialogues) == 4 and set(r.dialogues.dialogue_id) == {
            x[0] for x in rows(run.db, "SELECT id FROM dialogue")
        }
        turns = r.turns
        assert len(turns) == rows(run.db, "SELECT count(*) FROM node WHERE kind = 'turn'")[0][0]
        assert str(turns.created_at.dtype).startswith("datetime64") and str(turns.created_at.dt.tz) == "UTC"
        assert len(r.predictions) == rows(run.db, "SELECT count(*) FROM v_prediction")[0][0]
        assert len(r.scores) == rows(run.db, "SELECT count(*) FROM score")[0][0]
        assert len(r.coordination) == 16
        assert list(r.sql("SELECT count(*) AS n FROM node WHERE dialogue_id = :d", {"d": run.forked}).n) == [
            rows(run.db, "SELECT count(*) FROM node WHERE dialogue_id = :d", d=run.forked)[0][0]
        ]
        with pytest.raises(QueryError, match="refused DELETE on node"):
            r.sql("DELETE FROM node")


def test_open_run_db_without_pandas_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, run_free_db: Path) -> None:
    import clonechat
    from clonechat.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'clonechat\[pandas\]'"):
        clonechat.open_run_db(run_free_db)


# --- the same answers from both backends --------------------------------------------------------

#: A second researcher's edit in the twins: accented words, to find without their accents.
ACCENTED = "Café crème: une étrange cérémonie, éternelle."
#: ``clonechat search`` queries of every documented kind: words, a phrase, OR, NOT, AND and
#: parentheses, a prefix, accents either way, and an emoji (a substring scan).
SEARCHES = [
    "zyxwvutq",
    "spiral dance",
    '"eternal dance"',
    "zyxwvutq OR eternal",
    "the NOT dance",
    "eter*",
    "(spiral OR creme) AND dance",
    "cafe ceremonie",
    "éternal",
    '"une etrange"',
    "CAFÉ*",
    "the",
    "🌀",
]


def copy_rows(source: Path, target: ServerDatabase) -> None:
    """Every row of the file into the (migrated, empty) server database, as it is: the same
    ids, times and JSON text, nodes in their storage order (PostgreSQL numbers ``rowid`` as
    they arrive). Foreign keys are not checked while copying (a prediction points at the turn
    stored after it)."""
    from sqlalchemy import create_engine, select, text
    from sqlmodel import SQLModel

    Database.open(target).close()
    reading, writing = create_engine(f"sqlite:///{source}"), create_engine(target.sqlalchemy_url)
    try:
        with reading.connect() as src, writing.begin() as dst:
            dst.execute(text("SET LOCAL session_replication_role = replica"))
            for table in SQLModel.metadata.sorted_tables:
                found = [dict(row._mapping) for row in src.execute(select(table).order_by(text("rowid")))]
                if found:
                    dst.execute(table.insert(), found)
    finally:
        reading.dispose()
        writing.dispose()


@pytest.fixture(scope="module")
def twin_file(sqlite_run: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the SQLite run, with one more researcher's edit (accented words)."""
    file = tmp_path_factory.mktemp("twins") / "twin.db"
    assert isinstance(sqlite_run.db, Path)
    with closing(sqlite3.connect(sqlite_run.db)) as source, closing(sqlite3.connect(file)) as target:
        source.backup(target)
    (opening,) = rows(file, "SELECT id FROM node WHERE dialogue_id = :d AND kind = 'opening'", d=sqlite_run.forked)

    async def edit() -> None:
        with Database.open(file) as db:
            await fork_with_edit(db, opening[0], ACCENTED)

    anyio.run(edit)
    return file


@pytest.fixture(scope="module")
def twin_server(twin_file: Path, pg_server: PostgresServer) -> Iterator[ServerDatabase]:
    """The twin file's rows in a PostgreSQL database."""
    name = f"twin_{os.getpid()}"
    location = db_location(pg_server.create_database(name))
    assert isinstance(location, ServerDatabase)
    copy_rows(twin_file, location)
    yield location
    pg_server.drop_database(name)


@pytest.mark.model
def test_the_twins_hold_the_same_rows(twin_file: Path, twin_server: ServerDatabase) -> None:
    for table in export_module.TABLES:
        query = f"SELECT count(*) FROM {table}"
        assert rows(twin_file, query) == rows(twin_server, query), table
    assert containing(twin_file, "cérémonie") == containing(twin_server, "cérémonie") != []


@pytest.mark.model
@pytest.mark.parametrize("query", SEARCHES)
def test_search_finds_the_same_messages_on_both_backends(
    twin_file: Path, twin_server: ServerDatabase, query: str
) -> None:
    found = []
    for location in (twin_file, twin_server):
        with sql.read_only(location) as conn:
            hits = search(conn, query, limit=100_000)
        found.append({hit.node_id for hit in hits})
        assert all(hit.plain_snippet() for hit in hits)
    assert found[0] == found[1] and found[0], query


@pytest.mark.model
def test_an_invalid_or_sqlite_only_search_is_one_line_on_both(twin_file: Path, twin_server: ServerDatabase) -> None:
    for location in (twin_file, twin_server):
        bad = CliRunner().invoke(app, ["search", 'what"s', "--db", str(location)])
        assert bad.exit_code == 2 and "not a valid full-text query" in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
    near = CliRunner().invoke(app, ["search", "NEAR(spiral dance)", "--db", str(twin_server)])
    assert near.exit_code == 2, near.output
    assert near.output.strip().splitlines() == [
        f"error: search 'NEAR(spiral dance)': NEAR(...) is SQLite-only (FTS5); on {twin_server} search words, "
        '"phrases", prefix*, AND, OR, NOT and parentheses'
    ]


@pytest.mark.model
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "markdown"])
def test_exports_are_the_same_on_both_backends(
    twin_file: Path, twin_server: ServerDatabase, tmp_path: Path, fmt: str
) -> None:
    folders = []
    for name, location in (("file", twin_file), ("server", twin_server)):
        cli("export", "qa", "--format", fmt, "--out", tmp_path / name, "--db", location)
        folders.append(tmp_path / name)
    files = sorted(p.name for p in folders[0].iterdir())
    assert files == sorted(p.name for p in folders[1].iterdir()) and files
    for file in files:
        if fmt == "parquet":
            rows_of = [export_module.read_table(folder / file) for folder in folders]
            assert rows_of[0] == rows_of[1], file
        else:
            assert (folders[0] / file).read_bytes() == (folders[1] / file).read_bytes(), file


@pytest.mark.model
def test_the_frames_are_the_same_on_both_backends(twin_file: Path, twin_server: ServerDatabase) -> None:
    import pandas as pd

    import clonechat

    with clonechat.open_run_db(twin_file) as file, clonechat.open_run_db(str(twin_server)) as server:
        for frame in ("dialogues", "turns", "predictions", "scores", "coordination"):
            pd.testing.assert_frame_equal(getattr(file, frame), getattr(server, frame), obj=frame)
        paths = "SELECT * FROM v_path ORDER BY dialogue_id, path_id, turn_index"
        pd.testing.assert_frame_equal(file.sql(paths), server.sql(paths), obj="v_path")


@pytest.mark.model
def test_the_commands_print_the_same_on_both_backends(twin_file: Path, twin_server: ServerDatabase) -> None:
    """ls, show (every dialogue, with its side answers), keywords and a query: one output.
    (search is held to the same messages above; its snippets are each index's own.)"""
    ((edited,),) = rows(twin_file, "SELECT dialogue_id FROM node WHERE content = :c", c=ACCENTED)
    commands = [
        ["ls"],
        ["keywords", "dance", "the", "🌀", "--format", "json"],
        ["query", "SELECT condition, count(*) AS n, sum(turns) AS turns FROM v_dialogue GROUP BY condition"],
        *(["show", d] for (d,) in rows(twin_file, "SELECT id FROM dialogue")),
        ["show", edited, "--prompts"],
    ]
    for command in commands:
        assert cli(*command, "--db", twin_file) == cli(*command, "--db", twin_server), command


@pytest.mark.model
def test_the_report_reads_the_same_from_both_backends(twin_file: Path, twin_server: ServerDatabase) -> None:
    with open_existing(twin_file) as file, open_existing(twin_server) as server:
        assert load_report_data(file, "qa") == load_report_data(server, "qa")


# --- documented queries ---------------------------------------------------------------------------


def documented_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", (DOCS / "querying.md").read_text(), re.S)


def example_params(run: Run, query: str) -> dict[str, str]:
    values = {
        "dialogue": run.forked,
        "words": "zyxwvutq OR eternal",
        "keywords": json.dumps(["dance", "🌀"]),
        "experiment": "qa",
    }
    return {name: values[name] for name in set(re.findall(r":(\w+)", query))}


def test_the_keyword_query_is_documented_verbatim() -> None:
    assert KEYWORD_RATE_SQL + "\n" in documented_queries()


@pytest.mark.model
@sqlite_only("docs/querying.md's examples are SQLite's SQL (node_fts MATCH, json_extract, WHERE on_head)")
def test_every_documented_query_runs_read_only(run: Run) -> None:
    queries = documented_queries()
    assert len(queries) >= 10
    with sql.read_only(run.db) as conn:
        for query in queries:
            result = sql.run(conn, query, example_params(run, query))
            assert result.columns
            list(result.rows)
        (forks,) = [q for q in queries if "researcher-edit" in q]
        assert len(list(sql.run(conn, forks).rows)) == 1, "the fork appears in the forks query"


@pytest.mark.model
@sqlite_only("Datasette opens SQLite files")
def test_every_documented_query_runs_in_datasette(run: Run) -> None:
    from datasette.app import Datasette

    assert isinstance(run.db, Path)
    db_file = run.db

    async def check() -> None:
        ds = Datasette([str(db_file)])
        name = db_file.stem
        for query in documented_queries():
            params = {"sql": query, "_shape": "array", **example_params(run, query)}
            response = await ds.client.get(f"/{name}.json?" + urllib.parse.urlencode(params))
            assert response.status_code == 200, (query, response.text[:300])
            assert isinstance(response.json(), list)
        # The node table's search box uses the FTS index (Datasette finds it itself).
        response = await ds.client.get(f"/{name}/node.json?_search=zyxwvutq&_shape=array")
        assert sorted(r["id"] for r in response.json()) == sorted(containing(db_file, "zyxwvutq"))

    anyio.run(check, backend="asyncio")
