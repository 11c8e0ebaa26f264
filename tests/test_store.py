"""The store against real SQLite files: writer, recorder, reads and bad files."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sqlalchemy import Connection, text

from clonechat.engine.dialogue import run_dialogue
from clonechat.engine.events import fan_out
from clonechat.errors import StoreError
from clonechat.location import DbLocation
from clonechat.providers.scripted import ScriptedProvider
from clonechat.read.dialogues import dialogue_summaries, prompt_text, resolve_dialogue
from clonechat.read.paths import dialogue_path
from clonechat.registry import ProviderPool
from clonechat.session import DialogueRequest, load_dialogue, prepare_dialogue
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer
from tests.conftest import on_both_backends, sqlite_only
from tests.helpers import EventLog, raw_sql

pytestmark = [pytest.mark.anyio, on_both_backends]


def scripted_pool(**kwargs: object) -> ProviderPool:
    pool = ProviderPool()
    pool.add("scripted", ScriptedProvider(**kwargs))  # type: ignore[arg-type]
    return pool


async def test_dialogue_is_stored_and_read_back(db: Database) -> None:
    pool = scripted_pool()
    async with open_writer(db) as writer:
        prepared = await prepare_dialogue(writer, DialogueRequest(model_a="scripted", max_turns=4, seed=3), pool)
        outcome = await run_dialogue(prepared.settings, prepared.agents, prepared.path, Recorder(writer))

    dialogue = resolve_dialogue(db, prepared.dialogue_id[:10])
    assert dialogue.status == "completed"
    assert dialogue.stop_reason == "max_turns"
    assert dialogue.seed == 3
    stored = dialogue_path(db, dialogue)
    assert [n.kind for n in stored] == ["opening", "turn", "turn", "turn", "turn"]
    assert [n.content for n in stored] == [n.content for n in outcome.path]
    assert [n.id for n in stored] == [n.id for n in outcome.path]
    assert stored[1].model == "scripted"
    assert stored[1].completion_tokens is not None
    assert "instance of yourself" in prompt_text(db, dialogue.system_prompt_a)
    [summary] = dialogue_summaries(db)
    assert summary.turns == 4
    assert summary.condition == "clone-aware:scripted"


async def test_prompts_are_stored_once_by_hash(db: Database) -> None:
    pool = scripted_pool()
    async with open_writer(db) as writer:
        for _ in range(3):
            await prepare_dialogue(writer, DialogueRequest(model_a="scripted", max_turns=1), pool)
    with raw_sql(db.path) as conn:
        # clone-aware for A and B renders identically (same model), plus the opening.
        assert conn.execute("SELECT COUNT(*) FROM prompt").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM prompt_template").fetchone() == (2,)
        replicates = [r[0] for r in conn.execute("SELECT replicate FROM dialogue ORDER BY replicate")]
        firsts = [r[0] for r in conn.execute("SELECT first_speaker FROM dialogue ORDER BY replicate")]
    assert replicates == [1, 2, 3]
    assert firsts == ["A", "B", "A"]  # who speaks first alternates by replicate


async def test_interrupted_dialogue_keeps_turns_and_resumes(db: Database) -> None:
    pool = scripted_pool(delay=0.005)
    async with open_writer(db) as writer:
        prepared = await prepare_dialogue(writer, DialogueRequest(model_a="scripted", max_turns=8, seed=1), pool)
        log = EventLog()
        with anyio.move_on_after(0.12):
            await run_dialogue(prepared.settings, prepared.agents, prepared.path, fan_out(Recorder(writer), log))
    dialogue = resolve_dialogue(db, prepared.dialogue_id)
    assert dialogue.status == "interrupted"
    stored = dialogue_path(db, dialogue)
    done = len(stored) - 1
    assert 1 <= done < 8

    pool2 = scripted_pool()
    resumed = load_dialogue(db, prepared.dialogue_id, pool2)
    assert [n.id for n in resumed.path] == [n.id for n in stored]
    async with open_writer(db) as writer:
        await run_dialogue(resumed.settings, resumed.agents, resumed.path, Recorder(writer))
    final = dialogue_path(db, resolve_dialogue(db, prepared.dialogue_id))
    assert [n.turn_index for n in final] == list(range(9))
    with raw_sql(db.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM node WHERE kind='turn'").fetchone() == (8,)
        assert conn.execute("SELECT status FROM dialogue").fetchone() == ("completed",)


async def test_writer_drains_queue_when_cancelled(db: Database) -> None:
    """Everything handed to the writer is committed even if the surrounding scope is cancelled."""
    with anyio.CancelScope() as scope:
        async with open_writer(db) as writer:
            experiment_id = await writer.call(lambda conn: writes.ensure_experiment(conn, "drain"))
            for i in range(500):
                name = f"exp{i}"
                await writer.submit(lambda conn, name=name: writes.ensure_experiment(conn, name))
            scope.cancel()
            await anyio.sleep(1)  # cancelled here
    assert experiment_id
    with raw_sql(db.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM experiment").fetchone() == (501,)
    assert writer.committed_batches < 501  # batched, not one commit per write


async def test_inserts_are_idempotent(db: Database) -> None:
    pool = scripted_pool()
    async with open_writer(db) as writer:
        prepared = await prepare_dialogue(writer, DialogueRequest(model_a="scripted", max_turns=2), pool)
        outcome = await run_dialogue(prepared.settings, prepared.agents, prepared.path, Recorder(writer))
        # Replaying every node write (as a resume after a crash might) adds nothing.
        await writer.call(lambda conn: writes.insert_nodes(conn, outcome.path))
    with raw_sql(db.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM node").fetchone() == (3,)


async def test_failed_write_surfaces_as_store_error(db: Database) -> None:
    def bad(conn: Connection) -> None:
        conn.execute(text("INSERT INTO nonexistent VALUES (1)"))

    with pytest.raises(StoreError, match=r"write to .* failed"):
        async with open_writer(db) as writer:
            await writer.call(bad)


@sqlite_only("WAL is SQLite's")
def test_database_is_in_wal_mode(db: Database) -> None:
    with raw_sql(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@sqlite_only("a corrupt file")
def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    junk = b"this is not a database" * 100
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="is not a usable SQLite database"):
        Database.open(path)
    assert path.read_bytes() == junk  # nothing touched


def test_foreign_database_is_refused(db_path: DbLocation) -> None:
    if isinstance(db_path, Path):
        db_path.parent.mkdir(parents=True)
    with raw_sql(db_path) as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
    with pytest.raises(StoreError, match="not a clonechat one"):
        Database.open(db_path)
    with raw_sql(db_path) as conn:  # nothing added
        assert [r[0] for r in conn.execute("SELECT count(*) FROM mine")] == [0]


def test_newer_schema_is_refused(db_path: DbLocation) -> None:
    Database.open(db_path).close()
    with raw_sql(db_path) as conn:
        conn.execute("INSERT INTO clonechat_migrations VALUES (999, 'future', '2030-01-01')")
    with pytest.raises(StoreError, match="newer than this clonechat understands"):
        Database.open(db_path)


@sqlite_only("a file's folder")
def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create database folder"):
        Database.open(blocker / "sub" / "x.db")


def test_missing_dialogue_and_ambiguous_prefix(db: Database) -> None:
    with pytest.raises(StoreError, match="no dialogue with id"):
        resolve_dialogue(db, "NOPE")
