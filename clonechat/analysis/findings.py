"""The comparisons a report makes, judged together: which are primary, what each one's p-value
becomes after correction for multiplicity, and the plain sentence that says what held up.

Every numeric section hands its comparisons to :func:`judge` before anything is written, so a
finding's sentence in the prediction section already knows how many comparisons the whole
report made. The Markdown and HTML reports print the same sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clonechat.analysis.multiplicity import ALPHA, benjamini_hochberg, holm
from clonechat.analysis.primary import ComparisonKey, PrimaryMeasure
from clonechat.analysis.stats import MIN_CLUSTERS_FOR_CI, Estimate, format_ci

HOLM = "Holm"
BH = "Benjamini–Hochberg"


@dataclass(frozen=True)
class Contrast:
    """One comparison: an estimated difference of ``subject`` from ``reference``."""

    key: ComparisonKey
    subject: str
    reference: str
    estimate: Estimate

    @property
    def label(self) -> str:
        """``"clone-aware, partner, chrf vs chance"`` (a subject that already says "vs" as it is)."""
        return self.subject if " vs " in self.subject else f"{self.subject} vs {self.reference}"


@dataclass(frozen=True)
class Verdict:
    """A tested comparison's place in its family and its adjusted p-value."""

    primary: bool
    #: The family's correction (``HOLM`` for primary measures, ``BH`` for exploratory ones).
    method: str
    #: Tested comparisons in the family.
    family: int
    adjusted: float

    @property
    def significant(self) -> bool:
        return self.adjusted <= ALPHA


@dataclass(frozen=True)
class Judgement:
    """Every comparison of a report with its verdict (None: not tested, see the estimate)."""

    tests: Sequence[Contrast]
    verdicts: dict[ComparisonKey, Verdict]
    primary: Sequence[PrimaryMeasure]

    def verdict(self, key: ComparisonKey) -> Verdict | None:
        return self.verdicts.get(key)

    def is_primary(self, key: ComparisonKey) -> bool:
        return any(p.matches(key) for p in self.primary)

    def unmatched_primary(self) -> list[PrimaryMeasure]:
        """Primary measures no comparison of the report matches (nothing measured them)."""
        return [p for p in self.primary if not any(p.matches(t.key) for t in self.tests)]


def judge(tests: Sequence[Contrast], primary: Sequence[PrimaryMeasure] = ()) -> Judgement:
    """Split the testable comparisons (those with a p-value) into the primary family (matched by
    a primary measure; Holm) and the exploratory one (the rest; Benjamini–Hochberg)."""
    testable = [t for t in tests if t.estimate.p_value is not None]
    planned = [t for t in testable if any(p.matches(t.key) for p in primary)]
    exploratory = [t for t in testable if t not in planned]
    verdicts: dict[ComparisonKey, Verdict] = {}
    families = ((planned, HOLM, holm, True), (exploratory, BH, benjamini_hochberg, False))
    for family, method, adjust, is_primary in families:
        adjusted = adjust([t.estimate.p_value or 1.0 for t in family])
        for test, value in zip(family, adjusted, strict=True):
            verdicts[test.key] = Verdict(is_primary, method, len(family), value)
    return Judgement(list(tests), verdicts, list(primary))


def format_p(p: float) -> str:
    """``0.012``, or ``< 0.001`` below what a 2,000-resample bootstrap can show."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


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


def p_is(p: float) -> str:
    """``p = 0.012``, or ``p < 0.001``."""
    shown = format_p(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def _tag(verdict: Verdict, raw: float) -> str:
    kind = "primary" if verdict.primary else "exploratory"
    method = "Holm" if verdict.method == HOLM else "BH"
    return f"{kind}; {method}-adjusted {p_is(verdict.adjusted)}, raw {p_is(raw)}"


def sentence(test: Contrast, judgement: Judgement, *, missing: str = "") -> str:
    """One line saying whether a difference stands out from noise, in words first, after the
    correction for multiplicity.

    With too few dialogues for an interval it says so instead of "above", "below" or "within
    noise", and an interval that cannot inform is called so: any of those would claim more than
    the data can show. A difference whose interval leaves zero out but does not survive the
    correction is called a lead, not a finding."""
    est, subject, reference = test.estimate, test.subject, test.reference
    if est.mean is None:
        return f"{subject}: no data for the difference from {reference}{missing}."
    if est.too_few_units or est.low is None or est.high is None:
        return (
            f"{subject}: too few dialogues to tell {too_few(est)}; the difference from {reference} is {est.mean:+.3f}."
        )
    if est.uninformative:
        return (
            f"{subject}: the difference from {reference} is {est.mean:+.3f}, but its interval cannot inform "
            f"({est.uninformative}): not tested."
        )
    verdict = judgement.verdict(test.key)
    tag = f" ({_tag(verdict, est.p_value or 1.0)})" if verdict is not None else ""
    if est.within_noise:
        return f"{subject}: within noise: the difference from {reference}, {format_ci(est)}, includes zero{tag}."
    if (est.p_value or 1.0) > ALPHA:
        # The percentile interval and the t-based p-value disagree at the margin: trust the
        # more cautious one.
        return (
            f"{subject}: within noise: the difference from {reference}, {format_ci(est)}, leaves zero out "
            f"only narrowly{tag}."
        )
    if est.mean > 0:
        claim = f"{subject}: {est.mean:.3f} above {reference} [{est.low:.3f}, {est.high:.3f}]"
    else:
        claim = f"{subject}: {-est.mean:.3f} below {reference}, difference {format_ci(est)}"
    if verdict is None or verdict.significant:
        return f"{claim}{tag}."
    family = "primary" if verdict.primary else "exploratory"
    return (
        f"{claim}, but not after correcting for the {verdict.family} {family} comparisons{tag}: "
        "a lead to test as a primary measure, not a finding."
    )
