"""Loading a report's rows from the run database (the only part of the analysis that knows SQL).

For each prediction and scorer the newest scorer version is used; its shuffled-control score
(``NAME~shuffled``, same version) becomes the row's baseline. Coordination answers are
normalised by their task's rules (``prompts/coordination/``), so "I pick 42." matches "42".
"""

from __future__ import annotations

import tomllib
from typing import Any

from sqlalchemy import text

from clonechat.analysis.data import ConditionInfo, CoordinationPair, PredictionScore, ReportBack, ReportData
from clonechat.batch.store import experiment_counts, find_experiment
from clonechat.errors import NotFoundError
from clonechat.prompts import PromptLibrary
from clonechat.scoring.coordination import AnswerReader
from clonechat.scoring.runner import SHUFFLED_SUFFIX
from clonechat.store.database import Database
from clonechat.store.models import Experiment

_SCORES = """
SELECT c.name, n.dialogue_id, n.turn_index, n.variant, s.scorer, s.version, s.value, s.created_at, n.id
FROM score s
JOIN node n ON n.id = s.node_id
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment AND n.kind = 'prediction' AND s.value IS NOT NULL
ORDER BY s.created_at
"""

_SIDE_NODES = """
SELECT c.name, n.dialogue_id, n.kind, n.speaker, n.variant, n.content, n.model
FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
WHERE c.experiment_id = :experiment AND n.kind IN ('coordination', 'report')
ORDER BY c.name, n.dialogue_id, n.id
"""


def _experiment(db: Database, name: str) -> Experiment:
    experiment = find_experiment(db, name)
    if experiment is None:
        raise NotFoundError(f"no experiment named {name!r} in {db.path} (see 'clonechat ls')")
    return experiment


def _conditions(db: Database, experiment_id: str) -> list[ConditionInfo]:
    counts = experiment_counts(db, experiment_id)
    query = text("SELECT name, template, model_a, model_b FROM condition WHERE experiment_id = :e ORDER BY id")
    with db.session() as session:
        rows = session.connection().execute(query, {"e": experiment_id}).all()
    out = []
    for name, template, model_a, model_b in rows:
        c = counts.get(name)
        dialogues, turns = (c.dialogues, c.turns) if c else (0, 0)
        completed = c.by_status.get("completed", 0) if c else 0
        out.append(ConditionInfo(name, template, model_a, model_b, dialogues, completed, turns))
    return out


def _predictions(db: Database, experiment_id: str) -> list[PredictionScore]:
    with db.session() as session:
        rows = session.connection().execute(text(_SCORES), {"experiment": experiment_id}).all()
    # Newest version per (prediction, scorer); later rows (by created_at) win.
    values: dict[tuple[str, str], tuple[str, float, tuple[Any, ...]]] = {}
    for row in rows:
        condition, dialogue, turn, variant, scorer, version, value, _at, node = row
        values[(node, scorer)] = (version, float(value), (condition, dialogue, int(turn), variant or "partner"))
    out: list[PredictionScore] = []
    for (node, scorer), (version, value, where) in sorted(values.items()):
        if scorer.endswith(SHUFFLED_SUFFIX):
            continue
        shuffled = values.get((node, scorer + SHUFFLED_SUFFIX))
        baseline = shuffled[1] if shuffled is not None and shuffled[0] == version else None
        condition, dialogue, turn, variant = where
        out.append(PredictionScore(condition, dialogue, turn, variant, scorer, value, baseline))
    return out


def _side(db: Database, experiment_id: str, library: PromptLibrary) -> tuple[list[CoordinationPair], list[ReportBack]]:
    with db.session() as session:
        rows = session.connection().execute(text(_SIDE_NODES), {"experiment": experiment_id}).all()
    read_answer = AnswerReader(library)
    answers: dict[tuple[str, str, str], dict[str, str]] = {}
    reports: list[ReportBack] = []
    for condition, dialogue, kind, speaker, variant, content, model in rows:
        if kind == "report":
            reports.append(ReportBack(condition, dialogue, speaker, model or "", content))
            continue
        answers.setdefault((condition, dialogue, variant or ""), {})[speaker] = read_answer(variant, content)
    pairs = []
    for (condition, dialogue, variant), by_agent in answers.items():
        if "A" in by_agent and "B" in by_agent:
            task_name, _, phase = variant.partition("@")
            pairs.append(CoordinationPair(condition, dialogue, task_name, phase, by_agent["A"], by_agent["B"]))
    return pairs, reports


def _control(spec: str | None) -> str | None:
    if not spec:
        return None
    try:
        value = tomllib.loads(spec).get("control")
    except tomllib.TOMLDecodeError:
        return None
    return value if isinstance(value, str) else None


def load_report_data(db: Database, experiment: str, library: PromptLibrary | None = None) -> ReportData:
    found = _experiment(db, experiment)
    coordination, reports = _side(db, found.id, library or PromptLibrary())
    return ReportData(
        experiment=found.name,
        created_at=found.created_at,
        spec_text=found.spec or "",
        control=_control(found.spec),
        conditions=_conditions(db, found.id),
        predictions=_predictions(db, found.id),
        coordination=coordination,
        reports=reports,
    )


def experiment_id(db: Database, name: str) -> str:
    return _experiment(db, name).id
