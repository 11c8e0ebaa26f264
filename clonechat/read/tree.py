"""A dialogue's tree of conversation nodes: who answers whom, and the branches at each node.

Every message is a node with a parent, so a dialogue is a tree: a conversation is a path from
the opening to a leaf, and a branch is another child of some node (an edit, a re-run). These
functions answer "what is next to this node" without loading any message text: a node's parent
and turn index, its children, the dialogue's openings, the newest leaf below a node, each one
indexed lookup (``parent_id``, ``dialogue_id``, the primary key), so a 100,000-turn dialogue is
navigated a step at a time. :func:`tree_nodes` reads a whole tree in one query of a few small
columns, for small trees and tests.

Only conversation nodes (openings and turns) are part of the tree: side nodes (predictions,
reports, coordination answers) hang off turns but are not branches of any conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from clonechat.engine.records import CONVERSATION_KINDS
from clonechat.read.connect import Readable, connection, stored_time

if TYPE_CHECKING:
    from sqlalchemy import TextClause

_KINDS = sorted(CONVERSATION_KINDS)

_TREE_NODES = (
    "SELECT id, parent_id, speaker, turn_index, created_at FROM node WHERE dialogue_id = :dialogue AND kind IN :kinds"
)
_PLACE = "SELECT parent_id, turn_index FROM node WHERE id = :id AND dialogue_id = :dialogue AND kind IN :kinds"
_CHILDREN = "SELECT id, created_at FROM node WHERE parent_id = :parent AND kind IN :kinds"
_ROOTS = "SELECT id, created_at FROM node WHERE dialogue_id = :dialogue AND parent_id IS NULL AND kind IN :kinds"
#: Down from ``:start`` by the newest child each step (one indexed lookup per step). The start is
#: cast to the column's type: PostgreSQL types a recursive CTE's columns by its first part.
_NEWEST_DESCENT = """
WITH RECURSIVE down(id, depth) AS (
    SELECT CAST(:start AS VARCHAR), 0
    UNION ALL
    SELECT (SELECT n.id FROM node n WHERE n.parent_id = down.id AND n.kind IN :kinds
            ORDER BY n.created_at DESC, n.id DESC LIMIT 1), depth + 1
    FROM down WHERE down.id IS NOT NULL
)
SELECT id FROM down WHERE id IS NOT NULL ORDER BY depth DESC LIMIT 1
"""


@dataclass(frozen=True)
class TreeNode:
    """The shape of one conversation node: enough to navigate, none of its text."""

    id: str
    parent_id: str | None
    speaker: str
    turn_index: int
    created_at: datetime


class TreePlace(NamedTuple):
    """Where a node sits in its tree: the node it answers and its depth on any path through it."""

    parent_id: str | None
    turn_index: int


class Child(NamedTuple):
    """A child of a node (or an opening), with the time that orders it among its siblings."""

    id: str
    created_at: datetime


@cache
def _statement(query: str) -> TextClause:
    """``query`` compiled once (the tree asks the same few questions on every key press)."""
    from sqlalchemy import bindparam, text

    return text(query).bindparams(bindparam("kinds", expanding=True))


def _rows(db: Readable, query: str, **params: object) -> list[tuple[Any, ...]]:
    with connection(db) as conn:
        return [tuple(row) for row in conn.execute(_statement(query), {"kinds": _KINDS, **params})]


def tree_nodes(db: Readable, dialogue_id: str) -> list[TreeNode]:
    """Every conversation node of a dialogue (in no particular order)."""
    rows = _rows(db, _TREE_NODES, dialogue=dialogue_id)
    return [TreeNode(str(r[0]), r[1], str(r[2]), int(r[3]), stored_time(r[4])) for r in rows]


def tree_place(db: Readable, dialogue_id: str, node_id: str) -> TreePlace | None:
    """The parent and turn index of a conversation node of this dialogue (``None``: no such node)."""
    rows = _rows(db, _PLACE, id=node_id, dialogue=dialogue_id)
    return TreePlace(rows[0][0], int(rows[0][1])) if rows else None


def children(db: Readable, parent_id: str) -> list[Child]:
    """The conversation nodes that answer ``parent_id`` (in no particular order)."""
    return [Child(str(r[0]), stored_time(r[1])) for r in _rows(db, _CHILDREN, parent=parent_id)]


def roots(db: Readable, dialogue_id: str) -> list[Child]:
    """A dialogue's openings: the first one, and any edited opening (a second root)."""
    return [Child(str(r[0]), stored_time(r[1])) for r in _rows(db, _ROOTS, dialogue=dialogue_id)]


def newest_leaf(db: Readable, start: str) -> str | None:
    """The end of the newest conversation through ``start``: its newest child, that child's
    newest child, and so on down (newest by ``created_at``, then id); ``start`` itself if it has
    no children, ``None`` only if the descent returned nothing."""
    rows = _rows(db, _NEWEST_DESCENT, start=start)
    return str(rows[0][0]) if rows else None
