"""The numeric sections of the report (prediction accuracy and coordination): the figures,
computed with :mod:`clonechat.analysis.stats`, as tables followed by one plain-English finding
per comparison, so a reader who skips the tables still learns what held up.

Each section is computed first (``prediction_results``, ``coordination_rows``,
``clone_vs_cross``), its comparisons are handed to :func:`~clonechat.analysis.findings.judge`
with every other comparison of the report, and only then are the document blocks built, so each
finding is worded after the correction for multiplicity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from clonechat.analysis.data import CoordinationPair, PredictionScore, ReportData
from clonechat.analysis.document import Block, Bullets, Paragraph, Plot, Section, Table, safe_name
from clonechat.analysis.findings import Contrast, Judgement, sentence
from clonechat.analysis.forest import forest_figure
from clonechat.analysis.primary import ComparisonKey
from clonechat.analysis.stats import (
    Estimate,
    chance_match_rate,
    difference_ci,
    format_ci,
    match_minus_chance_ci,
    mean_ci,
    paired_difference_ci,
    stranger_match_rate,
)

VARIANT_ORDER = ("partner", "self", "cross")
PHASE_ORDER = ("before", "after")
#: Scorers plotted by turn (the others are tabled only); the first scorer stands in if none is present.
PRIMARY_SCORERS = ("chrf", "token_f1")
#: Order of the scorer blocks in the prediction section: the graded text scorers a reader looks
#: for first, then the model-based ones, then the rest (binary property scorers) alphabetically.
SCORER_ORDER = ("chrf", "token_f1", "surprisal", "judge")
#: What a scorer's numbers mean when that is not "higher = closer match, 0 to 1"; one sentence
#: under its table, so "above chance" is not misread.
SCORER_NOTES = {
    "surprisal": (
        "Surprisal values are the predictor's mean log-probability per token of the message, in nats "
        "(higher = the actual message was less surprising to the predictor), so *above chance* means "
        "the real message was more expected than a message from another dialogue."
    ),
}


def ordered(values: Iterable[str], preferred: Sequence[str] = ()) -> list[str]:
    """Distinct values, the preferred ones first in their order, then the rest sorted."""
    distinct = set(values)
    return [v for v in preferred if v in distinct] + sorted(distinct - set(preferred))


def condition_order(data: ReportData) -> list[str]:
    """Conditions in spec order, then any that only appear in the rows."""
    names = [c.name for c in data.conditions]
    seen = [r.condition for r in data.predictions] + [r.condition for r in data.coordination]
    return ordered([*names, *seen, *(r.condition for r in data.reports)], names)


def primary_scorers(predictions: Sequence[PredictionScore]) -> list[str]:
    scorers = ordered(p.scorer for p in predictions)
    primary = [s for s in PRIMARY_SCORERS if s in scorers]
    return primary or scorers[:1]


def n_cell(est: Estimate) -> str:
    return f"{est.n} ({est.clusters})"


# --- prediction accuracy ---------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionRow:
    condition: str
    variant: str
    accuracy: Estimate
    chance: Estimate
    vs_chance: Estimate
    vs_control: Estimate | None


def _accuracy(scores: Sequence[PredictionScore]) -> Estimate:
    return mean_ci([p.value for p in scores], clusters=[p.dialogue_id for p in scores])


def _prediction_row(
    condition: str, variant: str, scores: list[PredictionScore], control: list[PredictionScore] | None
) -> PredictionRow:
    """Accuracy, the shuffled baseline, the paired difference from it (same prediction scored
    twice), and the difference from the control condition (independent dialogues)."""
    based = [p for p in scores if p.baseline is not None]
    dialogues = [p.dialogue_id for p in based]
    baselines = [p.baseline for p in based if p.baseline is not None]
    vs_control = None
    if control:
        vs_control = difference_ci(
            [p.value for p in scores],
            [p.value for p in control],
            a_clusters=[p.dialogue_id for p in scores],
            b_clusters=[p.dialogue_id for p in control],
        )
    return PredictionRow(
        condition,
        variant,
        accuracy=_accuracy(scores),
        chance=mean_ci(baselines, clusters=dialogues),
        vs_chance=paired_difference_ci([p.value for p in based], baselines, clusters=dialogues),
        vs_control=vs_control,
    )


def partner_vs_self(partner: list[PredictionScore], self_: list[PredictionScore]) -> tuple[Estimate, bool]:
    """Partner minus self accuracy. Predictions of the same turn of the same dialogue are paired
    (they are scored against the same message); without any such pairs the two are compared as
    independent groups. Returns the estimate and whether it was paired."""

    def by_turn(scores: list[PredictionScore]) -> dict[tuple[str, int], float]:
        groups: dict[tuple[str, int], list[float]] = defaultdict(list)
        for p in scores:
            groups[(p.dialogue_id, p.turn_index)].append(p.value)
        return {key: sum(v) / len(v) for key, v in groups.items()}

    a, b = by_turn(partner), by_turn(self_)
    keys = sorted(a.keys() & b.keys())
    if keys:
        return paired_difference_ci([a[k] for k in keys], [b[k] for k in keys], clusters=[k[0] for k in keys]), True
    est = difference_ci(
        [p.value for p in partner],
        [p.value for p in self_],
        a_clusters=[p.dialogue_id for p in partner],
        b_clusters=[p.dialogue_id for p in self_],
    )
    return est, False


@dataclass(frozen=True)
class ScorerResult:
    """One scorer's figures: a row per condition and variant, and partner vs self per condition
    (the estimate, and whether it was paired by turn)."""

    scorer: str
    rows: list[PredictionRow]
    vs_self: list[tuple[str, Estimate, bool]]


def prediction_results(data: ReportData) -> list[ScorerResult]:
    """Every scorer's figures, in :data:`SCORER_ORDER` (computed once: tests and tables share them)."""
    conditions = condition_order(data)
    results = []
    for scorer in ordered((p.scorer for p in data.predictions), SCORER_ORDER):
        groups: dict[tuple[str, str], list[PredictionScore]] = defaultdict(list)
        for p in data.predictions:
            if p.scorer == scorer:
                groups[(p.condition, p.variant)].append(p)
        variants = ordered((v for _, v in groups), VARIANT_ORDER)
        rows: list[PredictionRow] = []
        for condition in conditions:
            for variant in variants:
                if (condition, variant) in groups:
                    compare = data.control is not None and condition != data.control
                    control = groups.get((str(data.control), variant)) if compare else None
                    rows.append(_prediction_row(condition, variant, groups[(condition, variant)], control))
        vs_self = [
            (condition, *partner_vs_self(groups[(condition, "partner")], groups[(condition, "self")]))
            for condition in conditions
            if (condition, "partner") in groups and (condition, "self") in groups
        ]
        results.append(ScorerResult(scorer, rows, vs_self))
    return results


