"""The TUI shell and its dialogue browser, driven through Textual's Pilot on real databases."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session
from textual import on
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, HelpPanel, Input, Select, Static
from typer.testing import CliRunner

from clonechat.cli import app as cli_app
from clonechat.store.database import Database
from clonechat.store.models import Condition, Dialogue, Experiment, Node, Prompt, PromptTemplate
from clonechat.tui import data
from clonechat.tui.app import ClonechatApp
from clonechat.tui.screens.browser import EMPTY_TEXT, NO_MATCH_TEXT, BrowserScreen

pytestmark = pytest.mark.anyio

SIZE = (120, 36)
SPEC = """\
name = "{name}"
replicates = {replicates}
max_turns = 3
seed = {seed}
model_a = "scripted"

[[conditions]]
template = "clone-aware"
{more}"""
SECOND_CONDITION = """
[[conditions]]
template = "told-human"
"""


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="module")
def batch_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Experiment 'alpha' (two conditions x 3 replicates x 3 turns) and 'beta' (one dialogue),
    written by the real batch runner with the deterministic scripted model."""
    folder = tmp_path_factory.mktemp("browser")
    db = folder / "runs.db"
    for name, replicates, seed, more in (("alpha", 3, 7, SECOND_CONDITION), ("beta", 1, 11, "")):
        spec = folder / f"{name}.toml"
        spec.write_text(SPEC.format(name=name, replicates=replicates, seed=seed, more=more))
        result = CliRunner().invoke(cli_app, ["batch", str(spec), "--db", str(db)])
        assert result.exit_code == 0, result.output
    return db


class RecordingApp(ClonechatApp):
    """The app, keeping the browser's messages for the test to inspect."""

    def __init__(self, db_path: Path | str) -> None:
        super().__init__(db_path)
        self.chosen: list[str] = []
        self.new_requests = 0

    @on(BrowserScreen.DialogueChosen)
    def _record_chosen(self, message: BrowserScreen.DialogueChosen) -> None:
        self.chosen.append(message.dialogue_id)

    @on(BrowserScreen.NewDialogueRequested)
    def _record_new(self) -> None:
        self.new_requests += 1


