"""Navigating a dialogue's tree of messages (Loom-style): parents, children, sibling branches.

Every message is a node with a parent, so a dialogue is a tree: a conversation is a path from
the opening to a leaf, and a branch is another child of some node (an edit, a re-run). The
dialogue screen moves through that tree, and this module answers "what is next to this node"
without Textual and without loading any message text.

Two trees answer the same questions (:class:`TreeNavigation`): :class:`DialogueTree` holds the
nodes in memory (built from a list: for tests and small trees), and :class:`StoredTree` asks
the run database one step at a time through :mod:`clonechat.read.tree` (a node's parent, its
children: indexed lookups), so opening and navigating a 100,000-turn dialogue costs neither
seconds of loading nor memory that grows with the dialogue. The questions and their queries
live in the read layer; this module holds the navigation built on them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

from clonechat.errors import NotFoundError
from clonechat.read import tree as stored
from clonechat.read.connect import Readable
from clonechat.read.paths import path_in
from clonechat.read.tree import TreeNode

__all__ = ["DialogueTree", "StoredTree", "TreeNavigation", "TreeNode"]


class TreeNavigation(ABC):
    """Sibling, parent and child moves, from a tree's ``parent`` and ``children``."""

    @abstractmethod
    def __contains__(self, node_id: object) -> bool: ...

    @abstractmethod
    def parent(self, node_id: str) -> str | None:
        """The node this one answers (``None`` for an opening)."""

    @abstractmethod
    def children(self, node_id: str | None) -> list[str]:
        """The replies to this node (``None``: the openings), oldest first."""

    @abstractmethod
    def turn_index(self, node_id: str) -> int:
        """The node's place on any path through it (0 for the opening)."""

    @abstractmethod
    def leaf_of(self, node_id: str) -> str:
        """The end of the newest conversation through this node: follow the newest child down.

        Moving to a sibling then shows that branch's whole conversation (the most recent
        continuation of it), not just the path up to the sibling.
        """

    def siblings(self, node_id: str) -> list[str]:
        """This node and the other children of its parent, oldest first (openings are siblings
        of each other: an edited opening is a second root)."""
        return self.children(self.parent(node_id))

    def sibling_position(self, node_id: str) -> tuple[int, int]:
        """Which branch this node is at its fork: ``(i, n)``, 1-based, for "branch i/n"."""
        siblings = self.siblings(node_id)
        return siblings.index(node_id) + 1, len(siblings)

    def next_sibling(self, node_id: str) -> str | None:
        siblings = self.siblings(node_id)
        i = siblings.index(node_id)
        return siblings[i + 1] if i + 1 < len(siblings) else None

    def prev_sibling(self, node_id: str) -> str | None:
        siblings = self.siblings(node_id)
        i = siblings.index(node_id)
        return siblings[i - 1] if i > 0 else None


class DialogueTree(TreeNavigation):
    """The conversation nodes (openings and turns) of one dialogue, as a tree.

    Side nodes (predictions, reports, coordination answers) are left out: they hang off turns
    but are not part of any conversation, so they must not count as branches. Children are
    ordered oldest first (creation time, then the ULID id, which also sorts by time), so
    "next sibling" means "the branch made after this one".
    """

    def __init__(self, nodes: Iterable[TreeNode]) -> None:
        self._nodes: dict[str, TreeNode] = {}
        self._children: dict[str | None, list[str]] = {}
        for node in nodes:
            self.add(node)

    @classmethod
    def load(cls, db: Readable, dialogue_id: str) -> DialogueTree:
        """The dialogue's tree, read in one query of a few small columns."""
        return cls(stored.tree_nodes(db, dialogue_id))

    def add(self, node: TreeNode) -> None:
        """Add a node (e.g. a turn a live dialogue just completed); its parent need not be here
        yet, and adding a node twice is harmless."""
        if node.id in self._nodes:
            return
        if node.created_at.tzinfo is not None:  # ORM rows are naive UTC; the read layer and engine, aware
            node = replace(node, created_at=node.created_at.astimezone(UTC).replace(tzinfo=None))
        self._nodes[node.id] = node
        siblings = self._children.setdefault(node.parent_id, [])
        siblings.append(node.id)
        siblings.sort(key=lambda i: (self._nodes[i].created_at, i))

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def node(self, node_id: str) -> TreeNode:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise NotFoundError(f"node {node_id} is not in this dialogue's tree") from None

    def parent(self, node_id: str) -> str | None:
        return self.node(node_id).parent_id

    def children(self, node_id: str | None) -> list[str]:
        return list(self._children.get(node_id, ()))

    def turn_index(self, node_id: str) -> int:
        return self.node(node_id).turn_index

    def leaf_of(self, node_id: str) -> str:
        current = self.node(node_id).id
        while children := self._children.get(current):
            current = children[-1]
        return current

    @property
    def branch_count(self) -> int:
        """How many conversations the tree holds (its leaves)."""
        return sum(1 for node_id in self._nodes if not self._children.get(node_id))

    def path_to(self, node_id: str) -> list[str]:
        """The ids from the opening to ``node_id``, opening first (the read layer's walk over
        the loaded nodes)."""
        return path_in({i: n.parent_id for i, n in self._nodes.items()}, self.node(node_id).id)


class StoredTree(TreeNavigation):
    """A stored dialogue's tree, asked of the database a step at a time (nothing is loaded up
    front: :mod:`clonechat.read.tree` answers each question with an indexed lookup).

    Nodes this process saw complete are :meth:`add`-ed too: the writer commits a moment after
    the engine reports a turn, and a key pressed in between must already see it.
    """

    def __init__(self, db: Readable, dialogue_id: str) -> None:
        self._db = db
        self.dialogue_id = dialogue_id
        self._added = DialogueTree(())

    def add(self, node: TreeNode) -> None:
        self._added.add(node)

    def _place(self, node_id: str) -> tuple[str | None, int] | None:
        if node_id in self._added:
            added = self._added.node(node_id)
            return added.parent_id, added.turn_index
        return stored.tree_place(self._db, self.dialogue_id, node_id)

    def _known(self, node_id: str) -> tuple[str | None, int]:
        place = self._place(node_id)
        if place is None:
            raise NotFoundError(f"node {node_id} is not in the tree of dialogue {self.dialogue_id}")
        return place

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and self._place(node_id) is not None

    def parent(self, node_id: str) -> str | None:
        return self._known(node_id)[0]

    def turn_index(self, node_id: str) -> int:
        return self._known(node_id)[1]

    def children(self, node_id: str | None) -> list[str]:
        found = stored.roots(self._db, self.dialogue_id) if node_id is None else stored.children(self._db, node_id)
        stamped = {child.id: _naive(child.created_at) for child in found}
        for child in self._added.children(node_id):
            stamped.setdefault(child, self._added.node(child).created_at)
        return sorted(stamped, key=lambda i: (stamped[i], i))

    def leaf_of(self, node_id: str) -> str:
        self._known(node_id)
        current = stored.newest_leaf(self._db, node_id) or node_id
        # Turns seen here but not committed yet continue the newest branch.
        while children := self.children(current):
            current = children[-1]
        return current


def _naive(value: datetime) -> datetime:
    """Naive UTC, as the tree compares times (SQLite hands back naive UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value
