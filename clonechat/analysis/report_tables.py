"""The numeric sections of the report (prediction accuracy and coordination): the figures,
computed with :mod:`clonechat.analysis.stats`, as Markdown tables followed by one plain-English
finding per comparison, so a reader who skips the tables still learns what held up."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clonechat.analysis.data import CoordinationPair, PredictionScore, ReportData
from clonechat.analysis.stats import (
    MIN_CLUSTERS_FOR_CI,
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


def cell(text: object) -> str:
    """A value made safe for a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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


def too_few(est: Estimate) -> str:
    """Why an estimate has no interval, with its count of dialogues: "(n=2 dialogues; at least 5
    needed for an interval)". A difference of two groups counts its smaller group, which limits it."""
    units = est.units
    noun = "dialogue" if units == 1 else "dialogues"
    if est.smallest_group is not None:
        return (
            f"(the smaller group has n={units} {noun}; at least {MIN_CLUSTERS_FOR_CI} needed in each for an interval)"
        )
    return f"(n={units} {noun}; at least {MIN_CLUSTERS_FOR_CI} needed for an interval)"


def finding(subject: str, est: Estimate, reference: str, *, missing: str = "") -> str:
    """One line saying whether a difference stands out from noise, in words first.

    With too few dialogues for an interval (:data:`MIN_CLUSTERS_FOR_CI`) it says so instead of
    "above", "below" or "within noise": any of those would claim more than the data can show."""
    if est.mean is None:
        why = " (the shuffled control needs a second dialogue in the condition)" if reference == "chance" else ""
        return f"- {subject}: no data for the difference from {reference}{why}."
    if est.too_few_units or est.low is None or est.high is None:
        return (
            f"- {subject}: too few dialogues to tell {too_few(est)}; the difference from {reference} "
            f"is {est.mean:+.3f}."
        )
    if est.within_noise:
        return f"- {subject}: within noise: the difference from {reference}, {format_ci(est)}, includes zero."
    if est.mean > 0:
        return f"- {subject}: {est.mean:.3f} above {reference} [{est.low:.3f}, {est.high:.3f}]."
    return f"- {subject}: {-est.mean:.3f} below {reference} (difference {format_ci(est)})."


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


def _scorer_block(data: ReportData, scorer: str, conditions: list[str]) -> list[str]:
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
    headers = ["Condition", "Variant", "Accuracy [95% CI]", "n (dialogues)", "Chance [95% CI]", "vs chance [95% CI]"]
    table = [
        [r.condition, r.variant, format_ci(r.accuracy), n_cell(r.accuracy), format_ci(r.chance), format_ci(r.vs_chance)]
        for r in rows
    ]
    if data.control:
        headers.append(f"vs control `{data.control}` [95% CI]")
        for r, line in zip(rows, table, strict=True):
            line.append("–" if r.vs_control is None else format_ci(r.vs_control))
    note = [SCORER_NOTES[scorer], ""] if scorer in SCORER_NOTES else []
    lines = [f"### Scorer: {scorer}", "", md_table(headers, table), "", *note, "Findings:", ""]
    for r in rows:
        subject = f"{r.condition}, {r.variant}, {scorer}"
        why = " (the shuffled control needs a second dialogue in the condition)"
        lines.append(finding(subject, r.vs_chance, "chance", missing=why))
        if r.vs_control is not None:
            lines.append(finding(subject, r.vs_control, f"the control `{data.control}`"))
    for condition in conditions:
        if (condition, "partner") in groups and (condition, "self") in groups:
            est, paired = partner_vs_self(groups[(condition, "partner")], groups[(condition, "self")])
            how = "paired by turn" if paired else "independent groups"
            lines.append(finding(f"{condition}, {scorer}, partner vs self ({how})", est, "self-prediction"))
    return [*lines, ""]