def _self_subject(scorer: str, condition: str, paired: bool) -> str:
    return f"{condition}, {scorer}, partner vs self ({'paired by turn' if paired else 'independent groups'})"


def prediction_tests(data: ReportData, results: Sequence[ScorerResult]) -> list[Contrast]:
    """The comparisons of the prediction section, in the order its findings list them."""
    tests = []
    for result in results:
        for r in result.rows:
            subject = f"{r.condition}, {r.variant}, {result.scorer}"
            key = ComparisonKey("prediction", result.scorer, r.condition, r.variant, "chance")
            tests.append(Contrast(key, subject, "chance", r.vs_chance))
            if r.vs_control is not None:
                key = ComparisonKey("prediction", result.scorer, r.condition, r.variant, "control")
                tests.append(Contrast(key, subject, f"the control `{data.control}`", r.vs_control))
        for condition, est, paired in result.vs_self:
            key = ComparisonKey("prediction", result.scorer, condition, "partner", "self")
            tests.append(Contrast(key, _self_subject(result.scorer, condition, paired), "self-prediction", est))
    return tests


_NO_SHUFFLE = " (the shuffled control needs a second dialogue in the condition)"


def _scorer_block(data: ReportData, result: ScorerResult, judgement: Judgement) -> Section:
    headers = ["Condition", "Variant", "Accuracy [95% CI]", "n (dialogues)", "Chance [95% CI]", "vs chance [95% CI]"]
    table = [
        [r.condition, r.variant, format_ci(r.accuracy), n_cell(r.accuracy), format_ci(r.chance), format_ci(r.vs_chance)]
        for r in result.rows
    ]
    if data.control:
        headers.append(f"vs control `{data.control}` [95% CI]")
        for r, line in zip(result.rows, table, strict=True):
            line.append("–" if r.vs_control is None else format_ci(r.vs_control))
    note: list[Block] = [Paragraph(SCORER_NOTES[result.scorer])] if result.scorer in SCORER_NOTES else []
    contrasts = prediction_tests(data, [result])
    lines = [sentence(t, judgement, missing=_NO_SHUFFLE if t.reference == "chance" else "") for t in contrasts]
    blocks: list[Block] = [Table(headers, table), *note, Bullets(lines, "Findings:")]
    forest = forest_plot(f"forest_{safe_name(result.scorer)}", f"Differences, {result.scorer}", contrasts, judgement)
    return Section(f"Scorer: {result.scorer}", [*blocks, *forest], level=3)


