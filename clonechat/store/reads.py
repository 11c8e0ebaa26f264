"""Read queries the CLI, the TUI and resume share. Each opens its own short session."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import func, text
from sqlmodel import col, select

from clonechat.engine.protocol import side_key
from clonechat.engine.records import NodeRecord
from clonechat.errors import NotFoundError
from clonechat.store.database import Database
from clonechat.store.models import Condition, Dialogue, Experiment, Node, Prompt


@dataclass(frozen=True)
class DialogueSummary:
    id: str
    experiment: str
    condition: str
    replicate: int
    status: str
    stop_reason: str | None
    turns: int
    model_a: str
    model_b: str
    created_at: datetime


def list_dialogues(
    db: Database, *, experiment: str | None = None, experiment_id: str | None = None, limit: int | None = 50
) -> list[DialogueSummary]:
    turn_count = (
        select(func.count())
        .where(col(Node.dialogue_id) == col(Dialogue.id), col(Node.kind) == "turn")
        .correlate(Dialogue)
        .scalar_subquery()
    )
    query = (
        select(Dialogue, Condition.name, Experiment.name, turn_count)
        .join(Condition, col(Condition.id) == col(Dialogue.condition_id))
        .join(Experiment, col(Experiment.id) == col(Condition.experiment_id))
        .order_by(col(Dialogue.id).desc())
        .limit(limit)
    )
    if experiment is not None:
        query = query.where(col(Experiment.name) == experiment)
    if experiment_id is not None:
        query = query.where(col(Experiment.id) == experiment_id)
    with db.session() as session:
        rows = session.exec(query).all()
    return [
        DialogueSummary(
            id=d.id,
            experiment=exp_name,
            condition=cond_name,
            replicate=d.replicate,
            status=d.status,
            stop_reason=d.stop_reason,
            turns=int(turns),
            model_a=d.model_a,
            model_b=d.model_b,
            created_at=d.created_at,
        )
        for d, cond_name, exp_name, turns in rows
    ]


def resolve_dialogue(db: Database, id_or_prefix: str) -> Dialogue:
    """A dialogue by full id or unique prefix (ids are long; prefixes are kind to typists)."""
    with db.session() as session:
        matches = session.exec(
            select(Dialogue).where(col(Dialogue.id).startswith(id_or_prefix.upper(), autoescape=True)).limit(2)
        ).all()
    if not matches:
        raise NotFoundError(f"no dialogue with id {id_or_prefix!r} in {db.path}")
    if len(matches) > 1:
        raise NotFoundError(f"dialogue id prefix {id_or_prefix!r} is ambiguous in {db.path}: give more characters")
    return matches[0]


def path_to(db: Database, leaf_id: str) -> list[Node]:
    """The nodes from the root to ``leaf_id``, in order (a recursive CTE: one query)."""
    query = text(
        """
        WITH RECURSIVE ancestry(id, parent_id, depth) AS (
            SELECT id, parent_id, 0 FROM node WHERE id = :leaf
            UNION ALL
            SELECT node.id, node.parent_id, ancestry.depth + 1
            FROM node JOIN ancestry ON node.id = ancestry.parent_id
        )
        SELECT id FROM ancestry ORDER BY depth DESC
        """
    )
    with db.session() as session:
        ids = [row[0] for row in session.connection().execute(query, {"leaf": leaf_id})]
        if not ids:
            raise NotFoundError(f"no node with id {leaf_id!r} in {db.path}")
        nodes = {n.id: n for n in session.exec(select(Node).where(col(Node.id).in_(ids))).all()}
    return [nodes[i] for i in ids]


def dialogue_path(db: Database, dialogue: Dialogue) -> list[Node]:
    """The dialogue's current conversation (root to head); empty before its opening exists."""
    if dialogue.head_node_id is None:
        return []
    return path_to(db, dialogue.head_node_id)


def prompt_text(db: Database, prompt_hash: str) -> str:
    with db.session() as session:
        prompt = session.get(Prompt, prompt_hash)
    if prompt is None:
        raise NotFoundError(f"prompt {prompt_hash[:12]} missing from {db.path}")
    return prompt.text


def node_record(node: Node) -> NodeRecord:
    """A stored node as the engine's record (for resuming and branching)."""
    values = {f.name: getattr(node, f.name) for f in fields(NodeRecord)}
    values["params"] = dict(node.params)
    return NodeRecord(**values)


def side_answers(db: Database, dialogue_ids: list[str]) -> dict[str, set[str]]:
    """Per dialogue, the once-per-dialogue side answers already stored (coordination answers
    and reports-back, as ``protocol.side_key``), so a resumed dialogue does not ask twice."""
    found: dict[str, set[str]] = {}
    with db.session() as session:
        for chunk_start in range(0, len(dialogue_ids), 500):
            chunk = dialogue_ids[chunk_start : chunk_start + 500]
            rows = session.exec(
                select(Node.dialogue_id, Node.kind, Node.speaker, Node.variant).where(
                    col(Node.dialogue_id).in_(chunk), col(Node.kind).in_(["coordination", "report"])
                )
            ).all()
            for dialogue_id, kind, speaker, variant in rows:
                found.setdefault(dialogue_id, set()).add(side_key(kind, speaker, variant))
    return found


SIDE_KINDS = ("prediction", "coordination", "report")


def side_nodes(db: Database, dialogue_id: str) -> list[Node]:
    """A dialogue's predictions, coordination answers and reports-back, oldest first."""
    with db.session() as session:
        query = select(Node).where(col(Node.dialogue_id) == dialogue_id, col(Node.kind).in_(SIDE_KINDS))
        return list(session.exec(query.order_by(col(Node.id))).all())
