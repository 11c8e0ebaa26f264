"""Every write the store makes, as plain functions on a connection.

They run inside the single writer's transactions. Inserts are idempotent (``ON CONFLICT DO
NOTHING`` on natural or client-generated keys), so replaying a write after a crash or a resume
never duplicates a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlmodel import col

from clonechat.engine.records import NodeRecord, new_id
from clonechat.prompts import RenderedPrompt
from clonechat.store.models import Condition, Dialogue, Experiment, Node, Prompt, PromptTemplate

WriteFunction = Callable[[Connection], Any]


def _now() -> datetime:
    return datetime.now(UTC)


def ensure_experiment(conn: Connection, name: str, spec: str | None = None, spec_hash: str | None = None) -> str:
    """The id of the experiment called ``name``, creating it if needed."""
    conn.execute(
        insert(Experiment)
        .values(id=new_id(), name=name, spec=spec, spec_hash=spec_hash, created_at=_now())
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return str(conn.execute(select(col(Experiment.id)).where(col(Experiment.name) == name)).scalar_one())


def ensure_condition(
    conn: Connection,
    experiment_id: str,
    name: str,
    template: str,
    model_a: str,
    model_b: str,
    settings: dict[str, Any],
) -> str:
    conn.execute(
        insert(Condition)
        .values(
            id=new_id(),
            experiment_id=experiment_id,
            name=name,
            template=template,
            model_a=model_a,
            model_b=model_b,
            settings=settings,
            created_at=_now(),
        )
        .on_conflict_do_nothing(index_elements=["experiment_id", "name"])
    )
    query = select(col(Condition.id)).where(col(Condition.experiment_id) == experiment_id, col(Condition.name) == name)
    return str(conn.execute(query).scalar_one())


def store_prompt(conn: Connection, prompt: RenderedPrompt) -> str:
    """Store a rendered prompt (and its template's source) once; return its hash."""
    template = prompt.template
    source = template.path.read_text(encoding="utf-8")
    conn.execute(
        insert(PromptTemplate)
        .values(hash=template.hash, kind=template.kind, name=template.name, source=source, created_at=_now())
        .on_conflict_do_nothing()
    )
    conn.execute(
        insert(Prompt)
        .values(
            hash=prompt.hash,
            template_hash=template.hash,
            text=prompt.text,
            variables=dict(prompt.values),
            created_at=_now(),
        )
        .on_conflict_do_nothing()
    )
    return prompt.hash


def next_replicate(conn: Connection, condition_id: str) -> int:
    query = select(col(Dialogue.replicate)).where(col(Dialogue.condition_id) == condition_id)
    replicates = conn.execute(query).scalars().all()
    return max(replicates, default=0) + 1


@dataclass(frozen=True)
class NewDialogue:
    id: str
    condition_id: str
    replicate: int
    seed: int | None
    first_speaker: str
    max_turns: int
    token_budget: int | None
    stop_phrase: str | None
    model_a: str
    model_b: str
    system_prompt_a: str
    system_prompt_b: str
    opening_prompt: str
    settings: dict[str, Any]


def create_dialogue(conn: Connection, dialogue: NewDialogue) -> None:
    now = _now()
    conn.execute(
        insert(Dialogue)
        .values(**dialogue.__dict__, status="pending", created_at=now, updated_at=now)
        .on_conflict_do_nothing()
    )


def node_row(node: NodeRecord) -> dict[str, Any]:
    """The ``node`` table row for an engine record (the record's fields are a subset of the
    table's columns, by design)."""
    row = {f.name: getattr(node, f.name) for f in fields(NodeRecord)}
    row["params"] = dict(node.params)
    return row


def insert_nodes(conn: Connection, nodes: list[NodeRecord]) -> None:
    if nodes:
        conn.execute(insert(Node).on_conflict_do_nothing(), [node_row(n) for n in nodes])


def update_dialogue(conn: Connection, dialogue_id: str, **values: Any) -> None:
    conn.execute(update(Dialogue).where(col(Dialogue.id) == dialogue_id).values(**values, updated_at=_now()))
