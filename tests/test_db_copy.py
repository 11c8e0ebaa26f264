"""``clonechat db copy SRC DST``: experiments moved between run databases, on a real server.

One pilot is built once for the module through the real ``clonechat batch`` (the scripted model:
predictions, coordination answers, reports back, their scores) plus a researcher's fork with an
edited system prompt (a prompt only a node's params refer to), and a second, plain experiment.
Each test copies it from a private file (sqlite's backup API), to a fresh PostgreSQL database
and back. Rows are compared table by table, every column but the surrogate ones (``score.id``,
PostgreSQL's ``node.rowid``), with JSON as its stored text and times as UTC text.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import JSON, Connection, create_engine
from sqlmodel import SQLModel
from typer.testing import CliRunner, Result

from clonechat.branching import fork_with_edit
from clonechat.cli import app
from clonechat.location import DbLocation, ServerDatabase, db_location
from clonechat.read.connect import open_existing
from clonechat.store import copy as store_copy
from clonechat.store import migrations, writes
from clonechat.store.database import Database
from tests.helpers import PILOT, PILOT_SPEC, raw_sql
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.postgresql

SIDE = "side"
SIDE_SPEC = f"""\
name = "{SIDE}"
replicates = 2
max_turns = 3
seed = 5
model_a = "scripted"

[[conditions]]
template = "told-human"
"""
EDITED_PROMPT = "You are agent A, edited by the researcher for this branch."

#: Each copied table's natural key (the leading columns of its rows below).
KEYS = {
    "experiment": 1,
    "condition": 1,
    "prompt_template": 1,
    "prompt": 1,
    "dialogue": 1,
    "node": 1,
    "turn_metrics": 1,
    "score": 3,  # (node_id, scorer, version): the id is each database's own
}


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [*map(str, args)])


def one_error_line(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pilot file, built once: two experiments and a fork."""
    folder = tmp_path_factory.mktemp("pilot")
    db = folder / "pilot.db"
    for name, spec in ((PILOT, PILOT_SPEC), (SIDE, SIDE_SPEC)):
        (folder / f"{name}.toml").write_text(spec)
        result = cli("batch", folder / f"{name}.toml", "--db", db)
        assert result.exit_code == 0, result.output
    with closing(sqlite3.connect(db)) as conn:
        (turn,) = conn.execute(
            "SELECT n.id FROM node n JOIN dialogue d ON d.id = n.dialogue_id JOIN condition c ON c.id = d.condition_id "
            "JOIN experiment e ON e.id = c.experiment_id WHERE e.name = ? AND n.kind = 'turn' AND n.turn_index = 2 "
            "ORDER BY n.id LIMIT 1",
            (PILOT,),
        ).fetchone()
    with Database.open(db) as database:
        fork = partial(fork_with_edit, database, turn, "An edit.", system_prompts={"A": EDITED_PROMPT})
        anyio.run(fork)
    return db


def private_copy(source: Path, target: Path) -> Path:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


@pytest.fixture
def pilot(built: Path, tmp_path: Path) -> Path:
    """A private copy of the pilot file."""
    return private_copy(built, tmp_path / "pilot.db")


_names = (f"copy{n}" for n in itertools.count(1))


