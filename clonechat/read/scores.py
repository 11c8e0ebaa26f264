"""Scores: the predictions with their scores in force, and what scoring needs to know.

**The scorer version in force** is defined once, by the ``v_score`` view (migration step 7): for
each node and scorer, the row stored last (``created_at``, then ``id``). ``v_prediction`` gives
one row per prediction and scorer in force, with the shuffled control's score *at the same
version* beside it; :func:`predictions_in_force` reads it for the report and the TUI's scores
screen, so both always chart the same values.

Scoring asks a different question, "is this exact (node, scorer, version) stored already?", and
so looks at every version (:func:`existing_scores`, :func:`unread_answers`): a re-run skips
what it has, and a new scorer version is stored beside the old ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clonechat.read.connect import Readable, connection

if TYPE_CHECKING:
    from clonechat.store.models import Node

# -- the scores in force ---------------------------------------------------------------------

_IN_FORCE = """
SELECT condition, dialogue_id, turn_index, variant, scorer, version, value, shuffled_value
FROM v_prediction
WHERE experiment = :experiment AND scorer IS NOT NULL AND value IS NOT NULL
ORDER BY prediction_id, scorer
"""


@dataclass(frozen=True)
class ScoredPrediction:
    """One prediction's score by one scorer, at that scorer's version in force."""

    condition: str
    dialogue_id: str
    #: The turn predicted.
    turn_index: int
    #: Who predicted: "partner", "self" or "cross".
    variant: str
    scorer: str
    version: str
    value: float
    #: The shuffled control's score at the same version; None if it has none at that version.
    shuffled_value: float | None


def predictions_in_force(db: Readable, experiment: str) -> list[ScoredPrediction]:
    """Every scored prediction of the experiment (by name), one row per scorer in force, with a
    value (a scorer that could not rate a prediction stores NULL: it has no figure to show);
    ordered by prediction, then scorer."""
    from sqlalchemy import text

    with connection(db) as conn:
        rows = conn.execute(text(_IN_FORCE), {"experiment": experiment}).all()
    return [
        ScoredPrediction(
            condition=str(condition),
            dialogue_id=str(dialogue),
            turn_index=int(turn),
            variant=str(variant or "partner"),
            scorer=str(scorer),
            version=str(version),
            value=float(value),
            shuffled_value=None if shuffled is None else float(shuffled),
        )
        for condition, dialogue, turn, variant, scorer, version, value, shuffled in rows
    ]


_PREDICTION_COUNT = """
SELECT count(*) FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment AND n.kind = 'prediction'
"""


def prediction_count(db: Readable, experiment_id: str, dialogue_id: str | None = None) -> int:
    """How many predictions the experiment (or one dialogue of it) has, scored or not: the
    scores screen tells "nothing predicted" from "not scored yet" by it."""
    from sqlalchemy import text

    query, params = _PREDICTION_COUNT, {"experiment": experiment_id}
    if dialogue_id is not None:
        query, params["dialogue"] = query + " AND n.dialogue_id = :dialogue", dialogue_id
    with connection(db) as conn:
        return int(conn.execute(text(query), params).scalar_one())


# -- what scoring has done already -----------------------------------------------------------

_EXISTING = """
SELECT s.node_id, s.scorer, s.version FROM score s
JOIN node n ON n.id = s.node_id
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment
"""


def existing_scores(db: Readable, experiment_id: str) -> set[tuple[str, str, str]]:
    """Every (node, scorer, version) stored for the experiment, at every version: what a
    scoring run skips."""
    from sqlalchemy import text

    with connection(db) as conn:
        return {(str(a), str(b), str(c)) for a, b, c in conn.execute(text(_EXISTING), {"experiment": experiment_id})}


_UNREAD_ANSWERS = """
SELECT n.id, n.variant, n.content FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment AND n.kind = 'coordination'
  AND NOT EXISTS (SELECT 1 FROM score s WHERE s.node_id = n.id AND s.scorer = :scorer AND s.version = :version)
ORDER BY n.id
"""


@dataclass(frozen=True)
class UnreadAnswer:
    """A coordination answer with no ``scorer`` row at ``version`` yet."""

    node_id: str
    #: ``TASK@phase``.
    variant: str | None
    content: str


def unread_answers(db: Readable, experiment_id: str, scorer: str, version: str) -> list[UnreadAnswer]:
    """The experiment's coordination answers not yet read at this answer-reader version."""
    from sqlalchemy import text

    params = {"experiment": experiment_id, "scorer": scorer, "version": version}
    with connection(db) as conn:
        rows = conn.execute(text(_UNREAD_ANSWERS), params).all()
    return [UnreadAnswer(str(node), variant, str(content)) for node, variant, content in rows]


