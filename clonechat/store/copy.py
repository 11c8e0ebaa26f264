"""Copying experiments from one run database to another (``clonechat db copy SRC DST``).

A pilot run on a laptop (an SQLite file) moves to the team's PostgreSQL server, or a server's
experiment comes home to a file, or one file's experiment joins another's: every row that
makes up the experiment is copied, exactly, and nothing else.

**What is copied, table by table** (:data:`COPIED_TABLES`, parents before children):
``experiment`` and its ``condition`` rows; the ``prompt_template`` and ``prompt`` rows its
conditions, dialogues and researcher edits refer to (by hash, in a column or inside their
settings, as ``clonechat export`` finds them); its ``dialogue`` rows; every ``node`` of them;
their ``turn_metrics``; and the ``score`` rows of their nodes. What is not, and why, is
:data:`NOT_COPIED`: the migration history (each database has its own; the destination is at
this clonechat's schema once :meth:`Database.open` opened it), SQLite's full-text index
(derived from ``node``: brought up to date by :func:`writes.index_new_nodes` in each chunk's
transaction; PostgreSQL's GIN index is the server's own), and the batch workers' runtime state
(``worker``, ``lease``, ``lease_grant``): which process on which host held which dialogue is a
fact about the source database's processes, meaningless to another database's workers, and a
copied grant history would collide with the destination's own fencing tokens. A batch resumed
on the destination claims the copied dialogues afresh.

**Idempotent, by natural keys.** Every row is inserted ``ON CONFLICT DO NOTHING`` on its key:
ids (ULIDs, the same in every database), content hashes for prompts, ``(node_id, scorer,
version)`` for scores. A score's integer id is the database's own surrogate, so it is never
copied: the destination numbers the rows itself, in the source's order (``v_score`` breaks ties
on it), and PostgreSQL's identity sequence stays valid. A second copy adds nothing.

**Chunks, and what a crash leaves.** The source is read in one snapshot (one read transaction),
so a batch still writing to it cannot make the copy disagree with itself. The destination is
written in one transaction per chunk, a chunk being whole dialogues (about ``chunk_rows`` rows:
never one giant transaction holding locks for minutes). A dialogue is never split: its row, every
node (in the source's storage order, so each parent and prediction target is stored before the
nodes that point at it), their metrics, scores and full-text entries, and the prompts it needs,
commit together or not at all. So whatever the moment of a crash, every dialogue a reader sees
in the destination is complete and its head is stored; the experiment merely has fewer
dialogues so far, exactly as if a batch had stopped there, and re-running the copy adds the
rest. (The alternative, storing dialogue rows first and "marking" them once their nodes are in,
shows half-copied dialogues as pending ones, which a batch worker on the destination would pick
up and run.) Storage order is kept within each dialogue; across dialogues the destination
stores one chunk after the other.

**The destination's own dialogues are left alone.** A dialogue already in the destination is
the destination's from then on: its row and nodes are never changed or added to (a batch there
may hold its lease and be writing it; the store writes a leased dialogue only under its fencing
token). Only scores of its nodes that the destination lacks are added (scoring is offline and
keyed by ``(node, scorer, version)``). One whose row differs from the source's (the pilot went on
after the copy, or the server did) is counted in :attr:`ExperimentCopy.differing`.

**Two experiments are never merged under one name.** An experiment whose name exists in the
destination with another id or spec is refused before anything is written (``adhoc``, whose id
each database makes its own, is the common case: copy named experiments with ``--experiment``).
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import JSON, Connection, Row, Table, Text, cast, func, literal_column, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import SQLModel

import clonechat.store.models  # noqa: F401  (registers the tables in SQLModel.metadata)
from clonechat.errors import ConfigError, NotFoundError, StoreError
from clonechat.location import DbLocation, ServerDatabase
from clonechat.read.connect import Readable, check_version, connection, nothing_to_read, server_reason
from clonechat.store import migrations, writes
from clonechat.store.database import Database
from clonechat.store.dialect import insert_rows

#: The tables an experiment is made of, parents before children: the order rows are inserted in.
COPIED_TABLES = ("experiment", "condition", "prompt_template", "prompt", "dialogue", "node", "turn_metrics", "score")
#: Every other table a run database has, and why it is not copied (``tests/test_db_copy.py``
#: checks that every table of a fresh database is in one of the two: a new table needs a decision).
NOT_COPIED = {
    "clonechat_migrations": "each database's own upgrade history; the destination is migrated when opened",
    "node_fts": "SQLite's full-text index over node.content (and its shadow tables): rebuilt from node",
    "worker": "runtime state: the batch processes of the source database and their heartbeats",
    "lease": "runtime state: which source process may write which dialogue now",
    "lease_grant": "the source database's lease history: its fencing tokens would collide with the destination's",
}
#: About this many rows (nodes, scores, dialogues) per write transaction; a dialogue is never split.
DEFAULT_CHUNK_ROWS = 2000

#: A prompt or template hash (SHA-256 hex) wherever it appears: in a column or inside settings.
_HASH = re.compile(r"\b[0-9a-f]{64}\b")
#: The columns that say where a dialogue has got to: a destination row that differs in any of
#: them from the source's is reported, never overwritten.
_STATE_COLUMNS = ("status", "stop_reason", "error", "head_node_id", "updated_at")


@dataclass
class ExperimentCopy:
    """What copying one experiment did."""

    name: str
    #: Rows added to the destination, per table (every table of :data:`COPIED_TABLES`).
    added: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COPIED_TABLES, 0))
    #: Dialogues the destination already had in another state than the source's (ids): left as
    #: the destination has them.
    differing: list[str] = field(default_factory=list)

    @property
    def rows_added(self) -> int:
        return sum(self.added.values())


@dataclass
class CopySummary:
    """What :func:`copy_experiments` did, experiment by experiment."""

    source: DbLocation
    dest: DbLocation
    experiments: list[ExperimentCopy]

    @property
    def added(self) -> dict[str, int]:
        """Rows added per table, over every experiment."""
        return {table: sum(e.added[table] for e in self.experiments) for table in COPIED_TABLES}


def same_database(a: DbLocation, b: DbLocation) -> bool:
    """Whether two locations name the same database: the same file (however it is spelt), or the
    same host, port and database name on a server (the user does not matter; two names for one
    host, such as ``localhost`` and ``127.0.0.1``, are not recognised)."""
    if isinstance(a, ServerDatabase) and isinstance(b, ServerDatabase):
        return _server_key(a) == _server_key(b)
    if isinstance(a, Path) and isinstance(b, Path):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    return False


def _server_key(location: ServerDatabase) -> tuple[str, int, str, str]:
    parts = urlsplit(location.url)
    return (parts.hostname or "").lower(), parts.port or 5432, parts.path.strip("/"), parts.query


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _columns(name: str, *, skip: Iterable[str] = ()) -> list[ColumnElement[Any]]:
    """The columns of table ``name`` to read from the source: JSON as the exact text stored
    (``CAST(... AS TEXT)``: PostgreSQL's ``json`` keeps the text it was given, SQLite stores text),
    so JSON round-trips byte for byte instead of being parsed and dumped again."""
    table = _table(name)
    out: list[ColumnElement[Any]] = []
    for column in table.columns:
        if column.name in skip:
            continue
        out.append(cast(column, Text).label(column.name) if isinstance(column.type, JSON) else column)
    return out


def _values(row: Row[Any]) -> tuple[Any, ...]:
    """A source row as values for :func:`insert_rows`: timestamps are stored as naive UTC on
    both backends, so they are marked UTC here (the driver conversion reads an aware time)."""
    return tuple(v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v for v in row)


def _rows(conn: Connection, name: str, where: Any, *, order: Any, skip: Iterable[str] = ()) -> list[tuple[Any, ...]]:
    query = select(*_columns(name, skip=skip)).where(where).order_by(order)
    return [_values(row) for row in conn.execute(query)]


def _names(name: str, *, skip: Iterable[str] = ()) -> list[str]:
    return [c.name for c in _table(name).columns if c.name not in skip]


def _check_source(conn: Connection, location: DbLocation) -> None:
    """The usual refusal of a schema this clonechat cannot read (an older one: upgrade it
    first; the copy never migrates its source), or of a database without clonechat's tables."""
    if check_version(*migrations.schema_of(conn), location) == 0:
        raise nothing_to_read(location)


def experiments_to_copy(source: Readable, names: Sequence[str] | None) -> list[str]:
    """The names of the experiments to copy: ``names`` (each must exist in ``source``; a
    NotFoundError naming the known ones if not), or every experiment in ``source``."""
    experiment = _table("experiment")
    with connection(source) as conn:
        _check_source(conn, source.path)
        known = [str(n) for n in conn.execute(select(experiment.c.name).order_by(experiment.c.name)).scalars()]
    if names is None:
        return known
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if name not in known:
            raise NotFoundError(
                f"no experiment named {name!r} in {source.path} (known: {', '.join(known) or 'none yet'})"
            )
    return wanted


def copy_experiments(
    source: Readable,
    dest: Database,
    names: Sequence[str] | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_copied: Callable[[ExperimentCopy], None] | None = None,
) -> CopySummary:
    """Copy the experiments called ``names`` (``None``: every one) from ``source``, which is
    only read, into ``dest``, in write transactions of about ``chunk_rows`` rows (whole
    dialogues); ``on_copied`` hears of each experiment as it is done. Any clash (a name taken
    by another experiment in ``dest``) is refused before anything is written. Re-running it
    adds only what is missing (see the module docstring)."""
    if same_database(source.path, dest.path):
        raise ConfigError(f"the source and the destination are the same database ({source.path})")
    wanted = experiments_to_copy(source, names)
    done: list[ExperimentCopy] = []
    current: str | None = None
    try:
        # One read transaction for the whole copy: every question to the source sees one moment.
        with connection(source) as src:
            _check_source(src, source.path)
            experiment = _table("experiment")
            found = _rows(src, "experiment", experiment.c.name.in_(wanted), order=experiment.c.name)
            rows = {str(r[_EXPERIMENT.index("name")]): r for r in found}
            with dest.reader_engine.connect() as dst:
                for name in wanted:
                    _refuse_clash(dst, rows[name], dest.path)
            for current in wanted:
                copied = ExperimentCopy(current)
                _copy_experiment(src, dest, rows[current], copied, max(1, chunk_rows))
                done.append(copied)
                if on_copied is not None:
                    on_copied(copied)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        # Named here, not by the caller's reader: a failure may be the destination's.
        what = f"copying {current!r}" if current is not None else "copying"
        raise StoreError(
            f"{what} from {source.path} into {dest.path} stopped: {server_reason(exc)} "
            "(what was copied is whole dialogues; run the copy again once this is fixed)"
        ) from None
    return CopySummary(source.path, dest.path, done)


# The experiment row's columns, as _rows reads them.
_EXPERIMENT = _names("experiment")


def _refuse_clash(dst: Connection, row: tuple[Any, ...], where: DbLocation) -> None:
    """Refuse an experiment whose name the destination gives another experiment (or whose id
    it stores under another name): copying would merge two experiments under one name."""
    source = dict(zip(_EXPERIMENT, row, strict=True))
    experiment = _table("experiment")
    query = select(experiment.c.id, experiment.c.name, experiment.c.spec, experiment.c.spec_hash).where(
        (experiment.c.name == source["name"]) | (experiment.c.id == source["id"])
    )
    for other_id, other_name, spec, spec_hash in dst.execute(query):
        if other_id != source["id"]:
            raise StoreError(
                f"{where} already has another experiment named {source['name']!r} (id {other_id} there, "
                f"{source['id']} here): not copied, two experiments are never merged under one name"
            )
        if other_name != source["name"]:
            raise StoreError(
                f"{where} has experiment {source['id']} under another name ({other_name!r}, not "
                f"{source['name']!r}): not copied"
            )
        if (spec, spec_hash) != (source["spec"], source["spec_hash"]):
            raise StoreError(
                f"{where} has experiment {source['name']!r} with another spec: not copied, "
                "two experiments are never merged under one name"
            )


@dataclass(frozen=True)
class _Planned:
    """A source dialogue, and whether the destination already has it."""

    id: str
    rows: int
    new: bool


def _copy_experiment(
    src: Connection, dest: Database, experiment_row: tuple[Any, ...], copied: ExperimentCopy, chunk_rows: int
) -> None:
    experiment_id = str(experiment_row[0])
    condition = _table("condition")
    conditions = _rows(src, "condition", condition.c.experiment_id == experiment_id, order=condition.c.id)
    condition_ids = [str(r[0]) for r in conditions]
    prompts = _referenced_prompts(src, conditions)

    def head(conn: Connection) -> None:
        _insert_prompts(conn, prompts, copied)
        copied.added["experiment"] += insert_rows(conn, "experiment", _EXPERIMENT, [experiment_row])
        _refuse_clash(conn, experiment_row, dest.path)  # in the transaction: a concurrent copy or batch
        copied.added["condition"] += insert_rows(conn, "condition", _names("condition"), conditions)
        table = _table("condition")
        present = set(conn.execute(select(table.c.id).where(table.c.id.in_(condition_ids))).scalars())
        if missing := [c for c in condition_ids if c not in present]:
            raise StoreError(f"{dest.path} has another condition where condition {missing[0]} belongs: not copied")

    dest.write(head)
    for chunk in _chunks(_plan(src, dest, experiment_id, copied), chunk_rows):
        dest.write(partial(_write_chunk, chunk=_read_chunk(src, chunk), copied=copied, where=dest.path))


def _plan(src: Connection, dest: Database, experiment_id: str, copied: ExperimentCopy) -> list[_Planned]:
    """The experiment's dialogues in id (creation) order with their sizes, each marked new or
    already in the destination; those the destination has in another state are noted."""
    dialogue, node, score, condition = _table("dialogue"), _table("node"), _table("score"), _table("condition")
    of_experiment = dialogue.c.condition_id.in_(
        select(condition.c.id).where(condition.c.experiment_id == experiment_id)
    )
    its_dialogues = node.c.dialogue_id.in_(select(dialogue.c.id).where(of_experiment))
    state = [dialogue.c[name] for name in ("id", *_STATE_COLUMNS)]
    source_state = {str(r[0]): tuple(r[1:]) for r in src.execute(select(*state).where(of_experiment))}
    with dest.reader_engine.connect() as dst:
        dest_state = {str(r[0]): tuple(r[1:]) for r in dst.execute(select(*state).where(of_experiment))}
    per_dialogue = select(node.c.dialogue_id, func.count()).where(its_dialogues).group_by(node.c.dialogue_id)
    nodes = {str(r[0]): int(r[1]) for r in src.execute(per_dialogue)}
    scored = {
        str(r[0]): int(r[1])
        for r in src.execute(per_dialogue.select_from(score.join(node, node.c.id == score.c.node_id)))
    }
    plan = []
    for dialogue_id in sorted(source_state):
        new = dialogue_id not in dest_state
        if not new and dest_state[dialogue_id] != source_state[dialogue_id]:
            copied.differing.append(dialogue_id)
        rows = 1 + scored.get(dialogue_id, 0) + (nodes.get(dialogue_id, 0) if new else 0)
        plan.append(_Planned(dialogue_id, rows, new))
    return plan


def _chunks(plan: list[_Planned], chunk_rows: int) -> Iterator[list[_Planned]]:
    """Whole dialogues, about ``chunk_rows`` rows at a time (a bigger dialogue alone)."""
    chunk: list[_Planned] = []
    size = 0
    for planned in plan:
        if chunk and size + planned.rows > chunk_rows:
            yield chunk
            chunk, size = [], 0
        chunk.append(planned)
        size += planned.rows
    if chunk:
        yield chunk


@dataclass(frozen=True)
class _Chunk:
    """One write transaction's rows, read from the source."""

    dialogue_ids: list[str]
    prompts: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]
    dialogues: list[tuple[Any, ...]]
    nodes: list[tuple[Any, ...]]
    metrics: list[tuple[Any, ...]]
    #: Scores of the new dialogues' nodes, then of the nodes of dialogues the destination had.
    scores: list[tuple[Any, ...]]
    scores_of_existing: list[tuple[Any, ...]]


