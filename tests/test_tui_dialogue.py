"""The dialogue screen with Textual's Pilot: a live dialogue (scripted model) streams into the
transcript, predictions appear beside their turn once it lands, stop is gentle, and a stored
dialogue opens with its predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Static

from clonechat.measures import MeasureOptions, PredictionOptions
from clonechat.session import DialogueRequest
from clonechat.tui.screens.dialogue import DialogueScreen
from clonechat.tui.widgets.transcript import TranscriptView

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


class Host(App[None]):
    def __init__(self, screen: DialogueScreen) -> None:
        super().__init__()
        self._screen = screen

    def on_mount(self) -> None:
        self.push_screen(self._screen)


async def wait_for_workers(app: App[None]) -> None:
    await app.workers.wait_for_complete()


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


async def test_stop_is_gentle_and_continue_resumes(tmp_path: Path) -> None:
    screen = DialogueScreen(tmp_path / "r.db", request=request(40))
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        while screen.query_one(TranscriptView).node_count < 3:
            await pilot.pause(0.01)
        await pilot.press("s")
        await wait_for_workers(app)
        await pilot.pause()
        assert "interrupted (stopped)" in str(screen.query_one("#status", Static).render())
        stopped_at = screen.query_one(TranscriptView).node_count
        assert stopped_at < 41
        await pilot.press("c")
        await wait_for_workers(app)
        await pilot.pause()
        assert "completed" in str(screen.query_one("#status", Static).render())


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
        assert len(stored.scored) == 3
        transcript.focus()
        transcript.select_node(3)
        await pilot.pause()
        assert "predicted by" in str(stored.query_one("#predictions", Static).render())
