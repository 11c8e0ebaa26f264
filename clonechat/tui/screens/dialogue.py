"""The dialogue screen: a conversation streaming live, its predictions revealed beside each turn.

Two ways in: run a new dialogue here (the engine runs in a worker on Textual's event loop and
its events update the screen), or open a stored one. Predictions stay hidden until the turn
they predict lands (the engine hands them over with the turn), then appear in the side panel
with their scores, for the selected turn or, while following, the latest one.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from clonechat.engine.events import DialogueEnded, NodeCompleted, TokenDelta, TurnStarted
from clonechat.engine.records import NodeRecord
from clonechat.session import DialogueRequest
from clonechat.store import reads
from clonechat.store.database import Database
from clonechat.tui.feed import DatabaseFeed
from clonechat.tui.live import LiveDialogue, PathLoaded, ScoredPrediction, TurnScored, UiEvent, score_predictions
from clonechat.tui.transcript_source import ListSource, SqlitePathSource
from clonechat.tui.widgets.transcript import TranscriptView

#: Seconds between checks for turns committed by another process (the feed's poll is one PRAGMA).
WATCH_INTERVAL = 0.1
SCORE_LABELS = {"chrf": "chrF", "token_f1": "token F1", "first_word": "first word", "length_bucket": "length"}


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


class DialogueScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "stop", "Stop"),
        Binding("c", "continue", "Continue"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self, db_path: Path, *, dialogue_id: str | None = None, request: DialogueRequest | None = None
    ) -> None:
        super().__init__()
        self.db_path = db_path
        self.dialogue_id = dialogue_id
        self.request = request
        self.scored: dict[str, TurnScored] = {}
        self.live: LiveDialogue | None = None
        self._stream = ""
        self._db: Database | None = None
        self._stop_phrase: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield TranscriptView(ListSource(), id="transcript")
            with VerticalScroll(id="side"):
                yield Static("[b]Predictions[/b]", id="side-title")
                yield Static(
                    "[dim]Predictions appear here once the turn they predict has landed.[/dim]", id="predictions"
                )
        yield Static("", id="status")
        yield Footer()

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database.open(self.db_path)
        return self._db

    def on_mount(self) -> None:
        if self.request is not None:
            self._start_live(self.request)
        elif self.dialogue_id is not None:
            self._open_stored(self.dialogue_id)

    def on_unmount(self) -> None:
        if self._db is not None:
            self._db.close()

    # -- running -----------------------------------------------------------------------------

    def _start_live(self, request: DialogueRequest) -> None:
        self.live = LiveDialogue(self.db, self._on_event)
        self._status("starting…")
        self.run_worker(self.live.start(request), exclusive=True, group="dialogue", exit_on_error=False)

    def _open_stored(self, dialogue_id: str) -> None:
        transcript = self.query_one(TranscriptView)
        dialogue = reads.resolve_dialogue(self.db, dialogue_id)
        # The feed opens before the history is read: a turn committed in between then shows up
        # in both (and is dropped as already shown) rather than in neither.
        feed = DatabaseFeed(self.db_path, node_filter=[dialogue.id])
        source = SqlitePathSource(self.db, dialogue.id)
        transcript.set_source(source)
        self.dialogue_id = dialogue.id
        self._stop_phrase = dialogue.stop_phrase
        self._status(f"dialogue {dialogue.id} · {dialogue.status}")
        self._load_stored_predictions(dialogue.id, dialogue.stop_phrase)
        self.run_worker(self._follow(feed, source), exclusive=True, group="feed", exit_on_error=False)

    async def _follow(self, feed: DatabaseFeed, source: SqlitePathSource) -> None:
        """Show turns another process (a batch) commits to this dialogue as they land."""
        transcript = self.query_one(TranscriptView)
        shown = set(source.ids)
        pending: dict[str, list[NodeRecord]] = {}
        try:
            async for update in feed.watch(WATCH_INTERVAL):
                for node in update.nodes:
                    if node.kind == "prediction" and node.target_node_id:
                        pending.setdefault(node.target_node_id, []).append(node)
                    elif node.kind in ("opening", "turn") and node.id not in shown:
                        last = source.ids[-1] if source.ids else None
                        if node.parent_id == last:  # on the path shown (not another branch)
                            shown.add(node.id)
                            transcript.append_node(node)
                for target in [t for t in pending if t in shown]:
                    turn_node = source.page(source.ids.index(target), source.ids.index(target) + 1)[0]
                    self.scored[target] = score_predictions(turn_node, tuple(pending.pop(target)), self._stop_phrase)
                    if transcript.following:
                        self._show_predictions(target)
                for change in update.dialogues:
                    if change.id == self.dialogue_id:
                        reason = f" ({change.stop_reason})" if change.stop_reason else ""
                        self._status(f"dialogue {change.id} · {change.status}{reason}")
        finally:
            feed.close()

    def _load_stored_predictions(self, dialogue_id: str, stop_phrase: str | None) -> None:
        side = [reads.node_record(n) for n in reads.side_nodes(self.db, dialogue_id) if n.kind == "prediction"]
        by_target: dict[str, list[NodeRecord]] = {}
        for node in side:
            by_target.setdefault(node.target_node_id or "", []).append(node)
        turns = {
            n.id: reads.node_record(n)
            for n in reads.dialogue_path(self.db, reads.resolve_dialogue(self.db, dialogue_id))
        }
        for target, predictions in by_target.items():
            if target in turns:
                self.scored[target] = score_predictions(turns[target], tuple(predictions), stop_phrase)

    async def _on_event(self, event: UiEvent) -> None:
        transcript = self.query_one(TranscriptView)
        if isinstance(event, PathLoaded):
            transcript.set_source(ListSource(list(event.path)))
        elif isinstance(event, TurnStarted):
            self._stream = ""
            self.dialogue_id = event.dialogue_id
            transcript.set_streaming_text(event.speaker, "")
            self._status(f"{event.speaker} is writing turn {event.turn_index} · {event.model}")
        elif isinstance(event, TokenDelta):
            self._stream += event.text
            transcript.set_streaming_text(event.speaker, self._stream)
        elif isinstance(event, NodeCompleted) and event.node.kind in ("opening", "turn"):
            transcript.set_streaming_text(None)
            transcript.append_node(event.node)
        elif isinstance(event, TurnScored):
            self.scored[event.turn.id] = event
            if transcript.following:
                self._show_predictions(event.turn.id)
        elif isinstance(event, DialogueEnded):
            transcript.set_streaming_text(None)
            self._status(f"dialogue {event.dialogue_id} {event.status} ({event.reason}) after {event.turns} turns")

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(escape(text))

    def _show_predictions(self, turn_id: str) -> None:
        panel = self.query_one("#predictions", Static)
        scored = self.scored.get(turn_id)
        if scored is None:
            panel.update("[dim]No predictions for this turn.[/dim]")
            return
        panel.update("\n\n".join(describe_prediction(p) for p in scored.predictions))

    @on(TranscriptView.NodeSelected)
    def _selected(self, message: TranscriptView.NodeSelected) -> None:
        self._show_predictions(message.node.id)

    # -- actions -----------------------------------------------------------------------------

    def action_stop(self) -> None:
        """Gentle: the turn being written finishes and is stored; no new turn starts."""
        if self.live is not None:
            self.live.stop()
            self._status("stopping after this turn…")

    def action_continue(self) -> None:
        if self.dialogue_id is None:
            return
        self.live = LiveDialogue(self.db, self._on_event)
        self.run_worker(self.live.resume(self.dialogue_id), exclusive=True, group="dialogue", exit_on_error=False)

    def action_back(self) -> None:
        self.app.pop_screen()