def _read_chunk(src: Connection, chunk: list[_Planned]) -> _Chunk:
    dialogue, node, metrics = _table("dialogue"), _table("node"), _table("turn_metrics")
    new = [p.id for p in chunk if p.new]
    existing = [p.id for p in chunk if not p.new]
    dialogues = _rows(src, "dialogue", dialogue.c.id.in_(new), order=dialogue.c.id)
    # Storage order: every parent and prediction target is stored before what points at it.
    nodes = _rows(src, "node", node.c.dialogue_id.in_(new), order=literal_column("rowid"))
    turn_metrics = _rows(src, "turn_metrics", metrics.c.dialogue_id.in_(new), order=metrics.c.node_id)
    return _Chunk(
        dialogue_ids=new,
        prompts=_referenced_prompts(src, [*dialogues, *nodes]),
        dialogues=dialogues,
        nodes=nodes,
        metrics=turn_metrics,
        scores=_scores(src, new),
        scores_of_existing=_scores(src, existing),
    )


_SCORE = _names("score", skip=("id",))


def _scores(src: Connection, dialogue_ids: list[str]) -> list[tuple[Any, ...]]:
    """The scores of the dialogues' nodes, without their surrogate ids, in the source's id order."""
    if not dialogue_ids:
        return []
    node, score = _table("node"), _table("score")
    query = (
        select(*_columns("score", skip=("id",)))
        .select_from(score.join(node, node.c.id == score.c.node_id))
        .where(node.c.dialogue_id.in_(dialogue_ids))
        .order_by(score.c.id)
    )
    return [_values(row) for row in src.execute(query)]


