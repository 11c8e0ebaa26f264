"""The TUI's screens, and the small contract they share with the app's command palette."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable


class PaletteCommand(NamedTuple):
    """One entry a screen offers the command palette (ctrl+p)."""

    name: str
    help: str
    callback: Callable[[], object]


@runtime_checkable
class HasPaletteCommands(Protocol):
    """A screen whose own actions belong in the command palette.

    The palette asks the screen it was opened from, so each screen lists only what makes
    sense on it, and the app needs no knowledge of any screen's actions.
    """

    def palette_commands(self) -> Sequence[PaletteCommand]: ...


__all__ = ["HasPaletteCommands", "PaletteCommand"]
