"""The report's interjections section: did a researcher's message, put into a dialogue at a
scheduled turn, change what the per-turn measures show after it?

Each dialogue is split at its first interjection: turns before it (smaller ``turn_index``)
against turns after it (larger). The measures are the primary text scorers' partner-prediction
accuracy, the self-knowledge difference (a)−(b), and the lexical overlap with the partner
(``turn_metrics.overlap_partner``). The change is after − before of per-dialogue means, paired
by dialogue (only dialogues with turns on both sides). A control condition without
interjections is split at the same turn, so *vs control* compares the change with the drift a
dialogue shows anyway.

Computed once (:func:`interjection_results`), compared (:func:`interjection_tests`), then
written (:func:`interjection_section`) after the report's comparisons are judged."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clonechat.analysis.data import InterjectionPoint, ReportData
from clonechat.analysis.document import Block, Bullets, Paragraph, Section, Table
from clonechat.analysis.findings import Contrast, Judgement, sentence
from clonechat.analysis.primary import ComparisonKey
from clonechat.analysis.report_tables import condition_order, forest_plot, label, ordered, primary_scorers
from clonechat.analysis.self_knowledge_section import differences
from clonechat.analysis.stats import Estimate, difference_ci, format_ci, mean_ci, paired_difference_ci

TITLE = "Interjections"
MEASURE = "interjection"
OVERLAP = "overlap_partner"
SELF_KNOWLEDGE = "self-knowledge (a)−(b)"

#: One turn's value of a measure: (dialogue, turn index, value).
TurnValue = tuple[str, int, float]


@dataclass(frozen=True)
class Split:
    """Where a dialogue is split: at ``turn_index``; ``real`` when an interjection is there
    (its own turn is neither side), else a control split at the same depth (that turn is after)."""

    turn_index: int
    real: bool = True

    def side(self, turn_index: int) -> str | None:
        if turn_index < self.turn_index:
            return "before"
        if turn_index > self.turn_index or (not self.real and turn_index == self.turn_index):
            return "after"
        return None


def first_interjections(points: Iterable[InterjectionPoint]) -> dict[str, InterjectionPoint]:
    """Each dialogue's first interjection (the shallowest)."""
    first: dict[str, InterjectionPoint] = {}
    for p in points:
        if p.dialogue_id not in first or p.turn_index < first[p.dialogue_id].turn_index:
            first[p.dialogue_id] = p
    return first


@dataclass(frozen=True)
class Shifts:
    """Per-dialogue means before and after the split, for dialogues with both."""

    dialogues: list[str]
    before: list[float]
    after: list[float]

    @property
    def changes(self) -> list[float]:
        return [a - b for a, b in zip(self.after, self.before, strict=True)]


def shifts(values: Iterable[TurnValue], splits: dict[str, Split]) -> Shifts:
    """Per dialogue (among ``splits``), the mean value before and after its split."""
    sides: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"before": [], "after": []})
    for dialogue, turn_index, value in values:
        split = splits.get(dialogue)
        side = split.side(turn_index) if split is not None else None
        if side is not None:
            sides[dialogue][side].append(value)
    kept = sorted(d for d, s in sides.items() if s["before"] and s["after"])
    return Shifts(
        kept,
        [sum(sides[d]["before"]) / len(sides[d]["before"]) for d in kept],
        [sum(sides[d]["after"]) / len(sides[d]["after"]) for d in kept],
    )


@dataclass(frozen=True)
class InterjectionRow:
    condition: str
    cross_model: bool
    #: The commonest first interjection, as ``turn 3, to B``.
    where: str
    measure: str
    before: Estimate
    after: Estimate
    #: After − before, paired by dialogue.
    change: Estimate
    #: This condition's change minus the control's at the same turn (None: no control to compare).
    vs_control: Estimate | None = None


@dataclass(frozen=True)
class InterjectionResults:
    control: str | None
    #: Whether the control had interjections of its own (else it is split at the same turn).
    control_interjected: bool
    rows: list[InterjectionRow]
    #: Per measure: clone pairs' change minus cross-model pairs' (only measures with both kinds).
    cross: list[tuple[str, Estimate]]
    #: Conditions with interjections scheduled that no dialogue reached.
    not_reached: list[str]


