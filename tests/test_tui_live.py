"""The live-dialogue controller the TUI drives: events, predictions scored as each turn lands,
a gentle stop, resuming, and forking with an edit (scripted model, asyncio and trio)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from clonechat.branching import fork_with_edit
from clonechat.engine.events import NodeCompleted
from clonechat.measures import MeasureOptions, PredictionOptions
from clonechat.session import DialogueRequest
from clonechat.store.database import Database
from clonechat.tui.live import LiveDialogue, TurnScored, UiEvent

pytestmark = pytest.mark.anyio


def request(turns: int = 4) -> DialogueRequest:
    return DialogueRequest(
        model_a="scripted",
        max_turns=turns,
        seed=3,
        measures=MeasureOptions(prediction=PredictionOptions(self_predict=True)),
    )


async def test_turns_arrive_with_their_predictions_scored(db: Database) -> None:
    seen: list[UiEvent] = []

    async def sink(event: UiEvent) -> None:
        seen.append(event)

    outcome = await LiveDialogue(db, sink).start(request())
    assert outcome.status == "completed"
    scored = [e for e in seen if isinstance(e, TurnScored)]
    assert len(scored) == 4
    for event in scored:
        assert {p.prediction.variant for p in event.predictions} == {"partner", "self"}
        assert all(p.prediction.target_node_id == event.turn.id for p in event.predictions)
        for p in event.predictions:
            assert set(p.scores) == {"chrf", "token_f1", "first_word", "length_bucket"}
            assert all(v is None or 0.0 <= v <= 1.0 for v in p.scores.values())
    # Each TurnScored follows the NodeCompleted of its turn: predictions are revealed after.
    for event in scored:
        turn_at = next(i for i, e in enumerate(seen) if isinstance(e, NodeCompleted) and e.node.id == event.turn.id)
        assert seen.index(event) > turn_at


async def test_stop_then_resume_then_fork_with_an_edit(db: Database, db_path: Path) -> None:
    live: LiveDialogue

    async def stop_after_two(event: UiEvent) -> None:
        if isinstance(event, NodeCompleted) and event.node.kind == "turn" and event.node.turn_index == 2:
            live.stop()

    live = LiveDialogue(db, stop_after_two)
    stopped = await live.start(request(turns=4))
    assert (stopped.status, stopped.reason, len(stopped.turns)) == ("interrupted", "stopped", 2)
    assert live.dialogue_id is not None

    async def ignore(_event: UiEvent) -> None:
        return None

    resumed = await LiveDialogue(db, ignore).resume(live.dialogue_id)
    assert resumed.status == "completed" and [t.turn_index for t in resumed.turns] == [1, 2, 3, 4]

    second = resumed.turns[1]
    fork = await fork_with_edit(db, second.id, "An edited second message.")
    assert fork.parent_id == second.parent_id and fork.id != second.id
    branch = await LiveDialogue(db, ignore).resume(live.dialogue_id, leaf_id=fork.id)
    assert [t.content for t in branch.turns][:2] == [resumed.turns[0].content, "An edited second message."]
    assert len(branch.turns) == 4
    assert branch.turns[2].content != resumed.turns[2].content  # the branch continued from the edit
    with closing(sqlite3.connect(db_path)) as conn:
        # The original branch is untouched: both third turns are stored, as siblings' children.
        thirds = conn.execute("SELECT count(*) FROM node WHERE kind = 'turn' AND turn_index = 3").fetchone()[0]
        head = conn.execute("SELECT head_node_id FROM dialogue").fetchone()[0]
    assert thirds == 2
    assert head == branch.turns[-1].id
