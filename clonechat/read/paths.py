"""The path from a dialogue's opening to a node: the one walk up the tree, done lazily.

A conversation is the path from the root (the opening) to a leaf; its nodes are found from the
leaf upwards by one bounded recursive query (:func:`ancestors`), as far as the caller asks. A
conversation node's ``turn_index`` is its depth (the engine numbers turns along the path, and a
fork copies the index of the message it edits), so a path's length is known from its leaf
without walking it: the TUI opens a 100,000-turn dialogue as quickly as a short one. The
writer's metrics, batch resume, ``show``, ``export`` and the TUI's transcript all walk here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from clonechat.engine.records import NodeRecord
from clonechat.errors import NotFoundError
from clonechat.read.connect import Readable, connection, stored_time

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from clonechat.store.models import Dialogue, Node

#: Node columns a walk may return (the walk's SQL names columns only from this list).
WALK_COLUMNS = frozenset({"id", "parent_id", "kind", "turn_index", "speaker", "content", "model", "dialogue_id"})
#: No path is deeper than this; "walk to the root".
WHOLE_PATH = 2**62

#: ``{names}`` are the walked columns' names in the CTE, ``{first}`` the start node's columns and
#: ``{step}`` each parent's: the columns ride along in the recursion, so no node is looked up twice.
_ANCESTORS = """
WITH RECURSIVE ancestry(depth, parent, {names}) AS (
    SELECT 0, parent_id, {first} FROM node WHERE id = :start
    UNION ALL
    SELECT ancestry.depth + 1, node.parent_id, {step}
    FROM node JOIN ancestry ON node.id = ancestry.parent
    WHERE ancestry.depth + 1 < :count
)
SELECT {names} FROM ancestry ORDER BY depth
"""


def ancestors(
    conn: Connection, start: str, count: int = WHOLE_PATH, columns: Sequence[str] = ("id", "kind", "turn_index")
) -> list[tuple[Any, ...]]:
    """``columns`` of ``start`` and its ancestors, at most ``count`` nodes, nearest first.

    Takes a connection so the writer can walk inside its own transaction (the metrics of a new
    turn depend on the path it extends) and a reader on its own."""
    from sqlalchemy import text

    unknown = set(columns) - WALK_COLUMNS
    if unknown:
        raise ValueError(f"not a walkable node column: {', '.join(sorted(unknown))}")
    query = text(
        _ANCESTORS.format(
            names=", ".join(f"walked_{c}" for c in columns),
            first=", ".join(columns),
            step=", ".join(f"node.{c}" for c in columns),
        )
    )
    return [tuple(row) for row in conn.execute(query, {"start": start, "count": count})]


def path_in(parents: Mapping[str, str | None], leaf_id: str) -> list[str]:
    """The ids from the root to ``leaf_id``, walked in a map of node id to parent id that the
    caller already holds: the walk :func:`ancestors` does in SQL, for readers that load many
    dialogues' nodes in one query (batch resume, the export) instead of a walk per dialogue.
    A node missing from the map is a NotFoundError."""
    path: list[str] = []
    current: str | None = leaf_id
    while current is not None:
        if current not in parents:
            raise NotFoundError(f"node {current!r} is not among the nodes read (path to {leaf_id!r})")
        path.append(current)
        current = parents[current]
    path.reverse()
    return path


def nodes_by_id(db: Readable, ids: Sequence[str]) -> dict[str, Node]:
    """Node rows by id (read in chunks far below SQLite's bound-parameter limit)."""
    from sqlmodel import Session, col, select

    from clonechat.store.models import Node

    found: dict[str, Node] = {}
    with Session(db.reader_engine) as session:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            found |= {n.id: n for n in session.exec(select(Node).where(col(Node.id).in_(chunk))).all()}
    return found


def path_to(db: Readable, leaf_id: str) -> list[Node]:
    """The nodes from the root to ``leaf_id``, in order."""
    with connection(db) as conn:
        ids = [row[0] for row in reversed(ancestors(conn, leaf_id, columns=("id",)))]
    if not ids:
        raise NotFoundError(f"no node with id {leaf_id!r} in {db.path}")
    nodes = nodes_by_id(db, ids)
    return [nodes[i] for i in ids]


def dialogue_path(db: Readable, dialogue: Dialogue) -> list[Node]:
    """The dialogue's current conversation (root to head); empty before its opening exists."""
    if dialogue.head_node_id is None:
        return []
    return path_to(db, dialogue.head_node_id)


def node_record(node: Node) -> NodeRecord:
    """A stored node as the engine's record (for resuming, branching and display), its time
    aware UTC like the engine's own records and the live feed's (SQLite hands back naive UTC)."""
    values = {f.name: getattr(node, f.name) for f in fields(NodeRecord)}
    values["params"] = dict(node.params)
    values["created_at"] = stored_time(node.created_at)
    return NodeRecord(**values)
