"""What the scores screen shows, read from the run database. No Textual here, and no SQL.

The figures come from the same loader as ``clonechat report`` (``load_report_data``), so the TUI
and the report never disagree about which scorer version (the one in force, ``v_score``) or
which shuffled baseline a value uses. The database is opened read-only
(:func:`~clonechat.read.connect.open_reader`: never migrated, never queued behind a busy batch),
and every call opens and closes its own connection: the screen calls these from worker threads.

Nothing is scored here: if the predictions have no scores yet the answer says so
(:attr:`Accuracy.scored` is False) and the screen tells the user to run ``clonechat score``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from clonechat.analysis.convergence_section import convergence_results
from clonechat.analysis.data import ReportData
from clonechat.analysis.load import experiment_id, load_report_data
from clonechat.analysis.recognition_section import recognition_results
from clonechat.analysis.report_tables import PHASE_ORDER, condition_order, ordered
from clonechat.analysis.self_knowledge_section import self_knowledge_results
from clonechat.analysis.stats import Estimate, chance_match_rate, format_ci
from clonechat.errors import NotFoundError
from clonechat.location import DbLocation
from clonechat.read.connect import Readable, open_existing
from clonechat.read.dialogues import experiment_of
from clonechat.read.scores import prediction_count
from clonechat.scoring.runner import SHUFFLED_SUFFIX

DEFAULT_SCORER = "chrf"
#: The order the scorer picker lists scorers in (most informative first); others follow by name.
SCORER_ORDER = ("chrf", "token_f1", "first_word", "length_bucket", "asks_question", "ends_dialogue", "surprisal")


@dataclass(frozen=True)
class TurnPoint:
    """One prediction's score in one dialogue, beside its shuffled baseline."""

    turn_index: int
    variant: str
    value: float
    baseline: float | None


class TurnMean(NamedTuple):
    """The mean score of the predictions of one turn (over dialogues), and how many there were."""

    turn_index: int
    mean: float
    n: int


@dataclass(frozen=True)
class Accuracy:
    """Prediction accuracy by turn for one scorer, per condition and variant.

    ``scored`` is False when there are predictions but none has a score yet: a chart of nothing
    would read as "no effect", so the screen says "not scored yet" instead.
    """

    scorer: str
    #: condition -> variant -> mean score per turn.
    series: dict[str, dict[str, list[TurnMean]]] = field(default_factory=dict)
    #: condition -> mean shuffled-control score per turn (all variants together).
    baseline: dict[str, list[TurnMean]] = field(default_factory=dict)
    #: Scorers with at least one value here (shuffled controls left out), in :data:`SCORER_ORDER`.
    scorers: tuple[str, ...] = ()
    #: Prediction nodes in scope (scored or not).
    predictions: int = 0

    @property
    def scored(self) -> bool:
        return bool(self.scorers)


@dataclass(frozen=True)
class CoordinationRow:
    """Match rate of one coordination question against the chance rate of its pooled answers."""

    condition: str
    task: str
    phase: str
    pairs: int
    match_rate: float
    chance: float | None


@dataclass(frozen=True)
class MeasureRow:
    """One figure of the newer measures (self-recognition, self-knowledge, convergence), as the
    report computes it: its value with its interval, n, and what it is read against."""

    measure: str
    condition: str
    value: str
    n: str
    against: str


def _n(est: Estimate) -> str:
    return f"{est.n} ({est.clusters})"


def measure_rows(data: ReportData) -> list[MeasureRow]:
    """The experiment's recognition accuracy, self-knowledge differences and convergence shares,
    from the report's own functions (so the screen and the report agree)."""
    rows: list[MeasureRow] = []
    for r in recognition_results(data).rows:
        if r.accuracy.n:
            chance = "–" if r.chance is None else f"chance {r.chance:.3f}"
            value, n = format_ci(r.accuracy), _n(r.accuracy)
            rows.append(MeasureRow("self-recognition accuracy", r.condition, value, n, chance))
    for k in self_knowledge_results(data).rows:
        for label, est in (("self-knowledge (a)−(b), nats", k.a_b), ("self-knowledge (b)−(c), nats", k.b_c)):
            if est.n:
                rows.append(MeasureRow(label, k.condition, format_ci(est), _n(est), "zero"))
    for c in convergence_results(data).rows:
        rows.append(
            MeasureRow("converged (share)", c.condition, format_ci(c.share), f"{c.converged} of {c.dialogues}", "–")
        )
    return rows


def order_scorers(names: Iterable[str]) -> tuple[str, ...]:
    """Scorer names (controls left out) in the picker's order: known ones first, then by name."""
    return tuple(ordered((name for name in names if not name.endswith(SHUFFLED_SUFFIX)), SCORER_ORDER))


@contextmanager
def _database(db_path: DbLocation | str) -> Iterator[Readable]:
    """The database opened read-only, as the browser opens it; here a missing one is an error."""
    with open_existing(db_path) as db:
        yield db


def _scope(db: Readable, data: ReportData, dialogue_id: str | None) -> tuple[int, tuple[str, ...]]:
    """Prediction count for the experiment, or one dialogue of it, and the scorers with a value
    in force there (taken from the loaded data, so the picker lists exactly what can be charted)."""
    count = prediction_count(db, experiment_id(db, data.experiment), dialogue_id)
    names = {p.scorer for p in data.predictions if dialogue_id is None or p.dialogue_id == dialogue_id}
    return count, order_scorers(names)


