"""Snapshots of the dialogue screen and what opens from it: a stored dialogue with its
predictions, the other branch of a fork (the tree keys), the fork dialog and the branch
comparison. The database is built with fixed ids, times and texts so every run draws the same
screen; cursors do not blink in Textual's test mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection
from textual.app import App
from textual.pilot import Pilot

from clonechat.engine.records import NodeRecord, Speaker
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.tui.screens.dialogue import DialogueScreen
from clonechat.tui.widgets.transcript import TranscriptView

SIZE = (110, 32)
DIALOGUE = "01JVDSNAPSHOT0000000000001"
AT = datetime(2025, 5, 17, 9, 30)

TEXTS = [
    "You are talking with an exact copy of yourself. A researcher is watching.",
    "Hello, copy. Do you think we will say the same things?",
    "Probably. We share every weight, so our first guesses should match.",
    "Then let us test it: I am thinking of a number between one and ten.",
    "Seven. It is the number people pick most, and we learned from people.",
]
#: The fork: turn 2 rewritten by the researcher, then a different continuation.
FORK_TEXTS = [
    "I doubt it. Sampling makes us drift apart after a few words.",
    "Drift or not, I would still bet on seven.",
]


def node(index: int, parent: str | None, content: str, *, suffix: str = "", model: str | None = None) -> NodeRecord:
    speaker: Speaker = "researcher" if index == 0 else ("A" if index % 2 else "B")
    return NodeRecord(
        id=f"N{index}{suffix}".ljust(26, "0"),
        dialogue_id=DIALOGUE,
        parent_id=parent,
        speaker=speaker,
        kind="opening" if index == 0 else "turn",
        turn_index=index,
        content=content,
        model=None if index == 0 else (model or "SmolLM2-135M-Instruct-Q4_1"),
        completion_tokens=None if index == 0 or model else 12 + index,
        latency_ms=None if index == 0 or model else 400.0 + 10 * index,
        finish_reason=None if index == 0 or model else "stop",
        created_at=AT.replace(minute=index + (20 if suffix else 0)),
    )


def prediction(target: NodeRecord, parent: str, content: str) -> NodeRecord:
    partner: Speaker = "B" if target.speaker == "A" else "A"
    return NodeRecord(
        id=f"P{target.id[1:]}"[:26],
        dialogue_id=DIALOGUE,
        parent_id=parent,
        speaker=partner,
        kind="prediction",
        turn_index=target.turn_index,
        content=content,
        model="SmolLM2-135M-Instruct-Q4_1",
        target_node_id=target.id,
        variant="partner",
        created_at=target.created_at,
    )


def build(path: Path) -> None:
    main = [node(0, None, TEXTS[0])]
    for i, content in enumerate(TEXTS[1:], start=1):
        main.append(node(i, main[-1].id, content))
    fork = [node(2, main[1].id, FORK_TEXTS[0], suffix="F", model="researcher-edit")]
    fork.append(node(3, fork[0].id, FORK_TEXTS[1], suffix="F"))
    predictions = [
        prediction(main[3], main[2].id, "Let us test it: think of a number."),
        prediction(main[4], main[3].id, "Seven, because people pick seven most."),
    ]

    def fill(conn: Connection) -> None:
        sql = conn.exec_driver_sql
        at = AT.isoformat(sep=" ")
        sql("INSERT INTO experiment (id, name, created_at) VALUES ('E', 'adhoc', ?)", (at,))
        sql(
            "INSERT INTO condition (id, experiment_id, name, template, model_a, model_b, settings, created_at) "
            "VALUES ('C', 'E', 'clone-aware', 'clone-aware', 'local', 'local', '{}', ?)",
            (at,),
        )
        sql("INSERT INTO prompt_template (hash, kind, name, source, created_at) VALUES ('T', 'k', 'n', 's', ?)", (at,))
        sql(
            "INSERT INTO prompt (hash, template_hash, text, variables, created_at) VALUES ('P', 'T', ?, '{}', ?)",
            ("You are talking with an exact copy of yourself.", at),
        )
        params = {"temperature": 0.8, "max_tokens": 200}
        settings = json.dumps({"params_a": params, "params_b": params})
        sql(
            "INSERT INTO dialogue (id, condition_id, replicate, status, stop_reason, first_speaker, max_turns, "
            "model_a, model_b, system_prompt_a, system_prompt_b, opening_prompt, settings, created_at, updated_at) "
            "VALUES (?, 'C', 1, 'completed', 'max_turns', 'A', 4, 'local', 'local', 'P', 'P', 'P', ?, ?, ?)",
            (DIALOGUE, settings, at, at),
        )
        writes.insert_nodes(conn, [*main, *fork, *predictions])
        sql("UPDATE dialogue SET head_node_id = ? WHERE id = ?", (main[-1].id, DIALOGUE))

    with Database.open(path) as database:
        database.write(fill)


class Host(App[None]):
    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db

    def on_mount(self) -> None:
        self.push_screen(DialogueScreen(self.db, dialogue_id=DIALOGUE))


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    monkeypatch.chdir(tmp_path)
    build(Path("runs.db"))
    return Host(Path("runs.db"))


async def opened(pilot: Pilot[None]) -> DialogueScreen:
    screen = pilot.app.screen
    assert isinstance(screen, DialogueScreen) and screen.loader is not None
    await screen.loader.wait()
    await pilot.pause()
    return screen


async def select(pilot: Pilot[None], index: int) -> DialogueScreen:
    screen = await opened(pilot)
    view = screen.query_one(TranscriptView)
    view.focus()
    view.select_node(index)
    await pilot.pause()
    return screen


def test_snapshot_stored_dialogue_with_predictions(app: Host, snap_compare: Callable[..., bool]) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await opened(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_the_forked_branch(app: Host, snap_compare: Callable[..., bool]) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await select(pilot, 2)
        await pilot.press("right_square_bracket")  # the next sibling: the researcher's edit
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_fork_dialog(app: Host, snap_compare: Callable[..., bool]) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await select(pilot, 3)
        await pilot.press("f")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_compare_branches(app: Host, snap_compare: Callable[..., bool]) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await select(pilot, 2)
        await pilot.press("v", "right_square_bracket", "v")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