def _referenced_prompts(
    src: Connection, rows: Iterable[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The templates and prompts whose hash appears anywhere in ``rows`` (a column, or inside a
    JSON text: measure instructions, a fork's edited system prompt), and the templates of those
    prompts: what readers of these rows look up by hash."""
    hashes = {h for row in rows for value in row if isinstance(value, str) for h in _HASH.findall(value)}
    if not hashes:
        return [], []
    prompt, template = _table("prompt"), _table("prompt_template")
    prompts = _rows(src, "prompt", prompt.c.hash.in_(sorted(hashes)), order=prompt.c.hash)
    wanted = hashes | {str(r[1]) for r in prompts}
    templates = _rows(src, "prompt_template", template.c.hash.in_(sorted(wanted)), order=template.c.hash)
    return templates, prompts


def _insert_prompts(
    conn: Connection, prompts: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]], copied: ExperimentCopy
) -> None:
    templates, rows = prompts
    copied.added["prompt_template"] += insert_rows(conn, "prompt_template", _names("prompt_template"), templates)
    copied.added["prompt"] += insert_rows(conn, "prompt", _names("prompt"), rows)


def _write_chunk(conn: Connection, chunk: _Chunk, copied: ExperimentCopy, where: DbLocation) -> None:
    """One chunk, in the caller's write transaction: prompts, dialogues, nodes (and their
    full-text entries), metrics, scores."""
    _insert_prompts(conn, chunk.prompts, copied)
    copied.added["dialogue"] += insert_rows(conn, "dialogue", _names("dialogue"), chunk.dialogues)
    if chunk.dialogue_ids:
        _refuse_taken_places(conn, chunk, where)
    copied.added["node"] += insert_rows(conn, "node", _names("node"), chunk.nodes)
    writes.index_new_nodes(conn)
    copied.added["turn_metrics"] += insert_rows(conn, "turn_metrics", _names("turn_metrics"), chunk.metrics)
    # A dialogue the destination had may lack nodes the source has: their scores cannot follow.
    node = _table("node")
    wanted = {str(r[0]) for r in chunk.scores_of_existing}
    present = set(conn.execute(select(node.c.id).where(node.c.id.in_(sorted(wanted)))).scalars()) if wanted else set()
    copied.added["score"] += _insert_scores(
        conn, [*chunk.scores, *(r for r in chunk.scores_of_existing if r[0] in present)]
    )


def _refuse_taken_places(conn: Connection, chunk: _Chunk, where: DbLocation) -> None:
    """Refuse (and so roll back) a chunk one of whose dialogues was not stored: the destination
    has another dialogue in its condition and replicate (the experiment was run there too)."""
    dialogue = _table("dialogue")
    present = set(conn.execute(select(dialogue.c.id).where(dialogue.c.id.in_(chunk.dialogue_ids))).scalars())
    for row in chunk.dialogues:
        values = dict(zip(_names("dialogue"), row, strict=True))
        if values["id"] in present:
            continue
        other = conn.execute(
            select(dialogue.c.id).where(
                dialogue.c.condition_id == values["condition_id"], dialogue.c.replicate == values["replicate"]
            )
        ).scalar()
        raise StoreError(
            f"{where} has dialogue {other} where dialogue {values['id']} belongs (condition "
            f"{values['condition_id']}, replicate {values['replicate']}): was the experiment run there too?"
        )


def _insert_scores(conn: Connection, rows: Sequence[Sequence[Any]]) -> int:
    """Insert score rows, skipping those whose ``(node_id, scorer, version)`` is stored: a clash
    on anything else (the surrogate id) is an error, never a silently dropped score."""
    return insert_rows(conn, "score", _SCORE, rows, conflict=("node_id", "scorer", "version"))
