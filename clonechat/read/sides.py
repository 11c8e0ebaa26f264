"""Side nodes: predictions, coordination answers and reports-back, and where each one sits.

No agent saw a side node (they are leaves off the conversation, blinded), but a reader wants
each beside the turn it belongs to. :func:`anchor` is the one rule for that: a prediction sits
with the turn it predicts (shown *before* it: it was made before the turn was written), every
other side answer with the conversation node it followed. ``show``, the Markdown export and the
TUI's dialogue screen all group with :func:`group_by_anchor`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

from clonechat.read.connect import Readable

if TYPE_CHECKING:
    from clonechat.store.models import Node

SIDE_KINDS = ("prediction", "coordination", "report")


class _SideLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def target_node_id(self) -> str | None: ...


S = TypeVar("S", bound=_SideLike)


def anchor(kind: str, parent_id: str | None, target_node_id: str | None) -> str | None:
    """The conversation node a side node is shown with (see the module docstring)."""
    if kind == "prediction" and target_node_id:
        return target_node_id
    return parent_id


def group_by_anchor(nodes: Iterable[S]) -> dict[str, list[S]]:
    """Side nodes by the node they are shown with, each list in the given (creation) order."""
    grouped: dict[str, list[S]] = {}
    for node in nodes:
        key = anchor(node.kind, node.parent_id, node.target_node_id)
        if key is not None:
            grouped.setdefault(key, []).append(node)
    return grouped


def side_nodes(db: Readable, dialogue_id: str, kinds: Iterable[str] = SIDE_KINDS) -> list[Node]:
    """A dialogue's side nodes of ``kinds``, oldest first."""
    from sqlmodel import Session, col, select

    from clonechat.store.models import Node

    query = select(Node).where(col(Node.dialogue_id) == dialogue_id, col(Node.kind).in_(list(kinds)))
    with Session(db.reader_engine) as session:
        return list(session.exec(query.order_by(col(Node.id))).all())


def side_answers(db: Readable, dialogue_ids: list[str]) -> dict[str, set[str]]:
    """Per dialogue, the once-per-dialogue side answers already stored (coordination answers
    and reports-back, as ``protocol.side_key``), so a resumed dialogue does not ask twice."""
    from sqlmodel import Session, col, select

    from clonechat.engine.protocol import side_key
    from clonechat.store.models import Node

    found: dict[str, set[str]] = {}
    with Session(db.reader_engine) as session:
        for start in range(0, len(dialogue_ids), 500):
            chunk = dialogue_ids[start : start + 500]
            rows = session.exec(
                select(Node.dialogue_id, Node.kind, Node.speaker, Node.variant).where(
                    col(Node.dialogue_id).in_(chunk), col(Node.kind).in_(["coordination", "report"])
                )
            ).all()
            for dialogue_id, kind, speaker, variant in rows:
                found.setdefault(dialogue_id, set()).add(side_key(kind, speaker, variant))
    return found
