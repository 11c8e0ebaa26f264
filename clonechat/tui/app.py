"""The ``clonechat`` terminal app: the shell every screen lives in.

The app owns what is the same on every screen: the database path, the key help panel (``?``),
the session's bookmarks (a dialogue keeps them when its screen is closed and opened again),
and the command palette (ctrl+p), whose entries come from the screen it was opened on (see
``clonechat.tui.screens.HasPaletteCommands``). Screens tell the app what the user wants with
messages, so they stay testable alone and the app decides which screen comes next.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import HelpPanel

from clonechat.location import DbLocation, db_location
from clonechat.measures import MeasureOptions, PredictionOptions
from clonechat.session import DialogueRequest
from clonechat.tui import data
from clonechat.tui.batch_launch import run_batch
from clonechat.tui.dialogue.bookmarks import Bookmarks
from clonechat.tui.screens import HasPaletteCommands, PaletteCommand
from clonechat.tui.screens.browser import BrowserScreen
from clonechat.tui.screens.dialogue import DialogueScreen
from clonechat.tui.screens.spec_prompt import SpecPrompt


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
        Binding("S", "scores", "Scores"),
        Binding("B", "batch", "Run batch"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, db_path: DbLocation | str) -> None:
        super().__init__()
        self.db_path = db_location(db_path)
        self.sub_title = str(db_path)
        #: Batches started from here and still running (their child processes).
        self.batches_running = 0
        #: The session's bookmarks, per dialogue: kept while dialogue screens come and go.
        self.bookmarks = Bookmarks()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Run a batch from a spec...", "Start clonechat batch in another process", self.action_batch)
        yield SystemCommand("Scores", "Prediction accuracy by turn and coordination results", self.action_scores)

    # -- scores ------------------------------------------------------------------------------

    def _experiment_in_view(self) -> tuple[str | None, str | None]:
        """The experiment (and dialogue) the user is looking at: the open dialogue's, else the
        browser's experiment filter, else the highlighted row's."""
        screen = self.screen
        if isinstance(screen, DialogueScreen) and screen.dialogue_id is not None:
            return data.experiment_of(self.db_path, screen.dialogue_id), screen.dialogue_id
        if isinstance(screen, BrowserScreen):
            query = screen.current_query()
            if query.experiment:
                return query.experiment, None
            highlighted = screen.highlighted_id()
            row = next((r for r in screen.rows if r.id == highlighted), None)
            return (row.experiment if row else None), None
        return None, None

    def action_scores(self) -> None:
        from clonechat.tui.screens.scores import ScoresScreen

        experiment, dialogue_id = self._experiment_in_view()
        if experiment is None:
            self.notify("Choose a dialogue or an experiment first", title="Scores", severity="warning")
            return
        self.push_screen(ScoresScreen(self.db_path, experiment=experiment, dialogue_id=dialogue_id))

    # -- batches -----------------------------------------------------------------------------

    def action_batch(self) -> None:
        self.push_screen(SpecPrompt(), self._start_batch)

    def _start_batch(self, spec: Path | None) -> None:
        if spec is None:
            return
        self.batches_running += 1
        self.notify(f"{spec} started in another process; its dialogues appear as they are stored", title="Batch")
        self.run_worker(self._run_batch(spec), group="batch", exit_on_error=False)

    async def _run_batch(self, spec: Path) -> None:
        refresher = self.set_interval(2.0, self._refresh_browser)
        try:
            result = await run_batch(spec, self.db_path)
        finally:
            refresher.stop()
            self.batches_running -= 1
        severity: SeverityLevel = "information" if result.exit_code == 0 else "error"
        self.notify(result.headline, title=f"Batch {spec.name} finished", severity=severity, timeout=10)
        self._refresh_browser()

    def _refresh_browser(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, BrowserScreen) and screen.is_mounted:
                screen.reload(refresh_facets=True)

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


def run_tui(db_path: DbLocation | str) -> None:
    """Run the app in this terminal until the user quits."""
    ClonechatApp(db_path).run()


__all__ = ["ClonechatApp", "ScreenCommands", "run_tui"]
