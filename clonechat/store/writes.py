"""Every write the store makes, as plain functions on a connection.

They run inside the single writer's transactions. Inserts are idempotent (``ON CONFLICT DO
NOTHING`` on natural or client-generated keys), so replaying a write after a crash or a resume
never duplicates a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlmodel import col

from clonechat.engine.records import CONVERSATION_KINDS, NodeRecord, new_id
from clonechat.prompts import RenderedPrompt, content_hash
from clonechat.store.dialect import insert_ignoring, insert_rows, is_sqlite, lock_for
from clonechat.store.models import Condition, Dialogue, Experiment, Prompt, PromptTemplate
from clonechat.store.turn_metrics import MetricsTracker, insert_metrics

WriteFunction = Callable[[Connection], Any]


def _now() -> datetime:
    return datetime.now(UTC)


def ensure_experiment(conn: Connection, name: str, spec: str | None = None, spec_hash: str | None = None) -> str:
    """The id of the experiment called ``name``, creating it if needed."""
    conn.execute(
        insert_ignoring(conn, Experiment)
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
        insert_ignoring(conn, Condition)
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
        insert_ignoring(conn, PromptTemplate)
        .values(hash=template.hash, kind=template.kind, name=template.name, source=source, created_at=_now())
        .on_conflict_do_nothing()
    )
    conn.execute(
        insert_ignoring(conn, Prompt)
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
    head_node_id: str | None = None


def create_dialogue(conn: Connection, dialogue: NewDialogue) -> None:
    now = _now()
    conn.execute(
        insert_ignoring(conn, Dialogue)
        .values(**dialogue.__dict__, status="pending", created_at=now, updated_at=now)
        .on_conflict_do_nothing()
    )


_NODE_COLUMNS = [f.name for f in fields(NodeRecord)]
_NODE_VALUES = attrgetter(*_NODE_COLUMNS)


def insert_nodes(conn: Connection, nodes: list[NodeRecord], metrics: MetricsTracker | None = None) -> None:
    """Insert nodes, skipping any already stored, with the metrics of each agent turn and their
    full-text index entries (in the same transaction, so no turn is ever stored without them).
    This is the hot path of a large batch (every turn of every dialogue), so it is one DB-API
    ``executemany`` rather than SQLAlchemy's per-row bind processing, which cost several times
    more per turn. ``metrics`` keeps path states between calls (the writer's);
    without one, each turn's path is replayed from the database."""
    if nodes:
        insert_rows(conn, "node", _NODE_COLUMNS, [_NODE_VALUES(n) for n in nodes])
        index_new_nodes(conn)
        insert_metrics(conn, (metrics or MetricsTracker()).metrics_for(conn, nodes))


#: Index every node past the last one the full-text index holds (``node_fts_docsize`` has a row
#: per indexed node, keyed by its rowid). New nodes always get the highest rowids, so this is
#: exactly the nodes just inserted, plus any a tool inserted behind the store's back.
_INDEX_NEW_NODES = (
    "INSERT INTO node_fts (rowid, content) SELECT rowid, content FROM node "
    "WHERE rowid > (SELECT coalesce(max(id), 0) FROM node_fts_docsize) ORDER BY rowid"
)
#: The reasoning's index, for the same new nodes: run before the messages' index moves its mark.
_INDEX_NEW_REASONING = (
    "INSERT INTO node_fts_reasoning (rowid, reasoning) SELECT rowid, reasoning FROM node "
    "WHERE rowid > (SELECT coalesce(max(id), 0) FROM node_fts_docsize) AND reasoning IS NOT NULL ORDER BY rowid"
)


def index_new_nodes(conn: Connection) -> None:
    """Bring the full-text index up to date with the node table, in the caller's transaction.
    One set-based insert per write costs a tenth of an insert trigger (FTS5's per-statement
    work dominated a batch's commits); edits and deletions, which the store never makes, are
    kept in sync by triggers. PostgreSQL's index is a GIN expression index the server keeps
    up to date itself."""
    if is_sqlite(conn):
        conn.exec_driver_sql(_INDEX_NEW_REASONING)
        conn.exec_driver_sql(_INDEX_NEW_NODES)


def store_edited_prompt(conn: Connection, text: str) -> str:
    """Store a prompt the researcher wrote (a system prompt edited on a fork) once; return its
    hash. It has no template file: its template row is the text itself, kind
    ``researcher-edit``, so every prompt row still says where it came from."""
    digest = content_hash(text)
    conn.execute(
        insert_ignoring(conn, PromptTemplate)
        .values(hash=digest, kind="researcher-edit", name="system", source=text, created_at=_now())
        .on_conflict_do_nothing()
    )
    conn.execute(
        insert_ignoring(conn, Prompt)
        .values(hash=digest, template_hash=digest, text=text, variables={}, created_at=_now())
        .on_conflict_do_nothing()
    )
    return digest


def insert_nodes_and_heads(conn: Connection, nodes: list[NodeRecord], metrics: MetricsTracker | None = None) -> None:
    """Insert finished nodes and move each dialogue's head to its newest conversation node,
    in the caller's transaction (so a head never points at a turn that is not stored), and
    tell live viewers which dialogues gained nodes when it commits (PostgreSQL; see ``notify``)."""
    from clonechat.store.notify import notify_changed

    insert_nodes(conn, nodes, metrics)
    heads = {n.dialogue_id: n.id for n in nodes if n.kind in CONVERSATION_KINDS}
    if heads:
        now = _now()
        conn.execute(
            update(Dialogue).where(col(Dialogue.id) == bindparam("dialogue_id")),
            [{"dialogue_id": d, "head_node_id": h, "updated_at": now} for d, h in heads.items()],
        )
    notify_changed(conn, {n.dialogue_id for n in nodes})


def update_dialogue(conn: Connection, dialogue_id: str, **values: Any) -> None:
    """Change a dialogue's row (status, stop reason, head...) and tell live viewers at commit."""
    from clonechat.store.notify import notify_changed

    conn.execute(update(Dialogue).where(col(Dialogue.id) == dialogue_id).values(**values, updated_at=_now()))
    notify_changed(conn, [dialogue_id])


@dataclass(frozen=True)
class NewScore:
    node_id: str
    scorer: str
    version: str
    value: float | None
    detail: dict[str, Any]


def insert_scores(conn: Connection, scores: list[NewScore]) -> int:
    """Insert score rows, skipping any (node, scorer, version) already scored: re-scoring is
    idempotent. Returns how many rows were new."""
    now = _now()
    columns = ("node_id", "scorer", "version", "value", "detail", "created_at")
    return insert_rows(
        conn, "score", columns, [(s.node_id, s.scorer, s.version, s.value, s.detail, now) for s in scores]
    )


def lock_experiment_name(conn: Connection, name: str) -> str | None:
    """Hold the experiment name ``name`` for the rest of the caller's transaction (two workers
    started in the same second store one plan) and return the id of the experiment already
    stored under it, if any."""
    lock_for(conn, f"clonechat experiment {name}")
    found = conn.execute(select(col(Experiment.id)).where(col(Experiment.name) == name)).scalar()
    return None if found is None else str(found)
