"""Messages more than one part of the dialogue screen posts (a part's own are nested in it).

A turn can land from a run in this process or from a batch in another one; either way the
screen shows it the same way, so both parts post the same messages.
"""

from __future__ import annotations

from textual.message import Message

from clonechat.engine.records import NodeRecord
from clonechat.tui.live import TurnScored


class TurnLanded(Message):
    """A conversation node (the opening or a turn) completed; it may not be committed yet."""

    def __init__(self, node: NodeRecord, *, live: bool) -> None:
        super().__init__()
        self.node = node
        #: From the run in this process (whose streamed text it replaces), not from a batch.
        self.live = live


class PredictionsScored(Message):
    """A turn's predictions, scored now that the turn they predict has landed."""

    def __init__(self, scored: TurnScored) -> None:
        super().__init__()
        self.scored = scored


class StatusChanged(Message):
    """What the status line should say now (the run's progress, the dialogue's status)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
