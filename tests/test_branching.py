"""Forks a researcher makes (scripted model, real SQLite, asyncio and trio): the edit is a new
sibling, its overrides (generation parameters, system prompts) are stored on it, every later
continuation of that branch runs with them, and forks of forks inherit them."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from clonechat.branching import fork_with_edit, overrides_on, settings_at
from clonechat.engine.records import NodeRecord
from clonechat.errors import ConfigError, NotFoundError
from clonechat.prompts import content_hash
from clonechat.read.dialogues import prompt_text, resolve_dialogue
from clonechat.read.paths import node_record, path_to
from clonechat.registry import ProviderPool
from clonechat.session import DialogueRequest, load_dialogue
from clonechat.store.database import Database
from clonechat.tui.live import LiveDialogue, UiEvent

pytestmark = pytest.mark.anyio

NEW_PROMPT = "You are A. Answer in exactly three words."


async def ignore(_event: UiEvent) -> None:
    pass


def path_of(db: Database, leaf: str) -> list[NodeRecord]:
    return [node_record(n) for n in path_to(db, leaf)]


async def started(db: Database, turns: int = 4) -> tuple[str, list[NodeRecord]]:
    live = LiveDialogue(db, ignore)
    outcome = await live.start(DialogueRequest(model_a="scripted", max_turns=turns, seed=5))
    assert live.dialogue_id is not None
    return live.dialogue_id, list(outcome.path)


async def test_fork_stores_its_overrides_and_the_branch_runs_with_them(db: Database, db_path: Path) -> None:
    dialogue_id, original = await started(db)
    second = original[2]  # B's turn 2; A speaks turn 3 next
    plain = await fork_with_edit(db, second.id, "An edit.")
    prompted = await fork_with_edit(
        db, second.id, "An edit.", params={"temperature": 1.3, "max_tokens": 77}, system_prompts={"A": NEW_PROMPT}
    )
    assert plain.parent_id == prompted.parent_id == second.parent_id
    assert plain.model == prompted.model == "researcher-edit"
    plain_path = list((await LiveDialogue(db, ignore).resume(dialogue_id, leaf_id=plain.id)).path)
    prompted_path = list((await LiveDialogue(db, ignore).resume(dialogue_id, leaf_id=prompted.id)).path)

    # The scripted model's reply digests everything it was shown, system prompt included: the
    # same edit with A's new system prompt gives A a different turn 3, and B what follows.
    assert [n.turn_index for n in prompted_path] == [0, 1, 2, 3, 4]
    assert prompted_path[3].content != plain_path[3].content
    assert prompted_path[3].params["temperature"] == 1.3 and prompted_path[3].params["max_tokens"] == 77
    assert plain_path[3].params["temperature"] == original[3].params["temperature"]

    with closing(sqlite3.connect(db_path)) as conn:
        stored = conn.execute(
            "SELECT json_extract(params, '$.system_prompt_a'), json_extract(params, '$.system_prompt_b'),"
            " json_extract(params, '$.temperature') FROM node WHERE id = ?",
            (prompted.id,),
        ).fetchone()
        prompt = conn.execute(
            "SELECT p.text, t.kind FROM prompt p JOIN prompt_template t ON t.hash = p.template_hash WHERE p.hash = ?",
            (content_hash(NEW_PROMPT),),
        ).fetchone()
        original_rows = conn.execute(
            "SELECT id, content FROM node WHERE id IN (?, ?, ?, ?, ?)", [n.id for n in original]
        ).fetchall()
    assert stored == (content_hash(NEW_PROMPT), None, 1.3)
    assert prompt == (NEW_PROMPT, "researcher-edit")
    assert dict(original_rows) == {n.id: n.content for n in original}  # the original branch is untouched


async def test_a_later_resume_and_a_fork_of_the_fork_keep_the_overrides(db: Database) -> None:
    dialogue_id, original = await started(db, turns=6)
    dialogue = resolve_dialogue(db, dialogue_id)
    stored_b = prompt_text(db, dialogue.system_prompt_b)
    fork = await fork_with_edit(
        db, original[1].id, "Edited.", params={"temperature": 0.2}, system_prompts={"A": NEW_PROMPT}
    )

    prepared = load_dialogue(db, dialogue_id, ProviderPool(), leaf_id=fork.id)
    a, b = prepared.agents
    assert a.system_prompt == NEW_PROMPT and b.system_prompt == stored_b
    assert a.params.temperature == b.params.temperature == 0.2

    # Deeper down the branch, a second edit changes only the temperature: A's prompt stays.
    await LiveDialogue(db, ignore).resume(dialogue_id, leaf_id=fork.id)
    head = resolve_dialogue(db, dialogue_id).head_node_id
    assert head is not None
    below = path_of(db, head)[3]
    settings = settings_at(db, below.id)
    assert settings["A"].system_prompt == NEW_PROMPT and settings["A"].params.temperature == 0.2
    deeper = await fork_with_edit(db, below.id, "Edited again.", params={"temperature": 0.9})
    folded = overrides_on(path_of(db, deeper.id))
    assert folded.system_prompts == {"A": content_hash(NEW_PROMPT)}
    assert folded.params == {"temperature": 0.9}
    # The original branch still runs with the dialogue's own settings.
    plain = settings_at(db, original[-1].id)
    assert plain["A"].system_prompt == prompt_text(db, dialogue.system_prompt_a)
    assert plain["A"].params.temperature == original[-1].params["temperature"]


@pytest.mark.parametrize(
    ("params", "prompts", "message"),
    [
        ({"temprature": 1.0}, None, "unknown generation parameter: temprature"),
        ({"temperature": 3.0}, None, "temperature must be between 0 and 2"),
        ({"max_tokens": 0}, None, "max_tokens must be at least 1"),
        (None, {"B": "  "}, "the system prompt of B is empty"),
    ],
)
async def test_a_bad_fork_is_refused_and_stores_nothing(
    db: Database, db_path: Path, params: dict[str, float] | None, prompts: dict[str, str] | None, message: str
) -> None:
    _, original = await started(db, turns=2)
    with closing(sqlite3.connect(db_path)) as conn:
        before = conn.execute("SELECT COUNT(*) FROM node").fetchone()
    with pytest.raises(ConfigError, match=message):
        await fork_with_edit(db, original[1].id, "x", params=params, system_prompts=prompts)  # type: ignore[arg-type]
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM node").fetchone() == before


async def test_a_fork_of_an_unknown_node_is_refused_by_name(db: Database, db_path: Path) -> None:
    await started(db, turns=1)
    with closing(sqlite3.connect(db_path)) as conn:
        before = conn.execute("SELECT COUNT(*) FROM node").fetchone()
    with pytest.raises(NotFoundError, match="no node with id 'NOPE'"):
        await fork_with_edit(db, "NOPE", "x")
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM node").fetchone() == before