# -- what a prediction is scored against, and what it was made from --------------------------

_TARGETS = """
SELECT p.id, p.dialogue_id, p.variant, p.speaker, p.content, p.parent_id,
       t.id, t.content, t.turn_index,
       d.condition_id, d.stop_phrase, d.model_a, d.model_b, d.settings
FROM node p
JOIN node t ON t.id = p.target_node_id
JOIN dialogue d ON d.id = p.dialogue_id
JOIN condition c ON c.id = d.condition_id
WHERE p.kind = 'prediction' AND c.experiment_id = :experiment
ORDER BY p.id
"""


def _json(value: Any) -> dict[str, Any]:
    return dict(json.loads(value)) if isinstance(value, str) else dict(value or {})


@dataclass(frozen=True)
class PredictionRow:
    """A prediction beside the turn it predicted, and the dialogue facts scoring needs."""

    prediction_id: str
    dialogue_id: str
    condition_id: str
    #: partner, self or cross (a prediction stored before variants existed is a partner one).
    variant: str
    #: The agent whose view the prediction was made from (A or B).
    predictor: str
    predicted: str
    parent_id: str
    actual_id: str
    actual: str
    turn_index: int
    stop_phrase: str | None
    model_a: str
    model_b: str
    settings: dict[str, Any]


def prediction_rows(db: Readable, experiment_id: str) -> list[PredictionRow]:
    """Every prediction of the experiment with the turn it predicted, by prediction id."""
    from sqlalchemy import text

    with connection(db) as conn:
        rows = conn.execute(text(_TARGETS), {"experiment": experiment_id}).all()
    return [
        PredictionRow(
            prediction_id=str(row[0]),
            dialogue_id=str(row[1]),
            variant=str(row[2] or "partner"),
            predictor=str(row[3]),
            predicted=str(row[4]),
            parent_id=str(row[5]),
            actual_id=str(row[6]),
            actual=str(row[7]),
            turn_index=int(row[8]),
            condition_id=str(row[9]),
            stop_phrase=row[10],
            model_a=str(row[11]),
            model_b=str(row[12]),
            settings=_json(row[13]),
        )
        for row in rows
    ]


_SETUPS = """
SELECT d.id, d.first_speaker, pa.text, pb.text, d.settings, d.model_a, d.model_b FROM dialogue d
JOIN condition c ON c.id = d.condition_id
JOIN prompt pa ON pa.hash = d.system_prompt_a
JOIN prompt pb ON pb.hash = d.system_prompt_b
WHERE c.experiment_id = :experiment
"""


@dataclass(frozen=True)
class DialogueSetup:
    """What the agents of one dialogue were set up with: who spoke first, their system
    prompts, and the dialogue's settings (the prediction instructions' hashes among them)."""

    dialogue_id: str
    first_speaker: str
    system_a: str
    system_b: str
    settings: dict[str, Any]
    model_a: str = ""
    model_b: str = ""


def dialogue_setups(db: Readable, experiment_id: str) -> list[DialogueSetup]:
    """The setup of every dialogue of the experiment (a model scorer rebuilds each
    prediction's context from it)."""
    from sqlalchemy import text

    with connection(db) as conn:
        rows = conn.execute(text(_SETUPS), {"experiment": experiment_id}).all()
    return [DialogueSetup(str(r[0]), str(r[1]), str(r[2]), str(r[3]), _json(r[4]), str(r[5]), str(r[6])) for r in rows]


def conversation_nodes(db: Readable, dialogue_ids: list[str]) -> list[Node]:
    """Every opening and turn node (all branches) of the dialogues, read in chunks: a model
    scorer walks each prediction's path in memory, not with one query per prediction."""
    from sqlmodel import Session, col, select

    from clonechat.store.models import Node

    found: list[Node] = []
    with Session(db.reader_engine) as session:
        for start in range(0, len(dialogue_ids), 500):
            chunk = dialogue_ids[start : start + 500]
            query = select(Node).where(col(Node.dialogue_id).in_(chunk), col(Node.kind).in_(["opening", "turn"]))
            found += session.exec(query).all()
    return found
