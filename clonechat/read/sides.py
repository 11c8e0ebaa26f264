"""Side nodes: predictions, coordination answers and reports-back, and where each one sits.

No agent saw a side node (they are leaves off the conversation, blinded), but a reader wants
each beside the turn it belongs to. :func:`anchor` is the one rule for that: a prediction sits
with the turn it predicts, every other side answer with the conversation node it followed.
``show`` (after the turn), the Markdown export (a prediction before its turn: it was made
before the turn was written) and the TUI's dialogue screen (its side panel) all group with
:func:`group_by_anchor`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from clonechat.read.connect import Readable, connection

if TYPE_CHECKING:
    from clonechat.store.models import Node

SIDE_KINDS = ("prediction", "coordination", "report", "recognition")


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
    """Per dialogue, the once-per-dialogue side answers already stored (coordination answers,
    reports-back and recognition answers, as ``protocol.side_key``; a recognition answer is
    keyed by the turn it was shown), so a resumed dialogue does not ask twice."""
    from sqlalchemy import select
    from sqlmodel import Session, col

    from clonechat.engine.protocol import side_key
    from clonechat.store.models import Node

    found: dict[str, set[str]] = {}
    with Session(db.reader_engine) as session:
        for start in range(0, len(dialogue_ids), 500):
            chunk = dialogue_ids[start : start + 500]
            rows = session.execute(
                select(
                    col(Node.dialogue_id),
                    col(Node.kind),
                    col(Node.speaker),
                    col(Node.variant),
                    col(Node.target_node_id),
                ).where(col(Node.dialogue_id).in_(chunk), col(Node.kind).in_(["coordination", "report", "recognition"]))
            ).all()
            for dialogue_id, kind, speaker, variant, target in rows:
                key = target if kind == "recognition" else variant
                found.setdefault(dialogue_id, set()).add(side_key(kind, speaker, key))
    return found


#: ``s.detail`` is the answer's reading in force (JSON): its ``answer`` is taken in Python, the
#: same on both backends (SQLite's ``json_extract`` is PostgreSQL's ``->>``).
_EXPERIMENT_SIDES = """
SELECT c.name, n.dialogue_id, n.kind, n.speaker, n.variant, n.content, n.model, s.detail
FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
LEFT JOIN v_score s ON s.node_id = n.id AND s.scorer = :scorer AND n.kind = 'coordination'
WHERE c.experiment_id = :experiment AND n.kind IN ('coordination', 'report')
ORDER BY c.name, n.dialogue_id, n.id
"""


@dataclass(frozen=True)
class ExperimentSide:
    """A coordination answer or a report-back of one dialogue."""

    condition: str
    dialogue_id: str
    #: "coordination" or "report".
    kind: str
    speaker: str
    #: ``TASK@phase`` for a coordination answer.
    variant: str | None
    content: str
    model: str | None
    #: The coordination answer as read by scoring, at the version in force; None if not read yet.
    answer: str | None


def experiment_sides(db: Readable, experiment_id: str, answer_scorer: str) -> list[ExperimentSide]:
    """An experiment's coordination answers and reports-back, by condition, dialogue, then node
    id, as the report shows them. Each answer comes with its ``answer_scorer`` reading *in force*
    (``v_score``, as ``v_coordination`` reads it), or None before scoring: the report then reads
    the answer itself, so it can be written before any scoring."""
    from sqlalchemy import text

    with connection(db) as conn:
        rows = conn.execute(text(_EXPERIMENT_SIDES), {"experiment": experiment_id, "scorer": answer_scorer}).all()
    return [
        ExperimentSide(
            condition=str(condition),
            dialogue_id=str(dialogue),
            kind=str(kind),
            speaker=str(speaker),
            variant=variant,
            content=str(content),
            model=model,
            answer=_answer(detail),
        )
        for condition, dialogue, kind, speaker, variant, content, model, detail in rows
    ]


def _answer(detail: str | dict[str, Any] | None) -> str | None:
    """The ``answer`` of a stored reading (JSON text on SQLite, parsed on PostgreSQL)."""
    if detail is None:
        return None
    answer = (json.loads(detail) if isinstance(detail, str) else detail).get("answer")
    return None if answer is None else str(answer)
