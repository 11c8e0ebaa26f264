"""Loading a report's rows from the run database, through the read layer (no SQL here).

Each prediction is scored by the scorer version *in force* (the ``v_score`` view: the row
stored last), and its baseline is the shuffled control's score at that same version, or None if
the control was not scored at it (``v_prediction``). Coordination answers are the ones scoring
read (the ``answer`` scores in force, as ``v_coordination`` shows them); an answer not scored
yet is read here, by its task's rules (``prompts/coordination/``), so "I pick 42." matches "42"
and a report can be written before any scoring.
"""

from __future__ import annotations

import tomllib

from clonechat.analysis.data import ConditionInfo, CoordinationPair, PredictionScore, ReportBack, ReportData
from clonechat.prompts import PromptLibrary
from clonechat.read.connect import Readable, snapshot
from clonechat.read.experiments import conditions, experiment_counts, require_experiment
from clonechat.read.scores import predictions_in_force
from clonechat.read.sides import experiment_sides
from clonechat.read.spending import experiment_spending
from clonechat.scoring.coordination import ANSWER_SCORER, AnswerReader


def _conditions(db: Readable, experiment_id: str) -> list[ConditionInfo]:
    counts = experiment_counts(db, experiment_id)
    out = []
    for row in conditions(db, experiment_id):
        c = counts.get(row.name)
        dialogues, turns = (c.dialogues, c.turns) if c else (0, 0)
        completed = c.by_status.get("completed", 0) if c else 0
        out.append(ConditionInfo(row.name, row.template, row.model_a, row.model_b, dialogues, completed, turns))
    return out


def _predictions(db: Readable, experiment: str) -> list[PredictionScore]:
    return [
        PredictionScore(p.condition, p.dialogue_id, p.turn_index, p.variant, p.scorer, p.value, p.shuffled_value)
        for p in predictions_in_force(db, experiment)
    ]


def _side(db: Readable, experiment_id: str, library: PromptLibrary) -> tuple[list[CoordinationPair], list[ReportBack]]:
    read_answer = AnswerReader(library)
    answers: dict[tuple[str, str, str], dict[str, str]] = {}
    reports: list[ReportBack] = []
    for side in experiment_sides(db, experiment_id, ANSWER_SCORER):
        if side.kind == "report":
            reports.append(ReportBack(side.condition, side.dialogue_id, side.speaker, side.model or "", side.content))
            continue
        answer = side.answer if side.answer is not None else read_answer(side.variant, side.content)
        answers.setdefault((side.condition, side.dialogue_id, side.variant or ""), {})[side.speaker] = answer
    pairs = []
    for (condition, dialogue, variant), by_agent in answers.items():
        if "A" in by_agent and "B" in by_agent:
            task_name, _, phase = variant.partition("@")
            pairs.append(CoordinationPair(condition, dialogue, task_name, phase, by_agent["A"], by_agent["B"]))
    return pairs, reports


def stored_spec_value(spec: str | None, key: str) -> object:
    """A top-level value of an experiment's stored spec (None when absent or unreadable: the
    spec was validated when the experiment started, so that is an old or foreign one)."""
    if not spec:
        return None
    try:
        return tomllib.loads(spec).get(key)
    except tomllib.TOMLDecodeError:
        return None


def _control(spec: str | None) -> str | None:
    value = stored_spec_value(spec, "control")
    return value if isinstance(value, str) else None


def load_report_data(db: Readable, experiment: str, library: PromptLibrary | None = None) -> ReportData:
    """Everything the report (and the TUI's scores screen) shows of one experiment. Only reads:
    pass a read-only :class:`~clonechat.read.connect.Reader`, or the writer's database in a
    command that has just scored."""
    with snapshot(db) as moment:  # one moment, even while a batch is still writing
        found = require_experiment(moment, experiment)
        coordination, reports = _side(moment, found.id, library or PromptLibrary())
        return ReportData(
            experiment=found.name,
            created_at=found.created_at,
            spec_text=found.spec or "",
            control=_control(found.spec),
            conditions=_conditions(moment, found.id),
            predictions=_predictions(moment, found.name),
            coordination=coordination,
            reports=reports,
            spending=experiment_spending(moment, found.id),
        )


def experiment_id(db: Readable, name: str) -> str:
    """The id of the experiment called ``name``; a NotFoundError naming the known ones if none."""
    return require_experiment(db, name).id
