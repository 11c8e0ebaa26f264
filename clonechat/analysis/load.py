"""Loading a report's rows from the run database, through the read layer (no SQL here).

Each prediction is scored by the scorer version *in force* (the ``v_score`` view: the row
stored last), and its baseline is the shuffled control's score at that same version, or None if
the control was not scored at it (``v_prediction``). Coordination answers are the ones scoring
read (the ``answer`` scores in force, as ``v_coordination`` shows them); an answer not scored
yet is read here, by its task's rules (``prompts/coordination/``), so "I pick 42." matches "42"
and a report can be written before any scoring.

The newer measures (:mod:`clonechat.read.measures`): recognition answers with their scores in
force, the self-knowledge log-probabilities, the researcher's interjections (and, when there are
any, each turn's ``overlap_partner`` to split at them), and each dialogue's ending, with its
condition's convergence rule replayed over its head path to say where it was first met.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from clonechat.analysis.data import (
    ConditionInfo,
    ConditionMeasures,
    ConvergenceSetting,
    CoordinationPair,
    DialogueEnding,
    InterjectionPoint,
    PredictionScore,
    RecognitionAnswer,
    ReportBack,
    ReportData,
    ScheduledInterjection,
    SelfKnowledgeScore,
    TurnOverlap,
)
from clonechat.engine.convergence import ConvergenceTracker
from clonechat.engine.protocol import ConvergenceRule
from clonechat.errors import NotFoundError
from clonechat.prompts import PromptLibrary
from clonechat.read.connect import Readable, snapshot
from clonechat.read.experiments import conditions, experiment_counts, require_experiment
from clonechat.read.measures import recognition_results, researcher_turns, turn_overlaps, turn_scores
from clonechat.read.paths import node_record, path_in
from clonechat.read.scores import conversation_nodes, predictions_in_force
from clonechat.read.sides import experiment_sides
from clonechat.read.spending import experiment_spending
from clonechat.read.transcripts import condition_settings, transcript_dialogues
from clonechat.scoring.coordination import ANSWER_SCORER, AnswerReader
from clonechat.scoring.recognition import RECOGNITION_SCORER
from clonechat.scoring.self_knowledge import OTHER_MODEL, OWN, PARTNER_VIEW

#: The self-knowledge scorers by the term of the decomposition each one stores.
SELF_KNOWLEDGE_TERMS = {OWN: "a", PARTNER_VIEW: "b", OTHER_MODEL: "c"}


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


def _measure_settings(settings: Mapping[str, Any]) -> ConditionMeasures:
    """The newer measures of a condition's stored ``settings["measures"]``."""
    measures = settings.get("measures") or {}
    rule = measures.get("convergence")
    convergence = None
    if isinstance(rule, Mapping):
        convergence = ConvergenceSetting(
            str(rule["metric"]), float(rule["threshold"]), int(rule["turns"]), str(rule.get("action", "stop"))
        )
    scheduled = tuple(
        ScheduledInterjection(int(i["at"]), str(i.get("to") or "both")) for i in measures.get("interjections") or ()
    )
    return ConditionMeasures(
        recognition=bool(measures.get("recognition")),
        self_knowledge=bool(measures.get("self_knowledge")),
        interjections=scheduled,
        convergence=convergence,
    )


def _measures(db: Readable, experiment_id: str) -> dict[str, ConditionMeasures]:
    return {c.name: _measure_settings(c.settings) for c in condition_settings(db, experiment_id)}


def _recognition(db: Readable, experiment_id: str) -> list[RecognitionAnswer]:
    return [
        RecognitionAnswer(r.condition, r.dialogue_id, r.asked, r.model, r.own, r.correct, r.answer)
        for r in recognition_results(db, experiment_id, RECOGNITION_SCORER)
    ]


def _self_knowledge(db: Readable, experiment_id: str) -> list[SelfKnowledgeScore]:
    """The decomposition's scores in force, in one order on either backend (the query leaves
    the scorers of one turn unordered)."""
    rows = [
        SelfKnowledgeScore(s.condition, s.dialogue_id, s.turn_index, s.speaker, SELF_KNOWLEDGE_TERMS[s.scorer], s.value)
        for s in turn_scores(db, experiment_id, tuple(SELF_KNOWLEDGE_TERMS))
    ]
    return sorted(rows, key=lambda s: (s.condition, s.dialogue_id, s.turn_index, s.speaker, s.term, s.value))


def _endings(db: Readable, experiment_id: str, measures: Mapping[str, ConditionMeasures]) -> list[DialogueEnding]:
    """Every dialogue's ending; in a condition with a convergence rule, the rule replayed over
    the dialogue's head path (as the engine applied it) says where it was first met."""
    dialogues = transcript_dialogues(db, experiment_id)
    rules = {
        name: ConvergenceRule(c.metric, c.threshold, c.turns, c.action == "stop")
        for name, m in measures.items()
        if (c := m.convergence) is not None
    }
    replayed = [d.id for d in dialogues if d.condition in rules and d.head_node_id is not None]
    nodes = {n.id: node_record(n) for n in conversation_nodes(db, replayed)} if replayed else {}
    parents = {node_id: node.parent_id for node_id, node in nodes.items()}
    out = []
    for d in dialogues:
        at, turns = None, 0
        if d.condition in rules and d.head_node_id is not None:
            try:
                path = [nodes[i] for i in path_in(parents, d.head_node_id)]
            except NotFoundError:  # a head that is not a conversation node: nothing to replay
                path = []
            tracker = ConvergenceTracker(rules[d.condition]).extend(path)
            at = tracker.converged_at
            turns = sum(1 for n in path if n.kind == "turn" and n.speaker != "researcher")
        out.append(DialogueEnding(d.id, d.condition, d.stop_reason, at, d.status, turns))
    return out


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
        measures = _measures(moment, found.id)
        interjections = [
            InterjectionPoint(r.condition, r.dialogue_id, r.turn_index, r.to)
            for r in researcher_turns(moment, found.id)
        ]
        overlaps = [
            TurnOverlap(o.condition, o.dialogue_id, o.turn_index, o.speaker, o.overlap_partner)
            for o in (turn_overlaps(moment, found.id) if interjections else [])
        ]
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
            recognition=_recognition(moment, found.id),
            self_knowledge=_self_knowledge(moment, found.id),
            interjections=interjections,
            overlaps=overlaps,
            endings=_endings(moment, found.id, measures),
            measures=measures,
        )


def experiment_id(db: Readable, name: str) -> str:
    """The id of the experiment called ``name``; a NotFoundError naming the known ones if none."""
    return require_experiment(db, name).id
