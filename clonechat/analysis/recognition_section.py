"""The report's self-recognition section: shown turns of its own dialogue without their
speaker, how often does an agent tell its own messages from its partner's?

Computed once (:func:`recognition_results`), its comparisons handed to
:func:`~clonechat.analysis.findings.judge` with the rest of the report's
(:func:`recognition_tests`), then written (:func:`recognition_section`), so each finding is
worded after the correction for multiplicity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from clonechat.analysis.data import RecognitionAnswer, ReportData
from clonechat.analysis.document import Block, Bullets, Paragraph, Section, Table
from clonechat.analysis.findings import Contrast, Judgement, sentence
from clonechat.analysis.primary import ComparisonKey
from clonechat.analysis.report_tables import condition_order, forest_plot, label, n_cell, ordered
from clonechat.analysis.stats import Estimate, difference_ci, format_ci, mean_ci

TITLE = "Self-recognition"
MEASURE = "recognition"


@dataclass(frozen=True)
class RecognitionRow:
    """One condition's (or, in a breakdown, one model's) recognition figures."""

    condition: str
    cross_model: bool
    #: The model(s) asked, comma-separated.
    models: str
    #: Answers given (scored, unreadable and not yet scored).
    asked: int
    #: Answers scored whose reply named neither option.
    unreadable: int
    #: Answers without a score row yet (``clonechat score`` not run since).
    unscored: int
    #: Share correct among the readable answers, clustered by dialogue.
    accuracy: Estimate
    #: Share of the readable answers whose shown turn was the agent's own (the base rate).
    base: float | None
    #: Accuracy of always giving the commoner answer: max(base, 1 - base); 0.5 when balanced.
    chance: float | None
    #: Accuracy minus chance.
    vs_chance: Estimate
    #: Share of the readable answers that claimed the turn as the agent's own.
    claims_own: float | None
    #: Accuracy minus the control condition's (None: this is the control, or there is none).
    vs_control: Estimate | None = None


@dataclass(frozen=True)
class RecognitionResults:
    control: str | None
    rows: list[RecognitionRow]
    #: Per model asked, in conditions that pair two different models.
    by_model: list[RecognitionRow]
    #: Clone-pair accuracy minus cross-model-pair accuracy (None: only one kind of pair answered).
    cross: Estimate | None
    #: Conditions that turn recognition on but have no answers yet.
    not_asked: list[str]


def _readable(answers: Sequence[RecognitionAnswer]) -> list[RecognitionAnswer]:
    return [a for a in answers if a.correct is not None]


def _accuracy(answers: Sequence[RecognitionAnswer]) -> Estimate:
    return mean_ci([float(a.correct or 0.0) for a in answers], clusters=[a.dialogue_id for a in answers])


def _row(
    condition: str,
    cross_model: bool,
    answers: Sequence[RecognitionAnswer],
    control: Sequence[RecognitionAnswer] | None,
) -> RecognitionRow:
    readable = _readable(answers)
    base = sum(a.own for a in readable) / len(readable) if readable else None
    chance = None if base is None else max(base, 1.0 - base)
    vs_chance = mean_ci(
        [float(a.correct or 0.0) - (chance or 0.0) for a in readable], clusters=[a.dialogue_id for a in readable]
    )
    claims = [a.claims_own for a in readable]
    vs_control = None
    if control is not None:
        reference = _readable(control)
        vs_control = difference_ci(
            [float(a.correct or 0.0) for a in readable],
            [float(a.correct or 0.0) for a in reference],
            a_clusters=[a.dialogue_id for a in readable],
            b_clusters=[a.dialogue_id for a in reference],
        )
    return RecognitionRow(
        condition,
        cross_model,
        models=", ".join(ordered(a.model for a in answers if a.model)),
        asked=len(answers),
        unreadable=sum(1 for a in answers if a.correct is None and a.answer is not None),
        unscored=sum(1 for a in answers if a.answer is None),
        accuracy=_accuracy(readable),
        base=base,
        chance=chance,
        vs_chance=vs_chance,
        claims_own=sum(1 for c in claims if c) / len(claims) if claims else None,
        vs_control=vs_control,
    )


def recognition_results(data: ReportData) -> RecognitionResults:
    """Every condition's recognition figures (computed once: tests and tables share them)."""
    groups: dict[str, list[RecognitionAnswer]] = defaultdict(list)
    for answer in data.recognition:
        groups[answer.condition].append(answer)
    cross = {c.name: c.cross_model for c in data.conditions}
    names = [c for c in ordered([*condition_order(data), *groups], condition_order(data)) if c in groups]
    control = groups.get(data.control) if data.control is not None else None
    rows = [
        _row(name, cross.get(name, False), groups[name], control if name != data.control else None) for name in names
    ]
    by_model: list[RecognitionRow] = []
    for name in names:
        if not cross.get(name, False):
            continue
        for model in ordered(a.model for a in groups[name]):
            by_model.append(_row(name, True, [a for a in groups[name] if a.model == model], None))
    clone = _readable([a for a in data.recognition if not cross.get(a.condition, False)])
    other = _readable([a for a in data.recognition if cross.get(a.condition, False)])
    versus = None
    if clone and other:
        versus = difference_ci(
            [float(a.correct or 0.0) for a in clone],
            [float(a.correct or 0.0) for a in other],
            a_clusters=[a.dialogue_id for a in clone],
            b_clusters=[a.dialogue_id for a in other],
        )
    not_asked = [c for c in condition_order(data) if data.measures_of(c).recognition and c not in groups]
    return RecognitionResults(data.control, rows, by_model, versus, not_asked)


