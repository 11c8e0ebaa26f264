"""App-level actions with Pilot: running a batch from a spec (in another process, validated
first), opening the scores of what is in view, and the bookmarks the app keeps for the session."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from clonechat.session import DialogueRequest
from clonechat.store.database import Database
from clonechat.tui.app import ClonechatApp
from clonechat.tui.live import LiveDialogue, UiEvent
from clonechat.tui.screens.browser import BrowserScreen
from clonechat.tui.screens.dialogue import DialogueScreen
from clonechat.tui.screens.spec_prompt import SpecPrompt
from tests.tui_helpers import wait_for_workers

pytestmark = pytest.mark.anyio

SPEC = """\
name = "from-tui"
replicates = 2
max_turns = 3
seed = 4
model_a = "scripted"

[prediction]

[[conditions]]
template = "clone-aware"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


async def settle(pilot: object, browser: BrowserScreen) -> None:
    while not browser.settled:
        await pilot.pause(0.02)  # type: ignore[attr-defined]


async def test_a_batch_started_from_the_app_runs_in_another_process_and_lists_its_dialogues(tmp_path: Path) -> None:
    spec, bad = tmp_path / "from-tui.toml", tmp_path / "bad.toml"
    spec.write_text(SPEC)
    bad.write_text(SPEC.replace("max_turns = 3", "max_turns = 0"))
    app = ClonechatApp(tmp_path / "r.db")
    async with app.run_test(size=(120, 40)) as pilot:
        browser = app.screen
        assert isinstance(browser, BrowserScreen)
        await settle(pilot, browser)
        await pilot.press("B")
        await pilot.pause()
        prompt = app.screen
        assert isinstance(prompt, SpecPrompt)
        field = prompt.query_one(Input)
        field.value = str(bad)
        await pilot.press("enter")
        await pilot.pause()
        # A bad spec keeps the dialog open with the spec's one-line error; nothing starts.
        assert app.screen is prompt
        assert "max_turns" in str(prompt.query_one("#error", Static).render())
        assert app.batches_running == 0
        field.value = str(spec)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is browser
        await wait_for_workers(app)
        await pilot.pause()
        await settle(pilot, browser)
        assert browser.query_one("#dialogues", DataTable).row_count == 2
        assert app.batches_running == 0
        messages = [n.message for n in app._notifications]
        assert any("experiment from-tui: 2 dialogues (2 completed)" in m for m in messages), messages


async def ignore(_event: UiEvent) -> None:
    pass


async def test_bookmarks_are_the_apps_and_outlive_the_dialogue_screen(tmp_path: Path) -> None:
    """Bookmark a message, leave the dialogue and open it again: the bookmark is still there,
    held by this app (another app on the same database starts with none)."""
    db = tmp_path / "r.db"
    with Database.open(db) as database:
        live = LiveDialogue(database, ignore)
        await live.start(DialogueRequest(model_a="scripted", max_turns=3, seed=5))
    dialogue_id = live.dialogue_id
    assert dialogue_id is not None

    async def bookmark_then_reopen(app: ClonechatApp, *, mark: bool) -> str:
        async with app.run_test(size=(120, 40)) as pilot:
            browser = app.screen
            assert isinstance(browser, BrowserScreen)
            await settle(pilot, browser)
            await pilot.press("enter")
            await pilot.pause()
            if mark:
                await pilot.press("b")
                await pilot.pause()
            await pilot.press("escape", "enter")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, DialogueScreen)
            return str(screen.query_one("#status", Static).render())

    app = ClonechatApp(db)
    assert "★ 1 bookmark" in await bookmark_then_reopen(app, mark=True)
    assert len(app.bookmarks.of(dialogue_id)) == 1
    assert "bookmark" not in await bookmark_then_reopen(ClonechatApp(db), mark=False)
