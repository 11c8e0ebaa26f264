"""An experiment's whole record for reading it back: every dialogue's tree with its side nodes
and their scores in force (the HTML report's transcripts), and the facts its provenance shows
(models and parameters, seeds, prompt hashes, when it ran).

Each question is one statement over the whole experiment, not one per dialogue: a report of
1,000 dialogues reads its transcripts in three queries. Rows read the same from either backend:
JSON columns are read as text and parsed here, times are aware UTC
(:func:`~clonechat.read.connect.stored_time`). The nodes' private reasoning (``node.reasoning``)
is never read: nothing built from these rows can show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clonechat.read.connect import Readable, connection, stored_time

#: ``node.model`` of a researcher's edit (``clonechat.branching.EDIT_MODEL``, as the ``v_turn``
#: view and the export spell it: the read layer does not import the branching module, which writes).
EDIT_MODEL = "researcher-edit"

_OF_EXPERIMENT = "JOIN dialogue d ON d.id = n.dialogue_id JOIN condition c ON c.id = d.condition_id"

_DIALOGUES = """
SELECT d.id, c.name, d.replicate, d.status, d.stop_reason, d.model_a, d.model_b, d.seed, d.first_speaker,
       d.head_node_id
FROM dialogue d JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment
ORDER BY c.id, d.replicate, d.id
"""

#: Every node but its reasoning; an edit's params (its overrides) only for edits.
_NODES = f"""
SELECT n.dialogue_id, n.id, n.parent_id, n.speaker, n.kind, n.turn_index, n.content, n.model, n.variant,
       n.target_node_id, n.error, CASE WHEN n.model = :edit THEN CAST(n.params AS TEXT) END
FROM node n {_OF_EXPERIMENT}
WHERE c.experiment_id = :experiment
ORDER BY n.dialogue_id, n.id
"""

#: The scores in force (``v_score``) of the experiment's predictions, coordination and
#: recognition answers and turns (self-knowledge); the reading's detail only for the answer
#: scorer (the normalised answer).
_SCORES = f"""
SELECT s.node_id, s.scorer, s.value, CASE WHEN s.scorer = :answer THEN CAST(s.detail AS TEXT) END
FROM v_score s JOIN node n ON n.id = s.node_id {_OF_EXPERIMENT}
WHERE c.experiment_id = :experiment AND n.kind IN ('prediction', 'coordination', 'recognition', 'turn')
ORDER BY s.node_id, s.scorer
"""


def _rows(db: Readable, query: str, **params: object) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    with connection(db) as conn:
        return [tuple(row) for row in conn.execute(text(query), params)]


def _json(value: Any) -> dict[str, Any]:
    """A JSON column read as text (or already parsed) as a dict."""
    if value is None:
        return {}
    return dict(json.loads(value)) if isinstance(value, str) else dict(value)


# -- transcripts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptDialogue:
    """One dialogue's facts a transcript is headed with."""

    id: str
    condition: str
    replicate: int
    status: str
    stop_reason: str | None
    model_a: str
    model_b: str
    seed: int | None
    first_speaker: str
    head_node_id: str | None


@dataclass(frozen=True)
class TranscriptNode:
    """A node as a transcript shows it: everything but its private reasoning and its metrics."""

    dialogue_id: str
    id: str
    parent_id: str | None
    speaker: str
    kind: str
    turn_index: int
    content: str
    model: str | None
    variant: str | None
    target_node_id: str | None
    error: str | None
    #: A researcher's edit: the overrides its branch runs with (empty for every other node).
    edit_params: dict[str, Any]


@dataclass(frozen=True)
class NodeScore:
    """A score in force of a prediction (``NAME``, ``NAME~shuffled``) or a coordination answer."""

    node_id: str
    scorer: str
    value: float | None
    #: The normalised answer of an ``answer`` row; None for every other scorer.
    answer: str | None


def transcript_dialogues(db: Readable, experiment_id: str) -> list[TranscriptDialogue]:
    """The experiment's dialogues, by condition (in planned order), then replicate."""
    return [
        TranscriptDialogue(
            id=str(r[0]),
            condition=str(r[1]),
            replicate=int(r[2]),
            status=str(r[3]),
            stop_reason=r[4],
            model_a=str(r[5]),
            model_b=str(r[6]),
            seed=None if r[7] is None else int(r[7]),
            first_speaker=str(r[8]),
            head_node_id=r[9],
        )
        for r in _rows(db, _DIALOGUES, experiment=experiment_id)
    ]


def transcript_nodes(db: Readable, experiment_id: str) -> list[TranscriptNode]:
    """Every node of every dialogue of the experiment (all branches, side nodes included), by
    dialogue, then id (ULIDs: creation order)."""
    return [
        TranscriptNode(
            dialogue_id=str(r[0]),
            id=str(r[1]),
            parent_id=r[2],
            speaker=str(r[3]),
            kind=str(r[4]),
            turn_index=int(r[5]),
            content=str(r[6]),
            model=r[7],
            variant=r[8],
            target_node_id=r[9],
            error=r[10],
            edit_params=_json(r[11]),
        )
        for r in _rows(db, _NODES, experiment=experiment_id, edit=EDIT_MODEL)
    ]


