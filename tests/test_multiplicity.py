"""Multiplicity: p-values a reviewer can trust, Holm for the primary measures, Benjamini–Hochberg
for the exploratory ones, and intervals that cannot inform marked as such.

The simulations are seeded, so they give the same figures on every run (nothing here depends on
timing or on the machine)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from clonechat.analysis.data import ConditionInfo, CoordinationPair, PredictionScore, ReportData
from clonechat.analysis.findings import Contrast, judge, sentence
from clonechat.analysis.multiplicity import ALPHA, benjamini_hochberg, holm
from clonechat.analysis.primary import ComparisonKey, PrimaryMeasure, primary_from_spec
from clonechat.analysis.report import build_document
from clonechat.analysis.report_markdown import render_markdown
from clonechat.analysis.stats import (
    Estimate,
    difference_ci,
    format_ci,
    match_minus_chance_ci,
    mean_ci,
    paired_difference_ci,
    student_t_two_sided,
)


def test_holm_and_bh_match_hand_computed_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005×4, 0.01×3, 0.03×2, 0.04×1, made non-decreasing.
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted 0.005×4/1, 0.01×4/2, 0.03×4/3, 0.04×4/4, made non-increasing from the top.
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == [] and benjamini_hochberg([]) == []


@pytest.mark.parametrize(
    ("t", "df", "p"), [(12.706, 1, 0.05), (4.303, 2, 0.05), (2.571, 5, 0.05), (2.228, 10, 0.05), (2.0, 1000, 0.0455)]
)
def test_student_t_tail_matches_tables(t: float, df: int, p: float) -> None:
    assert student_t_two_sided(t, df) == pytest.approx(p, abs=5e-4)


def _clustered(rng: np.random.Generator, effect: float, dialogues: int = 12, per: int = 4) -> Estimate:
    """A paired difference (a score minus its baseline) over ``dialogues`` dialogues of ``per``
    values each, with a dialogue effect shared by its values: the clustering a report sees."""
    shared = rng.normal(0.0, 0.5, dialogues)
    values = (effect + shared[:, None] + rng.normal(0.0, 1.0, (dialogues, per))).ravel()
    clusters = [f"d{i}" for i in range(dialogues) for _ in range(per)]
    return paired_difference_ci(values.tolist(), [0.0] * len(values), clusters=clusters, seed=int(rng.integers(2**30)))


def test_exploratory_findings_stay_at_the_nominal_false_discovery_rate() -> None:
    """40 null comparisons beside 10 true ones, over 100 seeds: of the findings Benjamini–Hochberg
    calls significant, the share that are null stays at 5% on average. Uncorrected, it does not."""
    corrected: list[float] = []
    uncorrected: list[float] = []
    found: list[int] = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        estimates = [_clustered(rng, 0.0) for _ in range(40)] + [_clustered(rng, 0.6) for _ in range(10)]
        raw = [e.p_value for e in estimates]
        assert all(p is not None for p in raw)
        for share, significant in (
            (corrected, [q <= ALPHA for q in benjamini_hochberg(raw)]),  # type: ignore[arg-type]
            (uncorrected, [p <= ALPHA for p in raw]),  # type: ignore[operator]
        ):
            share.append(sum(significant[:40]) / max(1, sum(significant)))
        found.append(sum(q <= ALPHA for q in benjamini_hochberg(raw)[40:]))  # type: ignore[arg-type]
    assert np.mean(corrected) <= ALPHA + 0.01, np.mean(corrected)
    assert np.mean(uncorrected) > 0.10, np.mean(uncorrected)  # what the correction is for
    assert np.mean(found) > 2  # and it still finds real effects


def test_a_planted_primary_effect_is_found_among_exploratory_noise() -> None:
    """One primary comparison with a real effect beside 40 null exploratory ones: Holm over the
    primary family (of one) finds it in nearly every seed; the null ones stay controlled."""
    primary = [PrimaryMeasure(scorer="chrf", variant="partner", comparison="chance", condition="clone-aware")]
    hits, false = 0, 0
    for seed in range(50):
        rng = np.random.default_rng(1000 + seed)
        key = ComparisonKey("prediction", "chrf", "clone-aware", "partner", "chance")
        tests = [Contrast(key, "primary", "chance", _clustered(rng, 1.0))]
        for i in range(40):
            key = ComparisonKey("prediction", "token_f1", f"c{i}", "partner", "chance")
            tests.append(Contrast(key, f"null {i}", "chance", _clustered(rng, 0.0)))
        judgement = judge(tests, primary)
        verdict = judgement.verdict(tests[0].key)
        assert verdict is not None and verdict.primary and verdict.family == 1 and verdict.method == "Holm"
        hits += verdict.significant
        false += any(v.significant for k, v in judgement.verdicts.items() if k != tests[0].key)
    assert hits >= 45, hits
    assert false <= 6, false  # the family-wise rate among nulls stays near 5% (BH under the complete null)


def test_uninformative_intervals_are_marked_and_not_tested() -> None:
    same = mean_ci([0.4] * 12, clusters=[f"d{i}" for i in range(12)])
    assert same.uninformative == "every value is the same" and same.p_value is None
    assert format_ci(same) == "0.400 [uninformative]"
    assert same.within_noise
    shifted = difference_ci([0.7] * 6, [0.2] * 6, a_clusters=list("abcdef"), b_clusters=list("ghijkl"))
    assert shifted.mean == pytest.approx(0.5) and shifted.uninformative is not None
    # Every pair gives the same answer: match 1, chance 1, every resample 0.
    pooled = match_minus_chance_ci(["7"] * 8, ["7"] * 8)
    assert pooled.uninformative == "every resample gave the same value"
    informative = mean_ci([0.1, 0.5, 0.3, 0.9, 0.2, 0.6], clusters=list("abcdef"))
    assert informative.uninformative is None and informative.p_value is not None
    key = ComparisonKey("prediction", "chrf", "c", "partner", "chance")
    line = sentence(Contrast(key, "c, partner, chrf", "chance", same), judge([Contrast(key, "s", "chance", same)]))
    assert "cannot inform (every value is the same): not tested" in line


def test_primary_measures_parse_from_the_stored_spec() -> None:
    spec = """
