"""Everything stored about one experiment, table by table, the rows exactly as stored: what
``clonechat export`` writes (:mod:`clonechat.query.export` turns them into files).

Rows read the same from either backend: the columns are the model's (``clonechat.store.models``,
listed by name, so PostgreSQL's ``node.rowid``, its storage order, is not among them), JSON
columns are their stored text, and times are UTC text as SQLite stores them
(``YYYY-MM-DD HH:MM:SS.ffffff``; PostgreSQL hands back ``datetime`` values).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from clonechat.read.connect import Readable, connection
from clonechat.read.console import STORED_TIME_FORMAT
from clonechat.read.experiments import require_experiment

#: A table's column names and rows.
Rows = tuple[list[str], list[tuple[Any, ...]]]
TABLES = ("experiment", "condition", "dialogue", "node", "score", "turn_metrics", "prompt", "prompt_template")

_DIALOGUES = "SELECT d.id FROM dialogue d JOIN condition c ON c.id = d.condition_id WHERE c.experiment_id = :e"
#: Whether the prompt ``{p}`` is one the experiment ``:e`` refers to: by hash, in a dialogue's
#: prompt columns or inside the settings of its dialogues and conditions and the params of its
#: forks (hashes are hex digits, so LIKE finds them as they are).
_REFERENCED = f"""(
        EXISTS (SELECT 1 FROM dialogue d WHERE d.id IN ({_DIALOGUES}) AND ({{p}}.hash IN
                (d.system_prompt_a, d.system_prompt_b, d.opening_prompt)
                OR CAST(d.settings AS TEXT) LIKE '%' || {{p}}.hash || '%'))
        OR EXISTS (SELECT 1 FROM condition c WHERE c.experiment_id = :e
                   AND CAST(c.settings AS TEXT) LIKE '%' || {{p}}.hash || '%')
        OR EXISTS (SELECT 1 FROM node n WHERE n.dialogue_id IN ({_DIALOGUES}) AND n.model = 'researcher-edit'
                   AND CAST(n.params AS TEXT) LIKE '%' || {{p}}.hash || '%'))"""
#: Each table's rows belonging to the experiment ``:e``, in a stable order (``{columns}``: the
#: model's columns, see :func:`rows_sql`).
_ROWS = {
    "experiment": "SELECT {columns} FROM experiment t WHERE t.id = :e",
    "condition": "SELECT {columns} FROM condition t WHERE t.experiment_id = :e ORDER BY t.name",
    "dialogue": f"SELECT {{columns}} FROM dialogue t WHERE t.id IN ({_DIALOGUES}) ORDER BY t.id",
    "node": f"SELECT {{columns}} FROM node t WHERE t.dialogue_id IN ({_DIALOGUES}) ORDER BY t.dialogue_id, t.rowid",
    "score": f"""SELECT {{columns}} FROM score t JOIN node n ON n.id = t.node_id
                 WHERE n.dialogue_id IN ({_DIALOGUES}) ORDER BY t.id""",
    "turn_metrics": f"SELECT {{columns}} FROM turn_metrics t WHERE t.dialogue_id IN ({_DIALOGUES}) ORDER BY t.node_id",
    "prompt": f"SELECT {{columns}} FROM prompt t WHERE {_REFERENCED.format(p='t')} ORDER BY t.hash",
    # The templates those prompts were rendered from (a researcher's edit is its own template):
    # with them the rows rebuild the experiment in another database (``clonechat import``).
    "prompt_template": f"""SELECT {{columns}} FROM prompt_template t WHERE t.hash IN
        (SELECT p.template_hash FROM prompt p WHERE {_REFERENCED.format(p="p")}) ORDER BY t.hash""",
}


@cache
def rows_sql(table: str) -> str:
    """The statement reading ``table``'s rows of the experiment ``:e``: every column of the
    model by name, JSON columns as their stored text."""
    from sqlmodel import SQLModel

    import clonechat.store.models  # noqa: F401  (registers the tables in SQLModel.metadata)

    columns = [
        f"CAST(t.{c.name} AS TEXT) AS {c.name}" if str(c.type).upper() == "JSON" else f"t.{c.name}"
        for c in SQLModel.metadata.tables[table].columns
    ]
    return _ROWS[table].format(columns=", ".join(columns))


def _as_stored(value: Any) -> Any:
    return value.strftime(STORED_TIME_FORMAT) if isinstance(value, datetime) else value


def experiment_tables(db: Readable, name: str) -> dict[str, Rows]:
    """Every table's rows for the experiment called ``name`` (a NotFoundError naming the known
    ones if none), read in one transaction: a batch committing meanwhile cannot make the tables
    disagree (a score whose node was not read)."""
    from sqlalchemy import text

    experiment_id = require_experiment(db, name).id
    tables: dict[str, Rows] = {}
    with connection(db) as conn:
        # One read transaction (every reader connection begins one, see read.connect): a
        # batch committing meanwhile cannot make the tables disagree.
        for table in TABLES:
            result = conn.execute(text(rows_sql(table)), {"e": experiment_id})
            tables[table] = (list(result.keys()), [tuple(_as_stored(v) for v in row) for row in result])
    return tables
