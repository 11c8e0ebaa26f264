"""What the TUI tests and ``benchmarks/tui.py`` share: a host app for one screen, and a
synthetic conversation node."""

from __future__ import annotations

from textual.app import App
from textual.screen import Screen
from textual.worker import WorkerCancelled

from clonechat.engine.records import NodeRecord, Speaker

DIALOGUE = "D" * 26


class Host(App[None]):
    """An app that shows one screen, so a screen is tested without the browser in front."""

    def __init__(self, screen: Screen[None]) -> None:
        super().__init__()
        self._screen = screen

    def on_mount(self) -> None:
        self.push_screen(self._screen)


def make_node(index: int, parent: str | None, *, prefix: str = "N", content: str | None = None) -> NodeRecord:
    """Node ``index`` of a linear conversation in dialogue ``DIALOGUE``: the opening, then A and B
    in turn, with ids ``{prefix}0000…{index}`` that sort in order."""
    speaker: Speaker = "researcher" if index == 0 else ("A" if index % 2 else "B")
    return NodeRecord(
        id=f"{prefix}{index:025d}",
        dialogue_id=DIALOGUE,
        parent_id=parent,
        speaker=speaker,
        kind="opening" if index == 0 else "turn",
        turn_index=index,
        content=content if content is not None else f"message {index}: " + "lorem ipsum " * (index % 25),
        model=None if index == 0 else "tiny-model",
        completion_tokens=None if index == 0 else 10 + index % 7,
        latency_ms=None if index == 0 else 250.0,
        finish_reason=None if index == 0 else "stop",
    )


async def wait_for_workers(app: App[object]) -> None:
    """Until every worker of ``app`` has ended. A worker the test cancelled (``s`` stops a live
    dialogue) ends cancelled, and Textual's own wait raises for it when the worker is still
    listed; on a busy machine it often is. The others are waited for all the same."""
    try:
        await app.workers.wait_for_complete()
    except WorkerCancelled:
        await app.workers.wait_for_complete([worker for worker in app.workers if not worker.is_cancelled])