@pytest.fixture
def new_pg(pg_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """Fresh PostgreSQL databases (dropped afterwards), as many as a test asks for."""
    made: list[str] = []

    def create() -> str:
        name = f"{next(_names)}_{len(made)}"
        made.append(name)
        return pg_server.create_database(name)

    yield create
    for name in made:
        pg_server.drop_database(name)


def columns(table: str) -> list[str]:
    """The columns compared: all but the surrogate score id, JSON read as its stored text."""
    out = []
    for column in SQLModel.metadata.tables[table].columns:
        if table == "score" and column.name == "id":
            continue
        out.append(f"CAST({column.name} AS TEXT)" if isinstance(column.type, JSON) else column.name)
    return out


def plain(value: Any) -> Any:
    """A value as SQLite's text has it: PostgreSQL's timestamps as SQLAlchemy writes them."""
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.isoformat(sep=" ", timespec="microseconds")
    return value


def dump(location: DbLocation | str) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied table's rows, sorted by natural key."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with raw_sql(location) as sql:
        for table in store_copy.COPIED_TABLES:
            select = f"SELECT {', '.join(columns(table))} FROM {table}"
            rows = [tuple(plain(v) for v in row) for row in sql.execute(select)]
            tables[table] = sorted(rows, key=itemgetter(slice(0, KEYS[table])))
    return tables


def storage_order(location: DbLocation | str) -> dict[str, list[str]]:
    """Each dialogue's node ids in storage order."""
    out: dict[str, list[str]] = {}
    with raw_sql(location) as sql:
        for dialogue_id, node_id in sql.execute("SELECT dialogue_id, id FROM node ORDER BY rowid"):
            out.setdefault(dialogue_id, []).append(node_id)
    return out


def counts(location: DbLocation | str) -> dict[str, int]:
    return {table: len(rows) for table, rows in dump(location).items()}


def of_experiment(tables: dict[str, list[tuple[Any, ...]]], name: str) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of one experiment (prompts: those its rows name)."""
    [experiment] = [r for r in tables["experiment"] if r[1] == name]
    conditions = {r[0] for r in tables["condition"] if r[1] == experiment[0]}
    dialogues = {r[0] for r in tables["dialogue"] if r[1] in conditions}
    nodes = {r[0] for r in tables["node"] if r[1] in dialogues}
    return {
        "experiment": [experiment],
        "condition": [r for r in tables["condition"] if r[0] in conditions],
        "dialogue": [r for r in tables["dialogue"] if r[0] in dialogues],
        "node": [r for r in tables["node"] if r[0] in nodes],
        "turn_metrics": [r for r in tables["turn_metrics"] if r[0] in nodes],
        "score": [r for r in tables["score"] if r[0] in nodes],
    }


def show_all(location: DbLocation | str) -> dict[str, str]:
    """``clonechat show --prompts`` of every dialogue, and of the branch each edit starts."""
    with raw_sql(location) as sql:
        targets = [(row[0], None) for row in sql.execute("SELECT id FROM dialogue ORDER BY id")]
        edits = sql.execute("SELECT dialogue_id, id FROM node WHERE model = 'researcher-edit' ORDER BY id")
        targets += [(row[0], row[1]) for row in edits]
    out = {}
    for dialogue, node in targets:
        result = cli("show", dialogue, *(["--node", node] if node else []), "--prompts", "--db", str(location))
        assert result.exit_code == 0, result.output
        out[f"{dialogue} {node}"] = result.stdout
    return out


def copy(src: DbLocation | str, dst: DbLocation | str, *names: str) -> Result:
    return cli("db", "copy", src, dst, *itertools.chain.from_iterable(("--experiment", n) for n in names))


def test_sqlite_to_postgresql_to_postgresql_to_sqlite_keeps_every_row(
    pilot: Path, tmp_path: Path, new_pg: Callable[[], str]
) -> None:
    first, second, home = new_pg(), new_pg(), tmp_path / "home" / "back.db"
    for src, dst in ((pilot, first), (first, second), (second, home)):
        result = copy(src, dst)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        lines = result.stdout.strip().splitlines()
        assert [line.split(":")[0] for line in lines] == [PILOT, SIDE]  # one line per experiment
        assert all("rows added to" in line for line in lines)

    expected = dump(pilot)
    assert all(expected[table] for table in store_copy.COPIED_TABLES)  # the pilot has rows in every table
    for location in (first, second, home):
        assert dump(location) == expected
        assert storage_order(location) == storage_order(pilot)  # parents before children, as stored
    # The file that came back is the pilot byte for byte in every copied column (raw text).
    with closing(sqlite3.connect(pilot)) as a, closing(sqlite3.connect(home)) as b:
        for table in store_copy.COPIED_TABLES:
            select = (
                f"SELECT {', '.join(columns(table))} FROM {table} ORDER BY {', '.join(columns(table)[: KEYS[table]])}"
            )
            assert a.execute(select).fetchall() == b.execute(select).fetchall(), table
        # Its full-text index holds every node.
        match = (
            "SELECT n.id FROM node_fts JOIN node n ON n.rowid = node_fts.rowid "
            "WHERE node_fts MATCH 'reply' ORDER BY n.id"
        )
        assert b.execute(match).fetchall() == a.execute(match).fetchall() != []
        assert (
            b.execute("SELECT count(*) FROM node_fts_docsize").fetchone()
            == a.execute("SELECT count(*) FROM node").fetchone()
        )

    # What a researcher sees is the same everywhere.
    shown = show_all(pilot)
    assert show_all(first) == shown
    assert show_all(home) == shown
    found = cli("search", "reply", "--db", pilot)
    assert found.exit_code == 0 and found.stdout == cli("search", "reply", "--db", home).stdout
    exported = {}
    for location, folder in ((pilot, tmp_path / "a"), (home, tmp_path / "b"), (first, tmp_path / "c")):
        assert cli("export", PILOT, "--db", location, "--out", folder).exit_code == 0
        exported[folder.name] = (folder / f"{PILOT}.jsonl").read_text()
    assert exported["a"] == exported["b"] == exported["c"]
    assert any(json.loads(line)["nodes"] for line in exported["a"].splitlines())


def test_a_second_copy_adds_nothing(pilot: Path, new_pg: Callable[[], str], tmp_path: Path) -> None:
    server = new_pg()
    with open_existing(pilot) as reader, Database.open(server) as database:
        first = store_copy.copy_experiments(reader, database, None)
    assert first.added == counts(pilot)  # the rows each table gained, as the drivers count them
    before = dump(server)
    again = copy(pilot, server)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [
        f"{PILOT}: nothing to add, {db_location(server)} has all of it",
        f"{SIDE}: nothing to add, {db_location(server)} has all of it",
    ]
    assert dump(server) == before
    # The same holds for the library call and for a file: every table, 0 rows.
    file = tmp_path / "copy.db"
    assert copy(pilot, file).exit_code == 0
    with open_existing(pilot) as reader, Database.open(file) as database:
        summary = store_copy.copy_experiments(reader, database, None)
    assert summary.added == dict.fromkeys(store_copy.COPIED_TABLES, 0)
    assert [e.name for e in summary.experiments] == [PILOT, SIDE]
    assert counts(file) == counts(pilot)


def test_scores_copied_into_postgresql_leave_its_identity_sequence_valid(
    pilot: Path, new_pg: Callable[[], str]
) -> None:
    server = new_pg()
    assert copy(pilot, server).exit_code == 0
    with raw_sql(server) as sql:
        (node,) = sql.execute("SELECT id FROM node WHERE kind = 'prediction' ORDER BY id LIMIT 1").one()
        (copied,) = sql.execute("SELECT count(*) FROM score").one()
    with Database.open(server) as database:
        new = writes.NewScore(node, "after-the-copy", "1", 0.5, {"why": "a scorer run on the server"})
        assert database.write(lambda conn: writes.insert_scores(conn, [new])) == 1
    with raw_sql(server) as sql:
        assert sql.execute("SELECT count(*), count(DISTINCT id), max(id) FROM score").one() == (
            copied + 1, copied + 1, copied + 1)  # fmt: skip


class CrashError(Exception):
    """The copy process dying part-way."""


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_an_interrupted_copy_shows_only_whole_dialogues_and_a_rerun_completes_it(
    backend: str, pilot: Path, new_pg: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = db_location(new_pg() if backend == "postgresql" else tmp_path / "dest.db")
    with open_existing(pilot) as reader, Database.open(dest) as database:
        real_write = database.write
        writes_done = itertools.count(1)

        def dying_write(fn: Callable[[Connection], Any]) -> Any:
            # The experiment's head transaction and one chunk commit; the second chunk's rows are
            # all written, then the process dies before its commit.
            if next(writes_done) < 3:
                return real_write(fn)

            def then_die(conn: Connection) -> None:
                fn(conn)
                raise CrashError

            return real_write(then_die)

        monkeypatch.setattr(database, "write", dying_write)
        with pytest.raises(CrashError):
            store_copy.copy_experiments(reader, database, [PILOT], chunk_rows=1)

    source = of_experiment(dump(pilot), PILOT)
    partial_copy = dump(dest)
    # One dialogue (the first chunk) is there, complete: every node, metric and score, its head stored.
    assert len(partial_copy["dialogue"]) == 1
    [dialogue] = partial_copy["dialogue"]
    assert dialogue in source["dialogue"]
    assert partial_copy["node"] == [r for r in source["node"] if r[1] == dialogue[0]]
    nodes = {r[0] for r in partial_copy["node"]}
    assert partial_copy["turn_metrics"] == [r for r in source["turn_metrics"] if r[0] in nodes]
    assert partial_copy["score"] == [r for r in source["score"] if r[0] in nodes]
    head = dialogue[columns("dialogue").index("head_node_id")]
    assert head in nodes
    if backend == "sqlite":
        with closing(sqlite3.connect(dest)) as conn:
            assert conn.execute("SELECT count(*) FROM node_fts_docsize").fetchone() == (len(nodes),)

    rerun = copy(pilot, dest, PILOT)
    assert rerun.exit_code == 0, rerun.output
    assert of_experiment(dump(dest), PILOT) == source
    assert counts(dest)["dialogue"] == len(source["dialogue"])
    assert copy(pilot, dest, PILOT).stdout.startswith(f"{PILOT}: nothing to add")
    if backend == "sqlite":
        with closing(sqlite3.connect(dest)) as conn:
            assert (
                conn.execute("SELECT count(*) FROM node_fts_docsize").fetchone()
                == conn.execute("SELECT count(*) FROM node").fetchone()
            )


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_name_another_experiment_has_in_dst_is_refused(
    backend: str, pilot: Path, built: Path, new_pg: Callable[[], str], tmp_path: Path
) -> None:
    # The same spec run again elsewhere: same name, another experiment (another id).
    other = tmp_path / "other.db"
    (tmp_path / "pilot.toml").write_text(PILOT_SPEC)
    assert cli("batch", tmp_path / "pilot.toml", "--db", other).exit_code == 0
    dest: DbLocation | str = new_pg() if backend == "postgresql" else tmp_path / "dest.db"
    assert copy(other, dest).exit_code == 0
    before = dump(dest)

    refused = copy(pilot, dest)  # both experiments asked for: neither is copied
    line = one_error_line(refused)
    assert f"already has another experiment named {PILOT!r}" in line
    assert "never merged" in line
    assert dump(dest) == before
    assert copy(pilot, dest, SIDE).exit_code == 0  # a name that does not clash is copied

    # The same experiment (same id) with another spec is refused too.
    dest2 = tmp_path / "dest2.db"
    assert copy(pilot, dest2, PILOT).exit_code == 0
    with raw_sql(dest2) as sql:
        sql.execute("UPDATE experiment SET spec_hash = 'changed' WHERE name = :n", {"n": PILOT})
    assert "with another spec" in one_error_line(copy(pilot, dest2, PILOT))


def file_state(path: Path) -> dict[str, str]:
    """The database file and its WAL, by content. An empty WAL counts as none: SQLite's
    read-only connections (every viewer's, ``clonechat ls`` too) create one if it is missing;
    the -shm is a lock index, not data."""
    wal = path.with_name(path.name + "-wal")
    files = [path, *([wal] if wal.exists() and wal.stat().st_size else [])]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_source_is_left_byte_identical(built: Path, tmp_path: Path, new_pg: Callable[[], str]) -> None:
    # A file straight from the batch (with its WAL, if the batch left one), not a backup of it.
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "pilot.toml").write_text(PILOT_SPEC)
    source = folder / "pilot.db"
    assert cli("batch", folder / "pilot.toml", "--db", source).exit_code == 0
    before = file_state(source)
    server = new_pg()
    assert copy(source, server).exit_code == 0
    assert copy(source, tmp_path / "copy.db").exit_code == 0
    assert file_state(source) == before


def test_a_source_with_an_older_schema_is_refused_and_not_upgraded(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{old}")
    with engine.begin() as conn:
        migrations.migrate(conn, target=migrations.SCHEMA_VERSION - 1)
    engine.dispose()
    before = file_state(old)
    line = one_error_line(copy(old, tmp_path / "new.db"))
    assert f"has schema version {migrations.SCHEMA_VERSION - 1}" in line
    assert f"clonechat db upgrade --db {old}" in line
    assert file_state(old) == before
    assert not (tmp_path / "new.db").exists()


def test_bad_input_is_one_line_and_creates_nothing(pilot: Path, tmp_path: Path, pg_server: PostgresServer) -> None:
    dst = tmp_path / "never.db"
    assert "no database at" in one_error_line(copy(tmp_path / "missing.db", dst))
    unknown = one_error_line(copy(pilot, dst, "nonesuch"))
    assert "no experiment named 'nonesuch'" in unknown and PILOT in unknown and SIDE in unknown
    assert "the same database" in one_error_line(copy(pilot, pilot))
    assert "the same database" in one_error_line(copy(pilot, tmp_path / "." / ".." / tmp_path.name / "pilot.db"))
    server = pg_server.url("postgres")
    assert "the same database" in one_error_line(copy(server, server.replace("clonechat@", "someone@")))
    assert not dst.exists()

    # An unreachable server, with a password in its URL: refused in one line that never shows it.
    closed = "postgresql://clonechat:s3cret-pw@127.0.0.1:1/runs"
    for args in ((closed, dst), (pilot, closed)):
        result = copy(*args)
        line = one_error_line(result)
        assert "s3cret-pw" not in result.stderr + result.stdout
        assert str(ServerDatabase(closed)) in line
    assert not dst.exists()


def test_only_the_named_experiments_are_copied(pilot: Path, tmp_path: Path) -> None:
    dest = tmp_path / "side.db"
    result = copy(pilot, dest, SIDE)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{SIDE}: ")
    copied, source = dump(dest), dump(pilot)
    assert [r[1] for r in copied["experiment"]] == [SIDE]
    assert {t: copied[t] for t in of_experiment(copied, SIDE)} == of_experiment(source, SIDE)
    # Only the prompts its rows refer to, with their templates.
    assert copied["prompt"] and len(copied["prompt"]) < len(source["prompt"])
    assert {r[1] for r in copied["prompt"]} <= {r[0] for r in copied["prompt_template"]}
    assert counts(dest)["score"] == 0


def test_the_destination_s_own_dialogues_are_left_alone_but_get_new_scores(
    pilot: Path, tmp_path: Path, new_pg: Callable[[], str]
) -> None:
    server = new_pg()
    assert copy(pilot, server, PILOT).exit_code == 0
    copied = dump(server)
    # The pilot goes on after the copy: one dialogue is forked (its head moves), another scored.
    with raw_sql(pilot) as sql:
        turn, forked = sql.execute(
            "SELECT n.id, n.dialogue_id FROM node n JOIN v_dialogue d ON d.dialogue_id = n.dialogue_id "
            "WHERE d.experiment = :e AND n.kind = 'turn' AND n.turn_index = 1 ORDER BY n.id DESC LIMIT 1",
            {"e": PILOT},
        ).one()
        (scored,) = sql.execute(
            "SELECT p.id FROM node p WHERE p.kind = 'prediction' AND p.dialogue_id != :d ORDER BY p.id LIMIT 1",
            {"d": forked},
        ).one()
    with Database.open(pilot) as database:
        anyio.run(partial(fork_with_edit, database, turn, "Another edit."))
        database.write(lambda conn: writes.insert_scores(conn, [writes.NewScore(scored, "late", "1", 1.0, {})]))

    again = copy(pilot, server, PILOT)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == (
        f"{PILOT}: 1 row added to {db_location(server)} (score 1); 1 dialogue differs in "
        f"{db_location(server)} and was left as it is there ({forked})"
    )
    now = dump(server)
    assert now["dialogue"] == copied["dialogue"] and now["node"] == copied["node"]
    assert [r for r in now["score"] if r not in copied["score"]] == [
        r for r in dump(pilot)["score"] if r[:2] == (scored, "late")
    ]


def test_every_table_is_either_copied_or_left_out_on_purpose(tmp_path: Path, pg_url: str) -> None:
    """A new table (the batch leases were one) needs a decision in ``clonechat.store.copy``."""
    decided = set(store_copy.COPIED_TABLES) | set(store_copy.NOT_COPIED)
    for location in (tmp_path / "fresh.db", pg_url):
        Database.open(location).close()
        with raw_sql(location) as sql:
            if isinstance(db_location(location), ServerDatabase):
                found = {
                    r[0]
                    for r in sql.execute(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                    )
                }
            else:
                found = {
                    r[0]
                    for r in sql.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                    if not r[0].startswith(("sqlite_", "node_fts_"))
                }
        assert found - decided == set(), f"decide whether clonechat db copy copies {sorted(found - decided)}"
    assert set(store_copy.COPIED_TABLES) <= set(SQLModel.metadata.tables)


def test_a_row_the_destination_cannot_hold_stops_the_copy_in_one_line(pilot: Path, new_pg: Callable[[], str]) -> None:
    """SQLite's integers have 64 bits, PostgreSQL's ``integer`` 32: a seed given by hand can be
    too big for the server. The copy stops there, saying so; what it copied is whole dialogues."""
    with raw_sql(pilot) as sql:
        (last,) = sql.execute("SELECT max(dialogue_id) FROM v_dialogue WHERE experiment = :e", {"e": PILOT}).one()
        sql.execute("UPDATE dialogue SET seed = :s WHERE id = :d", {"s": 2**40, "d": last})
    server = new_pg()
    result = copy(pilot, server, PILOT)
    line = one_error_line(result)
    assert f"copying {PILOT!r} from {pilot} into {db_location(server)} stopped: " in line
    assert "out of range" in line and "run the copy again" in line
    copied = dump(server)
    assert last not in {r[0] for r in copied["dialogue"]}
    assert {r[1] for r in copied["node"]} == {r[0] for r in copied["dialogue"]}