def _chance_test(row: RecognitionRow) -> Contrast:
    key = ComparisonKey(MEASURE, MEASURE, row.condition, "accuracy", "chance")
    reference = "chance" if row.chance is None else f"chance ({row.chance:.3f})"
    return Contrast(key, f"{row.condition}, recognition accuracy", reference, row.vs_chance)


def recognition_tests(results: RecognitionResults) -> list[Contrast]:
    """The section's comparisons, in the order its findings list them."""
    tests = []
    for row in results.rows:
        if row.accuracy.mean is None:
            continue  # no readable answer: the findings say so instead
        tests.append(_chance_test(row))
        if row.vs_control is not None and row.vs_control.mean is not None:
            key = ComparisonKey(MEASURE, MEASURE, row.condition, "accuracy", "control")
            subject = f"{row.condition}, recognition accuracy"
            tests.append(Contrast(key, subject, f"the control `{results.control}`", row.vs_control))
    if results.cross is not None:
        key = ComparisonKey(MEASURE, MEASURE, "", "accuracy", "cross-model")
        tests.append(
            Contrast(key, "recognition accuracy, clone pairs vs cross-model pairs", "cross-model pairs", results.cross)
        )
    return tests


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def recognition_section(data: ReportData, results: RecognitionResults, judgement: Judgement) -> Section:
    if not results.rows:
        if results.not_asked:
            names = ", ".join(f"`{c}`" for c in results.not_asked)
            none = (
                f"Self-recognition is on in {names}, but no agent has been asked yet "
                "(it is asked once a dialogue completes)."
            )
        else:
            none = (
                "No agent was asked to recognise its own messages in this experiment "
                "(no condition turns `recognition` on)."
            )
        return Section(TITLE, [Paragraph(none)])
    intro = Paragraph(
        "After each dialogue, each agent was shown turns of its conversation one at a time, without "
        "saying who wrote them, and asked whether it wrote each one or its partner did: the "
        "self-recognition test of Panickssery, Bowman and Feng (2024, *LLM evaluators recognize and "
        "favor their own generations*), here on the agent's own dialogue. *Accuracy* is the share of "
        "readable answers that were right. Half the turns shown to an agent are its own, so guessing "
        "scores 0.5; *own share* is the observed share of the scored turns that were the agent's own, "
        "and *chance* is max(own share, 1 − own share), the accuracy of always giving the commoner "
        "answer (0.5 when balanced). *Says own* is how often the agent claimed a turn: far from the own "
        "share, it shows a bias toward one answer. *Unreadable* answers named neither option and count "
        "in no figure. "
        + (
            f"*vs control* is the difference in accuracy from condition `{data.control}`."
            if data.control
            else "The spec names no control condition, so no condition is compared with one."
        )
    )
    headers = ["Condition", "Accuracy [95% CI]", "n (dialogues)", "Own share", "Chance", "vs chance [95% CI]"]
    headers += ["Says own", "Unreadable"]
    table = [
        [
            label(r),
            format_ci(r.accuracy),
            n_cell(r.accuracy),
            _share(r.base),
            _share(r.chance),
            format_ci(r.vs_chance),
            _share(r.claims_own),
            f"{r.unreadable} of {r.asked}",
        ]
        for r in results.rows
    ]
    if data.control:
        headers.append(f"vs control `{data.control}` [95% CI]")
        for r, line in zip(results.rows, table, strict=True):
            line.append("–" if r.vs_control is None else format_ci(r.vs_control))
    blocks: list[Block] = [intro, Table(headers, table)]
    unscored = sum(r.unscored for r in results.rows)
    if unscored:
        blocks.append(
            Paragraph(
                f"{unscored} {'answer is' if unscored == 1 else 'answers are'} not scored yet and count in no figure: "
                f"run `clonechat score {data.experiment}`."
            )
        )
    if results.not_asked:
        names = ", ".join(f"`{c}`" for c in results.not_asked)
        blocks.append(Paragraph(f"Self-recognition is on in {names}, but no agent there has been asked yet."))
    contrasts = recognition_tests(results)
    unread = [
        f"{r.condition}: none of the {r.asked} answers could be read (or scored yet), so there is no accuracy."
        for r in results.rows
        if r.accuracy.mean is None
    ]
    blocks.append(Bullets([*unread, *(sentence(t, judgement) for t in contrasts)], "Findings:"))
    if results.by_model:
        model_headers = ["Condition", "Model asked", "Accuracy [95% CI]", "n (dialogues)", "Own share", "Says own"]
        model_rows = [
            [r.condition, r.models, format_ci(r.accuracy), n_cell(r.accuracy), _share(r.base), _share(r.claims_own)]
            for r in results.by_model
        ]
        blocks.append(Section("By model, in cross-model conditions", [Table(model_headers, model_rows)], level=3))
    if results.cross is None:
        blocks.append(
            Paragraph(
                "Clone pairs are not compared with cross-model pairs: only one kind of pair gave readable answers."
            )
        )
    blocks += forest_plot("forest_recognition", "Self-recognition accuracy", contrasts, judgement)
    return Section(TITLE, blocks)
