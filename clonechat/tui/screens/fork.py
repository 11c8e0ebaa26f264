"""The fork dialog: edit one message, the system prompts and the sampling parameters the
conversation continues with.

Loom-style branching: the edit never overwrites the message, it becomes a sibling of it, and
the dialogue grows a new branch from there; the original branch stays as it was. The screen
only collects the edit; the dialogue screen stores it and runs the continuation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Collapsible, Input, Label, Static, TextArea

from clonechat.engine.records import AgentName, NodeRecord


@dataclass(frozen=True)
class ForkEdit:
    """What the researcher asked for: the message's new text, parameter overrides, and the
    system prompts changed from those in force at the message (only those)."""

    content: str
    params: dict[str, float | int]
    system_prompts: dict[AgentName, str] = field(default_factory=dict)


class ForkScreen(ModalScreen[ForkEdit | None]):
    """Edit a message plus the system prompts, temperature and max_tokens, each prefilled with
    what the conversation ran with at that message."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Fork and continue"),
    ]

    def __init__(
        self, node: NodeRecord, temperature: float, max_tokens: int, system_prompts: Mapping[AgentName, str]
    ) -> None:
        super().__init__()
        self.node = node
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompts = dict(system_prompts)

    def compose(self) -> ComposeResult:
        label = "the opening" if self.node.kind == "opening" else f"turn {self.node.turn_index}"
        with VerticalScroll(id="fork-box"):
            yield Label(f"[b]Fork {escape(self.node.speaker)}'s {label}[/b]: the edit becomes a new branch")
            yield TextArea(self.node.content, id="fork-text")
            with Collapsible(title="System prompts (for the turns after this one)", id="fork-system"):
                for agent in ("A", "B"):
                    yield Label(f"{agent}'s system prompt")
                    yield TextArea(self.system_prompts.get(agent, ""), id=f"fork-system-{agent.lower()}")
            with Horizontal(id="fork-params"):
                yield Label("temperature")
                yield Input(str(self.temperature), type="number", id="fork-temperature")
                yield Label("max tokens")
                yield Input(str(self.max_tokens), type="integer", id="fork-max-tokens")
            yield Static("", id="fork-error")
            with Horizontal(id="fork-buttons"):
                yield Button("Fork and continue (ctrl+s)", variant="primary", id="fork-save")
                yield Button("Cancel (esc)", id="fork-cancel")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def edit(self) -> ForkEdit:
        """The form as a ForkEdit; raises ValueError with a message fit for the researcher."""
        content = self.query_one("#fork-text", TextArea).text
        if not content.strip():
            raise ValueError("the message is empty")
        try:
            temperature = float(self.query_one("#fork-temperature", Input).value)
            max_tokens = int(self.query_one("#fork-max-tokens", Input).value)
        except ValueError:
            raise ValueError("temperature must be a number and max tokens a whole number") from None
        if not 0 <= temperature <= 2:
            raise ValueError("temperature must be between 0 and 2")
        if max_tokens < 1:
            raise ValueError("max tokens must be at least 1")
        changed: dict[AgentName, str] = {}
        for agent in ("A", "B"):
            text = self.query_one(f"#fork-system-{agent.lower()}", TextArea).text
            if not text.strip():
                raise ValueError(f"{agent}'s system prompt is empty")
            if text != self.system_prompts.get(agent):
                changed[agent] = text
        return ForkEdit(content, {"temperature": temperature, "max_tokens": max_tokens}, changed)

    def action_save(self) -> None:
        try:
            edit = self.edit()
        except ValueError as exc:
            self.query_one("#fork-error", Static).update(f"[red]{escape(str(exc))}[/red]")
            return
        self.dismiss(edit)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#fork-save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#fork-cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