def _measures(data: ReportData) -> dict[str, list[TurnValue]]:
    """Each per-turn measure's values, by condition-free turn: ``{measure: [(dialogue, turn, value)]}``."""
    out: dict[str, list[TurnValue]] = {}
    partner = [p for p in data.predictions if p.variant == "partner"]
    for scorer in primary_scorers(partner) if partner else []:
        out[f"{scorer} (partner prediction)"] = [
            (p.dialogue_id, p.turn_index, p.value) for p in partner if p.scorer == scorer
        ]
    knowledge = differences(data.self_knowledge, "a", "b")
    if knowledge:
        out[SELF_KNOWLEDGE] = [(d.dialogue_id, d.turn_index, d.value) for d in knowledge]
    if data.overlaps:
        out[OVERLAP] = [(o.dialogue_id, o.turn_index, o.overlap_partner) for o in data.overlaps]
    return out


def _where(points: Sequence[InterjectionPoint]) -> str:
    (turn_index, to), _ = Counter((p.turn_index, p.to) for p in points).most_common(1)[0]
    return f"turn {turn_index}, to {to or 'both'}"


def _of(values: Sequence[TurnValue], dialogues: set[str]) -> list[TurnValue]:
    return [v for v in values if v[0] in dialogues]


def interjection_results(data: ReportData) -> InterjectionResults:
    """Every condition's before/after figures (computed once: tests and tables share them)."""
    first = first_interjections(data.interjections)
    by_condition: dict[str, list[InterjectionPoint]] = defaultdict(list)
    for point in first.values():
        by_condition[point.condition].append(point)
    names = [c for c in ordered([*condition_order(data), *by_condition], condition_order(data)) if c in by_condition]
    cross = {c.name: c.cross_model for c in data.conditions}
    dialogues_of: dict[str, set[str]] = defaultdict(set)
    for ending in data.endings:
        dialogues_of[ending.condition].add(ending.dialogue_id)
    for p in data.predictions:
        dialogues_of[p.condition].add(p.dialogue_id)
    for o in data.overlaps:
        dialogues_of[o.condition].add(o.dialogue_id)
    for s in data.self_knowledge:
        dialogues_of[s.condition].add(s.dialogue_id)
    measures = _measures(data)
    control = data.control
    control_interjected = control is not None and control in by_condition
    rows: list[InterjectionRow] = []
    changes: dict[tuple[str, str], Shifts] = {}
    for name in names:
        splits = {p.dialogue_id: Split(p.turn_index) for p in by_condition[name]}
        depth = Counter(p.turn_index for p in by_condition[name]).most_common(1)[0][0]
        for measure, values in measures.items():
            found = shifts(_of(values, set(splits)), splits)
            if not found.dialogues:
                continue
            changes[(name, measure)] = found
            vs_control = None
            if control is not None and name != control and control in dialogues_of:
                if control_interjected:
                    control_splits = {p.dialogue_id: Split(p.turn_index) for p in by_condition[control]}
                else:
                    control_splits = {d: Split(depth, real=False) for d in dialogues_of[control]}
                reference = shifts(_of(values, set(control_splits)), control_splits)
                if reference.dialogues:
                    vs_control = difference_ci(
                        found.changes, reference.changes, a_clusters=found.dialogues, b_clusters=reference.dialogues
                    )
            rows.append(
                InterjectionRow(
                    name,
                    cross.get(name, False),
                    _where(by_condition[name]),
                    measure,
                    before=mean_ci(found.before, clusters=found.dialogues),
                    after=mean_ci(found.after, clusters=found.dialogues),
                    change=paired_difference_ci(found.after, found.before, clusters=found.dialogues),
                    vs_control=vs_control,
                )
            )
    versus: list[tuple[str, Estimate]] = []
    for measure in measures:
        clone = [(d, c) for (n, m), s in changes.items() if m == measure and not cross.get(n, False)
                 for d, c in zip(s.dialogues, s.changes, strict=True)]  # fmt: skip
        other = [(d, c) for (n, m), s in changes.items() if m == measure and cross.get(n, False)
                 for d, c in zip(s.dialogues, s.changes, strict=True)]  # fmt: skip
        if clone and other:
            est = difference_ci(
                [c for _, c in clone],
                [c for _, c in other],
                a_clusters=[d for d, _ in clone],
                b_clusters=[d for d, _ in other],
            )
            versus.append((measure, est))
    scheduled = [c for c in condition_order(data) if data.measures_of(c).interjections and c not in by_condition]
    return InterjectionResults(control, control_interjected, rows, versus, scheduled)


