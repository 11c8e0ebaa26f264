"""The newer measures' rows: self-recognition answers, privileged self-knowledge log-probs, the
researcher's interjections and how each dialogue ended.

Scoring asks what it still has to do (:func:`unread_recognitions`: every version counts, as in
:mod:`clonechat.read.scores`); the report asks for the values in force (``v_score``:
:func:`recognition_results`, :func:`turn_scores`), per condition and dialogue, so both backends
give the same rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clonechat.read.connect import Readable, connection

_OF_EXPERIMENT = "JOIN dialogue d ON d.id = n.dialogue_id JOIN condition c ON c.id = d.condition_id"

_UNREAD_RECOGNITIONS = f"""
SELECT n.id, n.speaker, n.content, t.speaker, CAST(d.settings AS TEXT)
FROM node n {_OF_EXPERIMENT}
JOIN node t ON t.id = n.target_node_id
WHERE c.experiment_id = :experiment AND n.kind = 'recognition'
  AND NOT EXISTS (SELECT 1 FROM score s WHERE s.node_id = n.id AND s.scorer = :scorer AND s.version = :version)
ORDER BY n.id
"""


@dataclass(frozen=True)
class UnreadRecognition:
    """A recognition answer not read yet at the reader's version, with the truth beside it."""

    node_id: str
    #: The agent asked.
    asked: str
    content: str
    #: Who wrote the message it was shown.
    author: str
    #: The recognition template the question came from (its rule reads the answer).
    template: str


def _json(value: Any) -> dict[str, Any]:
    return dict(json.loads(value)) if isinstance(value, str) else dict(value or {})


def _rows(db: Readable, query: str, **params: object) -> list[Any]:
    """The rows of one statement; a list or tuple parameter is an ``IN`` list (expanded)."""
    from sqlalchemy import bindparam, text

    statement = text(query)
    lists = [name for name, value in params.items() if isinstance(value, list | tuple)]
    if lists:
        statement = statement.bindparams(*(bindparam(name, expanding=True) for name in lists))
    with connection(db) as conn:
        return list(conn.execute(statement, params).all())


def unread_recognitions(db: Readable, experiment_id: str, scorer: str, version: str) -> list[UnreadRecognition]:
    rows = _rows(db, _UNREAD_RECOGNITIONS, experiment=experiment_id, scorer=scorer, version=version)
    out = []
    for node_id, asked, content, author, settings in rows:
        template = (_json(settings).get("measures", {}).get("recognition") or {}).get("template", "default")
        out.append(UnreadRecognition(str(node_id), str(asked), str(content), str(author), str(template)))
    return out


_RECOGNITION_RESULTS = f"""
SELECT c.name, n.dialogue_id, n.speaker, n.model, t.speaker, s.value, CAST(s.detail AS TEXT)
FROM node n {_OF_EXPERIMENT}
JOIN node t ON t.id = n.target_node_id
LEFT JOIN v_score s ON s.node_id = n.id AND s.scorer = :scorer
WHERE c.experiment_id = :experiment AND n.kind = 'recognition'
ORDER BY c.name, n.dialogue_id, n.id
"""


@dataclass(frozen=True)
class RecognitionResult:
    """One recognition answer as scored (``correct`` None: unreadable, or not scored yet)."""

    condition: str
    dialogue_id: str
    asked: str
    model: str
    #: Whether the message shown was the asked agent's own.
    own: bool
    correct: float | None
    #: The answer as the template's rule read it (``""``: no answer to read; None: not scored).
    answer: str | None


def recognition_results(db: Readable, experiment_id: str, scorer: str) -> list[RecognitionResult]:
    rows = _rows(db, _RECOGNITION_RESULTS, experiment=experiment_id, scorer=scorer)
    return [
        RecognitionResult(
            str(condition),
            str(dialogue),
            str(asked),
            str(model or ""),
            str(author) == str(asked),
            None if value is None else float(value),
            None if detail is None else str(_json(detail).get("answer", "")),
        )
        for condition, dialogue, asked, model, author, value, detail in rows
    ]


