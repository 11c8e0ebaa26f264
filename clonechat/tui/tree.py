"""Navigating a dialogue's tree of messages (Loom-style): parents, children, sibling branches.

Every message is a node with a parent, so a dialogue is a tree: a conversation is a path from
the opening to a leaf, and a branch is another child of some node (an edit, a re-run). The
dialogue screen moves through that tree, and this module answers "what is next to this node"
without Textual and without loading any message text: one query of ids, parents, speakers,
turn indices and timestamps is cheap even for a big tree, and the text stays with the lazily
paged transcript.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import bindparam, text

from clonechat.engine.records import CONVERSATION_KINDS
from clonechat.errors import NotFoundError
from clonechat.store.database import Database

_TREE_ROWS = text(
    "SELECT id, parent_id, speaker, turn_index, created_at FROM node WHERE dialogue_id = :dialogue AND kind IN :kinds"
).bindparams(bindparam("kinds", expanding=True))


def _datetime(value: object) -> datetime:
    """A timestamp column as SQLite returns it through a raw query (ISO text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class TreeNode:
    """The shape of one conversation node: enough to navigate, none of its text."""

    id: str
    parent_id: str | None
    speaker: str
    turn_index: int
    created_at: datetime


class DialogueTree:
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
    def load(cls, db: Database, dialogue_id: str) -> DialogueTree:
        """The dialogue's tree, read in one query of a few small columns."""
        params = {"dialogue": dialogue_id, "kinds": sorted(CONVERSATION_KINDS)}
        with db.session() as session:
            rows = session.connection().execute(_TREE_ROWS, params).all()
        return cls(TreeNode(str(r[0]), r[1], str(r[2]), int(r[3]), _datetime(r[4])) for r in rows)

    def add(self, node: TreeNode) -> None:
        """Add a node (e.g. a turn a live dialogue just completed); its parent need not be here
        yet, and adding a node twice is harmless."""
        if node.id in self._nodes:
            return
        if node.created_at.tzinfo is not None:  # SQLite hands back naive UTC; the engine, aware
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
        """The node this one answers (``None`` for an opening)."""
        return self.node(node_id).parent_id

    def children(self, node_id: str) -> list[str]:
        """The replies to this node, oldest first (more than one: the conversation branches here)."""
        return list(self._children.get(node_id, ()))

    def siblings(self, node_id: str) -> list[str]:
        """This node and the other children of its parent, oldest first (openings are siblings
        of each other: an edited opening is a second root)."""
        return list(self._children.get(self.parent(node_id), ()))

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

    def leaf_of(self, node_id: str) -> str:
        """The end of the newest conversation through this node: follow the newest child down.

        Moving to a sibling then shows that branch's whole conversation (the most recent
        continuation of it), not just the path up to the sibling.
        """
        current = self.node(node_id).id
        while children := self._children.get(current):
            current = children[-1]
        return current

    @property
    def branch_count(self) -> int:
        """How many conversations the tree holds (its leaves)."""
        return sum(1 for node_id in self._nodes if not self._children.get(node_id))

    def path_to(self, node_id: str) -> list[str]:
        """The ids from the opening to ``node_id``, opening first."""
        path = [self.node(node_id).id]
        while (parent := self._nodes[path[-1]].parent_id) is not None and parent in self._nodes:
            path.append(parent)
        path.reverse()
        return path