def forest_plot(name: str, what: str, contrasts: Sequence[Contrast], judgement: Judgement) -> list[Plot]:
    """A forest plot of ``contrasts`` (none when no comparison has an interval to draw)."""
    if not any(c.estimate.low is not None and not c.estimate.uninformative for c in contrasts):
        return []
    kept = [bool((v := judgement.verdict(c.key)) and v.significant and not c.estimate.within_noise) for c in contrasts]
    alt = f"{what}: each comparison with its 95% CI (filled: significant after correction for multiplicity)"
    return [Plot(name, alt, lambda: forest_figure(contrasts, kept))]


def prediction_section(
    data: ReportData, results: Sequence[ScorerResult], judgement: Judgement, plots: Sequence[Plot]
) -> Section:
    """``plots`` are the by-turn plots, shown after the scorers' tables."""
    title = "Prediction accuracy"
    if not data.predictions:
        none = "No predictions were made in this experiment (prediction was off in every condition)."
        return Section(title, [Paragraph(none)])
    intro = Paragraph(
        "Accuracy is the mean score of predictions against the message that was actually said. "
        "*Chance* is the same predictions scored against a message from another dialogue of the same "
        "condition (the shuffled baseline); *vs chance* is the paired difference. "
        + (
            f"*vs control* is the difference from condition `{data.control}`, same variant and scorer."
            if data.control
            else "The spec names no control condition, so no condition is compared with one."
        )
    )
    return Section(title, [intro, *(_scorer_block(data, r, judgement) for r in results), *plots])


# --- coordination ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CoordinationRow:
    condition: str
    cross_model: bool
    task: str
    phase: str
    match: Estimate
    chance: float | None
    vs_chance: Estimate
    strangers: float | None


def coordination_rows(data: ReportData) -> list[CoordinationRow]:
    """One row per condition, task and phase. Chance pools both agents' answers of that cell; the
    difference from chance recomputes chance in every bootstrap resample of the pairs."""
    groups: dict[tuple[str, str, str], list[CoordinationPair]] = defaultdict(list)
    for pair in data.coordination:
        groups[(pair.condition, pair.task, pair.phase)].append(pair)
    cross = {c.name: c.cross_model for c in data.conditions}
    tasks = ordered(p.task for p in data.coordination)
    phases = ordered((p.phase for p in data.coordination), PHASE_ORDER)
    rows = []
    for condition in condition_order(data):
        for task in tasks:
            for phase in phases:
                pairs = groups.get((condition, task, phase))
                if not pairs:
                    continue
                a, b = [p.answer_a for p in pairs], [p.answer_b for p in pairs]
                match = mean_ci([float(p.match) for p in pairs], clusters=[p.dialogue_id for p in pairs])
                rows.append(
                    CoordinationRow(
                        condition,
                        cross.get(condition, False),
                        task,
                        phase,
                        match=match,
                        chance=chance_match_rate(a + b),
                        vs_chance=match_minus_chance_ci(a, b),
                        strangers=stranger_match_rate(a, b),
                    )
                )
    return rows


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _tail(row: CoordinationRow) -> list[str]:
    return [_rate(row.chance), format_ci(row.vs_chance), _rate(row.strangers)]


class _ConditionRow(Protocol):
    @property
    def condition(self) -> str: ...
    @property
    def cross_model(self) -> bool: ...


def label(row: _ConditionRow) -> str:
    """A row's condition as every table names it, cross-model conditions marked."""
    return f"{row.condition} (cross-model)" if row.cross_model else row.condition


