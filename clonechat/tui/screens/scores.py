"""Scores of one experiment (or one dialogue): prediction accuracy by turn, and coordination.

The chart has one line per condition × prediction variant for the chosen scorer, and one dim
line per condition for its shuffled baseline (the same predictions scored against messages of
other dialogues), so "better than chance" is read off the gap between the two. All database work
runs in a worker thread (``clonechat.tui.scores_data``); a new scorer cancels the load before
it, so only the latest choice is ever drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import anyio.to_thread
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Select, Static
from textual_plotext import PlotextPlot

from clonechat.errors import ClonechatError
from clonechat.location import DbLocation, db_location
from clonechat.tui.scores_data import (
    DEFAULT_SCORER,
    CoordinationRow,
    MeasureRow,
    ScoresData,
    ScoresView,
    TurnMean,
    load_scores,
)
from clonechat.tui.screens import PaletteCommand

NOT_SCORED_TEXT = "Predictions not scored yet — run [b]clonechat score {experiment}[/b]"
NO_PREDICTIONS_TEXT = "No predictions here — turn on [b]\\[prediction][/b] in the experiment spec"
NO_COORDINATION_TEXT = "No coordination answers here"
MEASURE_COLUMNS = ("Measure", "Condition", "Value [95% CI]", "n (dialogues)", "Against")
#: Line colours, in order, for condition × variant series (fixed so snapshots are stable).
SERIES_COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow")
BASELINE_COLOR = "gray"
COORDINATION_COLUMNS = ("condition", "task", "phase", "pairs", "match rate", "chance", "match − chance")


@dataclass(frozen=True)
class PlottedSeries:
    """One line as drawn on the chart (kept so tests and the summary need not parse plotext)."""

    label: str
    turns: tuple[int, ...]
    values: tuple[float, ...]
    baseline: bool = False


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def coordination_cells(row: CoordinationRow) -> tuple[str | Text, ...]:
    """One table row; the excess over chance is green or red so the sign is seen at a glance."""
    excess = None if row.chance is None else row.match_rate - row.chance
    style = "" if excess is None or excess == 0 else ("green" if excess > 0 else "red")
    return (
        row.condition,
        row.task,
        row.phase,
        Text(str(row.pairs), justify="right"),
        Text(_rate(row.match_rate), justify="right"),
        Text(_rate(row.chance), justify="right"),
        Text("–" if excess is None else f"{excess:+.3f}", style=style, justify="right"),
    )


def series_for(view: ScoresView) -> list[PlottedSeries]:
    """The chart's lines: condition × variant for the scorer, then each condition's baseline."""

    def line(label: str, points: list[TurnMean], baseline: bool = False) -> PlottedSeries:
        return PlottedSeries(label, tuple(p.turn_index for p in points), tuple(p.mean for p in points), baseline)

    accuracy = view.accuracy
    out = [
        line(f"{condition} · {variant}", points)
        for condition, variants in accuracy.series.items()
        for variant, points in variants.items()
    ]
    out += [line(f"{condition} · shuffled", points, True) for condition, points in accuracy.baseline.items()]
    return out


class ScoresScreen(Screen[None]):
    """Prediction accuracy by turn and coordination results for an experiment or a dialogue."""

    CSS_PATH = Path(__file__).parent.parent / "styles" / "scores.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("r", "refresh", "Refresh"),
        Binding("s", "pick_scorer", "Scorer"),
    ]

    def __init__(
        self, db_path: DbLocation | str, *, experiment: str | None = None, dialogue_id: str | None = None
    ) -> None:
        super().__init__()
        self.db_path = db_location(db_path)
        self.experiment = experiment
        self.dialogue_id = dialogue_id
        self.view: ScoresView | None = None
        #: The last read of the database (every scorer), charted for the chosen scorer.
        self.loaded: ScoresData | None = None
        self.plotted: list[PlottedSeries] = []
        self.error: str | None = None
        self._loading: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="scores-bar"):
            yield Select[str]([(DEFAULT_SCORER, DEFAULT_SCORER)], value=DEFAULT_SCORER, allow_blank=False, id="scorer")
            yield Static("loading…", id="scores-summary")
        yield PlotextPlot(id="accuracy")
        yield Static("", id="scores-message")
        yield Static("Coordination: match rate vs chance", id="coordination-title")
        yield DataTable[str | Text](id="coordination", cursor_type="row", zebra_stripes=True)
        yield Static("", id="measures-title")
        yield DataTable[str | Text](id="measures", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#scores-message").display = False
        self.reload()

    # -- loading -----------------------------------------------------------------------------

    @property
    def scorer(self) -> str:
        value = self.query_one("#scorer", Select).value
        return value if isinstance(value, str) else DEFAULT_SCORER

    @property
    def settled(self) -> bool:
        """What is shown answers the scorer chosen now (tests wait on this)."""
        if self.error is not None:
            return self._loading is None
        return self._loading is None and self.view is not None and self.view.accuracy.scorer == self.scorer

    def reload(self) -> None:
        """Read the database again (every scorer's values, in one read)."""
        self._loading = self.scorer
        self._load()

    @work(exclusive=True, group="scores")
    async def _load(self) -> None:
        self.query_one("#scores-summary", Static).update("loading…")
        try:
            loaded = await anyio.to_thread.run_sync(
                partial(load_scores, self.db_path, self.experiment, self.dialogue_id), abandon_on_cancel=True
            )
        except ClonechatError as exc:
            self.error = str(exc)
            self._loading = None
            self.query_one("#scores-summary", Static).update(Text(str(exc), style="red"))
            self.notify(str(exc), title="Cannot read the scores", severity="error")
            return
        self.error = None
        self.loaded = loaded
        self._chart(self.scorer)
        self._loading = None

    def _chart(self, scorer: str) -> None:
        """Show ``scorer`` from what was read (the first scorer there is, if that one is not)."""
        assert self.loaded is not None
        if self.loaded.scorers and scorer not in self.loaded.scorers:
            scorer = self.loaded.scorers[0]  # e.g. surprisal was never run in this database
        self._show(self.loaded.view(scorer))

    def _set_scorers(self, scorers: Sequence[str], value: str) -> None:
        select: Select[str] = self.query_one("#scorer", Select)
        with self.prevent(Select.Changed):
            select.set_options((name, name) for name in (scorers or (value,)))
            select.value = value

    def _show(self, view: ScoresView) -> None:
        self.view = view
        self.experiment = view.experiment
        accuracy = view.accuracy
        self._set_scorers(accuracy.scorers, accuracy.scorer)
        message = self.query_one("#scores-message", Static)
        chart = self.query_one("#accuracy", PlotextPlot)
        if accuracy.predictions == 0:
            message.update(NO_PREDICTIONS_TEXT)
        elif not accuracy.scored:
            message.update(NOT_SCORED_TEXT.format(experiment=view.experiment))
        message.display = not accuracy.scored
        chart.display = accuracy.scored
        self._draw(view)
        self._fill_table(view.coordination)
        self._fill_measures(view.measures)
        where = f"dialogue {view.dialogue_id}" if view.dialogue_id else f"experiment {view.experiment}"
        lines = sum(1 for s in self.plotted if not s.baseline)
        self.query_one("#scores-summary", Static).update(
            f"{where} · {accuracy.predictions} predictions · {lines} lines · {len(view.coordination)} coordination rows"
        )

    def _draw(self, view: ScoresView) -> None:
        chart = self.query_one("#accuracy", PlotextPlot)
        plt = chart.plt
        plt.clear_figure()
        self.plotted = series_for(view)
        what = f"dialogue {view.dialogue_id}" if view.dialogue_id else view.experiment
        plt.title(f"{view.accuracy.scorer} of predictions by turn — {what}")
        plt.xlabel("turn")
        plt.ylabel(view.accuracy.scorer)
        colors = iter(SERIES_COLORS * (1 + len(self.plotted) // len(SERIES_COLORS)))
        turns: set[int] = set()
        for series in self.plotted:
            turns.update(series.turns)
            if series.baseline:
                # Plotext has no dashed lines: the baseline is a dotted grey line instead.
                plt.plot(series.turns, series.values, label=series.label, marker="·", color=BASELINE_COLOR)
            else:
                plt.plot(series.turns, series.values, label=series.label, marker="braille", color=next(colors))
        if turns:
            plt.xticks(sorted(turns))
        chart.refresh()

    def _fill_table(self, rows: list[CoordinationRow]) -> None:
        table: DataTable[str | Text] = self.query_one("#coordination", DataTable)
        # Columns are rebuilt with widths fitted to the rows: auto-width columns are only widened
        # on a later refresh, so a table filled by a worker could be drawn truncated first.
        table.clear(columns=True)
        cells = [coordination_cells(row) for row in rows]
        for index, label in enumerate(COORDINATION_COLUMNS):
            width = max([len(label), *(len(str(cell[index])) for cell in cells)])
            table.add_column(label, key=label, width=width)
        for row_cells in cells:
            table.add_row(*row_cells)
        title = self.query_one("#coordination-title", Static)
        title.update("Coordination: match rate vs chance" if rows else NO_COORDINATION_TEXT)
        table.display = bool(rows)

    def _fill_measures(self, rows: list[MeasureRow]) -> None:
        """Self-recognition, self-knowledge and convergence, as the report gives them."""
        table: DataTable[str | Text] = self.query_one("#measures", DataTable)
        table.clear(columns=True)
        cells = [(r.measure, r.condition, r.value, r.n, r.against) for r in rows]
        for index, label in enumerate(MEASURE_COLUMNS):
            table.add_column(label, key=label, width=max([len(label), *(len(c[index]) for c in cells)]))
        for row_cells in cells:
            # Text, not markup: "[too few dialogues]" would read as a style tag and vanish.
            table.add_row(*(Text(cell) for cell in row_cells))
        title = "Self-recognition, self-knowledge, convergence (as in the report)" if rows else ""
        self.query_one("#measures-title", Static).update(title)
        table.display = bool(rows)
        self.query_one("#measures-title", Static).display = bool(rows)

    # -- actions -----------------------------------------------------------------------------

    @on(Select.Changed, "#scorer")
    def _scorer_changed(self) -> None:
        if self.loaded is None:
            self.reload()
        else:
            self._chart(self.scorer)  # from memory: every scorer was read

    def choose_scorer(self, name: str) -> None:
        """Switch the chart to scorer ``name`` (for the command palette)."""
        select: Select[str] = self.query_one("#scorer", Select)
        if select.value != name:
            select.value = name  # Select.Changed reloads

    def action_back(self) -> None:
        self.dismiss(None)

    def action_refresh(self) -> None:
        self.reload()

    def action_pick_scorer(self) -> None:
        select: Select[str] = self.query_one("#scorer", Select)
        select.focus()
        select.action_show_overlay()

    def palette_commands(self) -> Sequence[PaletteCommand]:
        scorers = self.view.accuracy.scorers if self.view is not None else (DEFAULT_SCORER,)
        return (
            *(
                PaletteCommand(
                    f"Scorer: {name}", f"Chart prediction accuracy by {name}", partial(self.choose_scorer, name)
                )
                for name in scorers
            ),
            PaletteCommand("Choose scorer...", "Open the scorer list (s)", self.action_pick_scorer),
            PaletteCommand("Refresh scores", "Read the database again (r)", self.action_refresh),
            PaletteCommand("Back", "Leave the scores (esc)", self.action_back),
        )
