"""Experiments: finding one by name, its conditions, and what has been stored of it.

Counts come from :func:`clonechat.read.dialogues.dialogue_summaries`, so the turns an
experiment reports are the same "turns" every screen shows (the current conversation's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clonechat.errors import NotFoundError
from clonechat.read.connect import Readable, connection
from clonechat.read.dialogues import dialogue_summaries

if TYPE_CHECKING:
    from clonechat.store.models import Experiment


def find_experiment(db: Readable, name: str) -> Experiment | None:
    """The experiment called ``name``, or ``None``."""
    from sqlmodel import Session, col, select

    from clonechat.store.models import Experiment

    with Session(db.reader_engine) as session:
        return session.exec(select(Experiment).where(col(Experiment.name) == name)).first()


def require_experiment(db: Readable, name: str) -> Experiment:
    """The experiment called ``name``; a NotFoundError naming the experiments there are if none."""
    experiment = find_experiment(db, name)
    if experiment is None:
        known = ", ".join(experiment_names(db)) or "none yet"
        raise NotFoundError(f"no experiment named {name!r} in {db.path} (known: {known})")
    return experiment


def experiment_names(db: Readable) -> list[str]:
    """Every experiment's name, sorted."""
    from sqlalchemy import text

    with connection(db) as conn:
        return [str(row[0]) for row in conn.execute(text("SELECT name FROM experiment ORDER BY name"))]


def free_name(db: Readable, name: str) -> str:
    """``name`` if unused, else ``name-2``, ``name-3``, ...: for ``--new``."""
    taken = {n for n in experiment_names(db) if n.startswith(name)}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


@dataclass(frozen=True)
class ConditionRow:
    name: str
    template: str
    model_a: str
    model_b: str


def conditions(db: Readable, experiment_id: str) -> list[ConditionRow]:
    """The experiment's conditions in the order they were planned."""
    from sqlalchemy import text

    query = text("SELECT name, template, model_a, model_b FROM condition WHERE experiment_id = :e ORDER BY id")
    with connection(db) as conn:
        return [ConditionRow(*row) for row in conn.execute(query, {"e": experiment_id})]


@dataclass(frozen=True)
class ConditionCounts:
    dialogues: int
    #: Turns of every dialogue's current conversation, summed.
    turns: int
    by_status: dict[str, int]


def experiment_counts(db: Readable, experiment_id: str) -> dict[str, ConditionCounts]:
    """Per condition: how many dialogues, how many turns (of each dialogue's current
    conversation, as every screen counts them), dialogues by status."""
    counts: dict[str, ConditionCounts] = {}
    for row in dialogue_summaries(db, experiment_id=experiment_id, limit=None):
        entry = counts.setdefault(row.condition, ConditionCounts(0, 0, {}))
        by_status = dict(entry.by_status)
        by_status[row.status] = by_status.get(row.status, 0) + 1
        counts[row.condition] = ConditionCounts(entry.dialogues + 1, entry.turns + row.turns, by_status)
    return counts
