"""The report's convergence section: how many dialogues fell into an attractor state, by the
condition's rule (a per-turn metric at or past a threshold for k agent turns in a row), and at
which agent turn.

A dialogue converged when its condition's rule stopped it (``stop_reason = 'converged'``) or,
for a rule that only marks, when the rule replayed over its head path is met
(:func:`clonechat.engine.convergence.converged_at`, replayed by the loader).

Computed once (:func:`convergence_results`), compared (:func:`convergence_tests`), then
written (:func:`convergence_section`) after the report's comparisons are judged."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from clonechat.analysis.data import ConvergenceSetting, DialogueEnding, ReportData
from clonechat.analysis.document import Block, Bullets, Paragraph, Section, Table
from clonechat.analysis.findings import Contrast, Judgement, sentence
from clonechat.analysis.primary import ComparisonKey
from clonechat.analysis.report_tables import condition_order, forest_plot, label
from clonechat.analysis.stats import Estimate, difference_ci, format_ci, mean_ci

TITLE = "Convergence"
MEASURE = "convergence"


def same_rule(a: ConvergenceSetting, b: ConvergenceSetting) -> bool:
    """Whether two rules detect the same thing (stopping or only marking does not change where a
    rule is first met, so the action does not count)."""
    return (a.metric, a.threshold, a.turns) == (b.metric, b.threshold, b.turns)


def counted(ending: DialogueEnding) -> bool:
    """Dialogues that count: the completed ones, and any that converged before ending otherwise."""
    return ending.status == "completed" or ending.converged


def _share(endings: list[DialogueEnding]) -> Estimate:
    return mean_ci([float(e.converged) for e in endings], clusters=[e.dialogue_id for e in endings])


def _versus(a: list[DialogueEnding], b: list[DialogueEnding]) -> Estimate:
    return difference_ci(
        [float(e.converged) for e in a],
        [float(e.converged) for e in b],
        a_clusters=[e.dialogue_id for e in a],
        b_clusters=[e.dialogue_id for e in b],
    )


@dataclass(frozen=True)
class ConvergenceRow:
    condition: str
    cross_model: bool
    rule: ConvergenceSetting
    #: Share of the counted dialogues that converged (0/1 per dialogue).
    share: Estimate
    converged: int
    dialogues: int
    #: Dialogues left out: not completed and not converged (failed, still running).
    left_out: int
    #: The agent turn at which the converged ones first met the rule.
    turn: Estimate
    median_turn: float | None
    #: Dialogues the rule stopped (``stop_reason = 'converged'``).
    stopped: int
    #: Share minus the control's (None: this is the control, or the control has another rule or none).
    vs_control: Estimate | None = None


@dataclass(frozen=True)
class ConvergenceResults:
    control: str | None
    rows: list[ConvergenceRow]
    #: Per rule: clone pairs' share minus cross-model pairs' (only rules with both kinds).
    cross: list[tuple[ConvergenceSetting, Estimate]]
    #: Why the control was not compared, when there is a control but no comparison.
    control_note: str = ""


def convergence_results(data: ReportData) -> ConvergenceResults:
    """Every condition's convergence figures (computed once: tests and tables share them)."""
    groups: dict[str, list[DialogueEnding]] = defaultdict(list)
    for ending in data.endings:
        if counted(ending):
            groups[ending.condition].append(ending)
    all_endings: dict[str, int] = defaultdict(int)
    for ending in data.endings:
        all_endings[ending.condition] += 1
    cross = {c.name: c.cross_model for c in data.conditions}
    rules = {c: rule for c in condition_order(data) if (rule := data.measures_of(c).convergence) is not None}
    control = data.control
    control_rule = rules.get(control) if control is not None else None
    note = ""
    if control is not None and rules and any(c != control for c in rules):
        if control_rule is None:
            note = f"The control `{control}` has no convergence rule, so no condition is compared with it."
        elif any(not same_rule(r, control_rule) for c, r in rules.items() if c != control):
            note = f"Conditions whose rule differs from the control `{control}`'s are not compared with it."
    rows = []
    for name, rule in rules.items():
        endings = groups.get(name, [])
        converged = [e for e in endings if e.converged]
        turns = [float(e.converged_at) for e in converged if e.converged_at is not None]
        vs_control = None
        if control_rule is not None and name != control and same_rule(rule, control_rule) and groups.get(str(control)):
            vs_control = _versus(endings, groups[str(control)])
        rows.append(
            ConvergenceRow(
                name,
                cross.get(name, False),
                rule,
                share=_share(endings),
                converged=len(converged),
                dialogues=len(endings),
                left_out=all_endings.get(name, 0) - len(endings),
                turn=mean_ci(turns, clusters=[e.dialogue_id for e in converged if e.converged_at is not None]),
                median_turn=statistics.median(turns) if turns else None,
                stopped=sum(1 for e in endings if e.stop_reason == "converged"),
                vs_control=vs_control,
            )
        )
    versus: list[tuple[ConvergenceSetting, Estimate]] = []
    distinct: list[ConvergenceSetting] = []
    for rule in rules.values():
        if not any(same_rule(rule, seen) for seen in distinct):
            distinct.append(rule)
    for rule in distinct:
        alike = [c for c, r in rules.items() if same_rule(r, rule)]
        clone = [e for c in alike if not cross.get(c, False) for e in groups.get(c, [])]
        other = [e for c in alike if cross.get(c, False) for e in groups.get(c, [])]
        if clone and other:
            versus.append((rule, _versus(clone, other)))
    return ConvergenceResults(control, rows, versus, note)


