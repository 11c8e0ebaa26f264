"""The ``clonechat`` terminal app: the shell every screen lives in.

The app owns what is the same on every screen: the database path, the key help panel (``?``),
and the command palette (ctrl+p), whose entries come from the screen it was opened on (see
``clonechat.tui.screens.HasPaletteCommands``). Screens tell the app what the user wants with
messages, so they stay testable alone and the app decides which screen comes next.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widgets import HelpPanel

from clonechat.measures import MeasureOptions, PredictionOptions
from clonechat.session import DialogueRequest
from clonechat.tui.screens import HasPaletteCommands, PaletteCommand
from clonechat.tui.screens.browser import BrowserScreen
from clonechat.tui.screens.dialogue import DialogueScreen


class ScreenCommands(Provider):
    """Command palette entries of the screen the palette was opened on."""

    def _commands(self) -> list[PaletteCommand]:
        screen = self.screen
        # Textual's own provider adds Quit, Keys, Theme and Screenshot.
        return list(screen.palette_commands()) if isinstance(screen, HasPaletteCommands) else []

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.name, command.callback, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            if (score := matcher.match(command.name)) > 0:
                yield Hit(score, matcher.highlight(command.name), command.callback, help=command.help)


class ClonechatApp(App[None]):
    """Browse stored clone dialogues (and, later, watch live ones)."""

    TITLE = "clonechat"
    #: Absolute, since Textual resolves a relative path against the file of the (sub)class.
    CSS_PATH = Path(__file__).parent / "styles" / "app.tcss"
    COMMANDS = App.COMMANDS | {ScreenCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "toggle_help_panel", "Keys", key_display="?"),
        Binding("f1", "toggle_help_panel", "Keys", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, db_path: Path | str) -> None:
        super().__init__()
        self.db_path = Path(db_path)
        self.sub_title = str(db_path)

    def on_mount(self) -> None:
        self.push_screen(BrowserScreen(self.db_path))

    def action_toggle_help_panel(self) -> None:
        """``?`` shows the keys of the focused widget and screen; pressed again, hides them."""
        if self.screen.query(HelpPanel):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    @on(BrowserScreen.DialogueChosen)
    def _dialogue_chosen(self, message: BrowserScreen.DialogueChosen) -> None:
        self.push_screen(DialogueScreen(self.db_path, dialogue_id=message.dialogue_id))

    @on(BrowserScreen.NewDialogueRequested)
    def _new_dialogue(self) -> None:
        """A live clone dialogue on the embedded model, the partner predicting every message."""
        request = DialogueRequest(model_a="local", measures=MeasureOptions(prediction=PredictionOptions()))
        self.push_screen(DialogueScreen(self.db_path, request=request))


def run_tui(db_path: Path | str) -> None:
    """Run the app in this terminal until the user quits."""
    ClonechatApp(db_path).run()


__all__ = ["ClonechatApp", "ScreenCommands", "run_tui"]