def transcript_scores(db: Readable, experiment_id: str, answer_scorer: str) -> list[NodeScore]:
    """The scores in force of the experiment's predictions and coordination answers; the rows of
    ``answer_scorer`` carry the answer as its task read it."""
    out = []
    for node_id, scorer, value, detail in _rows(db, _SCORES, experiment=experiment_id, answer=answer_scorer):
        answer = _json(detail).get("answer") if detail is not None else None
        out.append(
            NodeScore(
                str(node_id),
                str(scorer),
                None if value is None else float(value),
                None if answer is None else str(answer),
            )
        )
    return out


# -- provenance --------------------------------------------------------------------------------

_CONDITION_SETTINGS = """
SELECT c.name, c.template, c.model_a, c.model_b, CAST(c.settings AS TEXT)
FROM condition c WHERE c.experiment_id = :experiment ORDER BY c.id
"""

_DIALOGUE_SETUPS = """
SELECT c.name, d.replicate, d.seed, d.system_prompt_a, d.system_prompt_b, d.opening_prompt, CAST(d.settings AS TEXT)
FROM dialogue d JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment
ORDER BY c.id, d.replicate, d.id
"""

#: The models that wrote each kind of node, as the providers named them (a prediction's variant
#: kept apart: a cross-model predictor is another model), researcher edits and errors aside.
_RECORDED_MODELS = f"""
SELECT m.name, m.kind, m.variant, m.speaker, m.model, count(*)
FROM (SELECT c.name AS name, n.kind AS kind, CASE WHEN n.kind = 'prediction' THEN n.variant END AS variant,
             n.speaker AS speaker, n.model AS model
      FROM node n {_OF_EXPERIMENT}
      WHERE c.experiment_id = :experiment AND n.model IS NOT NULL AND n.model <> :edit
        AND n.kind IN ('turn', 'prediction', 'coordination', 'report', 'recognition')) m
GROUP BY m.name, m.kind, m.variant, m.speaker, m.model
ORDER BY m.name, m.kind, m.variant, m.speaker, m.model
"""

_TIME_RANGE = f"""
SELECT min(n.created_at), max(n.created_at) FROM node n {_OF_EXPERIMENT} WHERE c.experiment_id = :experiment
"""


@dataclass(frozen=True)
class ConditionSettings:
    """A condition as planned: its template, models and resolved settings (parameters, measures)."""

    name: str
    template: str
    model_a: str
    model_b: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class DialogueSetupRow:
    """What one dialogue was set up with: its seed, prompt hashes and settings."""

    condition: str
    replicate: int
    seed: int | None
    system_prompt_a: str
    system_prompt_b: str
    opening_prompt: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class RecordedModel:
    """A model name stored on nodes of one kind (and variant) written by one speaker, and how many."""

    condition: str
    kind: str
    variant: str | None
    speaker: str
    model: str
    nodes: int


def condition_settings(db: Readable, experiment_id: str) -> list[ConditionSettings]:
    """The experiment's conditions in planned order, with their stored settings."""
    return [
        ConditionSettings(str(r[0]), str(r[1]), str(r[2]), str(r[3]), _json(r[4]))
        for r in _rows(db, _CONDITION_SETTINGS, experiment=experiment_id)
    ]


def dialogue_setup_rows(db: Readable, experiment_id: str) -> list[DialogueSetupRow]:
    """Every dialogue's seed, prompt hashes and settings, by condition then replicate."""
    return [
        DialogueSetupRow(
            str(r[0]), int(r[1]), None if r[2] is None else int(r[2]), str(r[3]), str(r[4]), str(r[5]), _json(r[6])
        )
        for r in _rows(db, _DIALOGUE_SETUPS, experiment=experiment_id)
    ]


def recorded_models(db: Readable, experiment_id: str) -> list[RecordedModel]:
    """Which models wrote the experiment's nodes, per condition, kind, variant and speaker."""
    return [
        RecordedModel(str(r[0]), str(r[1]), r[2], str(r[3]), str(r[4]), int(r[5]))
        for r in _rows(db, _RECORDED_MODELS, experiment=experiment_id, edit=EDIT_MODEL)
    ]


def node_time_range(db: Readable, experiment_id: str) -> tuple[datetime, datetime] | None:
    """When the experiment's first and last nodes were stored (None: nothing stored yet)."""
    rows = _rows(db, _TIME_RANGE, experiment=experiment_id)
    if not rows or rows[0][0] is None:
        return None
    return stored_time(rows[0][0]), stored_time(rows[0][1])