def _rule_name(rule: ConvergenceSetting) -> str:
    return f"{rule.metric}≥{rule.threshold:g}×{rule.turns}"


def convergence_tests(results: ConvergenceResults) -> list[Contrast]:
    """The section's comparisons, in the order its findings list them (there is no chance level:
    each condition is compared with the control, and clone pairs with cross-model pairs)."""
    tests = []
    for row in results.rows:
        if row.vs_control is not None:
            key = ComparisonKey(MEASURE, _rule_name(row.rule), row.condition, "share", "control")
            subject = f"{row.condition}, share converged"
            tests.append(Contrast(key, subject, f"the control `{results.control}`", row.vs_control))
    for rule, est in results.cross:
        key = ComparisonKey(MEASURE, _rule_name(rule), "", "share", "cross-model")
        subject = f"share converged under {rule.describe(action=False)}, clone pairs vs cross-model pairs"
        tests.append(Contrast(key, subject, "cross-model pairs", est))
    return tests


def _summary(row: ConvergenceRow) -> str:
    if not row.dialogues:
        return f"{row.condition}: no dialogue has finished yet."
    head = f"{row.condition}: {row.converged} of {row.dialogues} dialogues converged ({format_ci(row.share)})"
    if row.median_turn is None or row.turn.mean is None:
        return head + "."
    return f"{head}, at agent turn {row.turn.mean:.1f} on average (median {row.median_turn:g})."


def convergence_section(data: ReportData, results: ConvergenceResults, judgement: Judgement) -> Section:
    if not results.rows:
        return Section(TITLE, [Paragraph("No condition of this experiment has a convergence rule (`[convergence]`).")])
    intro = Paragraph(
        "Two agents talking for long can settle into an attractor state: echoing each other, or "
        "looping. A condition's rule names a per-turn metric, a threshold and k: a dialogue *converged* "
        "when the metric was at least the threshold for k agent turns in a row (with action `stop` the "
        "dialogue ended there; with `mark` it ran on and the rule is replayed over its transcript). "
        "*Converged* is the share of the completed dialogues that did, with its interval; *turn* is the "
        "agent turn (counting both agents' messages) at which the rule was first met, over the dialogues "
        "that converged. No chance level applies. "
        + (
            f"*vs control* is the difference in share from condition `{data.control}` (same rule only)."
            if data.control
            else "The spec names no control condition, so no condition is compared with one."
        )
    )
    headers = ["Condition", "Rule", "Converged [95% CI]", "Dialogues", "Turn [95% CI]", "Median turn"]
    headers += ["Stopped by the rule"]
    table = [
        [
            label(r),
            r.rule.describe(),
            format_ci(r.share),
            f"{r.converged} of {r.dialogues}",
            format_ci(r.turn),
            "–" if r.median_turn is None else f"{r.median_turn:g}",
            str(r.stopped),
        ]
        for r in results.rows
    ]
    if data.control:
        headers.append(f"vs control `{data.control}` [95% CI]")
        for r, line in zip(results.rows, table, strict=True):
            line.append("–" if r.vs_control is None else format_ci(r.vs_control))
    contrasts = convergence_tests(results)
    findings = [_summary(r) for r in results.rows] + [sentence(t, judgement) for t in contrasts]
    blocks: list[Block] = [intro, Table(headers, table), Bullets(findings, "Findings:")]
    left_out = sum(r.left_out for r in results.rows)
    if left_out:
        blocks.append(Paragraph(f"{left_out} dialogues that neither completed nor converged count in no figure."))
    if results.control_note:
        blocks.append(Paragraph(results.control_note))
    if not results.cross:
        blocks.append(
            Paragraph("Clone pairs are not compared with cross-model pairs: no rule is shared by both kinds of pair.")
        )
    blocks += forest_plot("forest_convergence", "Share of dialogues converged", contrasts, judgement)
    return Section(TITLE, blocks)
