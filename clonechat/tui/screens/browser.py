"""The dialogue browser: every stored dialogue in a table, narrowed by filters as you change them.

All database work happens in a worker thread (``clonechat.tui.data``, which reads through the
read layer), so a large database or a batch holding the write lock never freezes the screen.
Each reload cancels the one before it (an exclusive worker), so only the answer to the latest
filters is ever shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import anyio.to_thread
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Select, Static

from clonechat.errors import ClonechatError
from clonechat.location import DbLocation
from clonechat.read.dialogues import DialogueSummary, Facets
from clonechat.tui import data
from clonechat.tui.screens import PaletteCommand

EMPTY_TEXT = "No dialogues yet — press [b]n[/b] to start a live clone dialogue on the embedded model"
NO_MATCH_TEXT = "No dialogue matches these filters — [b]esc[/b] clears them"
#: Typing in the search box waits this long for the next key before querying.
SEARCH_DEBOUNCE_S = 0.15
STATUS_STYLE = {
    "completed": "green",
    "running": "yellow",
    "pending": "dim",
    "interrupted": "magenta",
    "failed": "red",
}
COLUMNS = (
    ("id", "id"),
    ("experiment", "experiment"),
    ("condition", "condition"),
    ("rep", "replicate"),
    ("status", "status"),
    ("turns", "turns"),
    ("models", "models"),
    ("created (UTC)", "created"),
)


@dataclass(frozen=True)
class BrowseQuery:
    """The filters as they stand; equal queries are not run twice."""

    experiment: str | None = None
    condition: str | None = None
    status: str | None = None
    text: str | None = None


def _fetch(db_path: DbLocation, query: BrowseQuery, with_facets: bool) -> tuple[Facets | None, list[DialogueSummary]]:
    """Runs in a worker thread: the rows for ``query`` and, when asked, fresh facets."""
    found = data.facets(db_path) if with_facets else None
    rows = data.browse(
        db_path, experiment=query.experiment, condition=query.condition, status=query.status, text=query.text
    )
    return found, rows


def _selected(select: Select[str]) -> str | None:
    value = select.value
    return value if isinstance(value, str) else None


def row_cells(row: DialogueSummary) -> tuple[str | Text, ...]:
    """One table row. The id is shown whole: ULIDs made in one batch differ only at the end,
    so any prefix short enough to save space would be ambiguous for ``clonechat show``."""
    models = row.model_a if row.model_a == row.model_b else f"{row.model_a} / {row.model_b}"
    return (
        row.id,
        row.experiment,
        row.condition,
        str(row.replicate),
        Text(row.status, style=STATUS_STYLE.get(row.status, "")),
        Text(str(row.turns), justify="right"),
        models,
        row.created_at.strftime("%Y-%m-%d %H:%M"),
    )


class BrowserScreen(Screen[None]):
    """Browse, filter and pick stored dialogues."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=False),
        Binding("r", "refresh", "Refresh"),
        Binding("n", "new_dialogue", "New dialogue"),
        Binding("slash", "focus_search", "Search"),
        Binding("escape", "clear_filters", "Clear filters"),
    ]

    class DialogueChosen(Message):
        """The user picked a dialogue to open (Enter or a click on its row)."""

        def __init__(self, dialogue_id: str) -> None:
            self.dialogue_id = dialogue_id
            super().__init__()

    class NewDialogueRequested(Message):
        """The user asked to start a new live dialogue (``n``)."""

    def __init__(self, db_path: DbLocation) -> None:
        super().__init__()
        self.db_path = db_path
        self.facets: Facets | None = None
        self.rows: list[DialogueSummary] = []
        self._facets_stale = True
        self._shown: BrowseQuery | None = None
        self._search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            yield Select[str]([], prompt="experiment", id="experiment")
            yield Select[str]([], prompt="condition", id="condition")
            yield Select[str]([], prompt="status", id="status")
            yield Input(placeholder="search turns…", id="search")
        yield DataTable[str | Text](id="dialogues", cursor_type="row", zebra_stripes=True)
        yield Static(EMPTY_TEXT, id="empty")
        yield Static("loading…", id="summary")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#dialogues", DataTable)
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        self.query_one("#empty").display = False
        table.focus()
        self.reload(refresh_facets=True)

    # -- loading -----------------------------------------------------------------------------

    def current_query(self) -> BrowseQuery:
        text = self.query_one("#search", Input).value.strip()
        return BrowseQuery(
            experiment=_selected(self.query_one("#experiment", Select)),
            condition=_selected(self.query_one("#condition", Select)),
            status=_selected(self.query_one("#status", Select)),
            text=text or None,
        )

    @property
    def settled(self) -> bool:
        """The table shows the answer to the filters as they are now (tests wait on this)."""
        return not self._facets_stale and self._shown is not None and self._shown == self.current_query()

    def reload(self, *, refresh_facets: bool = False) -> None:
        """Query again for the current filters, unless that is what is already shown."""
        if refresh_facets:
            self._facets_stale = True
        query = self.current_query()
        if query == self._shown and not self._facets_stale:
            return
        self._load(query)

    @work(exclusive=True, group="browse")
    async def _load(self, query: BrowseQuery) -> None:
        with_facets = self._facets_stale
        self.query_one("#summary", Static).update("loading…")
        try:
            found, rows = await anyio.to_thread.run_sync(
                partial(_fetch, self.db_path, query, with_facets), abandon_on_cancel=True
            )
        except ClonechatError as exc:
            self.query_one("#summary", Static).update(Text(str(exc), style="red"))
            self.notify(str(exc), title="Cannot read the database", severity="error")
            return
        if found is not None:
            self._apply_facets(found)
        if query != self.current_query():
            # Facets just changed the filters (a value that no longer exists): load again.
            self._load(self.current_query())
            return
        self._show_rows(query, rows)

    def _apply_facets(self, facets: Facets) -> None:
        """New filter options, keeping each filter's value while it still exists."""
        self.facets = facets
        self._facets_stale = False
        self._set_options("#experiment", facets.experiments)
        self._set_options("#condition", facets.conditions(_selected(self.query_one("#experiment", Select))))
        self._set_options("#status", facets.statuses)

    def _set_options(self, selector: str, values: Sequence[str]) -> None:
        select: Select[str] = self.query_one(selector, Select)
        keep = _selected(select)
        with self.prevent(Select.Changed):
            select.set_options((value, value) for value in values)
            if keep is not None and keep in values:
                select.value = keep

    def _show_rows(self, query: BrowseQuery, rows: list[DialogueSummary]) -> None:
        table: DataTable[str | Text] = self.query_one("#dialogues", DataTable)
        keep = self.highlighted_id()
        self.rows = rows
        self._shown = query
        table.clear()
        for row in rows:
            table.add_row(*row_cells(row), key=row.id)
        ids = [row.id for row in rows]
        if keep in ids:
            table.move_cursor(row=ids.index(keep))
        total = self.facets.total if self.facets is not None else len(rows)
        empty = self.query_one("#empty", Static)
        empty.display = total == 0 or not rows
        empty.update(EMPTY_TEXT if total == 0 else NO_MATCH_TEXT)
        table.display = total > 0
        filtered = query != BrowseQuery()
        summary = f"{len(rows)} of {total} dialogues" if filtered else f"{total} dialogues"
        if total == 0:
            summary = ""  # the empty state says it all
        elif len(rows) >= data.DEFAULT_LIMIT:
            summary += f" (showing the newest {data.DEFAULT_LIMIT}: filter to see others)"
        self.query_one("#summary", Static).update(summary)

    def highlighted_id(self) -> str | None:
        """The dialogue under the table's cursor, if any."""
        table: DataTable[str | Text] = self.query_one("#dialogues", DataTable)
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row].id

    # -- filters -----------------------------------------------------------------------------

    @on(Select.Changed, "#experiment")
    def _experiment_changed(self) -> None:
        if self.facets is not None:
            self._set_options("#condition", self.facets.conditions(_selected(self.query_one("#experiment", Select))))
        self.reload()

    @on(Select.Changed, "#condition, #status")
    def _filter_changed(self) -> None:
        self.reload()

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DEBOUNCE_S, self.reload)

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self.reload()
        self.query_one("#dialogues", DataTable).focus()

    # -- actions -----------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#dialogues")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.DialogueChosen(event.row_key.value))

    def action_open(self) -> None:
        """Enter anywhere but the table (which handles it itself) opens the highlighted dialogue."""
        if (dialogue_id := self.highlighted_id()) is not None:
            self.post_message(self.DialogueChosen(dialogue_id))

    def action_refresh(self) -> None:
        self.reload(refresh_facets=True)

    def on_screen_resume(self) -> None:
        """Back from a dialogue (which may have added one, or changed statuses): reload."""
        if self.is_mounted and self.query("#dialogues"):
            self.reload(refresh_facets=True)

    def action_new_dialogue(self) -> None:
        self.post_message(self.NewDialogueRequested())

    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_clear_filters(self) -> None:
        """Back to everything: blank selects and search box, then one reload."""
        with self.prevent(Select.Changed, Input.Changed):
            for selector in ("#experiment", "#condition", "#status"):
                self.query_one(selector, Select).clear()
            self.query_one("#search", Input).value = ""
        if self.facets is not None:
            self._set_options("#condition", self.facets.conditions())
        self.query_one("#dialogues", DataTable).focus()
        self.reload()

    def action_pick_filter(self, selector: str) -> None:
        """Open one filter's drop-down (for the command palette)."""
        select: Select[str] = self.query_one(selector, Select)
        select.focus()
        select.action_show_overlay()

    def palette_commands(self) -> Sequence[PaletteCommand]:
        return (
            PaletteCommand("Refresh", "Read the database again (r)", self.action_refresh),
            PaletteCommand(
                "Filter by experiment...", "Choose an experiment", partial(self.action_pick_filter, "#experiment")
            ),
            PaletteCommand(
                "Filter by condition...", "Choose a condition", partial(self.action_pick_filter, "#condition")
            ),
            PaletteCommand("Filter by status...", "Choose a status", partial(self.action_pick_filter, "#status")),
            PaletteCommand(
                "Search turns...", "Find dialogues by the text of their turns (/)", self.action_focus_search
            ),
            PaletteCommand("Clear filters", "Show every dialogue again (esc)", self.action_clear_filters),
            PaletteCommand("New dialogue", "Start a live clone dialogue (n)", self.action_new_dialogue),
        )
