"""The dialogue screen: a conversation streaming live, its predictions revealed beside each turn.

Two ways in: run a new dialogue here (the engine runs in a worker on Textual's event loop and
its events update the screen), or open a stored one. Predictions stay hidden until the turn
they predict lands (the engine hands them over with the turn), then appear in the side panel
with their scores, for the selected turn or, while following, the latest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar
from weakref import WeakKeyDictionary

from rich.markup import escape
from sqlmodel import col, select
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from clonechat.branching import fork_with_edit, settings_at
from clonechat.engine.events import DialogueEnded, NodeCompleted, TokenDelta, TurnStarted
from clonechat.engine.records import NodeRecord
from clonechat.session import DialogueRequest
from clonechat.store import reads
from clonechat.store.database import Database
from clonechat.store.models import Node
from clonechat.tui.feed import DatabaseFeed
from clonechat.tui.live import (
    LiveDialogue,
    PathLoaded,
    ScoredPrediction,
    TurnScored,
    UiEvent,
    score_predictions,
)
from clonechat.tui.screens import PaletteCommand
from clonechat.tui.screens.compare import CompareScreen
from clonechat.tui.screens.fork import ForkEdit, ForkScreen
from clonechat.tui.transcript_source import ListSource, SqlitePathSource
from clonechat.tui.tree import DialogueTree, StoredTree, TreeNavigation, TreeNode
from clonechat.tui.widgets.transcript import TranscriptView

#: Seconds between checks for turns committed by another process (the feed's poll is one PRAGMA).
WATCH_INTERVAL = 0.1
#: Bookmarks live as long as the app (a research session), per app and dialogue, in the order
#: they were made; they are a navigation aid, not data, so they are not stored.
_BOOKMARKS: WeakKeyDictionary[App[object], dict[str, list[str]]] = WeakKeyDictionary()
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


@dataclass(frozen=True)
class _Background:
    predicted: dict[str, tuple[NodeRecord, tuple[NodeRecord, ...]]]


class DialogueScreen(Screen[None]):
    """One dialogue: its transcript (one path of its tree), predictions, and tree navigation.

    The transcript shows one conversation at a time; the tree keys move the selection to the
    parent, first child or a sibling branch, and switch the transcript to the conversation
    through it (to its newest leaf), so every branch can be read whole.
    """

    CSS_PATH = Path(__file__).parent.parent / "styles" / "dialogue.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
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
        self._message = ""
        self._tree: StoredTree | None = None
        #: The last node of the path the transcript shows (what a new turn must answer to be shown).
        self._shown_leaf: str | None = None
        #: The last node of the path the live run is growing (its streamed text shows only there).
        self._live_leaf: str | None = None
        #: The leaf of the branch marked with ``v``, waiting for the second branch to compare.
        self._compare_left: str | None = None
        #: Set by pause: the dialogue stops after the turn in flight and ``p`` continues it.
        self._paused = False
        #: Stored predictions by the turn they predict (read in the background, scored when shown).
        self.predicted: dict[str, tuple[NodeRecord, tuple[NodeRecord, ...]]] = {}
        #: The background read of a stored dialogue's tree and predictions.
        self.loader: Worker[_Background] | None = None

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
        transcript.set_source(source, at_end=True)  # following: a batch's new turns show as they land
        self._shown_leaf = source.leaf_id
        self.dialogue_id = dialogue.id
        self._stop_phrase = dialogue.stop_phrase
        self._status(f"dialogue {dialogue.id} · {dialogue.status}")
        # What the first paint does not need is read in a thread: the stored predictions,
        # which can run to 100,000s of rows.
        self.loader = self.run_worker(
            partial(self._read_in_background, dialogue.id), thread=True, group="loader", exit_on_error=False
        )
        self.run_worker(self._follow(feed), exclusive=True, group="feed", exit_on_error=False)

    async def _follow(self, feed: DatabaseFeed) -> None:
        """Show turns another process (a batch) commits to this dialogue as they land, on
        whichever branch is shown right now (the researcher may switch branches meanwhile)."""
        transcript = self.query_one(TranscriptView)
        pending: dict[str, list[NodeRecord]] = {}
        turns: dict[str, NodeRecord] = {}
        try:
            async for update in feed.watch(WATCH_INTERVAL):
                for node in update.nodes:
                    if node.kind == "prediction" and node.target_node_id:
                        pending.setdefault(node.target_node_id, []).append(node)
                    elif node.kind in ("opening", "turn"):
                        turns[node.id] = node
                        self._add_to_tree(node)
                        # A node already shown fails this test too: it is its own parent's child.
                        if node.parent_id == self._shown_leaf:  # on the path shown
                            self._shown_leaf = node.id
                            transcript.append_node(node)
                for target in [t for t in pending if t in turns]:
                    self.scored[target] = score_predictions(
                        turns.pop(target), tuple(pending.pop(target)), self._stop_phrase
                    )
                    if transcript.following:
                        self._show_predictions(target)
                for change in update.dialogues:
                    if change.id == self.dialogue_id:
                        reason = f" ({change.stop_reason})" if change.stop_reason else ""
                        self._status(f"dialogue {change.id} · {change.status}{reason}")
        finally:
            feed.close()

    def _read_in_background(self, dialogue_id: str) -> _Background:
        """In a worker thread: the dialogue's stored predictions by turn."""
        side = [reads.node_record(n) for n in reads.side_nodes(self.db, dialogue_id) if n.kind == "prediction"]
        by_target: dict[str, list[NodeRecord]] = {}
        for node in side:
            by_target.setdefault(node.target_node_id or "", []).append(node)
        # Every branch's turns, not just the head's: the researcher can move to any of them.
        with self.db.session() as session:
            query = select(Node).where(col(Node.id).in_([t for t in by_target if t]))
            turns = {n.id: reads.node_record(n) for n in session.exec(query).all()}
        predicted = {t: (turns[t], tuple(p)) for t, p in by_target.items() if t in turns}
        return _Background(predicted)

    @on(Worker.StateChanged)
    def _background_read(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "loader" or event.state != WorkerState.SUCCESS:
            return
        result = event.worker.result
        assert isinstance(result, _Background)
        self.predicted.update(result.predicted)
        if (selected := self._selected_id()) is not None:
            self._show_predictions(selected)
        self._refresh_status()

    def scored_for(self, turn_id: str) -> TurnScored | None:
        """A turn's predictions with their scores: scored as the turn lands for live turns,
        and for stored ones the first time they are shown (scoring every stored prediction on
        opening a long dialogue would be wasted work)."""
        scored = self.scored.get(turn_id)
        if scored is None and turn_id in self.predicted:
            turn, predictions = self.predicted[turn_id]
            scored = self.scored[turn_id] = score_predictions(turn, predictions, self._stop_phrase)
        return scored

    async def _on_event(self, event: UiEvent) -> None:
        transcript = self.query_one(TranscriptView)
        if isinstance(event, PathLoaded):
            transcript.set_source(ListSource(list(event.path)))
            self._shown_leaf = self._live_leaf = event.path[-1].id if event.path else None
            for node in event.path:
                self._add_to_tree(node)
            if event.path:
                self.dialogue_id = event.path[-1].dialogue_id
            self._refresh_status()
        elif isinstance(event, TurnStarted):
            self._stream = ""
            self.dialogue_id = event.dialogue_id
            if self._live_leaf == self._shown_leaf:
                transcript.set_streaming_text(event.speaker, "")
            self._status(f"{event.speaker} is writing turn {event.turn_index} · {event.model}")
        elif isinstance(event, TokenDelta):
            self._stream += event.text
            if self._live_leaf == self._shown_leaf:
                transcript.set_streaming_text(event.speaker, self._stream)
        elif isinstance(event, NodeCompleted) and event.node.kind in ("opening", "turn"):
            self._add_to_tree(event.node)
            on_screen = event.node.parent_id == self._shown_leaf
            self._live_leaf = event.node.id
            if on_screen:  # the researcher may be reading another branch meanwhile
                transcript.set_streaming_text(None)
                transcript.append_node(event.node)
                self._shown_leaf = event.node.id
        elif isinstance(event, TurnScored):
            self.scored[event.turn.id] = event
            if transcript.following:
                self._show_predictions(event.turn.id)
        elif isinstance(event, DialogueEnded):
            transcript.set_streaming_text(None)
            if self._paused and event.reason == "stopped":
                self._status(f"paused after {event.turns} turns · p or c continues")
            else:
                self._paused = False
                self._status(f"dialogue {event.dialogue_id} {event.status} ({event.reason}) after {event.turns} turns")

    def _status(self, text: str) -> None:
        self._message = text
        self._refresh_status()

    def _refresh_status(self) -> None:
        """The last message, then where the selection is in the tree and the bookmarks."""
        parts = [escape(self._message)] if self._message else []
        node_id = self._selected_id()
        tree = self.dialogue_tree
        if node_id is not None and node_id in tree:
            i, n = tree.sibling_position(node_id)
            if n > 1:
                parts.append(f"branch {i}/{n}")
        marks = self.bookmarks
        if node_id is not None and node_id in marks:
            parts.append("★ bookmarked")
        if marks:
            parts.append(f"★ {len(marks)} bookmark{'s' if len(marks) != 1 else ''}")
        if self._compare_left is not None:
            parts.append("compare: pick another branch, v")
        self.query_one("#status", Static).update(" · ".join(parts))

    def _show_predictions(self, turn_id: str) -> None:
        panel = self.query_one("#predictions", Static)
        scored = self.scored_for(turn_id)
        if scored is None:
            panel.update("[dim]No predictions for this turn.[/dim]")
            return
        panel.update("\n\n".join(describe_prediction(p) for p in scored.predictions))

    @on(TranscriptView.NodeSelected)
    def _selected(self, message: TranscriptView.NodeSelected) -> None:
        self._show_predictions(message.node.id)
        self._refresh_status()

    # -- the tree ----------------------------------------------------------------------------

    @property
    def dialogue_tree(self) -> TreeNavigation:
        """The dialogue's tree, asked of SQLite as the keys need it (nothing is loaded up front),
        plus the turns this screen saw complete, which may not be committed yet."""
        if self.dialogue_id is None:
            return DialogueTree(())  # nothing stored yet
        if self._tree is None or self._tree.dialogue_id != self.dialogue_id:
            self._tree = StoredTree(self.db, self.dialogue_id)
        return self._tree

    def _add_to_tree(self, node: NodeRecord) -> None:
        """Note a node this screen saw complete (it may not be committed when the tree is asked)."""
        self.dialogue_id = self.dialogue_id or node.dialogue_id
        tree = self.dialogue_tree
        if isinstance(tree, StoredTree):
            tree.add(TreeNode(node.id, node.parent_id, node.speaker, node.turn_index, node.created_at))

    @property
    def bookmarks(self) -> list[str]:
        """This dialogue's bookmarked node ids, in the order they were made (kept by the app)."""
        if self.dialogue_id is None or not self.is_attached:
            return []
        return _BOOKMARKS.setdefault(self.app, {}).setdefault(self.dialogue_id, [])

    def _selected_index(self) -> int | None:
        """The selected node's index; with no selection, the last node (where a reader is)."""
        transcript = self.query_one(TranscriptView)
        if transcript.cursor is not None:
            return transcript.cursor
        return transcript.node_count - 1 if transcript.node_count else None

    def _selected_id(self) -> str | None:
        index = self._selected_index()
        return None if index is None else self.query_one(TranscriptView).node_at(index).id

    def show_node(self, node_id: str) -> None:
        """Select ``node_id``, switching the transcript to the newest conversation through it
        unless it is on the path shown already."""
        transcript = self.query_one(TranscriptView)
        tree = self.dialogue_tree
        if node_id not in tree or self.dialogue_id is None:
            return
        index = tree.turn_index(node_id)  # a node's place on every path through it
        on_path = index < transcript.node_count and transcript.node_at(index).id == node_id
        if not on_path:
            leaf = tree.leaf_of(node_id)
            transcript.set_source(SqlitePathSource(self.db, self.dialogue_id, leaf_id=leaf), at_end=True)
            self._shown_leaf = leaf
        transcript.select_node(index)
        self._refresh_status()

    # -- actions -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether this screen is running the dialogue (rather than showing a stored one)."""
        return any(w.group == "dialogue" and w.is_running for w in self.workers)

    def action_pause(self) -> None:
        """Pause: the turn being written finishes and is stored, and no new turn starts; pressed
        again, the branch shown continues. Nothing is lost either way."""
        if self.running and self.live is not None:
            self.live.stop()
            self._paused = True
            self._status("pausing after this turn…")
        elif self._paused:
            self.action_continue()

    def action_stop(self) -> None:
        """Stop now: the turn being written is abandoned (never stored, as a crash would leave
        it) and the dialogue is recorded as interrupted; every finished turn is kept."""
        if not self.running:
            self.notify("the dialogue is not running here", timeout=2)
            return
        self.workers.cancel_group(self, "dialogue")
        self.query_one(TranscriptView).set_streaming_text(None)
        self._status("stopped: the turn being written was discarded")

    def action_continue(self) -> None:
        """Continue the branch shown (which need not be the dialogue's newest)."""
        if self.dialogue_id is None:
            return
        if self.running:
            self.notify("the dialogue is already running", timeout=2)
            return
        self._paused = False
        self.live = LiveDialogue(self.db, self._on_event)
        work = self.live.resume(self.dialogue_id, leaf_id=self._shown_leaf)
        self.run_worker(work, exclusive=True, group="dialogue", exit_on_error=False)

    def _move(self, target: str | None, nothing: str) -> None:
        if target is None:
            self.notify(nothing, timeout=2)
        else:
            self.show_node(target)

    def action_prev_sibling(self) -> None:
        if (node_id := self._selected_id()) is not None and node_id in self.dialogue_tree:
            self._move(self.dialogue_tree.prev_sibling(node_id), "no earlier branch here")

    def action_next_sibling(self) -> None:
        if (node_id := self._selected_id()) is not None and node_id in self.dialogue_tree:
            self._move(self.dialogue_tree.next_sibling(node_id), "no later branch here")

    def action_parent(self) -> None:
        if (node_id := self._selected_id()) is not None and node_id in self.dialogue_tree:
            self._move(self.dialogue_tree.parent(node_id), "the opening has no parent")

    def action_first_child(self) -> None:
        if (node_id := self._selected_id()) is not None and node_id in self.dialogue_tree:
            transcript = self.query_one(TranscriptView)
            index = self._selected_index()
            # Down the path shown when it goes on; otherwise the oldest reply.
            if index is not None and index + 1 < transcript.node_count:
                transcript.select_node(index + 1)
                return
            children = self.dialogue_tree.children(node_id)
            self._move(children[0] if children else None, "no reply to this message yet")

    def action_bookmark(self) -> None:
        node_id = self._selected_id()
        if node_id is None:
            return
        marks = self.bookmarks
        if node_id in marks:
            marks.remove(node_id)
        else:
            marks.append(node_id)
        self._refresh_status()

    def action_next_bookmark(self) -> None:
        """Cycle through the bookmarks in the order they were made, across branches."""
        marks = self.bookmarks
        if not marks:
            self.notify("no bookmarks yet: b marks the selected message", timeout=2)
            return
        current = self._selected_id()
        after = (marks.index(current) + 1) % len(marks) if current in marks else 0
        self.show_node(marks[after])

    def action_fork(self) -> None:
        """Edit the selected message as a new branch, and continue the dialogue from it."""
        index = self._selected_index()
        if index is None or self.dialogue_id is None:
            return
        if self.running:
            self.notify("the dialogue is running: pause it (p) before forking", timeout=3)
            return
        node = self.query_one(TranscriptView).node_at(index)
        # What the conversation ran with at this message, edits above it included.
        at_node = settings_at(self.db, node.id)
        params = at_node["A"].params
        prompts = {agent: s.system_prompt for agent, s in at_node.items()}

        def saved(edit: ForkEdit | None) -> None:
            if edit is not None:
                self.run_worker(self._fork(node, edit), exclusive=True, group="dialogue", exit_on_error=False)

        self.app.push_screen(ForkScreen(node, params.temperature, params.max_tokens, prompts), saved)

    async def _fork(self, node: NodeRecord, edit: ForkEdit) -> None:
        assert self.dialogue_id is not None
        fork = await fork_with_edit(
            self.db, node.id, edit.content, params=edit.params, system_prompts=edit.system_prompts
        )
        self._add_to_tree(fork)
        changed = f"; new system prompt for {' and '.join(edit.system_prompts)}" if edit.system_prompts else ""
        self._status(f"forked {node.id} as {fork.id}{changed}; continuing from the edit")
        self.live = LiveDialogue(self.db, self._on_event)
        await self.live.resume(self.dialogue_id, leaf_id=fork.id)

    def action_compare(self) -> None:
        """First ``v`` marks the branch shown as the left side; the second opens the comparison
        with the branch shown then."""
        if self.dialogue_id is None or self._shown_leaf is None:
            return
        if self._compare_left is None:
            self._compare_left = self._shown_leaf
            self._refresh_status()
            return
        left, self._compare_left = self._compare_left, None
        self._refresh_status()
        self.app.push_screen(CompareScreen(self.db, self.dialogue_id, left, self._shown_leaf))

    def palette_commands(self) -> Sequence[PaletteCommand]:
        return (
            PaletteCommand(
                "Pause / resume", "Finish the turn being written, then pause; again to go on (p)", self.action_pause
            ),
            PaletteCommand("Stop", "Stop now, discarding the turn being written (s)", self.action_stop),
            PaletteCommand("Continue", "Continue the branch shown (c)", self.action_continue),
            PaletteCommand(
                "Previous branch", "The previous sibling of the selected message ([)", self.action_prev_sibling
            ),
            PaletteCommand("Next branch", "The next sibling of the selected message (])", self.action_next_sibling),
            PaletteCommand("Parent", "The message the selected one answers (← / h)", self.action_parent),
            PaletteCommand("First child", "The first reply to the selected message (→ / l)", self.action_first_child),
            PaletteCommand(
                "Fork with an edit...", "Edit the selected message as a new branch and continue (f)", self.action_fork
            ),
            PaletteCommand(
                "Toggle bookmark", "Bookmark the selected message for this session (b)", self.action_bookmark
            ),
            PaletteCommand("Next bookmark", "Jump to the next bookmark (')", self.action_next_bookmark),
            PaletteCommand(
                "Compare branches", "Mark this branch, then open the comparison with another (v)", self.action_compare
            ),
            PaletteCommand("Back", "Return to the dialogue list (esc)", self.action_back),
        )

    def action_back(self) -> None:
        self.app.pop_screen()
