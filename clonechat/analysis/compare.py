"""Two experiments side by side (``clonechat report A --compare B``): the same spec run on two
models, or someone else's imported run against yours.

Each measure both experiments have (a scorer's accuracy per condition and variant, a
coordination task's match rate per condition and phase) is shown for each, with the difference
A − B and its interval. The two experiments never share a dialogue, so the difference is one of
independent groups, resampled by dialogue. These comparisons are a family of their own,
corrected with Benjamini–Hochberg: they were not planned by either spec.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from clonechat.analysis.data import ReportData
from clonechat.analysis.document import Block, Bullets, Paragraph, Section, Table
from clonechat.analysis.findings import Contrast, judge, sentence
from clonechat.analysis.primary import ComparisonKey
from clonechat.analysis.report_tables import PHASE_ORDER, SCORER_ORDER, VARIANT_ORDER, n_cell, ordered
from clonechat.analysis.stats import difference_ci, format_ci, mean_ci

#: A measure's values and their dialogues, per (name, condition, detail).
Groups = dict[tuple[str, str, str], tuple[list[float], list[str]]]


def _predictions(data: ReportData) -> Groups:
    groups: Groups = defaultdict(lambda: ([], []))
    for p in data.predictions:
        values, dialogues = groups[(p.scorer, p.condition, p.variant)]
        values.append(p.value)
        dialogues.append(p.dialogue_id)
    return groups


def _coordination(data: ReportData) -> Groups:
    groups: Groups = defaultdict(lambda: ([], []))
    for pair in data.coordination:
        values, dialogues = groups[(pair.task, pair.condition, pair.phase)]
        values.append(float(pair.match))
        dialogues.append(pair.dialogue_id)
    return groups


def _keys(
    a: Groups, b: Groups, names: Sequence[str], details: Sequence[str], conditions: Sequence[str]
) -> list[tuple[str, str, str]]:
    """The measures both have, in report order (name, condition, detail)."""
    shared = a.keys() & b.keys()
    order = {k: i for i, k in enumerate(conditions)}
    return sorted(
        shared,
        key=lambda k: (
            ordered([x[0] for x in shared], names).index(k[0]),
            order.get(k[1], len(order)),
            k[1],
            ordered([x[2] for x in shared], details).index(k[2]),
        ),
    )


def _measure_table(
    measure: str, a: Groups, b: Groups, keys: list[tuple[str, str, str]], names: tuple[str, str]
) -> tuple[Table, list[Contrast]]:
    label_a, label_b = names
    what, detail = ("Scorer", "Variant") if measure == "prediction" else ("Task", "Phase")
    headers = [what, "Condition", detail, f"`{label_a}` [95% CI]", "n", f"`{label_b}` [95% CI]", "n"]
    headers.append("Difference A − B [95% CI]")
    rows, tests = [], []
    for key in keys:
        (va, da), (vb, db) = a[key], b[key]
        est_a, est_b = mean_ci(va, clusters=da), mean_ci(vb, clusters=db)
        diff = difference_ci(va, vb, a_clusters=da, b_clusters=db)
        rows.append([key[0], key[1], key[2], format_ci(est_a), n_cell(est_a), format_ci(est_b), n_cell(est_b)])
        rows[-1].append(format_ci(diff))
        subject = f"{key[1]}, {key[2]}, {key[0]}"
        tests.append(Contrast(ComparisonKey(measure, key[0], key[1], key[2], f"experiment:{label_b}"), subject,
                          f"`{label_b}`", diff))  # fmt: skip
    return Table(headers, rows), tests


def _only(a: Groups, b: Groups, names: tuple[str, str]) -> list[str]:
    lines = []
    for mine, theirs, who in ((a, b, names[0]), (b, a, names[1])):
        alone = sorted(set(mine) - set(theirs))
        if alone:
            shown = "; ".join(", ".join(k) for k in alone[:10]) + (" ..." if len(alone) > 10 else "")
            lines.append(f"Only `{who}` has {len(alone)} of these measures: {shown}.")
    return lines


def compare_section(a: ReportData, b: ReportData) -> Section:
    names = (a.experiment, b.experiment)
    own = [c.name for c in a.conditions]
    conditions = ordered([*own, *(c.name for c in b.conditions)], own)
    blocks: list[Block] = [
        Paragraph(
            f"Each measure both experiments have, side by side: `{names[0]}` (A) and `{names[1]}` (B), with the "
            "difference A − B. The experiments share no dialogue, so each difference is between independent "
            "groups, resampled by dialogue. These comparisons form their own family, corrected with "
            "Benjamini–Hochberg."
        )
    ]
    tests: list[Contrast] = []
    sections: list[tuple[str, Table | None, list[Contrast], list[str]]] = []
    for measure, grouped, order, details in (
        ("prediction", _predictions, SCORER_ORDER, VARIANT_ORDER),
        ("coordination", _coordination, (), PHASE_ORDER),
    ):
        ga, gb = grouped(a), grouped(b)
        keys = _keys(ga, gb, order, details, conditions)
        title = "Prediction accuracy" if measure == "prediction" else "Coordination match rate"
        if not keys:
            sections.append((title, None, [], _only(ga, gb, names)))
            continue
        made, found = _measure_table(measure, ga, gb, keys, names)
        tests += found
        sections.append((title, made, found, _only(ga, gb, names)))
    judgement = judge(tests)
    for title, shown, found, only in sections:
        inner: list[Block] = (
            [Paragraph("The two experiments have no measure of this kind in common.")]
            if shown is None
            else [shown, Bullets([sentence(t, judgement) for t in found], "Findings:")]
        )
        inner += [Paragraph(line) for line in only]
        blocks.append(Section(title, inner, level=3))
    return Section(f"Compared with {names[1]}", blocks)
