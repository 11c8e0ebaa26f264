"""Moving through a dialogue's tree (Loom-style): parent, first reply, sibling branches,
bookmarks across branches, and two branches side by side.

The navigator answers "where does this key go from the selected node" with the tree (asked of
the database a step at a time, :class:`~clonechat.tui.tree.StoredTree`, plus the turns this
screen saw complete before they were committed) and posts :class:`TreeNavigator.Go` with the
answer; the screen switches the transcript to that node's conversation. Where a key leads
nowhere it says so in a notification. Bookmarks are held by the app (:mod:`.bookmarks`).
Comparing takes two presses, one on each branch; the second opens the comparison screen.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message
from textual.widget import Widget

from clonechat.engine.records import NodeRecord
from clonechat.read.connect import Readable
from clonechat.tui.dialogue.bookmarks import Bookmarks, HoldsBookmarks
from clonechat.tui.screens.compare import CompareScreen
from clonechat.tui.tree import DialogueTree, StoredTree, TreeNavigation, TreeNode


class TreeNavigator(Widget):
    """The tree of the dialogue on screen, and the moves through it (not drawn)."""

    DEFAULT_CSS = "TreeNavigator { display: none; }"

    class Go(Message):
        """Select ``node_id``, on whichever conversation passes through it."""

        def __init__(self, node_id: str) -> None:
            super().__init__()
            self.node_id = node_id

    def __init__(self, reading: Callable[[], Readable]) -> None:
        super().__init__()
        self._reading = reading
        self.dialogue_id: str | None = None
        self._tree: StoredTree | None = None
        #: Used when the app holds no bookmarks (a screen tested on its own).
        self._own_bookmarks = Bookmarks()
        #: The leaf of the branch marked for comparison, waiting for the second branch.
        self.compare_left: str | None = None

    @property
    def dialogue_tree(self) -> TreeNavigation:
        """The dialogue's tree, asked of the database as the keys need it (nothing is loaded
        up front), plus the turns this screen saw complete, which may not be committed yet."""
        if self.dialogue_id is None:
            return DialogueTree(())  # nothing stored yet
        if self._tree is None or self._tree.dialogue_id != self.dialogue_id:
            self._tree = StoredTree(self._reading(), self.dialogue_id)
        return self._tree

    def add(self, node: NodeRecord) -> None:
        """Note a node this screen saw complete (it may not be committed when the tree is asked)."""
        self.dialogue_id = self.dialogue_id or node.dialogue_id
        tree = self.dialogue_tree
        if isinstance(tree, StoredTree):
            tree.add(TreeNode(node.id, node.parent_id, node.speaker, node.turn_index, node.created_at))

    def knows(self, node_id: str) -> bool:
        """Whether ``node_id`` is a conversation node of this dialogue (stored or seen here)."""
        return node_id in self.dialogue_tree

    def _go(self, target: str | None, nothing: str) -> None:
        if target is None:
            self.notify(nothing, timeout=2)
        else:
            self.post_message(self.Go(target))

    # Each move starts at the selected node, if it is in the tree (``None``: nothing to do).

    def go_prev_sibling(self, node_id: str | None) -> None:
        if node_id is not None:
            self._go(self.dialogue_tree.prev_sibling(node_id), "no earlier branch here")

    def go_next_sibling(self, node_id: str | None) -> None:
        if node_id is not None:
            self._go(self.dialogue_tree.next_sibling(node_id), "no later branch here")

    def go_parent(self, node_id: str | None) -> None:
        if node_id is not None:
            self._go(self.dialogue_tree.parent(node_id), "the opening has no parent")

    def go_first_child(self, node_id: str | None) -> None:
        """The oldest reply (the screen moves down the path shown itself when it goes on)."""
        if node_id is not None:
            children = self.dialogue_tree.children(node_id)
            self._go(children[0] if children else None, "no reply to this message yet")

    def compare(self, reading: Readable, shown_leaf: str) -> None:
        """First press: mark the branch shown as the left side; second: open the comparison
        with the branch shown then."""
        if self.dialogue_id is None:
            return
        left, self.compare_left = self.compare_left, (shown_leaf if self.compare_left is None else None)
        if left is not None:
            self.app.push_screen(CompareScreen(reading, self.dialogue_id, left, shown_leaf))

    # -- bookmarks ---------------------------------------------------------------------------

    @property
    def _bookmarks(self) -> Bookmarks:
        app = self.app if self.is_attached else None
        return app.bookmarks if isinstance(app, HoldsBookmarks) else self._own_bookmarks

    @property
    def bookmarks(self) -> list[str]:
        """This dialogue's bookmarked node ids, in the order they were made."""
        return [] if self.dialogue_id is None else self._bookmarks.of(self.dialogue_id)

    def toggle_bookmark(self, node_id: str) -> None:
        if self.dialogue_id is not None:
            self._bookmarks.toggle(self.dialogue_id, node_id)

    def next_bookmark(self, current: str | None) -> None:
        """Cycle through the bookmarks in the order they were made, across branches."""
        after = None if self.dialogue_id is None else self._bookmarks.after(self.dialogue_id, current)
        self._go(after, "no bookmarks yet: b marks the selected message")

    def describe(self, node_id: str | None) -> list[str]:
        """Where ``node_id`` is, for the status line: its branch at a fork, its bookmark, how
        many bookmarks the dialogue has, and a comparison waiting for its second branch."""
        parts = []
        if node_id is not None and node_id in self.dialogue_tree:
            i, n = self.dialogue_tree.sibling_position(node_id)
            if n > 1:
                parts.append(f"branch {i}/{n}")
        marks = self.bookmarks
        if node_id is not None and node_id in marks:
            parts.append("★ bookmarked")
        if marks:
            parts.append(f"★ {len(marks)} bookmark{'s' if len(marks) != 1 else ''}")
        if self.compare_left is not None:
            parts.append("compare: pick another branch, v")
        return parts