@dataclass(frozen=True)
class CrossResult:
    """Clone pairs against cross-model pairs for one task and phase, pooled over conditions
    (``estimate`` None when only one kind of pair answered: ``note`` says which)."""

    task: str
    phase: str
    estimate: Estimate | None
    note: str = ""

    @property
    def test(self) -> Contrast | None:
        if self.estimate is None:
            return None
        key = ComparisonKey("coordination", self.task, "", self.phase, "cross-model")
        subject = f"{self.task}, {self.phase}, clone pairs vs cross-model pairs"
        return Contrast(key, subject, "cross-model pairs", self.estimate)


def clone_vs_cross(data: ReportData, rows: Sequence[CoordinationRow]) -> list[CrossResult]:
    """Clone pairs against cross-model pairs, per task and phase (empty without cross-model pairs)."""
    if not any(r.cross_model for r in rows):
        return []
    cross = {c.name: c.cross_model for c in data.conditions}
    results = []
    for task, phase in dict.fromkeys((r.task, r.phase) for r in rows):
        cell_pairs = [p for p in data.coordination if (p.task, p.phase) == (task, phase)]
        clone = [p for p in cell_pairs if not cross.get(p.condition, False)]
        other = [p for p in cell_pairs if cross.get(p.condition, False)]
        if not clone or not other:
            note = f"only {'cross-model' if other else 'clone'} pairs answered; no comparison"
            results.append(CrossResult(task, phase, None, note))
            continue
        est = difference_ci(
            [float(p.match) for p in clone],
            [float(p.match) for p in other],
            a_clusters=[p.dialogue_id for p in clone],
            b_clusters=[p.dialogue_id for p in other],
        )
        results.append(CrossResult(task, phase, est))
    return results


def _row_test(r: CoordinationRow) -> Contrast:
    key = ComparisonKey("coordination", r.task, r.condition, r.phase, "chance")
    return Contrast(key, f"{label(r)}, {r.task}, {r.phase}", "chance", r.vs_chance)


def coordination_tests(rows: Sequence[CoordinationRow], cross: Sequence[CrossResult]) -> list[Contrast]:
    """The comparisons of the coordination section, in the order its findings list them."""
    return [*(_row_test(r) for r in rows), *(t for c in cross if (t := c.test) is not None)]


def coordination_section(
    data: ReportData,
    rows: Sequence[CoordinationRow],
    cross: Sequence[CrossResult],
    judgement: Judgement,
    plot: Plot | None,
) -> Section:
    """``rows`` from :func:`coordination_rows` and ``cross`` from :func:`clone_vs_cross`
    (computed once, shared with the plot and the tests)."""
    title = "Coordination"
    if not rows:
        return Section(title, [Paragraph("No coordination questions were asked in this experiment.")])
    intro = Paragraph(
        "Both agents answered each question on their own; a pair matches when both gave the same "
        "non-empty (normalised) answer. *Chance* is the rate at which two answers drawn independently "
        "from both agents' pooled answers (same condition, task and phase) would match; *vs chance* "
        "is the match rate minus chance, with chance re-estimated in every bootstrap resample. "
        "*Strangers* is the match rate of A's answer in one dialogue against B's answer in every other "
        "dialogue of the same condition, task and phase: agents with the same framing who never talked."
    )
    headers = ["Condition", "Task", "Phase", "Match rate [95% CI]", "Pairs (dialogues)", "Chance"]
    headers += ["vs chance [95% CI]", "Strangers"]
    table = [[label(r), r.task, r.phase, format_ci(r.match), n_cell(r.match), *_tail(r)] for r in rows]
    findings = []
    for r in rows:
        strangers = "" if r.strangers is None else f" Strangers with the same framing match {r.strangers:.3f}."
        findings.append(sentence(_row_test(r), judgement) + strangers)
    if cross:
        versus = [
            sentence(t, judgement) if (t := c.test) is not None else f"{c.task}, {c.phase}: {c.note}." for c in cross
        ]
        comparison: Block = Bullets(versus)
    else:
        comparison = Paragraph(
            "No condition pairs two different models, so clone pairs are not compared with cross-model pairs."
        )
    forest = forest_plot("forest_coordination", "Coordination against chance", [_row_test(r) for r in rows], judgement)
    blocks: list[Block] = [intro, Table(headers, table), Bullets(findings, "Findings:"), *forest]
    blocks.append(Section("Clone pairs vs cross-model pairs", [comparison], level=3))
    if plot is not None:
        blocks.append(plot)
    return Section(title, blocks)
