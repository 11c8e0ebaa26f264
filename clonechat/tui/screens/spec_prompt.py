"""A small dialog asking for a batch spec file, validated before the dialog closes."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from clonechat.errors import ClonechatError
from clonechat.tui.batch_launch import check_spec


class SpecPrompt(ModalScreen[Path | None]):
    """Returns the spec's path once it validates, or ``None`` on escape. A bad spec shows its
    one-line error under the input and keeps the dialog open, so nothing starts by mistake."""

    DEFAULT_CSS = """
    SpecPrompt { align: center middle; }
    SpecPrompt > Vertical { width: 90; height: auto; border: thick $accent; padding: 1 2; background: $surface; }
    SpecPrompt #error { color: $error; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str = "runs/smoke.toml") -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Run a batch experiment from a spec file (it runs in another process):")
            yield Input(self.default, placeholder="runs/NAME.toml", id="spec")
            yield Static("", id="error")

    @on(Input.Submitted, "#spec")
    def _submitted(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip())
        try:
            check_spec(path)
        except ClonechatError as exc:
            self.query_one("#error", Static).update(str(exc))
            return
        self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