name = "x"
[[primary]]
scorer = "chrf"
comparison = "control"
condition = "clone-aware"
[[primary]]
task = "number"
comparison = "cross-model"
"""
    first, second = primary_from_spec(spec)
    assert first.matches(ComparisonKey("prediction", "chrf", "clone-aware", "partner", "control"))
    assert not first.matches(ComparisonKey("prediction", "chrf", "other", "partner", "control"))
    assert second.matches(ComparisonKey("coordination", "number", "", "after", "cross-model"))
    assert primary_from_spec("not = [toml") == []
    with pytest.raises(ValueError, match="either 'scorer'"):
        PrimaryMeasure(comparison="chance")


def _data(spec: str, effect: float) -> ReportData:
    """Two conditions of 10 dialogues: clone-aware predictions ``effect`` above their baseline,
    told-human at their baseline; a coordination task that matches by chance."""
    rng = np.random.default_rng(7)
    predictions, pairs = [], []
    for condition, shift in (("clone-aware", effect), ("told-human", 0.0)):
        for d in range(10):
            dialogue = f"{condition}-{d}"
            for turn in range(1, 5):
                base = float(rng.uniform(0.1, 0.3))
                value = base + shift + float(rng.normal(0, 0.05))
                predictions.append(PredictionScore(condition, dialogue, turn, "partner", "chrf", value, base))
            pairs.append(CoordinationPair(condition, dialogue, "number", "after", str(d % 3), str((d + 1) % 3)))
    conditions = [ConditionInfo(c, c, "m", "m", 10, 10, 40) for c in ("clone-aware", "told-human")]
    return ReportData("multi", datetime(2026, 1, 1), spec, "told-human", conditions, predictions, pairs)


SPEC = """name = "multi"
control = "told-human"

[[primary]]
scorer = "chrf"
variant = "partner"
comparison = "chance"
condition = "clone-aware"
"""


def test_report_labels_primary_and_exploratory_findings(tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path))
    text = render_markdown(build_document(_data(SPEC, 0.3)), out)
    findings = [line for line in text.splitlines() if line.startswith("- clone-aware, partner, chrf:")]
    assert any("above chance" in x and "(primary; Holm-adjusted p " in x for x in findings), findings
    assert any("(exploratory; BH-adjusted p " in line for line in text.splitlines())
    tests = text.split("## Statistical tests")[1].split("\n## ")[0]
    assert "1 test the spec's primary measures" in tests
    assert "| clone-aware, partner, chrf vs chance |" in tests and "primary (Holm)" in tests
    assert (
        "`chrf` of partner predictions vs chance, in `clone-aware`: clone-aware, partner, chrf: significant." in tests
    )
    # Without the primary entry, the same comparison is exploratory.
    plain = render_markdown(build_document(_data('name = "multi"\ncontrol = "told-human"\n', 0.3)), out)
    assert "(primary;" not in plain and "The spec names no primary measures" in plain