def prediction_section(data: ReportData, plots: Sequence[tuple[str, str]]) -> str:
    """``plots`` are (scorer, relative file name) of the by-turn plots to link."""
    lines = ["## Prediction accuracy", ""]
    if not data.predictions:
        lines.append("No predictions were made in this experiment (prediction was off in every condition).")
        return "\n".join(lines) + "\n"
    lines += [
        "Accuracy is the mean score of predictions against the message that was actually said. "
        "*Chance* is the same predictions scored against a message from another dialogue of the same "
        "condition (the shuffled baseline); *vs chance* is the paired difference. "
        + (
            f"*vs control* is the difference from condition `{data.control}`, same variant and scorer."
            if data.control
            else "The spec names no control condition, so no condition is compared with one."
        ),
        "",
    ]
    conditions = condition_order(data)
    for scorer in ordered((p.scorer for p in data.predictions), SCORER_ORDER):
        lines += _scorer_block(data, scorer, conditions)
    for scorer, name in plots:
        lines += [
            f"![Prediction accuracy by turn, {scorer} (dashed: shuffled baseline)]({name})",
            "",
        ]
    return "\n".join(lines)


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


def label(row: CoordinationRow) -> str:
    return f"{row.condition} (cross-model)" if row.cross_model else row.condition


def _clone_vs_cross(data: ReportData, rows: list[CoordinationRow]) -> list[str]:
    """Clone pairs against cross-model pairs, per task and phase, pooled over conditions."""
    if not any(r.cross_model for r in rows):
        return ["No condition pairs two different models, so clone pairs are not compared with cross-model pairs."]
    cross = {c.name: c.cross_model for c in data.conditions}
    lines = []
    for task, phase in dict.fromkeys((r.task, r.phase) for r in rows):
        cell_pairs = [p for p in data.coordination if (p.task, p.phase) == (task, phase)]
        clone = [p for p in cell_pairs if not cross.get(p.condition, False)]
        other = [p for p in cell_pairs if cross.get(p.condition, False)]
        if not clone or not other:
            lines.append(
                f"- {task}, {phase}: only {'cross-model' if other else 'clone'} pairs answered; no comparison."
            )
            continue
        est = difference_ci(
            [float(p.match) for p in clone],
            [float(p.match) for p in other],
            a_clusters=[p.dialogue_id for p in clone],
            b_clusters=[p.dialogue_id for p in other],
        )
        lines.append(finding(f"{task}, {phase}, clone pairs vs cross-model pairs", est, "cross-model pairs"))
    return lines


def coordination_section(data: ReportData, rows: list[CoordinationRow], plot: str | None) -> str:
    """``rows`` from :func:`coordination_rows` (computed once, shared with the plot)."""
    lines = ["## Coordination", ""]
    if not rows:
        lines.append("No coordination questions were asked in this experiment.")
        return "\n".join(lines) + "\n"
    lines += [
        "Both agents answered each question on their own; a pair matches when both gave the same "
        "non-empty (normalised) answer. *Chance* is the rate at which two answers drawn independently "
        "from both agents' pooled answers (same condition, task and phase) would match; *vs chance* "
        "is the match rate minus chance, with chance re-estimated in every bootstrap resample. "
        "*Strangers* is the match rate of A's answer in one dialogue against B's answer in every other "
        "dialogue of the same condition, task and phase: agents with the same framing who never talked.",
        "",
    ]
    headers = ["Condition", "Task", "Phase", "Match rate [95% CI]", "Pairs (dialogues)", "Chance"]
    headers += ["vs chance [95% CI]", "Strangers"]
    table = [[label(r), r.task, r.phase, format_ci(r.match), n_cell(r.match), *_tail(r)] for r in rows]
    lines += [md_table(headers, table), "", "Findings:", ""]
    for r in rows:
        strangers = "" if r.strangers is None else f" Strangers with the same framing match {r.strangers:.3f}."
        lines.append(finding(f"{label(r)}, {r.task}, {r.phase}", r.vs_chance, "chance") + strangers)
    lines += ["", "### Clone pairs vs cross-model pairs", "", *_clone_vs_cross(data, rows), ""]
    if plot:
        lines += [f"![Coordination match rate with 95% CI; chance and strangers marked]({plot})", ""]
    return "\n".join(lines)
