"""What the dialogue browser shows, read from the run database. No Textual here.

The browser calls these from a worker thread, so each call opens its own read-only SQLite
connection and closes it again: nothing is shared between threads, nothing is ever written
(the file stays byte-identical), and a batch writing in another process never waits on us.
``Database.open`` is not used on purpose: it begins an ``IMMEDIATE`` transaction to migrate,
which would queue the browser behind a busy writer and could upgrade a file the user only
wanted to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import exists, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from clonechat.store.models import Condition, Dialogue, Experiment, Node
from clonechat.store.readonly import readonly_database
from clonechat.store.reads import DialogueSummary

#: Statuses in the order a researcher scans them: what is moving first, what went wrong last.
STATUS_ORDER = ("running", "pending", "completed", "interrupted", "failed")
DEFAULT_LIMIT = 500


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


@contextmanager
def _session(db_path: Path | str) -> Iterator[Session | None]:
    """A read-only session on ``db_path`` (see :func:`readonly_database`); ``None`` if there
    is no database yet."""
    with readonly_database(db_path) as db:
        if db is None:
            yield None
            return
        with db.session() as session:
            yield session


def check_readable(db_path: Path | str) -> None:
    """Raise the StoreError the browser would show if ``db_path`` cannot be opened (a directory,
    not SQLite, another program's database, another schema), so the command line can say it in
    one line and exit non-zero before the app takes the terminal. A missing file is fine: the
    app starts empty and creates it only when a dialogue is run."""
    with _session(db_path):
        pass


def browse(
    db_path: Path | str,
    *,
    experiment: str | None = None,
    condition: str | None = None,
    status: str | None = None,
    text: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[DialogueSummary]:
    """Dialogues matching every given filter, newest first, at most ``limit``.

    ``text`` is a case-insensitive substring of any turn's content (SQL ``LIKE``, with ``%``
    and ``_`` taken literally); blank text is no filter.
    """
    # Turns on the dialogue's current conversation: its head's turn index (one primary-key
    # lookup per row, where counting nodes would cost as much as the dialogue is long; and
    # a branched dialogue's branches are not all one conversation).
    head_turns = func.coalesce(
        select(col(Node.turn_index))
        .where(col(Node.id) == col(Dialogue.head_node_id))
        .correlate(Dialogue)
        .scalar_subquery(),
        0,
    )
    # Plain SQLAlchemy select: SQLModel's is typed for at most four columns.
    query = (
        sa_select(
            col(Dialogue.id),
            col(Experiment.name),
            col(Condition.name),
            col(Dialogue.replicate),
            col(Dialogue.status),
            col(Dialogue.stop_reason),
            head_turns,
            col(Dialogue.model_a),
            col(Dialogue.model_b),
            col(Dialogue.created_at),
        )
        .join(Condition, col(Condition.id) == col(Dialogue.condition_id))
        .join(Experiment, col(Experiment.id) == col(Condition.experiment_id))
        .order_by(col(Dialogue.id).desc())
        .limit(limit)
    )
    if experiment is not None:
        query = query.where(col(Experiment.name) == experiment)
    if condition is not None:
        query = query.where(col(Condition.name) == condition)
    if status is not None:
        query = query.where(col(Dialogue.status) == status)
    if text is not None and text.strip():
        query = query.where(
            exists()
            .where(
                col(Node.dialogue_id) == col(Dialogue.id),
                col(Node.kind) == "turn",
                col(Node.content).contains(text.strip(), autoescape=True),
            )
            .correlate(Dialogue)
        )
    with _session(db_path) as session:
        if session is None:
            return []
        rows = session.connection().execute(query).all()
    return [
        DialogueSummary(
            id=id_,
            experiment=exp_name,
            condition=cond_name,
            replicate=replicate,
            status=status_,
            stop_reason=stop_reason,
            turns=int(turns),
            model_a=model_a,
            model_b=model_b,
            created_at=created_at,
        )
        for id_, exp_name, cond_name, replicate, status_, stop_reason, turns, model_a, model_b, created_at in rows
    ]


def _status_key(status: str) -> tuple[int, str]:
    return (STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER), status)


def facets(db_path: Path | str) -> Facets:
    """Experiments, their conditions and the statuses that have at least one dialogue."""
    pairs_query = (
        select(Experiment.name, Condition.name)
        .join(Condition, col(Condition.experiment_id) == col(Experiment.id))
        .where(exists().where(col(Dialogue.condition_id) == col(Condition.id)).correlate(Condition))
        .distinct()
    )
    status_query = select(Dialogue.status, func.count()).group_by(col(Dialogue.status))
    with _session(db_path) as session:
        if session is None:
            return Facets()
        pairs = session.exec(pairs_query).all()
        counts = session.exec(status_query).all()
    by_experiment: dict[str, list[str]] = {}
    for exp_name, cond_name in pairs:
        by_experiment.setdefault(exp_name, []).append(cond_name)
    return Facets(
        experiments=tuple(sorted(by_experiment)),
        conditions_by_experiment={name: tuple(sorted(conds)) for name, conds in sorted(by_experiment.items())},
        statuses=tuple(sorted((status for status, _ in counts), key=_status_key)),
        total=sum(int(n) for _, n in counts),
    )


def experiment_of(db_path: Path | str, dialogue_id: str) -> str | None:
    """The name of the experiment a dialogue belongs to (``None`` if there is no such dialogue)."""
    with _session(db_path) as session:
        if session is None:
            return None
        row = session.exec(
            select(Experiment.name)
            .join(Condition, col(Condition.experiment_id) == col(Experiment.id))
            .join(Dialogue, col(Dialogue.condition_id) == col(Condition.id))
            .where(col(Dialogue.id) == dialogue_id)
        ).first()
    return None if row is None else str(row)