async def wait_for(pilot: Pilot[None], predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the TUI"
        await pilot.pause(0.02)


def browser(pilot: Pilot[None]) -> BrowserScreen:
    screen = pilot.app.screen
    assert isinstance(screen, BrowserScreen)
    return screen


async def settle(pilot: Pilot[None]) -> BrowserScreen:
    """Wait until the browser shows the answer to its current filters."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, BrowserScreen) and pilot.app.screen.settled)
    await pilot.pause()
    return browser(pilot)


def shown_ids(screen: BrowserScreen) -> list[str]:
    table = screen.query_one("#dialogues", DataTable)
    return [str(key.value) for key in table.rows]


def db_rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return list(conn.execute(sql, params).fetchall())


def ids_where(db: Path, where: str = "1", *params: object) -> list[str]:
    """Dialogue ids matching ``where``, newest first, read without the code under test."""
    sql = (
        "SELECT d.id FROM dialogue d JOIN condition c ON c.id = d.condition_id "
        f"JOIN experiment e ON e.id = c.experiment_id WHERE {where} ORDER BY d.id DESC"
    )
    return [str(row[0]) for row in db_rows(db, sql, *params)]


async def test_table_lists_every_dialogue_newest_first(batch_db: Path) -> None:
    app = RecordingApp(batch_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        assert shown_ids(screen) == ids_where(batch_db)
        assert len(shown_ids(screen)) == 7
        first = screen.query_one("#dialogues", DataTable).get_row_at(0)
        assert [str(cell) for cell in first[1:6]] == ["beta", "clone-aware", "1", "completed", "3"]
        assert str(screen.query_one("#summary", Static).render()) == "7 dialogues"
        assert screen.facets is not None and screen.facets.experiments == ("alpha", "beta")


async def test_each_filter_narrows_the_table(batch_db: Path) -> None:
    app = RecordingApp(batch_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        experiment = screen.query_one("#experiment", Select)
        condition = screen.query_one("#condition", Select)
        status = screen.query_one("#status", Select)

        experiment.value = "alpha"
        screen = await settle(pilot)
        assert shown_ids(screen) == ids_where(batch_db, "e.name = 'alpha'")
        assert len(shown_ids(screen)) == 6
        # The condition filter offers only the chosen experiment's conditions.
        assert screen.facets is not None
        assert [value for _, value in condition._options if isinstance(value, str)] == ["clone-aware", "told-human"]

        condition.value = "told-human"
        screen = await settle(pilot)
        assert shown_ids(screen) == ids_where(batch_db, "e.name = 'alpha' AND c.name = 'told-human'")
        assert len(shown_ids(screen)) == 3
        assert str(screen.query_one("#summary", Static).render()) == "3 of 7 dialogues"

        experiment.value = "beta"  # told-human does not exist in beta: the condition filter clears
        screen = await settle(pilot)
        assert condition.is_blank()
        assert shown_ids(screen) == ids_where(batch_db, "e.name = 'beta'")

        await pilot.press("escape")
        screen = await settle(pilot)
        assert experiment.is_blank() and len(shown_ids(screen)) == 7

        status.value = "completed"
        screen = await settle(pilot)
        assert len(shown_ids(screen)) == 7  # every scripted dialogue completed
        assert [value for _, value in status._options if isinstance(value, str)] == ["completed"]


async def test_text_search_finds_dialogues_by_turn_content(batch_db: Path) -> None:
    # A reply that quotes its per-dialogue seed: the word is in some dialogues' turns only.
    content = str(db_rows(batch_db, "SELECT content FROM node WHERE kind = 'turn' ORDER BY id LIMIT 1")[0][0])
    word = content.split("(seed ")[1].split(",")[0]
    expected = ids_where(
        batch_db,
        "EXISTS (SELECT 1 FROM node n WHERE n.dialogue_id = d.id AND n.kind = 'turn' AND n.content LIKE ?)",
        f"%{word}%",
    )
    assert 0 < len(expected) < 7

    app = RecordingApp(batch_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*word)
        screen = await settle(pilot)
        assert shown_ids(screen) == expected

        # Letters typed into the search box are text, not the browser's keys (n, r, q).
        search = screen.query_one("#search", Input)
        search.value = ""
        await pilot.press(*"no run quits")
        screen = await settle(pilot)
        assert search.value == "no run quits" and app.new_requests == 0 and app.is_running
        assert shown_ids(screen) == []
        empty = screen.query_one("#empty", Static)
        assert empty.display and "No dialogue matches" in str(empty.render())
        assert NO_MATCH_TEXT.startswith("No dialogue matches")


async def test_enter_on_a_row_posts_dialogue_chosen(batch_db: Path) -> None:
    app = RecordingApp(batch_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        assert isinstance(app.focused, DataTable)
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert app.chosen == [shown_ids(screen)[2]]


async def test_empty_database_shows_empty_state_and_n_asks_for_a_dialogue(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    Database.open(db).close()
    app = RecordingApp(db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        empty = screen.query_one("#empty", Static)
        assert empty.display and not screen.query_one("#dialogues", DataTable).display
        assert "No dialogues yet" in str(empty.render()) and "press n" in str(empty.render())
        assert EMPTY_TEXT.startswith("No dialogues yet")
        await pilot.press("n")
        await pilot.pause()
        assert app.new_requests == 1


async def test_missing_database_is_empty_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "clonechat.db"
    app = RecordingApp(db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        assert screen.query_one("#empty", Static).display
    assert not db.parent.exists()


async def test_question_mark_toggles_the_help_panel(batch_db: Path) -> None:
    app = RecordingApp(batch_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen.query(HelpPanel)
        await pilot.press("question_mark")
        await pilot.pause()
        assert not app.screen.query(HelpPanel)


async def test_command_palette_lists_and_runs_the_browser_commands(batch_db: Path) -> None:
    app = RecordingApp(batch_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        commands = app.screen.query_one(CommandList)
        await wait_for(pilot, lambda: commands.option_count > 0)
        names = {str(option.prompt).splitlines()[0] for option in commands.options}
        assert {"Refresh", "Filter by experiment...", "Filter by status...", "New dialogue", "Quit"} <= names

        await pilot.press(*"filter by status", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))
        screen = browser(pilot)
        await wait_for(pilot, lambda: screen.query_one("#status", Select).expanded)


async def test_browsing_never_writes_the_database(batch_db: Path) -> None:
    def digest() -> str:
        return hashlib.sha256(batch_db.read_bytes()).hexdigest()

    before = digest()
    app = RecordingApp(batch_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        screen.query_one("#experiment", Select).value = "alpha"
        await settle(pilot)
        await pilot.press("slash", *"reply", "enter", "r")
        await settle(pilot)
    assert digest() == before
    assert data.browse(batch_db, text="REPLY TO") and digest() == before


def test_data_escapes_like_wildcards(batch_db: Path) -> None:
    assert len(data.browse(batch_db, text="reply%to")) == 0
    assert len(data.browse(batch_db, text="reply to")) == 7
    assert len(data.browse(batch_db, experiment="alpha", status="failed")) == 0
    assert len(data.browse(batch_db, limit=2)) == 2


# -- snapshots --------------------------------------------------------------------------------

FIXED = datetime(2025, 5, 17, 9, 30, tzinfo=UTC)


def fixed_database(path: Path) -> None:
    """A database with fixed ids and times (ULIDs and clocks would change every snapshot)."""
    with Database.open(path) as database, Session(database.writer_engine) as session:
        # No relationships are declared, so the unit of work does not order inserts: flush parents.
        session.add(PromptTemplate(hash="t", kind="condition", name="x", source="x", created_at=FIXED))
        session.flush()
        session.add(Prompt(hash="p", template_hash="t", text="You talk.", created_at=FIXED))
        session.add(Experiment(id="E1", name="pilot", created_at=FIXED))
        session.add(Experiment(id="E2", name="framing", created_at=FIXED))
        session.flush()
        plan = [("E1", "clone-aware", 1, "completed", 6), ("E1", "clone-aware", 2, "failed", 2)]
        plan += [("E1", "told-human", 1, "running", 3), ("E2", "no-framing", 1, "interrupted", 4)]
        for index, (experiment, condition, replicate, status, turns) in enumerate(plan, start=1):
            condition_id = f"{experiment}-{condition}"
            if session.get(Condition, condition_id) is None:
                session.add(
                    Condition(
                        id=condition_id,
                        experiment_id=experiment,
                        name=condition,
                        template=condition,
                        model_a="smollm2",
                        model_b="smollm2" if index < 4 else "qwen",
                        created_at=FIXED,
                    )
                )
                session.flush()
            dialogue_id = f"01JVD{index:021d}"
            session.add(
                Dialogue(
                    id=dialogue_id,
                    condition_id=condition_id,
                    replicate=replicate,
                    status=status,
                    first_speaker="A",
                    max_turns=6,
                    model_a="smollm2",
                    model_b="smollm2" if index < 4 else "qwen",
                    system_prompt_a="p",
                    system_prompt_b="p",
                    opening_prompt="p",
                    created_at=FIXED.replace(hour=9 + index),
                    updated_at=FIXED,
                )
            )
            session.flush()
            for turn in range(1, turns + 1):
                session.add(
                    Node(
                        id=f"{dialogue_id}-{turn}",
                        dialogue_id=dialogue_id,
                        parent_id=f"{dialogue_id}-{turn - 1}" if turn > 1 else None,
                        speaker="AB"[turn % 2],
                        kind="turn",
                        turn_index=turn,
                        content=f"turn {turn}",
                        created_at=FIXED,
                    )
                )
                session.flush()
            session.get_one(Dialogue, dialogue_id).head_node_id = f"{dialogue_id}-{turns}"
            session.flush()
        session.commit()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so the header shows a short relative database path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def _settled(pilot: Pilot[None]) -> None:
    screen = await settle(pilot)
    # The table sizes its columns to new rows on its next idle pass; a screenshot taken before
    # that (on a busy machine) would show them at their headers' widths.
    await wait_for(pilot, lambda: not any(t._require_update_dimensions for t in screen.query(DataTable)))
    await pilot.pause()


def test_snapshot_browser_with_dialogues(in_tmp: Path, snap_compare: Callable[..., bool]) -> None:
    fixed_database(in_tmp / "runs.db")
    assert snap_compare(ClonechatApp("runs.db"), terminal_size=SIZE, run_before=_settled)


def test_snapshot_browser_empty_state(in_tmp: Path, snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(ClonechatApp("runs.db"), terminal_size=SIZE, run_before=_settled)
