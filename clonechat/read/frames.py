"""The tables ``open_run_db`` gives as DataFrames: which view each frame is, in which order.

Each frame is one of the documented views (``docs/schema.md``), except ``scores``, which is
every score row with the scored node's experiment, condition, kind and turn. They run on the
read-only console connection (:mod:`clonechat.read.console`), like any ``RunDB.sql`` query.
"""

from __future__ import annotations

from clonechat.read.console import QueryResult, ReadOnlyConnection, run

_SCORES = """
SELECT e.name AS experiment, c.name AS condition, n.dialogue_id, n.id AS node_id, n.kind, n.variant,
       n.turn_index, s.scorer, s.version, s.value, s.detail, s.created_at
FROM score s
JOIN node n ON n.id = s.node_id
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
ORDER BY s.id"""

#: Frame name -> its query.
FRAMES = {
    "dialogues": "SELECT * FROM v_dialogue ORDER BY dialogue_id",
    "turns": "SELECT * FROM v_turn ORDER BY dialogue_id, turn_index, node_id",
    "predictions": "SELECT * FROM v_prediction ORDER BY dialogue_id, turn_index, prediction_id, scorer",
    "scores": _SCORES,
    "coordination": "SELECT * FROM v_coordination ORDER BY dialogue_id, task, phase",
}


def frame_rows(conn: ReadOnlyConnection, name: str) -> QueryResult:
    """The rows of the frame ``name`` (a key of :data:`FRAMES`), streamed."""
    return run(conn, FRAMES[name])
