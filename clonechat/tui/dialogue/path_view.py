"""The dialogue screen's transcript: one path of the dialogue's tree, and which path that is.

The screen shows one conversation at a time, and a turn that lands (from the run here or a
batch elsewhere) is shown only if it continues that conversation; the run's streamed text
only while the conversation shown is the one the run grows. This widget keeps both leaves, so
those rules live in one place, beside the transcript they keep right.
"""

from __future__ import annotations

from clonechat.engine.records import NodeRecord
from clonechat.tui.transcript_source import ListSource, SqlitePathSource
from clonechat.tui.widgets.transcript import TranscriptView


class DialogueTranscript(TranscriptView):
    """A :class:`TranscriptView` that knows the leaf of the path it shows and of the live one."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(ListSource(), id=id)
        #: The last node of the path shown (what a new turn must answer to be shown).
        self.shown_leaf: str | None = None
        #: The last node of the path the live run is growing (its streamed text shows only there).
        self.live_leaf: str | None = None

    def show_stored(self, source: SqlitePathSource) -> None:
        """Show a stored path, at its end (following: new turns show as they land)."""
        self.set_source(source, at_end=True)
        self.shown_leaf = source.leaf_id

    def show_run_path(self, path: tuple[NodeRecord, ...]) -> None:
        """Show the path a run continues (held in memory: the run appends to it)."""
        self.set_source(ListSource(list(path)))
        self.shown_leaf = self.live_leaf = path[-1].id if path else None

    def stream(self, speaker: str, text: str) -> None:
        """The turn being written, shown only on the path the run grows."""
        if self.live_leaf == self.shown_leaf:
            self.set_streaming_text(speaker, text)

    def land(self, node: NodeRecord, *, live: bool) -> None:
        """Show a finished turn if it continues the path shown (the researcher may be reading
        another branch meanwhile). A node already shown fails the test too: it is its own
        parent's child."""
        on_screen = node.parent_id == self.shown_leaf
        if live:
            self.live_leaf = node.id
            if on_screen or node.id == self.shown_leaf:  # the batch feed may have shown it first
                self.set_streaming_text(None)
        if on_screen:
            self.append_node(node)
            self.shown_leaf = node.id

    def shows(self, index: int, node_id: str) -> bool:
        """Whether ``node_id`` is at ``index`` of the path shown."""
        return index < self.node_count and self.node_at(index).id == node_id

    def selected_index(self) -> int | None:
        """The selected node's index; with no selection, the last node (where a reader is)."""
        if self.cursor is not None:
            return self.cursor
        return self.node_count - 1 if self.node_count else None

    def selected_id(self) -> str | None:
        index = self.selected_index()
        return None if index is None else self.node_at(index).id
