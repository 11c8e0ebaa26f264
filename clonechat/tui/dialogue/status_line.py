"""The status line under the transcript: the last thing that happened, then where the
selection is (its branch, its bookmark, a comparison half made)."""

from __future__ import annotations

from rich.markup import escape
from textual.widgets import Static


class StatusLine(Static):
    """Keeps the last message, so the "where" part can change without it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.message = ""

    def say(self, message: str | None, where: list[str]) -> None:
        """``message`` (``None``: the last one again), then the ``where`` parts."""
        if message is not None:
            self.message = message
        self.update(" · ".join([escape(self.message), *where] if self.message else where))