_TURN_SCORES = f"""
SELECT c.name, n.dialogue_id, n.turn_index, n.speaker, s.scorer, s.value
FROM v_score s JOIN node n ON n.id = s.node_id {_OF_EXPERIMENT}
WHERE c.experiment_id = :experiment AND n.kind = 'turn' AND s.scorer IN :scorers AND s.value IS NOT NULL
ORDER BY c.name, n.dialogue_id, n.turn_index
"""


@dataclass(frozen=True)
class TurnScore:
    condition: str
    dialogue_id: str
    turn_index: int
    speaker: str
    scorer: str
    value: float


def turn_scores(db: Readable, experiment_id: str, scorers: tuple[str, ...]) -> list[TurnScore]:
    """Scores in force stored on turns (the self-knowledge log-probabilities) by ``scorers``."""
    rows = _rows(db, _TURN_SCORES, experiment=experiment_id, scorers=scorers)
    return [TurnScore(str(a), str(b), int(t), str(s), str(k), float(v)) for a, b, t, s, k, v in rows]


_SCORED_TURNS = f"""
SELECT s.node_id, s.scorer FROM score s JOIN node n ON n.id = s.node_id {_OF_EXPERIMENT}
WHERE c.experiment_id = :experiment AND n.kind = 'turn' AND s.scorer IN :scorers
"""


def scored_turns(db: Readable, experiment_id: str, scorers: tuple[str, ...]) -> set[tuple[str, str]]:
    """Every (turn, scorer) stored for the experiment among ``scorers``, at any version."""
    rows = _rows(db, _SCORED_TURNS, experiment=experiment_id, scorers=scorers)
    return {(str(node), str(scorer)) for node, scorer in rows}


_RESEARCHER_TURNS = f"""
SELECT c.name, n.dialogue_id, n.turn_index, n.variant
FROM node n {_OF_EXPERIMENT}
WHERE c.experiment_id = :experiment AND n.kind = 'turn' AND n.speaker = 'researcher'
ORDER BY c.name, n.dialogue_id, n.turn_index, n.id
"""


@dataclass(frozen=True)
class ResearcherTurn:
    """A researcher's interjection on a dialogue's path (any branch)."""

    condition: str
    dialogue_id: str
    #: Its depth on the path: the agent turns after it have larger indices.
    turn_index: int
    #: The agent it was addressed to (``A``, ``B``; None: both).
    to: str | None


def researcher_turns(db: Readable, experiment_id: str) -> list[ResearcherTurn]:
    """Every interjection of the experiment, by condition, dialogue and depth."""
    rows = _rows(db, _RESEARCHER_TURNS, experiment=experiment_id)
    return [ResearcherTurn(str(c), str(d), int(t), None if to is None else str(to)) for c, d, t, to in rows]


_TURN_OVERLAPS = f"""
SELECT c.name, n.dialogue_id, n.turn_index, n.speaker, m.overlap_partner
FROM turn_metrics m JOIN node n ON n.id = m.node_id {_OF_EXPERIMENT}
WHERE c.experiment_id = :experiment AND n.kind = 'turn' AND m.overlap_partner IS NOT NULL
ORDER BY c.name, n.dialogue_id, n.turn_index, n.id
"""


@dataclass(frozen=True)
class TurnOverlapRow:
    """One agent turn's lexical overlap with its partner's latest turn (``turn_metrics``)."""

    condition: str
    dialogue_id: str
    turn_index: int
    speaker: str
    overlap_partner: float


def turn_overlaps(db: Readable, experiment_id: str) -> list[TurnOverlapRow]:
    """``turn_metrics.overlap_partner`` of every agent turn that has one (all branches)."""
    rows = _rows(db, _TURN_OVERLAPS, experiment=experiment_id)
    return [TurnOverlapRow(str(c), str(d), int(t), str(s), float(v)) for c, d, t, s, v in rows]
