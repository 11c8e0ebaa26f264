"""The dialogue screen with Textual's Pilot: a live dialogue (scripted model) streams into the
transcript, predictions appear beside their turn once it lands, pause is gentle and resumes,
stop abandons the turn being written (real model), and a stored dialogue opens with its
predictions."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from textual.widgets import Static

from clonechat.branching import fork_with_edit
from clonechat.measures import MeasureOptions, PredictionOptions
from clonechat.session import DialogueRequest
from clonechat.store.database import Database
from clonechat.tui.live import LiveDialogue, UiEvent
from clonechat.tui.screens.compare import CompareScreen
from clonechat.tui.screens.dialogue import DialogueScreen
from clonechat.tui.screens.fork import ForkScreen
from clonechat.tui.transcript_source import SqlitePathSource
from clonechat.tui.widgets.transcript import TranscriptView
from tests.tui_helpers import Host, wait_for_workers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


def request(turns: int) -> DialogueRequest:
    return DialogueRequest(
        model_a="scripted",
        max_turns=turns,
        seed=5,
        measures=MeasureOptions(prediction=PredictionOptions(self_predict=True)),
    )


async def test_live_dialogue_streams_and_reveals_predictions_after_each_turn(tmp_path: Path) -> None:
    screen = DialogueScreen(tmp_path / "r.db", request=request(4))
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_workers(app)
        await pilot.pause()
        transcript = screen.query_one(TranscriptView)
        assert transcript.node_count == 5  # the opening and 4 turns
        assert len(screen.scored) == 4
        panel = str(screen.query_one("#predictions", Static).render())
        assert "predicted by" in panel and "chrF" in panel
        assert "completed" in str(screen.query_one("#status", Static).render())
        # Selecting an earlier turn shows that turn's predictions.
        transcript.focus()
        transcript.select_node(2)
        await pilot.pause()
        first_turn = transcript.node_at(1)
        panel = str(screen.query_one("#predictions", Static).render())
        second = screen.scored[transcript.node_at(2).id]
        assert second.predictions[0].prediction.content.split()[0] in panel
        assert first_turn.id in screen.scored


async def test_pause_finishes_the_turn_and_p_again_resumes(tmp_path: Path) -> None:
    screen = DialogueScreen(tmp_path / "r.db", request=request(40))
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        while screen.query_one(TranscriptView).node_count < 3:
            await pilot.pause(0.01)
        await pilot.press("p")
        await wait_for_workers(app)
        await pilot.pause()
        assert "paused after" in str(screen.query_one("#status", Static).render())
        paused_at = screen.query_one(TranscriptView).node_count
        assert paused_at < 41
        with closing(sqlite3.connect(tmp_path / "r.db")) as conn:
            stored = conn.execute("SELECT status, stop_reason FROM dialogue").fetchone()
            turns = conn.execute("SELECT COUNT(*) FROM node WHERE kind IN ('opening', 'turn')").fetchone()[0]
        assert stored == ("interrupted", "stopped") and turns == paused_at
        await pilot.press("p")
        await wait_for_workers(app)
        await pilot.pause()
        assert "completed" in str(screen.query_one("#status", Static).render())
        assert screen.query_one(TranscriptView).node_count == 41


@pytest.mark.model
async def test_stop_abandons_the_turn_being_written_and_keeps_the_rest(tmp_path: Path) -> None:
    """On the real embedded model, so the stop lands while tokens are streaming."""
    db = tmp_path / "r.db"
    live = DialogueRequest(model_a="local", max_turns=20, max_tokens=200, seed=3)
    screen = DialogueScreen(db, request=live)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        transcript = screen.query_one(TranscriptView)
        deadline = time.monotonic() + 60
        while not (transcript.node_count >= 2 and screen._stream) and time.monotonic() < deadline:
            await pilot.pause(0.01)
        assert screen._stream, "no turn was streaming"
        await pilot.press("s")
        await wait_for_workers(app)
        await pilot.pause()
        assert "interrupted (cancelled)" in str(screen.query_one("#status", Static).render())
        shown = [transcript.node_at(i).content for i in range(transcript.node_count)]
    with closing(sqlite3.connect(db)) as conn:
        stored = conn.execute("SELECT status, stop_reason FROM dialogue").fetchone()
        contents = [
            r[0] for r in conn.execute("SELECT content FROM node WHERE kind IN ('opening', 'turn') ORDER BY turn_index")
        ]
    assert stored == ("interrupted", "cancelled")
    assert contents == shown and len(contents) < 21  # every finished turn, and no partial one


async def test_a_stored_dialogue_opens_with_its_predictions(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    live = DialogueScreen(db, request=request(3))
    app = Host(live)
    async with app.run_test(size=(120, 40)):
        await wait_for_workers(app)
        dialogue_id = live.dialogue_id
    assert dialogue_id is not None
    stored = DialogueScreen(db, dialogue_id=dialogue_id[:10])
    app = Host(stored)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        transcript = stored.query_one(TranscriptView)
        assert transcript.node_count == 4
        assert stored.loader is not None
        await stored.loader.wait()
        await pilot.pause()
        assert len(stored.predicted) == 3
        # Shown (and so scored) for the last turn, where the reader is.
        assert "predicted by" in str(stored.query_one("#predictions", Static).render())
        assert list(stored.scored) == [transcript.node_at(3).id]
        transcript.focus()
        transcript.select_node(3)
        await pilot.pause()
        assert "predicted by" in str(stored.query_one("#predictions", Static).render())


async def ignore(_event: UiEvent) -> None:
    pass


def database_files(directory: Path) -> dict[str, bytes]:
    """The database and its write-ahead log, byte for byte. Left out: ``-shm`` (a reader's
    index of the log, which any reader may touch, not data) and an empty log (SQLite opens
    one for a reader of a WAL database; with no frames in it, nothing was written)."""
    files = sorted(p for p in directory.iterdir() if not p.name.endswith("-shm"))
    return {p.name: p.read_bytes() for p in files if p.stat().st_size or not p.name.endswith("-wal")}


async def test_browsing_a_stored_dialogue_leaves_the_database_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a dialogue, reading its predictions, moving between branches, bookmarking,
    comparing and opening the fork dialog without saving are all display: the writer (which
    migrates, in an IMMEDIATE transaction) is never opened, and not one byte of the file changes."""
    directory = tmp_path / "runs"
    directory.mkdir()
    db = directory / "r.db"
    with Database.open(db) as database:
        live = LiveDialogue(database, ignore)
        await live.start(request(3))
        dialogue_id = live.dialogue_id
        assert dialogue_id is not None
        original = SqlitePathSource(database, dialogue_id).ids
        fork = await fork_with_edit(database, original[2], "an edited second turn")
        await LiveDialogue(database, ignore).resume(dialogue_id, leaf_id=fork.id)
    before = database_files(directory)

    def refuse(*_args: object, **_kwargs: object) -> Database:
        raise AssertionError("the writer was opened to display a dialogue")

    monkeypatch.setattr(Database, "open", refuse)
    screen = DialogueScreen(db, dialogue_id=dialogue_id)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert screen.loader is not None
        await screen.loader.wait()
        await pilot.pause()
        assert len(screen.predicted) == 4  # 3 turns, then the one the edit continued with
        assert "predicted by" in str(screen.query_one("#predictions", Static).render())
        view = screen.query_one(TranscriptView)
        view.focus()
        view.select_node(2)
        await pilot.pause()
        await pilot.press("left_square_bracket", "b", "right_square_bracket", "left", "right", "l", "apostrophe")
        await pilot.pause()
        assert view.node_at(2).id == original[2] and "★ bookmarked" in str(screen.query_one("#status").render())
        await pilot.press("v", "right_square_bracket", "v")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("f")  # the fork dialog, prefilled from the database, then cancelled
        await pilot.pause()
        assert isinstance(app.screen, ForkScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
    assert database_files(directory) == before


WATCHED_SPEC = """\
name = "watched"
replicates = 1
max_turns = 40
seed = 2
model_a = "scripted"

[prediction]

[[conditions]]
template = "clone-aware"
"""


ROOT = Path(__file__).resolve().parent.parent


def start_watched_batch(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, str]:
    """A batch in another process (the crash-test driver: scripted turns of 30-80 ms), and the
    id of its dialogue once the plan is stored."""
    spec, db = tmp_path / "watched.toml", tmp_path / "r.db"
    spec.write_text(WATCHED_SPEC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash.driver", str(spec), "--db", str(db)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with closing(sqlite3.connect(db)) as conn:
                    row = conn.execute("SELECT id FROM dialogue").fetchone()
                if row:
                    return proc, db, str(row[0])
            except sqlite3.OperationalError:
                pass  # the schema is still being created
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the batch never stored its plan")


async def test_a_dialogue_another_process_is_running_updates_live(tmp_path: Path) -> None:
    """The batch writes the dialogue the screen shows; its turns and predictions appear as they
    are committed."""
    proc, db, dialogue_id = start_watched_batch(tmp_path)
    try:
        screen = DialogueScreen(db, dialogue_id=dialogue_id)
        app = Host(screen)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            transcript = screen.query_one(TranscriptView)
            at_open = transcript.node_count
            deadline = time.monotonic() + 60
            while transcript.node_count < 41 and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert transcript.node_count == 41, (at_open, transcript.node_count)
            assert at_open < 41, "the batch finished before the screen opened: nothing was watched"
            status = screen.query_one("#status", Static)
            deadline = time.monotonic() + 10
            while "completed" not in str(status.render()) and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert "completed" in str(status.render())
            # Every turn the screen saw land came with its prediction, scored.
            ids = [transcript.node_at(i).id for i in range(at_open, 41)]
            assert all(i in screen.scored for i in ids)
    finally:
        reap(proc)


def reap(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


async def test_the_app_opens_a_chosen_dialogue_and_comes_back(tmp_path: Path) -> None:
    """Browser -> Enter -> the dialogue screen with its transcript -> Escape -> the browser."""
    from clonechat.tui.app import ClonechatApp
    from clonechat.tui.screens.browser import BrowserScreen

    db = tmp_path / "r.db"
    live = DialogueScreen(db, request=request(2))
    host = Host(live)
    async with host.run_test(size=(120, 40)):
        await wait_for_workers(host)
    app = ClonechatApp(db)
    async with app.run_test(size=(120, 40)) as pilot:
        browser = app.screen
        assert isinstance(browser, BrowserScreen)
        while not browser.settled:
            await pilot.pause(0.02)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DialogueScreen)
        assert app.screen.query_one(TranscriptView).node_count == 3
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is browser


async def test_a_new_dialogue_started_from_the_browser_is_listed_on_return(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from clonechat.tui.app import ClonechatApp
    from clonechat.tui.screens.browser import BrowserScreen

    app = ClonechatApp(tmp_path / "r.db")
    async with app.run_test(size=(120, 40)) as pilot:
        browser = app.screen
        assert isinstance(browser, BrowserScreen)
        while not browser.settled:
            await pilot.pause(0.02)
        app.push_screen(DialogueScreen(tmp_path / "r.db", request=request(2)))
        await pilot.pause()
        await wait_for_workers(app)
        await pilot.press("escape")
        await pilot.pause()
        while not browser.settled:
            await pilot.pause(0.02)
        assert browser.query_one("#dialogues", DataTable).row_count == 1
