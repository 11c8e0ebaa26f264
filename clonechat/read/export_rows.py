"""Everything stored about one experiment, table by table, the rows exactly as stored: what
``clonechat export`` writes (:mod:`clonechat.query.export` turns them into files)."""

from __future__ import annotations

from typing import Any

from clonechat.read.connect import Readable, connection
from clonechat.read.experiments import require_experiment

#: A table's column names and rows.
Rows = tuple[list[str], list[tuple[Any, ...]]]
TABLES = ("experiment", "condition", "dialogue", "node", "score", "turn_metrics", "prompt")

_DIALOGUES = "SELECT d.id FROM dialogue d JOIN condition c ON c.id = d.condition_id WHERE c.experiment_id = :e"
#: Each table's rows belonging to the experiment ``:e``, in a stable order.
ROWS = {
    "experiment": "SELECT * FROM experiment WHERE id = :e",
    "condition": "SELECT * FROM condition WHERE experiment_id = :e ORDER BY name",
    "dialogue": f"SELECT * FROM dialogue WHERE id IN ({_DIALOGUES}) ORDER BY id",
    "node": f"SELECT * FROM node WHERE dialogue_id IN ({_DIALOGUES}) ORDER BY dialogue_id, rowid",
    "score": f"""SELECT s.* FROM score s JOIN node n ON n.id = s.node_id
                 WHERE n.dialogue_id IN ({_DIALOGUES}) ORDER BY s.id""",
    "turn_metrics": f"SELECT * FROM turn_metrics WHERE dialogue_id IN ({_DIALOGUES}) ORDER BY node_id",
    # Prompts the experiment's dialogues, conditions and forks refer to (by hash, in a column or
    # inside their settings).
    "prompt": f"""SELECT p.* FROM prompt p WHERE
        EXISTS (SELECT 1 FROM dialogue d WHERE d.id IN ({_DIALOGUES}) AND (p.hash IN
                (d.system_prompt_a, d.system_prompt_b, d.opening_prompt) OR instr(d.settings, p.hash)))
        OR EXISTS (SELECT 1 FROM condition c WHERE c.experiment_id = :e AND instr(c.settings, p.hash))
        OR EXISTS (SELECT 1 FROM node n WHERE n.dialogue_id IN ({_DIALOGUES}) AND n.model = 'researcher-edit'
                   AND instr(n.params, p.hash))
        ORDER BY p.hash""",
}


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
            result = conn.execute(text(ROWS[table]), {"e": experiment_id})
            tables[table] = (list(result.keys()), [tuple(row) for row in result])
    return tables
