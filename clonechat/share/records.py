"""The JSONL export read back into a run database: the inverse of
:func:`clonechat.query.export.dialogue_records`.

Each line is one dialogue with its experiment, condition, prompts and templates, nodes, scores
and turn metrics. Every line is checked (pydantic for its shape, then each row against the
table's columns: names, types, what may be NULL, and that it belongs to this line's dialogue)
before it is written, so a damaged or foreign file is one line naming the line and the field,
never a traceback or a half-written database. Rows are written through the store
(:func:`clonechat.store.dialect.insert_rows`, ``ON CONFLICT DO NOTHING``, a few hundred dialogues
per transaction, the full-text index updated in each), with their ids as they are: a share
rebuilds exactly the rows it was made from. Nodes keep the export's order, their storage order,
so every parent and prediction target is stored before the nodes that point at it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

import clonechat.store.models  # noqa: F401  (registers the tables in SQLModel.metadata)
from clonechat.errors import ConfigError
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.store.dialect import insert_rows

#: Dialogues written per transaction.
CHUNK_DIALOGUES = 200
#: Times as the export writes them (UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``).
_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$")
#: The tables a line fills, parents first (the order they are written in).
_TABLES = ("experiment", "condition", "prompt_template", "prompt", "dialogue", "node", "turn_metrics", "score")
#: The line's lists of rows: the key each is under, and its table.
_LISTS = (
    ("prompt_templates", "prompt_template"),
    ("prompts", "prompt"),
    ("nodes", "node"),
    ("turn_metrics", "turn_metrics"),
    ("scores", "score"),
)


class Record(BaseModel):
    """One line of the JSONL export (``prompt_templates`` is missing from older exports)."""

    model_config = ConfigDict(extra="forbid")

    experiment: dict[str, Any]
    condition: dict[str, Any]
    dialogue: dict[str, Any]
    prompts: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    turn_metrics: list[dict[str, Any]]
    prompt_templates: list[dict[str, Any]] | None = None


@dataclass
class Loaded:
    """What :func:`load_records` stored: the experiment (under the name it was given) and its size."""

    experiment_id: str
    name: str
    #: The experiment's name in the file (before ``rename``).
    original_name: str
    spec: str | None
    spec_hash: str | None
    dialogues: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def load_records(lines: Iterable[str], db: Database, *, label: str, rename: str | None = None) -> Loaded:
    """Store the experiment whose JSONL export ``lines`` are into ``db`` (a new run database,
    as a rule), under ``rename`` if given; a ConfigError naming ``label`` and the line if any
    line is not a dialogue of one experiment as this clonechat stores it."""
    loaded: Loaded | None = None
    chunk: list[dict[str, list[tuple[Any, ...]]]] = []
    conditions: set[str] = set()
    for number, line in _numbered(lines):
        where = f"{label} line {number}"
        record = _parse(line, where)
        experiment = _row("experiment", record.experiment, f"{where}: experiment")
        if loaded is None:
            values = dict(zip(_names("experiment"), experiment, strict=True))
            original = str(values["name"])
            if rename is not None:
                experiment = tuple({**values, "name": rename}.values())
            loaded = Loaded(str(values["id"]), rename or original, original, values["spec"], values["spec_hash"])
            chunk.append({"experiment": [experiment]})
        elif record.experiment.get("id") != loaded.experiment_id:
            raise ConfigError(f"{where}: a dialogue of another experiment ({record.experiment.get('id')!r})")
        rows = _rows_of(record, where, loaded.experiment_id)
        condition_id = str(rows["condition"][0][0])
        if condition_id in conditions:
            rows["condition"] = []
        conditions.add(condition_id)
        chunk.append(rows)
        loaded.dialogues += 1
        for table, found in rows.items():
            loaded.rows[table] = loaded.rows.get(table, 0) + len(found)
        if loaded.dialogues % CHUNK_DIALOGUES == 0:
            _write(db, chunk, label)
            chunk = []
    if loaded is None:
        raise ConfigError(f"{label} holds no dialogues: nothing to import")
    _write(db, chunk, label)
    return loaded


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def _parse(line: str, where: str) -> Record:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON ({exc})") from None
    try:
        record = Record.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        place = ".".join(str(part) for part in error["loc"]) or "the line"
        raise ConfigError(f"{where}: {place}: {error['msg']}") from None
    if record.prompt_templates is None:
        raise ConfigError(
            f"{where}: no prompt_templates: exported by an older clonechat, it lacks the template "
            "rows its prompts need (export it again with this one)"
        )
    return record


def _rows_of(record: Record, where: str, experiment_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """The line's rows, table by table, each checked to belong where the line puts it."""
    rows: dict[str, list[tuple[Any, ...]]] = {
        "condition": [_row("condition", record.condition, f"{where}: condition")],
        "dialogue": [_row("dialogue", record.dialogue, f"{where}: dialogue")],
    }
    for key, table in _LISTS:
        rows[table] = [_row(table, r, f"{where}: {key}[{i}]") for i, r in enumerate(getattr(record, key))]
    dialogue = record.dialogue
    _same(record.condition.get("experiment_id"), experiment_id, f"{where}: condition.experiment_id")
    _same(dialogue["condition_id"], record.condition.get("id"), f"{where}: dialogue.condition_id")
    nodes = {str(n["id"]) for n in record.nodes}
    for i, node in enumerate(record.nodes):
        _same(node.get("dialogue_id"), dialogue["id"], f"{where}: nodes[{i}].dialogue_id")
    for i, metrics in enumerate(record.turn_metrics):
        _same(metrics.get("dialogue_id"), dialogue["id"], f"{where}: turn_metrics[{i}].dialogue_id")
    for i, score in enumerate(record.scores):
        if score.get("node_id") not in nodes:
            raise ConfigError(f"{where}: scores[{i}].node_id: not a node of this dialogue")
    return rows


