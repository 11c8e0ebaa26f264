"""The report's "Statistical tests" section: every comparison the report made, which family it
was corrected in, and its raw and adjusted p-values, so a reviewer sees the whole list rather
than the findings that survived."""

from __future__ import annotations

from clonechat.analysis.document import Block, Bullets, Paragraph, Section, Table
from clonechat.analysis.findings import BH, HOLM, Contrast, Judgement, format_p
from clonechat.analysis.multiplicity import ALPHA
from clonechat.analysis.stats import format_ci

TITLE = "Statistical tests"


def status(test: Contrast, judgement: Judgement) -> str:
    """One word or two on what became of a comparison."""
    est = test.estimate
    if est.mean is None:
        return "no data"
    if est.too_few_units:
        return "too few dialogues"
    if est.uninformative:
        return "uninformative interval"
    verdict = judgement.verdict(test.key)
    if verdict is None:
        return "not tested"
    return "significant" if verdict.significant and not est.within_noise else "not significant"


def _counts(judgement: Judgement) -> Paragraph:
    tests = judgement.tests
    primary = sum(1 for v in judgement.verdicts.values() if v.primary)
    exploratory = len(judgement.verdicts) - primary
    untested = len(tests) - len(judgement.verdicts)
    text = (
        f"This report makes {len(tests)} comparisons. {primary} test the spec's primary measures, "
        f"corrected together with {HOLM}'s method (the chance of any false positive among them stays at "
        f"{ALPHA:.0%}); {exploratory} are exploratory, corrected together with {BH} (the expected share of "
        f"false positives among those called significant stays at {ALPHA:.0%})."
    )
    if untested:
        text += (
            f" {untested} could not be tested (no data, too few dialogues for an interval, or an interval "
            "that cannot inform) and count in neither family."
        )
    return Paragraph(text)


def _primary(judgement: Judgement) -> Block:
    if not judgement.primary:
        return Paragraph(
            "The spec names no primary measures (`[[primary]]`), so every comparison is exploratory: what "
            "survives the correction is a lead to test in a new experiment that names it as primary in advance."
        )
    lines = []
    for measure in judgement.primary:
        matched = [t for t in judgement.tests if measure.matches(t.key)]
        if not matched:
            lines.append(f"{measure.describe()}: no comparison of this experiment measures it.")
            continue
        outcomes = ", ".join(f"{t.subject}: {status(t, judgement)}" for t in matched)
        lines.append(f"{measure.describe()}: {outcomes}.")
    return Bullets(lines, "Primary measures named by the spec:")


def _row(test: Contrast, judgement: Judgement) -> list[str]:
    verdict = judgement.verdict(test.key)
    raw = test.estimate.p_value
    return [
        test.label,
        format_ci(test.estimate),
        "–" if raw is None else format_p(raw),
        "–" if verdict is None else format_p(verdict.adjusted),
        "–" if verdict is None else ("primary (Holm)" if verdict.primary else "exploratory (BH)"),
        status(test, judgement),
    ]


def tests_section(judgement: Judgement) -> Section:
    if not judgement.tests:
        none = "This report makes no comparisons (no measure of any condition has a figure to compare)."
        return Section(TITLE, [Paragraph(none)])
    headers = ["Comparison", "Difference [95% CI]", "Raw p", "Adjusted p", "Family", "Result"]
    table = Table(headers, [_row(t, judgement) for t in judgement.tests])
    return Section(TITLE, [_counts(judgement), _primary(judgement), table])