def _means(values: dict[int, list[float]]) -> list[TurnMean]:
    return [TurnMean(turn, sum(v) / len(v), len(v)) for turn, v in sorted(values.items())]


def _coordination(data: ReportData, dialogue_id: str | None = None) -> list[CoordinationRow]:
    """In the report's order (conditions as in the spec, tasks by name, phases as they happen)."""
    groups: dict[tuple[str, str, str], list[tuple[str, str, bool]]] = defaultdict(list)
    for pair in data.coordination:
        if dialogue_id is None or pair.dialogue_id == dialogue_id:
            groups[(pair.condition, pair.task, pair.phase)].append((pair.answer_a, pair.answer_b, pair.match))
    rows = []
    for condition in condition_order(data):
        for task in ordered(task for _, task, _ in groups):
            for phase in ordered((phase for _, _, phase in groups), PHASE_ORDER):
                pairs = groups.get((condition, task, phase))
                if not pairs:
                    continue
                answers = [a for a, _, _ in pairs] + [b for _, b, _ in pairs]
                rate = sum(match for _, _, match in pairs) / len(pairs)
                rows.append(CoordinationRow(condition, task, phase, len(pairs), rate, chance_match_rate(answers)))
    return rows


@dataclass(frozen=True)
class ScoresData:
    """One read of the database for the screen: the experiment's report data (every scorer's
    values), so switching the charted scorer is computed from memory, not read again."""

    experiment: str
    dialogue_id: str | None
    data: ReportData
    #: Prediction nodes in scope (scored or not), and the scorers with a value.
    predictions: int
    scorers: tuple[str, ...]
    coordination: list[CoordinationRow]
    #: The newer measures, experiment-wide (empty when none was switched on).
    measures: list[MeasureRow] = field(default_factory=list)

    def accuracy(self, scorer: str) -> Accuracy:
        """Mean ``scorer`` value per turn, per condition and variant, and the shuffled baselines."""
        by_series: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        by_baseline: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in self.data.predictions:
            if row.scorer != scorer or (self.dialogue_id is not None and row.dialogue_id != self.dialogue_id):
                continue
            by_series[(row.condition, row.variant)][row.turn_index].append(row.value)
            if row.baseline is not None:
                by_baseline[row.condition][row.turn_index].append(row.baseline)
        series: dict[str, dict[str, list[TurnMean]]] = {}
        for (condition, variant), turns in sorted(by_series.items()):
            series.setdefault(condition, {})[variant] = _means(turns)
        baseline = {condition: _means(turns) for condition, turns in sorted(by_baseline.items())}
        return Accuracy(scorer, series, baseline, self.scorers, self.predictions)

    def view(self, scorer: str) -> ScoresView:
        return ScoresView(self.experiment, self.dialogue_id, self.accuracy(scorer), self.coordination, self.measures)


def _dialogue_experiment(db: Readable, dialogue_id: str) -> str:
    name = experiment_of(db, dialogue_id)
    if name is None:
        raise NotFoundError(f"no dialogue {dialogue_id} in {db.path}")
    return name


def turn_accuracy(db_path: DbLocation | str, dialogue_id: str, scorer: str = DEFAULT_SCORER) -> list[TurnPoint]:
    """Every scored prediction of one dialogue for ``scorer``, by turn then variant."""
    with _database(db_path) as db:
        data = load_report_data(db, _dialogue_experiment(db, dialogue_id))
    points = [
        TurnPoint(row.turn_index, row.variant, row.value, row.baseline)
        for row in data.predictions
        if row.dialogue_id == dialogue_id and row.scorer == scorer
    ]
    return sorted(points, key=lambda p: (p.turn_index, p.variant))


def condition_accuracy(db_path: DbLocation | str, experiment: str, scorer: str = DEFAULT_SCORER) -> Accuracy:
    """Mean ``scorer`` value per turn for each condition × variant, and each condition's
    shuffled baseline per turn (means over dialogues)."""
    return load_scores(db_path, experiment).accuracy(scorer)


def coordination_summary(db_path: DbLocation | str, experiment: str) -> list[CoordinationRow]:
    """Per condition, task and phase: how many answer pairs, how often they matched, and the
    chance of a match between independent draws from the pooled answers."""
    return load_scores(db_path, experiment).coordination


@dataclass(frozen=True)
class ScoresView:
    """Everything the screen shows for one scorer."""

    experiment: str
    dialogue_id: str | None
    accuracy: Accuracy
    coordination: list[CoordinationRow]
    measures: list[MeasureRow] = field(default_factory=list)


def load_scores(db_path: DbLocation | str, experiment: str | None, dialogue_id: str | None = None) -> ScoresData:
    """The screen's data, in one read: for the experiment, or (with ``dialogue_id``) for that
    one dialogue, whose experiment is found when ``experiment`` is None."""
    with _database(db_path) as db:
        name = experiment
        if name is None:
            if dialogue_id is None:
                raise NotFoundError("no experiment or dialogue to show scores for")
            name = _dialogue_experiment(db, dialogue_id)
        data = load_report_data(db, name)
        predictions, scorers = _scope(db, data, dialogue_id)
    measures = measure_rows(data) if dialogue_id is None else []
    return ScoresData(name, dialogue_id, data, predictions, scorers, _coordination(data, dialogue_id), measures)
