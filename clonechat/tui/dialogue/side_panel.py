"""The side panel: the predictions of the selected turn (or, while following, the latest one),
with their scores.

Predictions stay hidden until the turn they predict has landed, since a reader should meet
the turn the way the partner met it. A run in this process or a followed batch hands them over
scored (:meth:`SidePanel.add`); a stored dialogue's are read in a worker thread when it opens
(there can be 100,000s) and each turn's are scored the first time it is shown.
"""

from __future__ import annotations

from functools import partial

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from clonechat.engine.records import NodeRecord
from clonechat.read.connect import Readable
from clonechat.read.paths import node_record, nodes_by_id
from clonechat.read.sides import group_by_anchor, side_nodes
from clonechat.tui.live import ScoredPrediction, TurnScored, score_predictions

SCORE_LABELS = {"chrf": "chrF", "token_f1": "token F1", "first_word": "first word", "length_bucket": "length"}

#: A turn and the stored predictions shown with it.
Predicted = dict[str, tuple[NodeRecord, tuple[NodeRecord, ...]]]


def describe_prediction(scored: ScoredPrediction) -> str:
    """Rich markup for one prediction and its scores, for the side panel."""
    p = scored.prediction
    who = "a different model" if p.variant == "cross" else f"{p.speaker} ({p.variant})"
    parts = []
    for name, value in scored.scores.items():
        label = SCORE_LABELS.get(name, name)
        if value is None:
            parts.append(f"{label} –")
        elif name in ("chrf", "token_f1"):
            parts.append(f"{label} {value:.2f}")
        else:
            parts.append(f"{label} {'✓' if value >= 1 else '✗'}")
    return f"[b]predicted by {escape(who)}[/b]\n{escape(p.content)}\n[dim]{' · '.join(parts)}[/dim]"


def stored_predictions(db: Readable, dialogue_id: str) -> Predicted:
    """A dialogue's stored predictions by the turn they are shown with, with that turn (of any
    branch, not just the head's: the researcher can move to every one)."""
    predictions = [node_record(n) for n in side_nodes(db, dialogue_id, kinds=("prediction",))]
    by_turn = group_by_anchor(predictions)
    turns = nodes_by_id(db, list(by_turn))
    return {t: (node_record(turns[t]), tuple(p)) for t, p in by_turn.items() if t in turns}


class SidePanel(VerticalScroll):
    """The predictions beside the transcript, and the store of every turn's scored ones."""

    class Loaded(Message):
        """A stored dialogue's predictions have been read (the selected turn may have some)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        #: Scored predictions by the turn they predict.
        self.scored: dict[str, TurnScored] = {}
        #: Stored predictions by the turn they predict (read in the background, scored when shown).
        self.predicted: Predicted = {}
        #: The background read of a stored dialogue's predictions.
        self.loader: Worker[Predicted] | None = None
        self.stop_phrase: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("[b]Predictions[/b]", id="side-title")
        yield Static("[dim]Predictions appear here once the turn they predict has landed.[/dim]", id="predictions")

    def load(self, db: Readable, dialogue_id: str, stop_phrase: str | None) -> None:
        """Read a stored dialogue's predictions in a thread (the first paint does not wait)."""
        self.stop_phrase = stop_phrase
        read = partial(stored_predictions, db, dialogue_id)
        self.loader = self.run_worker(read, thread=True, group="loader", exit_on_error=False)

    @on(Worker.StateChanged)
    def _loaded(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.loader or event.state != WorkerState.SUCCESS:
            return
        event.stop()
        result = event.worker.result
        assert isinstance(result, dict)
        self.predicted.update(result)
        self.post_message(self.Loaded())

    def add(self, scored: TurnScored) -> None:
        """A turn's predictions, scored as it landed."""
        self.scored[scored.turn.id] = scored

    def scored_for(self, turn_id: str) -> TurnScored | None:
        """A turn's predictions with their scores: scored as the turn lands for live turns,
        and for stored ones the first time they are shown (scoring every stored prediction on
        opening a long dialogue would be wasted work)."""
        scored = self.scored.get(turn_id)
        if scored is None and turn_id in self.predicted:
            turn, predictions = self.predicted[turn_id]
            scored = self.scored[turn_id] = score_predictions(turn, predictions, self.stop_phrase)
        return scored

    def show(self, turn_id: str) -> None:
        """Show ``turn_id``'s predictions (or say it has none)."""
        panel = self.query_one("#predictions", Static)
        scored = self.scored_for(turn_id)
        if scored is None:
            panel.update("[dim]No predictions for this turn.[/dim]")
            return
        panel.update("\n\n".join(describe_prediction(p) for p in scored.predictions))
