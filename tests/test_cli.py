"""The ``clonechat`` command run as a subprocess, as a user would."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

CLONECHAT = [sys.executable, "-m", "clonechat"]


def clonechat(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([*CLONECHAT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [[], ["run"], ["ls"], ["show"]])
def test_help(command: list[str]) -> None:
    result = clonechat(*command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout
    assert "--db" in result.stdout or not command


@pytest.mark.model
def test_run_then_ls_then_show(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    run = clonechat("run", "--turns", "3", "--max-tokens", "24", "--seed", "4", "--db", str(db))
    assert run.returncode == 0, run.stderr
    assert "A turn 1" in run.stdout and "B turn 2" in run.stdout and "A turn 3" in run.stdout
    assert "completed (max_turns) after 3 turns" in run.stdout
    with sqlite3.connect(db) as conn:
        (dialogue_id,) = conn.execute("SELECT id FROM dialogue").fetchone()
        contents = [r[0] for r in conn.execute("SELECT content FROM node WHERE kind='turn' ORDER BY turn_index")]
    assert len(contents) == 3

    listing = clonechat("ls", "--db", str(db))
    assert listing.returncode == 0
    assert dialogue_id in listing.stdout and "completed" in listing.stdout

    shown = clonechat("show", dialogue_id[:12], "--db", str(db), "--prompts")
    assert shown.returncode == 0, shown.stderr
    for content in contents:
        assert content.strip().splitlines()[0] in shown.stdout
    assert "SmolLM2-135M-Instruct-Q4_1" in shown.stdout
    assert "instance of yourself" in shown.stdout


@pytest.mark.model
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_keeps_finished_turns_and_marks_interrupted(tmp_path: Path, stop_signal: signal.Signals) -> None:
    db = tmp_path / "i.db"
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [*CLONECHAT, "run", "--turns", "30", "--max-tokens", "120", "--seed", "1", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        turns = 0
        while time.monotonic() < deadline and turns < 2:
            time.sleep(0.2)
            if db.exists():
                with sqlite3.connect(db) as conn:
                    try:
                        turns = conn.execute("SELECT COUNT(*) FROM node WHERE kind='turn'").fetchone()[0]
                    except sqlite3.OperationalError:
                        turns = 0
        assert turns >= 2, "two turns were stored before the interrupt"
        proc.send_signal(stop_signal)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    with sqlite3.connect(db) as conn:
        status, reason = conn.execute("SELECT status, stop_reason FROM dialogue").fetchone()
        stored = conn.execute("SELECT COUNT(*) FROM node WHERE kind='turn'").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert (status, reason) == ("interrupted", "cancelled")
    assert stored >= turns

    again = clonechat("run", "--model", "scripted", "--turns", "2", "--db", str(db))
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM dialogue").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM node WHERE kind='turn'").fetchone()[0] == stored + 2


def test_scripted_run_on_trio_backend(tmp_path: Path) -> None:
    result = clonechat(
        "run", "--model", "scripted", "--turns", "4", "--backend", "trio", "--db", str(tmp_path / "t.db")
    )
    assert result.returncode == 0, result.stderr
    assert "completed (max_turns) after 4 turns" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--condition", "nope"], 2, "unknown condition 'nope'"),
        (["--turns", "0"], 2, "--turns must be at least 1"),
        (["--model", "gpt-9"], 2, "unknown model 'gpt-9'"),
        (["--var", "colour=red"], 2, "unknown prompt variable 'colour'"),
        (["--var", "oops"], 2, "--var expects NAME=VALUE"),
        (["--first", "C"], 2, "--first must be A or B"),
        (["--temperature", "9"], 2, "--temperature must be between 0 and 2"),
    ],
)
def test_bad_run_arguments(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    db = tmp_path / "bad.db"
    first = clonechat("run", "--model", "scripted", "--turns", "1", "--db", str(db))
    assert first.returncode == 0
    before = db.read_bytes()
    result = clonechat("run", "--model", "scripted", *args, "--db", str(db))
    assert result.returncode == code
    assert message in one_error_line(result)
    assert db.read_bytes() == before  # refused before anything was written


def test_unwritable_db_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = clonechat("run", "--model", "scripted", "--db", str(blocker / "x.db"))
    assert result.returncode == 1
    assert "cannot create database folder" in one_error_line(result)


def test_corrupt_db_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"\x00garbage" * 512)
    before = db.read_bytes()
    for args, message in (
        (["run", "--model", "scripted"], "is not a usable SQLite database"),
        (["ls"], "file is not a database"),
    ):
        result = clonechat(*args, "--db", str(db))
        assert result.returncode == 1
        assert message in one_error_line(result)
    assert db.read_bytes() == before


def test_show_unknown_id_and_ls_missing_db(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    assert "no database at" in one_error_line(clonechat("ls", "--db", str(db)))
    assert not db.exists()
    clonechat("run", "--model", "scripted", "--turns", "1", "--db", str(db))
    result = clonechat("show", "ZZZZ", "--db", str(db))
    assert result.returncode == 1
    assert "no dialogue with id 'ZZZZ'" in one_error_line(result)


def test_db_from_environment(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    env = {**os.environ, "CLONECHAT_DB": str(db)}
    result = subprocess.run(
        [*CLONECHAT, "run", "--model", "scripted", "--turns", "1"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert db.exists()


def test_tui_refuses_an_unreadable_database_in_one_line_before_taking_the_terminal(tmp_path: Path) -> None:
    garbage = tmp_path / "corrupt.db"
    garbage.write_bytes(b"\x00garbage" * 512)
    before = garbage.read_bytes()
    for db, message in ((tmp_path, "is a directory"), (garbage, "file is not a database")):
        result = clonechat("tui", "--db", str(db), timeout=30)
        assert result.returncode == 1
        assert message in one_error_line(result)
        assert result.stdout == ""  # the app never started
    assert garbage.read_bytes() == before


def test_show_only_reads_the_database(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert clonechat("run", "--model", "scripted", "--turns", "3", "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        (dialogue_id,) = conn.execute("SELECT id FROM dialogue").fetchone()
        (turn_2,) = conn.execute("SELECT id FROM node WHERE turn_index = 2").fetchone()
    before = db.read_bytes()
    for args in ([], ["--prompts"], ["--node", turn_2]):
        shown = clonechat("show", dialogue_id[:10], *args, "--db", str(db))
        assert shown.returncode == 0, shown.stderr
        assert dialogue_id in shown.stdout and ("turn 3" in shown.stdout) == (not args or args == ["--prompts"])
        assert db.read_bytes() == before
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def older_database(path: Path) -> int:
    """An empty clonechat database one schema version behind this clonechat; its version."""
    from sqlalchemy import create_engine

    from clonechat.store import migrations

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        migrations.migrate(conn, target=migrations.SCHEMA_VERSION - 1)
    engine.dispose()
    return migrations.SCHEMA_VERSION - 1


def test_an_older_database_is_refused_by_every_display_command_and_upgraded_by_db_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    version = older_database(db)
    before = db.read_bytes()
    for args in (["ls"], ["show", "ZZZZ"], ["query", "select 1"], ["export", "adhoc"], ["search", "x"]):
        result = clonechat(*args, "--db", str(db))
        assert result.returncode == 1
        assert one_error_line(result) == (
            f"error: {db} has schema version {version}, this clonechat reads {version + 1}: "
            f"run 'clonechat db upgrade --db {db}' once to upgrade it"
        )
        assert db.read_bytes() == before, f"{args[0]} changed the file"
    upgraded = clonechat("db", "upgrade", "--db", str(db))
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"upgraded {db} from schema version {version} to {version + 1}"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT max(version) FROM clonechat_migrations").fetchone() == (version + 1,)
    again = clonechat("db", "upgrade", "--db", str(db))
    assert again.stdout.strip() == f"{db} is already at schema version {version + 1}"
    assert "no dialogues yet" in clonechat("ls", "--db", str(db)).stdout
    assert "no dialogue with id 'ZZZZ'" in one_error_line(clonechat("show", "ZZZZ", "--db", str(db)))


def test_db_upgrade_never_makes_a_database_of_a_missing_empty_or_foreign_file(tmp_path: Path) -> None:
    empty, foreign = tmp_path / "empty.db", tmp_path / "foreign.db"
    empty.write_bytes(b"")
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE mine (x)")
    assert one_error_line(clonechat("db", "upgrade", "--db", str(tmp_path / "missing.db"))) == (
        f"error: no database at {tmp_path / 'missing.db'}"
    )
    assert not (tmp_path / "missing.db").exists()
    assert "has no clonechat tables yet" in one_error_line(clonechat("db", "upgrade", "--db", str(empty)))
    assert empty.read_bytes() == b""
    assert "not a clonechat one" in one_error_line(clonechat("db", "upgrade", "--db", str(foreign)))


@pytest.mark.parametrize(
    "command",
    [["ls"], ["show", "ZZZZ"], ["query", "select 1"], ["search", "words"], ["keywords"], ["export", "adhoc"]],
)
def test_a_display_command_on_no_database_says_so_in_one_line(tmp_path: Path, command: list[str]) -> None:
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE t (x)")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00garbage" * 512)
    cases = [
        (tmp_path / "missing.db", "no database at"),
        (tmp_path, "is a directory"),
        (foreign, "is an SQLite database but not a clonechat one"),
        (garbage, "file is not a database"),
    ]
    contents = {path: path.read_bytes() for path in (foreign, garbage)}
    for db, message in cases:
        result = clonechat(*command, "--db", str(db))
        assert result.returncode == 1, (db, result.stdout, result.stderr)
        assert message in one_error_line(result), db
        assert result.stdout == ""
    assert not (tmp_path / "missing.db").exists()
    assert {path: path.read_bytes() for path in contents} == contents
