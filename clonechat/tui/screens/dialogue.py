"""The dialogue screen: a conversation streaming live, its predictions revealed beside each turn.

Two ways in: run a new dialogue here, or open a stored one (which follows a batch writing it).
The screen composes the parts in :mod:`clonechat.tui.dialogue` (the live run, the batch
follower, the tree navigator, the forker, the side panel) and owns what they share: the
transcript (which knows the path of the tree it shows) and the status line. The parts report
by messages and never call each other; the screen decides what changes. A stored dialogue is
read through a read-only reader; the writer opens only when something is run or forked here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker

from clonechat.location import DbLocation
from clonechat.read.dialogues import resolve_dialogue
from clonechat.session import DialogueRequest
from clonechat.tui.dialogue.access import DatabaseAccess
from clonechat.tui.dialogue.follow import WATCH_INTERVAL, BatchFollow
from clonechat.tui.dialogue.forking import Forker
from clonechat.tui.dialogue.keys import BINDINGS, dialogue_commands
from clonechat.tui.dialogue.live_run import LiveRun
from clonechat.tui.dialogue.messages import PredictionsScored, StatusChanged, TurnLanded
from clonechat.tui.dialogue.navigation import TreeNavigator
from clonechat.tui.dialogue.path_view import DialogueTranscript
from clonechat.tui.dialogue.side_panel import Predicted, SidePanel
from clonechat.tui.dialogue.status_line import StatusLine
from clonechat.tui.live import TurnScored
from clonechat.tui.screens import PaletteCommand
from clonechat.tui.transcript_source import SqlitePathSource


class DialogueScreen(Screen[None]):
    """One dialogue: its transcript (one path of its tree), predictions, and tree navigation.

    The transcript shows one conversation at a time; the tree keys move the selection to the
    parent, first child or a sibling branch, and switch the transcript to the conversation
    through it (to its newest leaf), so every branch can be read whole.
    """

    CSS_PATH = Path(__file__).parent.parent / "styles" / "dialogue.tcss"
    BINDINGS: ClassVar[list[BindingType]] = BINDINGS

    def __init__(
        self, db_path: DbLocation, *, dialogue_id: str | None = None, request: DialogueRequest | None = None
    ) -> None:
        super().__init__()
        self.db_path = db_path
        self.request = request
        self._access = DatabaseAccess(db_path)
        self._live = LiveRun(self._access.writer)
        self._follow = BatchFollow()
        self._nav = TreeNavigator(lambda: self._access.reading)
        self._forker = Forker(lambda: self._access.reading, self._access.writer)
        self._side = SidePanel(id="side")
        self._transcript = DialogueTranscript(id="transcript")
        self._status_line = StatusLine(id="status")
        self._nav.dialogue_id = dialogue_id

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield self._transcript
            yield self._side
        yield self._status_line
        yield Footer()
        yield from (self._live, self._follow, self._nav, self._forker)

    # -- what the parts hold, as the screen's (tests and the app read these) -------------------

    @property
    def dialogue_id(self) -> str | None:
        return self._nav.dialogue_id

    @dialogue_id.setter
    def dialogue_id(self, value: str | None) -> None:
        self._nav.dialogue_id = value

    @property
    def scored(self) -> dict[str, TurnScored]:
        return self._side.scored

    @property
    def predicted(self) -> Predicted:
        return self._side.predicted

    @property
    def loader(self) -> Worker[Predicted] | None:
        return self._side.loader

    @property
    def _stream(self) -> str:
        return self._live.stream

    # -- opening -----------------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.request is not None:
            self._live.start(self.request)
        elif self.dialogue_id is not None:
            self._open_stored(self.dialogue_id)

    def on_unmount(self) -> None:
        self._access.close()

    def _open_stored(self, dialogue_id: str) -> None:
        reading = self._access.reading
        dialogue = resolve_dialogue(reading, dialogue_id)
        self._follow.follow(self.db_path, dialogue.id, dialogue.stop_phrase)  # before the history is read
        self._transcript.show_stored(SqlitePathSource(reading, dialogue.id))
        self.dialogue_id = dialogue.id
        self._status(f"dialogue {dialogue.id} · {dialogue.status}")
        # Not needed for the first paint, and can run to 100,000s of rows: read in a thread.
        self._side.load(reading, dialogue.id, dialogue.stop_phrase)

    # -- what the parts report (Textual routes each message by its handler's name) -----------

    def on_live_run_path_shown(self, message: LiveRun.PathShown) -> None:
        self._transcript.show_run_path(message.path)
        for node in message.path:
            self._nav.add(node)
        if message.path:
            self.dialogue_id = message.path[-1].dialogue_id
        self._status()

    def on_live_run_streaming(self, message: LiveRun.Streaming) -> None:
        self.dialogue_id = message.dialogue_id
        self._transcript.stream(message.speaker, message.text)

    def on_live_run_ended(self) -> None:
        self._transcript.set_streaming_text(None)

    def on_turn_landed(self, message: TurnLanded) -> None:
        self._nav.add(message.node)
        self._transcript.land(message.node, live=message.live)

    def on_predictions_scored(self, message: PredictionsScored) -> None:
        self._side.add(message.scored)
        if self._transcript.following:
            self._side.show(message.scored.turn.id)

    def on_status_changed(self, message: StatusChanged) -> None:
        self._status(message.text)

    def on_side_panel_loaded(self) -> None:
        if (selected := self._transcript.selected_id()) is not None:
            self._side.show(selected)
        self._status()

    def on_tree_navigator_go(self, message: TreeNavigator.Go) -> None:
        self.show_node(message.node_id)

    def on_forker_forked(self, message: Forker.Forked) -> None:
        self._nav.add(message.fork)
        if self.dialogue_id is not None:
            self._live.resume(self.dialogue_id, leaf_id=message.fork.id)

    def on_transcript_view_node_selected(self, message: DialogueTranscript.NodeSelected) -> None:
        self._side.show(message.node.id)
        self._status()

    # -- the status line and the selection ---------------------------------------------------

    def _status(self, text: str | None = None) -> None:
        """Say ``text`` (``None``: the last message again), then where the selection is."""
        self._status_line.say(text, self._nav.describe(self._transcript.selected_id()))

    def _selected_in_tree(self) -> str | None:
        node_id = self._transcript.selected_id()
        return node_id if node_id is not None and self._nav.knows(node_id) else None

    def show_node(self, node_id: str) -> None:
        """Select ``node_id``, switching the transcript to the newest conversation through it
        unless it is on the path shown already."""
        tree = self._nav.dialogue_tree
        if node_id not in tree or self.dialogue_id is None:
            return
        index = tree.turn_index(node_id)  # a node's place on every path through it
        if not self._transcript.shows(index, node_id):
            leaf = tree.leaf_of(node_id)
            self._transcript.show_stored(SqlitePathSource(self._access.reading, self.dialogue_id, leaf_id=leaf))
        self._transcript.select_node(index)
        self._status()

    # -- actions -----------------------------------------------------------------------------

    def action_pause(self) -> None:
        """Pause after the turn being written; pressed again, continue the branch shown."""
        self._live.toggle_pause(self.dialogue_id, self._transcript.shown_leaf)

    def action_stop(self) -> None:
        """Stop now: the turn being written is abandoned (never stored, as a crash would leave
        it) and the dialogue is recorded as interrupted; every finished turn is kept."""
        if not self._live.running:
            self.notify("the dialogue is not running here", timeout=2)
            return
        self._live.cancel()
        self._forker.cancel()

    def action_continue(self) -> None:
        """Continue the branch shown (which need not be the dialogue's newest)."""
        self._live.continue_from(self.dialogue_id, self._transcript.shown_leaf)

    def action_prev_sibling(self) -> None:
        self._nav.go_prev_sibling(self._selected_in_tree())

    def action_next_sibling(self) -> None:
        self._nav.go_next_sibling(self._selected_in_tree())

    def action_parent(self) -> None:
        self._nav.go_parent(self._selected_in_tree())

    def action_first_child(self) -> None:
        """Down the path shown when it goes on; otherwise the oldest reply."""
        node_id, index = self._selected_in_tree(), self._transcript.selected_index()
        if node_id is not None and index is not None and index + 1 < self._transcript.node_count:
            self._transcript.select_node(index + 1)
        else:
            self._nav.go_first_child(node_id)

    def action_bookmark(self) -> None:
        if (node_id := self._transcript.selected_id()) is not None:
            self._nav.toggle_bookmark(node_id)
            self._status()

    def action_next_bookmark(self) -> None:
        self._nav.next_bookmark(self._transcript.selected_id())

    def action_fork(self) -> None:
        """Edit the selected message as a new branch, and continue the dialogue from it."""
        index = self._transcript.selected_index()
        if index is None or self.dialogue_id is None:
            return
        if self._live.running:
            self.notify("the dialogue is running: pause it (p) before forking", timeout=3)
            return
        self._forker.begin(self._transcript.node_at(index))

    def action_compare(self) -> None:
        """First ``v`` marks the branch shown as the left side; the second opens the comparison
        with the branch shown then."""
        if (shown := self._transcript.shown_leaf) is not None:
            self._nav.compare(self._access.reading, shown)
            self._status()

    def action_back(self) -> None:
        self.app.pop_screen()

    def palette_commands(self) -> Sequence[PaletteCommand]:
        return dialogue_commands(self)


__all__ = ["WATCH_INTERVAL", "DialogueScreen"]
