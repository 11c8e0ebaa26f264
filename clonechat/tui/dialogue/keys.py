"""The dialogue screen's keys, and its entries in the command palette (ctrl+p): every key's
action again, by name, so each is found without knowing the key."""

from __future__ import annotations

from typing import Protocol

from textual.binding import Binding, BindingType

from clonechat.tui.screens import PaletteCommand

#: In footer order.
BINDINGS: list[BindingType] = [
    Binding("p", "pause", "Pause/resume"),
    Binding("s", "stop", "Stop"),
    Binding("c", "continue", "Continue"),
    Binding("left_square_bracket", "prev_sibling", "Prev branch", key_display="["),
    Binding("right_square_bracket", "next_sibling", "Next branch", key_display="]"),
    Binding("left,h", "parent", "Parent", key_display="←/h"),
    Binding("right,l", "first_child", "Child", key_display="→/l"),
    Binding("f", "fork", "Fork"),
    Binding("b", "bookmark", "Bookmark"),
    Binding("apostrophe", "next_bookmark", "Next bookmark", key_display="'"),
    Binding("v", "compare", "Compare"),
    Binding("escape", "back", "Back"),
]


class DialogueActions(Protocol):
    """The dialogue screen's actions (the keys in parentheses below)."""

    def action_pause(self) -> None: ...
    def action_stop(self) -> None: ...
    def action_continue(self) -> None: ...
    def action_prev_sibling(self) -> None: ...
    def action_next_sibling(self) -> None: ...
    def action_parent(self) -> None: ...
    def action_first_child(self) -> None: ...
    def action_fork(self) -> None: ...
    def action_bookmark(self) -> None: ...
    def action_next_bookmark(self) -> None: ...
    def action_compare(self) -> None: ...
    def action_back(self) -> None: ...


def dialogue_commands(screen: DialogueActions) -> tuple[PaletteCommand, ...]:
    return (
        PaletteCommand(
            "Pause / resume", "Finish the turn being written, then pause; again to go on (p)", screen.action_pause
        ),
        PaletteCommand("Stop", "Stop now, discarding the turn being written (s)", screen.action_stop),
        PaletteCommand("Continue", "Continue the branch shown (c)", screen.action_continue),
        PaletteCommand(
            "Previous branch", "The previous sibling of the selected message ([)", screen.action_prev_sibling
        ),
        PaletteCommand("Next branch", "The next sibling of the selected message (])", screen.action_next_sibling),
        PaletteCommand("Parent", "The message the selected one answers (← / h)", screen.action_parent),
        PaletteCommand("First child", "The first reply to the selected message (→ / l)", screen.action_first_child),
        PaletteCommand(
            "Fork with an edit...", "Edit the selected message as a new branch and continue (f)", screen.action_fork
        ),
        PaletteCommand("Toggle bookmark", "Bookmark the selected message for this session (b)", screen.action_bookmark),
        PaletteCommand("Next bookmark", "Jump to the next bookmark (')", screen.action_next_bookmark),
        PaletteCommand(
            "Compare branches", "Mark this branch, then open the comparison with another (v)", screen.action_compare
        ),
        PaletteCommand("Back", "Return to the dialogue list (esc)", screen.action_back),
    )
