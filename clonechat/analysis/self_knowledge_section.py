"""The report's privileged self-knowledge section: how much of "predicting my clone" is shared
weights, and how much shared context? (The decomposition: :mod:`clonechat.scoring.self_knowledge`.)

Each turn's message has a total log-probability under (a) the speaker's model and its own
context, (b) the speaker's model and the partner's view with the prediction instruction, and
(c) a different model and that same partner view. Per condition the section shows the three
means and the paired per-turn differences (a)−(b) and (b)−(c), clustered by dialogue.

Computed once (:func:`self_knowledge_results`), compared (:func:`self_knowledge_tests`),
then written (:func:`self_knowledge_section`) after the report's comparisons are judged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clonechat.analysis.data import ReportData, SelfKnowledgeScore
from clonechat.analysis.document import Block, Bullets, Paragraph, Section, Table
from clonechat.analysis.findings import Contrast, Judgement, sentence
from clonechat.analysis.primary import ComparisonKey
from clonechat.analysis.report_tables import condition_order, forest_plot, label, n_cell, ordered
from clonechat.analysis.stats import Estimate, difference_ci, format_ci, mean_ci, paired_difference_ci

TITLE = "Privileged self-knowledge"
MEASURE = "self_knowledge"
#: The two differences, by their name in comparison keys.
A_B, B_C = "a-b", "b-c"

#: A turn of a dialogue: (dialogue, turn index, speaker).
TurnKey = tuple[str, int, str]


def not_scored(experiment: str) -> str:
    return (
        f"not scored: run `clonechat score {experiment} --scorer self_knowledge` "
        "(needs a model that can score given text: docs/surprisal.md)"
    )


@dataclass(frozen=True)
class TurnDifference:
    """One turn's difference of two terms (a−b or b−c)."""

    dialogue_id: str
    turn_index: int
    value: float