def _same(found: Any, expected: Any, where: str) -> None:
    if found != expected:
        raise ConfigError(f"{where}: {found!r} where this line's row has {expected!r}")


def _names(table: str) -> list[str]:
    return [c.name for c in SQLModel.metadata.tables[table].columns]


def _row(table: str, record: dict[str, Any], where: str) -> tuple[Any, ...]:
    """``record`` as the values of ``table``'s row, in its columns' order: every column known,
    typed as the column is; JSON columns as JSON text. A column an older export lacks is NULL
    where the column may be NULL."""
    columns = SQLModel.metadata.tables[table].columns
    if unknown := sorted(set(record) - set(columns.keys())):
        raise ConfigError(f"{where}: {table} has no column {unknown[0]!r} (written by a newer clonechat?)")
    values: list[Any] = []
    for column in columns:
        kind = str(column.type).upper()
        if column.name not in record:
            if not column.nullable:
                raise ConfigError(f"{where}: {table}.{column.name} is missing")
            values.append(None)
            continue
        value = record[column.name]
        if value is None:
            if not column.nullable:
                raise ConfigError(f"{where}: {table}.{column.name} cannot be null")
        elif kind == "JSON":
            value = json.dumps(value)
        elif not _fits(kind, value):
            raise ConfigError(f"{where}: {table}.{column.name}: {value!r} is not {_TYPE_NAMES.get(kind, kind)}")
        values.append(value)
    return tuple(values)


_TYPE_NAMES = {
    "INTEGER": "an integer",
    "BIGINT": "an integer",
    "FLOAT": "a number",
    "VARCHAR": "text",
    "DATETIME": "a UTC time (YYYY-MM-DD HH:MM:SS.ffffff)",
}


def _fits(kind: str, value: Any) -> bool:
    if kind in ("INTEGER", "BIGINT"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("FLOAT", "REAL"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "DATETIME":
        return isinstance(value, str) and _TIME.match(value) is not None
    return isinstance(value, str)


def _write(db: Database, chunk: list[dict[str, list[tuple[Any, ...]]]], label: str) -> None:
    """One transaction: the chunk's rows, parents first (line by line, so each dialogue's
    nodes follow its row), and their full-text entries."""

    def write(conn: Connection) -> None:
        for rows in chunk:
            for table in _TABLES:
                if rows.get(table):
                    insert_rows(conn, table, _names(table), rows[table])
        writes.index_new_nodes(conn)

    if not chunk:
        return
    try:
        db.write(write)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ConfigError(f"{label}: the rows do not fit together ({reason})") from None
