"""Where stored dialogues continue from: each one's row, its path to the leaf it continues,
and the once-per-dialogue side answers it already has.

Batch resume asks this of a whole experiment at once (:func:`resume_points`): three queries
for the dialogues, their conversation nodes and their side answers, however many dialogues,
with each path walked in memory (:func:`clonechat.read.paths.path_in`). The TUI asks it of one
dialogue (:func:`resume_point`), whose path is the bounded walk up from the leaf. The prompts a
resume needs depend on the measures and the branch's edits, so the caller names them and reads
them with :func:`clonechat.read.dialogues.prompt_texts`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clonechat.engine.records import NodeRecord
from clonechat.read.connect import Readable
from clonechat.read.dialogues import resolve_dialogue
from clonechat.read.paths import node_record, path_in, path_to
from clonechat.read.sides import side_answers

if TYPE_CHECKING:
    from clonechat.store.models import Dialogue


@dataclass(frozen=True)
class ResumePoint:
    dialogue: Dialogue
    #: The name of the dialogue's condition.
    condition: str
    #: Root to the leaf it continues from (its head unless asked otherwise); empty without an opening.
    path: list[NodeRecord]
    #: Side answers already stored (``protocol.side_key``), so a resume does not ask twice.
    done: frozenset[str]


def resume_points(
    db: Readable, experiment_id: str, statuses: Collection[str], dialogue_ids: Collection[str] | None = None
) -> list[ResumePoint]:
    """Every dialogue of the experiment in one of ``statuses`` (and among ``dialogue_ids``, if
    given: those a worker just claimed), at its head, interleaved across conditions (replicate
    by replicate) so a resumed batch spreads over them."""
    from sqlmodel import Session, col, select

    from clonechat.store.models import Condition, Dialogue, Node

    where = [col(Condition.experiment_id) == experiment_id, col(Dialogue.status).in_(list(statuses))]
    if dialogue_ids is not None:
        where.append(col(Dialogue.id).in_(list(dialogue_ids)))
    in_statuses = select(Dialogue.id).join(Condition, col(Condition.id) == col(Dialogue.condition_id)).where(*where)
    with Session(db.reader_engine) as session:
        rows = session.exec(
            select(Dialogue, Condition.name)
            .join(Condition, col(Condition.id) == col(Dialogue.condition_id))
            .where(*where)
            .order_by(col(Dialogue.replicate), col(Condition.id))
        ).all()
        nodes = {
            n.id: n
            for n in session.exec(
                select(Node).where(col(Node.dialogue_id).in_(in_statuses), col(Node.kind).in_(["opening", "turn"]))
            ).all()
        }
    parents = {node_id: node.parent_id for node_id, node in nodes.items()}
    done = side_answers(db, [d.id for d, _ in rows])
    return [
        ResumePoint(
            dialogue,
            condition,
            [node_record(nodes[i]) for i in path_in(parents, dialogue.head_node_id)] if dialogue.head_node_id else [],
            frozenset(done.get(dialogue.id, ())),
        )
        for dialogue, condition in rows
    ]


def resume_point(db: Readable, dialogue_id: str, leaf_id: str | None = None) -> ResumePoint:
    """One dialogue (by id or unique prefix), at ``leaf_id`` or else its head."""
    from sqlmodel import Session

    from clonechat.store.models import Condition

    dialogue = resolve_dialogue(db, dialogue_id)
    leaf = leaf_id or dialogue.head_node_id
    path = [node_record(n) for n in path_to(db, leaf)] if leaf else []
    with Session(db.reader_engine) as session:
        condition = session.get(Condition, dialogue.condition_id)
    done = side_answers(db, [dialogue.id]).get(dialogue.id, set())
    return ResumePoint(dialogue, condition.name if condition else "", path, frozenset(done))
