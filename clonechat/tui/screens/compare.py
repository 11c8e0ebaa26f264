"""Two branches of one dialogue side by side, aligned by turn, opened at their first difference.

Branches share their history up to the node they fork at, so the interesting part is where
they part: both transcripts select that turn, and the title says which it is.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from clonechat.read.connect import Readable
from clonechat.tui.transcript_source import SqlitePathSource
from clonechat.tui.widgets.transcript import TranscriptView


def divergence(left: SqlitePathSource, right: SqlitePathSource) -> int:
    """The first index where two paths hold different nodes (the shorter length if one path is
    a prefix of the other: the longer one simply went on).

    Two paths of one tree agree up to their fork and differ below it, so this walks up from
    the deepest index both have until the ids agree: it reads only as far up as the fork,
    not two whole paths (a branch made near the end of a 100,000-turn dialogue compares at once).
    """
    for index in range(min(len(left), len(right)) - 1, -1, -1):
        if left.id_at(index) == right.id_at(index):
            return index + 1
    return 0


class CompareScreen(Screen[None]):
    """Left and right branch, each in its own lazily paged transcript."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("tab", "focus_next", "Other side", show=False),
    ]

    def __init__(self, db: Readable, dialogue_id: str, left_leaf: str, right_leaf: str) -> None:
        super().__init__()
        self.left_source = SqlitePathSource(db, dialogue_id, leaf_id=left_leaf)
        self.right_source = SqlitePathSource(db, dialogue_id, leaf_id=right_leaf)
        self.divergence = divergence(self.left_source, self.right_source)

    def compose(self) -> ComposeResult:
        where = (
            f"the branches part at turn {self.divergence}"
            if self.divergence < max(len(self.left_source), len(self.right_source))
            else "the branches are the same"
        )
        yield Static(f"[b]Compare[/b] · {where} · esc returns", id="compare-title")
        with Horizontal(id="compare"):
            with Vertical():
                yield Static(f"left · {len(self.left_source)} nodes", classes="compare-label")
                yield TranscriptView(self.left_source, id="compare-left")
            with Vertical():
                yield Static(f"right · {len(self.right_source)} nodes", classes="compare-label")
                yield TranscriptView(self.right_source, id="compare-right")
        yield Footer()

    def on_mount(self) -> None:
        # After the first layout, so each side scrolls its divergent turn into view.
        self.call_after_refresh(self._select_divergence)

    def _select_divergence(self) -> None:
        for view in self.query(TranscriptView):
            view.select_node(self.divergence)
        self.query_one("#compare-left", TranscriptView).focus()

    def action_back(self) -> None:
        self.app.pop_screen()