def by_turn(scores: Iterable[SelfKnowledgeScore]) -> dict[TurnKey, dict[str, float]]:
    """Each turn's terms (the mean where a dialogue's branches repeat a turn's position)."""
    sums: dict[TurnKey, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scores:
        sums[(s.dialogue_id, s.turn_index, s.speaker)][s.term].append(s.value)
    return {key: {term: sum(v) / len(v) for term, v in terms.items()} for key, terms in sums.items()}


def differences(scores: Iterable[SelfKnowledgeScore], first: str, second: str) -> list[TurnDifference]:
    """``first − second`` for every turn that has both terms, in turn order."""
    turns = by_turn(scores)
    return [
        TurnDifference(key[0], key[1], terms[first] - terms[second])
        for key, terms in sorted(turns.items())
        if first in terms and second in terms
    ]


def _mean(diffs: Sequence[TurnDifference]) -> Estimate:
    """The mean per-turn difference, paired (each turn's two terms), clustered by dialogue."""
    return paired_difference_ci([d.value for d in diffs], [0.0] * len(diffs), clusters=[d.dialogue_id for d in diffs])


def _versus(a: Sequence[TurnDifference], b: Sequence[TurnDifference]) -> Estimate:
    return difference_ci(
        [d.value for d in a],
        [d.value for d in b],
        a_clusters=[d.dialogue_id for d in a],
        b_clusters=[d.dialogue_id for d in b],
    )


def _term(scores: Sequence[SelfKnowledgeScore], term: str) -> Estimate:
    chosen = [s for s in scores if s.term == term]
    return mean_ci([s.value for s in chosen], clusters=[s.dialogue_id for s in chosen])


@dataclass(frozen=True)
class KnowledgeRow:
    condition: str
    cross_model: bool
    a: Estimate
    b: Estimate
    c: Estimate
    #: (a)−(b) per turn: what the speaker's own context adds, weights held fixed.
    a_b: Estimate
    #: (b)−(c) per turn: what the same weights add, context held fixed.
    b_c: Estimate
    #: This condition's (a)−(b) minus the control's (None: this is the control, or none scored).
    vs_control: Estimate | None = None


@dataclass(frozen=True)
class KnowledgeResults:
    experiment: str
    control: str | None
    rows: list[KnowledgeRow]
    #: Conditions that turn self-knowledge on but have no scores.
    unscored: list[str]
    #: Clone pairs minus cross-model pairs, (a)−(b) and (b)−(c) (None: one kind only).
    cross_a_b: Estimate | None
    cross_b_c: Estimate | None


def self_knowledge_results(data: ReportData) -> KnowledgeResults:
    """Every condition's decomposition (computed once: tests and tables share them)."""
    groups: dict[str, list[SelfKnowledgeScore]] = defaultdict(list)
    for score in data.self_knowledge:
        groups[score.condition].append(score)
    cross = {c.name: c.cross_model for c in data.conditions}
    names = [c for c in ordered([*condition_order(data), *groups], condition_order(data)) if c in groups]
    diffs = {name: (differences(groups[name], "a", "b"), differences(groups[name], "b", "c")) for name in names}
    control = diffs.get(data.control) if data.control is not None else None
    rows = []
    for name in names:
        a_b, b_c = diffs[name]
        compare = control is not None and name != data.control and bool(control[0])
        rows.append(
            KnowledgeRow(
                name,
                cross.get(name, False),
                a=_term(groups[name], "a"),
                b=_term(groups[name], "b"),
                c=_term(groups[name], "c"),
                a_b=_mean(a_b),
                b_c=_mean(b_c),
                vs_control=_versus(a_b, control[0]) if compare and control is not None else None,
            )
        )

    def pooled(index: int) -> Estimate | None:
        clone = [d for name in names if not cross.get(name, False) for d in diffs[name][index]]
        other = [d for name in names if cross.get(name, False) for d in diffs[name][index]]
        return _versus(clone, other) if clone and other else None

    unscored = [c for c in condition_order(data) if data.measures_of(c).self_knowledge and c not in groups]
    return KnowledgeResults(data.experiment, data.control, rows, unscored, pooled(0), pooled(1))


def _a_b(condition: str) -> tuple[str, str]:
    return f"{condition}, (a) own context", "(b) the partner's view"


def _b_c(condition: str) -> tuple[str, str]:
    return f"{condition}, (b) the speaker's model on the partner's view", "(c) a different model on that view"


def self_knowledge_tests(results: KnowledgeResults) -> list[Contrast]:
    """The section's comparisons, in the order its findings list them (a difference without
    any turn to measure it is left out: the table says why)."""
    tests = []
    for row in results.rows:
        if row.a_b.mean is not None:
            tests.append(
                Contrast(ComparisonKey(MEASURE, A_B, row.condition, "turn", "zero"), *_a_b(row.condition), row.a_b)
            )
        if row.b_c.mean is not None:
            tests.append(
                Contrast(ComparisonKey(MEASURE, B_C, row.condition, "turn", "zero"), *_b_c(row.condition), row.b_c)
            )
        if row.vs_control is not None:
            key = ComparisonKey(MEASURE, A_B, row.condition, "turn", "control")
            tests.append(Contrast(key, f"{row.condition}, (a)−(b)", f"the control `{results.control}`", row.vs_control))
    for name, est in ((A_B, results.cross_a_b), (B_C, results.cross_b_c)):
        if est is not None:
            key = ComparisonKey(MEASURE, name, "", "turn", "cross-model")
            label = "(a)−(b)" if name == A_B else "(b)−(c)"
            tests.append(Contrast(key, f"{label}, clone pairs vs cross-model pairs", "cross-model pairs", est))
    return tests


def self_knowledge_section(data: ReportData, results: KnowledgeResults, judgement: Judgement) -> Section:
    if not results.rows:
        if results.unscored:
            names = ", ".join(f"`{c}`" for c in results.unscored)
            text = f"Self-knowledge is on in {names} but {not_scored(data.experiment)}."
        else:
            text = (
                "Privileged self-knowledge was not measured in this experiment "
                "(no condition turns `self_knowledge` on)."
            )
        return Section(TITLE, [Paragraph(text)])
    intro = Paragraph(
        "How much of predicting a clone is shared weights, and how much shared context? Following Song, "
        "Hu and Mahowald (2025), who test whether a language model has privileged access to itself by "
        "comparing what it reports about itself with its own log-probabilities, each turn's message is scored "
        "as its total log-probability in nats (higher = less surprising) "
        "under (a) the speaker's model with the speaker's own context, (b) the speaker's model with the "
        "partner's view of the conversation and the instruction to predict the partner's next reply, and "
        "(c) a different model with that same partner view. *(a)−(b)* is what the speaker's own context "
        "adds with the weights held fixed; *(b)−(c)* is what the same weights add with the context held "
        "fixed: above zero, the message is more expected under the speaker's weights than under another "
        "model's. Both are paired per turn; zero is the reference (no chance level applies). "
        + (
            f"*vs control* is a condition's (a)−(b) minus that of condition `{data.control}`."
            if data.control
            else "The spec names no control condition, so no condition is compared with one."
        )
    )
    headers = ["Condition", "(a) own context [95% CI]", "(b) partner's view [95% CI]", "(c) other model [95% CI]"]
    headers += ["(a)−(b) [95% CI]", "Turns (dialogues)", "(b)−(c) [95% CI]", "Turns (dialogues), (b)−(c)"]
    table = [
        [
            label(r),
            format_ci(r.a),
            format_ci(r.b),
            format_ci(r.c),
            format_ci(r.a_b),
            n_cell(r.a_b),
            format_ci(r.b_c),
            n_cell(r.b_c),
        ]
        for r in results.rows
    ]
    if data.control:
        headers.append(f"(a)−(b) vs control `{data.control}` [95% CI]")
        for r, line in zip(results.rows, table, strict=True):
            line.append("–" if r.vs_control is None else format_ci(r.vs_control))
    blocks: list[Block] = [intro, Table(headers, table)]
    if any(r.c.mean is None for r in results.rows):
        blocks.append(
            Paragraph(
                "(c) is scored only when there is a different model to ask: `self_knowledge.cross_model`, or "
                "the partner's model in a cross-model condition."
            )
        )
    for name in results.unscored:
        blocks.append(Paragraph(f"`{name}`: {not_scored(data.experiment)}."))
    contrasts = self_knowledge_tests(results)
    blocks.append(Bullets([sentence(t, judgement) for t in contrasts], "Findings:"))
    if results.cross_a_b is None and results.cross_b_c is None:
        blocks.append(
            Paragraph(
                "Clone pairs are not compared with cross-model pairs: only one kind of pair has self-knowledge scores."
            )
        )
    blocks += forest_plot("forest_self_knowledge", "Privileged self-knowledge (nats)", contrasts, judgement)
    return Section(TITLE, blocks)