def interjection_tests(results: InterjectionResults) -> list[Contrast]:
    """The section's comparisons, in the order its findings list them."""
    tests = []
    reference = (
        f"the control `{results.control}`'s change"
        if results.control_interjected
        else f"the control `{results.control}`'s change at the same turn"
    )
    for row in results.rows:
        key = ComparisonKey(MEASURE, row.measure, row.condition, "after", "before")
        tests.append(Contrast(key, f"{row.condition}, {row.measure}, after the interjection", "before it", row.change))
        if row.vs_control is not None:
            key = ComparisonKey(MEASURE, row.measure, row.condition, "after", "control")
            subject = f"{row.condition}, {row.measure}, change at the interjection"
            tests.append(Contrast(key, subject, reference, row.vs_control))
    for measure, est in results.cross:
        key = ComparisonKey(MEASURE, measure, "", "after", "cross-model")
        subject = f"{measure}, change at the interjection, clone pairs vs cross-model pairs"
        tests.append(Contrast(key, subject, "cross-model pairs", est))
    return tests


def interjection_section(data: ReportData, results: InterjectionResults, judgement: Judgement) -> Section:
    if not results.rows:
        if results.not_reached:
            names = ", ".join(f"`{c}`" for c in results.not_reached)
            text = f"Interjections are scheduled in {names}, but no dialogue has both turns before and after one yet."
        elif data.interjections:
            text = "The researcher's interjections have no per-turn measure on both sides of them to compare."
        else:
            text = "No researcher interjection was scheduled in this experiment (`[[interjections]]`)."
        return Section(TITLE, [Paragraph(text)])
    control_note = ""
    if data.control:
        control_note = f"*vs control* is the change minus that of condition `{data.control}`" + (
            ", at its own interjections."
            if results.control_interjected
            else ", which has no interjection, split at the same turn: the drift a dialogue shows anyway."
        )
    else:
        control_note = "The spec names no control condition, so no change is compared with one."
    intro = Paragraph(
        "A researcher's message was put into each dialogue at a scheduled turn, seen only by the agent(s) "
        "it was addressed to. Each dialogue is split at its first interjection: *before* is the mean of "
        "its turns before the interjection, *after* of the turns after it, each a per-dialogue mean averaged "
        "over dialogues; *after − before* is paired by dialogue (only dialogues with turns on both sides "
        "count). The measures are partner-prediction accuracy (the turn predicted), the self-knowledge "
        "difference (a)−(b) in nats, and `overlap_partner`, the lexical (Jaccard) overlap of a turn with "
        "the partner's latest one. " + control_note
    )
    headers = ["Condition", "Interjection", "Measure", "Before [95% CI]", "After [95% CI]"]
    headers += ["After − before [95% CI]", "Dialogues"]
    table = [
        [
            label(r),
            r.where,
            r.measure,
            format_ci(r.before),
            format_ci(r.after),
            format_ci(r.change),
            str(r.change.clusters),
        ]
        for r in results.rows
    ]
    if data.control:
        headers.append(f"Change vs control `{data.control}` [95% CI]")
        for r, line in zip(results.rows, table, strict=True):
            line.append("–" if r.vs_control is None else format_ci(r.vs_control))
    contrasts = interjection_tests(results)
    blocks: list[Block] = [
        intro,
        Table(headers, table),
        Bullets([sentence(t, judgement) for t in contrasts], "Findings:"),
    ]
    if results.not_reached:
        names = ", ".join(f"`{c}`" for c in results.not_reached)
        blocks.append(Paragraph(f"Interjections are scheduled in {names}, but no dialogue there reached one."))
    if not results.cross:
        blocks.append(
            Paragraph("Clone pairs are not compared with cross-model pairs: only one kind of pair had interjections.")
        )
    blocks += forest_plot("forest_interjections", "Change at the interjection", contrasts, judgement)
    return Section(TITLE, blocks)
