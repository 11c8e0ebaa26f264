"""Scoring stored predictions: ``clonechat score`` and the end of a batch.

Scores are rows of their own (``score``: node, scorer, version, value, detail), written for the
prediction node; turns are never touched. Each prediction is scored against the message it
predicted (scorer ``NAME``) and against its shuffled control (``NAME~shuffled``), so every
figure has its chance level beside it. Scoring is idempotent: a (prediction, scorer, version)
already stored is skipped, so it can be re-run after more dialogues finish, and a new scorer
version adds rows beside the old ones. The rows stored last are the ones in force: the report
and the TUI read those (the ``v_score`` view, through :mod:`clonechat.read.scores`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from clonechat.prompts import PromptLibrary
from clonechat.read.scores import existing_scores, unread_answers
from clonechat.scoring.coordination import ANSWER_SCORER, ANSWER_VERSION, AnswerReader
from clonechat.scoring.recognition import score_recognition
from clonechat.scoring.registry import DEFAULT_SCORERS, get_text_scorer
from clonechat.scoring.targets import PredictionTarget, load_targets
from clonechat.scoring.text import ScoreResult
from clonechat.store import writes
from clonechat.store.database import Database

SHUFFLED_SUFFIX = "~shuffled"


@dataclass
class ScoringSummary:
    predictions: int = 0
    new_scores: int = 0
    skipped: int = 0
    unavailable: dict[str, int] | None = None
    #: Coordination answers newly read and stored (score rows ``answer``).
    answers: int = 0
    #: Self-recognition answers newly scored (score rows ``recognition``).
    recognitions: int = 0


def _missing(target: PredictionTarget, name: str, version: str, have: set[tuple[str, str, str]]) -> tuple[bool, bool]:
    """Whether the score against the actual message, and the one against the shuffled control,
    still have to be computed. The control can only be drawn once another dialogue of the
    condition exists, so it may be missing after an earlier, partial scoring run."""
    actual = (target.prediction_id, name, version) not in have
    shuffled = target.shuffled is not None and (target.prediction_id, name + SHUFFLED_SUFFIX, version) not in have
    return actual, shuffled


def _row(target: PredictionTarget, name: str, version: str, result: ScoreResult, *, shuffled: bool) -> writes.NewScore:
    against = target.shuffled_id if shuffled else target.actual_id
    scorer = name + SHUFFLED_SUFFIX if shuffled else name
    return writes.NewScore(target.prediction_id, scorer, version, result.value, {**result.detail, "against": against})


def score_text(db: Database, experiment_id: str, names: Sequence[str] = DEFAULT_SCORERS) -> ScoringSummary:
    """Run text scorers over every prediction of the experiment; returns what was written."""
    scorers = [get_text_scorer(name) for name in names]
    targets = load_targets(db, experiment_id)
    have = existing_scores(db, experiment_id)
    rows: list[writes.NewScore] = []
    summary = ScoringSummary(predictions=len(targets))
    for target in targets:
        for scorer in scorers:
            need_actual, need_shuffled = _missing(target, scorer.name, scorer.version, have)
            if not (need_actual or need_shuffled):
                summary.skipped += 1
                continue
            if need_actual:
                result = scorer.score(target.predicted, target.actual, stop_phrase=target.stop_phrase)
                rows.append(_row(target, scorer.name, scorer.version, result, shuffled=False))
            if need_shuffled and target.shuffled is not None:
                result = scorer.score(target.predicted, target.shuffled, stop_phrase=target.stop_phrase)
                rows.append(_row(target, scorer.name, scorer.version, result, shuffled=True))
    summary.new_scores = db.write(lambda conn: writes.insert_scores(conn, rows))
    summary.answers = score_answers(db, experiment_id)
    summary.recognitions = score_recognition(db, experiment_id)
    return summary


def score_answers(db: Database, experiment_id: str, library: PromptLibrary | None = None) -> int:
    """Store each coordination answer not read yet, normalised by its task's rule, as a score
    row (``answer``; ``value`` NULL, ``detail.answer`` the answer), so the ``v_coordination``
    view can say which pairs matched. Returns how many were new."""
    read_answer = AnswerReader(library or PromptLibrary())
    rows = [
        writes.NewScore(
            node.node_id, ANSWER_SCORER, ANSWER_VERSION, None, {"answer": read_answer(node.variant, node.content)}
        )
        for node in unread_answers(db, experiment_id, ANSWER_SCORER, ANSWER_VERSION)
    ]
    return db.write(lambda conn: writes.insert_scores(conn, rows))


#: A model-based scorer: (target, message to score against) -> result, or None if unavailable.
ModelScore = Callable[[PredictionTarget, str], Awaitable[ScoreResult | None]]


async def score_with_model(
    db: Database, experiment_id: str, name: str, version: str, score: ModelScore
) -> ScoringSummary:
    """Run a model-based scorer (surprisal, judge) over every prediction not yet scored by it.
    Rows are written per prediction, so an interrupted run keeps what it finished."""
    targets = load_targets(db, experiment_id)
    have = existing_scores(db, experiment_id)
    summary = ScoringSummary(predictions=len(targets), unavailable={})
    for target in targets:
        need_actual, need_shuffled = _missing(target, name, version, have)
        if not (need_actual or need_shuffled):
            summary.skipped += 1
            continue
        rows: list[writes.NewScore] = []
        for against, shuffled, needed in ((target.actual, False, need_actual), (target.shuffled, True, need_shuffled)):
            if not needed or against is None:
                continue
            result = await score(target, against)
            if result is None:
                assert summary.unavailable is not None
                summary.unavailable[target.model] = summary.unavailable.get(target.model, 0) + 1
                break
            rows.append(_row(target, name, version, result, shuffled=shuffled))
        summary.new_scores += db.write(partial(writes.insert_scores, scores=rows))
    return summary
