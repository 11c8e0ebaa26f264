"""Dialogues as every screen lists them: one definition of "turns", one lookup by id.

**Turns** of a dialogue are the turns of its current conversation: the turn index of its head
node (the leaf ``show`` prints by default), 0 before the first turn. A forked dialogue has more
turn nodes than that (``v_dialogue.turn_nodes`` counts every branch), but its branches are other
conversations, not a longer one. ``clonechat ls``, the TUI browser, ``v_dialogue.turns`` and
the report all use this definition; it is the view's ``turns`` column, read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clonechat.errors import NotFoundError
from clonechat.read.connect import Readable, connection, stored_time

if TYPE_CHECKING:
    from clonechat.store.models import Dialogue

#: Statuses in the order a researcher scans them: what is moving first, what went wrong last.
STATUS_ORDER = ("running", "pending", "completed", "interrupted", "failed")


@dataclass(frozen=True)
class DialogueSummary:
    id: str
    experiment: str
    condition: str
    replicate: int
    status: str
    stop_reason: str | None
    #: Turns of the current conversation (see the module docstring).
    turns: int
    model_a: str
    model_b: str
    created_at: datetime


_SUMMARY_COLUMNS = (
    "dialogue_id, experiment, condition, replicate, status, stop_reason, turns, model_a, model_b, created_at"
)


def dialogue_summaries(
    db: Readable,
    *,
    experiment: str | None = None,
    experiment_id: str | None = None,
    condition: str | None = None,
    status: str | None = None,
    text: str | None = None,
    limit: int | None = 50,
) -> list[DialogueSummary]:
    """Dialogues matching every given filter, newest first, at most ``limit`` (``None``: all).

    ``text`` is a case-insensitive substring of any turn's content (``LIKE`` of the lower-cased
    content, which folds case the same way on both backends; ``%`` and ``_`` taken literally);
    blank text is no filter.
    """
    from sqlalchemy import text as sql

    where: list[str] = []
    params: dict[str, Any] = {}
    for column, value in (("experiment", experiment), ("condition", condition), ("status", status)):
        if value is not None:
            where.append(f"v.{column} = :{column}")
            params[column] = value
    if experiment_id is not None:
        where.append(
            "v.dialogue_id IN (SELECT d.id FROM dialogue d JOIN condition c ON c.id = d.condition_id "
            "WHERE c.experiment_id = :experiment_id)"
        )
        params["experiment_id"] = experiment_id
    if text is not None and text.strip():
        needle = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(
            "EXISTS (SELECT 1 FROM node n WHERE n.dialogue_id = v.dialogue_id AND n.kind = 'turn' "
            "AND lower(n.content) LIKE lower(:needle) ESCAPE '\\')"
        )
        params["needle"] = f"%{needle}%"
    query = f"SELECT {_SUMMARY_COLUMNS} FROM v_dialogue v"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY v.dialogue_id DESC"
    if limit is not None:
        query += " LIMIT :limit"
        params["limit"] = limit
    with connection(db) as conn:
        rows = conn.execute(sql(query), params).all()
    return [
        DialogueSummary(
            id=row[0],
            experiment=row[1],
            condition=row[2],
            replicate=int(row[3]),
            status=row[4],
            stop_reason=row[5],
            turns=int(row[6]),
            model_a=row[7],
            model_b=row[8],
            created_at=stored_time(row[9]),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Facets:
    """The values the browser's filters can take, as found in the database."""

    experiments: tuple[str, ...] = ()
    conditions_by_experiment: dict[str, tuple[str, ...]] = field(default_factory=dict)
    statuses: tuple[str, ...] = ()
    #: Dialogues in the whole database: 0 means "nothing yet", not "nothing matches".
    total: int = 0

    def conditions(self, experiment: str | None = None) -> tuple[str, ...]:
        """The condition names of one experiment, or of every experiment (sorted, unique)."""
        if experiment is not None:
            return self.conditions_by_experiment.get(experiment, ())
        return tuple(sorted({c for names in self.conditions_by_experiment.values() for c in names}))


def _status_key(status: str) -> tuple[int, str]:
    return (STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER), status)


_FACET_PAIRS = (
    "SELECT DISTINCT e.name, c.name FROM experiment e JOIN condition c ON c.experiment_id = e.id "
    "WHERE EXISTS (SELECT 1 FROM dialogue d WHERE d.condition_id = c.id)"
)
_STATUS_COUNTS = "SELECT status, count(*) FROM dialogue GROUP BY status"


def facets(db: Readable) -> Facets:
    """Experiments, their conditions and the statuses that have at least one dialogue."""
    from sqlalchemy import text as sql

    with connection(db) as conn:
        pairs = conn.execute(sql(_FACET_PAIRS)).all()
        counts = conn.execute(sql(_STATUS_COUNTS)).all()
    by_experiment: dict[str, list[str]] = {}
    for exp_name, cond_name in pairs:
        by_experiment.setdefault(exp_name, []).append(cond_name)
    return Facets(
        experiments=tuple(sorted(by_experiment)),
        conditions_by_experiment={name: tuple(sorted(conds)) for name, conds in sorted(by_experiment.items())},
        statuses=tuple(sorted((str(status) for status, _ in counts), key=_status_key)),
        total=sum(int(n) for _, n in counts),
    )


def experiment_of(db: Readable, dialogue_id: str) -> str | None:
    """The name of the experiment a dialogue belongs to (``None`` if there is no such dialogue)."""
    from sqlalchemy import text as sql

    with connection(db) as conn:
        row = conn.execute(sql("SELECT experiment FROM v_dialogue WHERE dialogue_id = :d"), {"d": dialogue_id}).first()
    return None if row is None else str(row[0])


def get_dialogue(db: Readable, dialogue_id: str) -> Dialogue | None:
    """The dialogue row, or ``None``."""
    from sqlmodel import Session

    from clonechat.store.models import Dialogue

    with Session(db.reader_engine) as session:
        return session.get(Dialogue, dialogue_id)


def resolve_dialogue(db: Readable, id_or_prefix: str) -> Dialogue:
    """A dialogue by full id or unique prefix (ids are long; prefixes are kind to typists)."""
    from sqlmodel import Session, col, select

    from clonechat.store.models import Dialogue

    query = select(Dialogue).where(col(Dialogue.id).startswith(id_or_prefix.upper(), autoescape=True)).limit(2)
    with Session(db.reader_engine) as session:
        matches = session.exec(query).all()
    if not matches:
        raise NotFoundError(f"no dialogue with id {id_or_prefix!r} in {db.path}")
    if len(matches) > 1:
        raise NotFoundError(f"dialogue id prefix {id_or_prefix!r} is ambiguous in {db.path}: give more characters")
    return matches[0]


def prompt_text(db: Readable, prompt_hash: str) -> str:
    """A stored prompt's exact text."""
    return prompt_texts(db, [prompt_hash])[prompt_hash]


def prompt_texts(db: Readable, hashes: list[str] | set[str]) -> dict[str, str]:
    """Stored prompts' texts by hash; a missing one is a NotFoundError."""
    from sqlmodel import Session, col, select

    from clonechat.store.models import Prompt

    wanted = sorted(set(hashes))
    found: dict[str, str] = {}
    with Session(db.reader_engine) as session:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found |= {p.hash: p.text for p in session.exec(select(Prompt).where(col(Prompt.hash).in_(chunk))).all()}
    for missing in [h for h in wanted if h not in found][:1]:
        raise NotFoundError(f"prompt {missing[:12]} missing from {db.path}")
    return found
