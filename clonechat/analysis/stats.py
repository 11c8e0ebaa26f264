"""Means with bootstrap confidence intervals, and chance rates for coordination answers.

Every figure in a report comes from here, so every figure is computed the same way:

* Intervals are percentile bootstrap intervals (95% unless told otherwise) of a mean.
* Values that share a dialogue are not independent (a clone that reads its partner well on one
  turn tends to on the next), so when ``clusters`` are given (dialogue ids) the bootstrap
  resamples *whole clusters* with replacement and recomputes the mean of all values in the
  resampled clusters (a cluster bootstrap). Resampling single values instead would pretend there
  are as many independent units as values and give intervals that are too narrow.
* No interval is given over fewer than :data:`MIN_CLUSTERS_FOR_CI` independent units: the
  estimate keeps its mean, but ``low`` and ``high`` are None, so no caller can present a
  misleadingly tight interval (see the constant for why).
* Each estimate also carries a two-sided p-value against 0 (its bootstrap standard error on
  Student's t: see :func:`bootstrap_p_value`), so a report can correct many comparisons for multiplicity
  (:mod:`clonechat.analysis.multiplicity`), and says when its interval cannot inform
  (:attr:`Estimate.uninformative`): every value the same, every resample the same, or the
  estimate on the interval's edge. Such an interval is a property of the data's shape, not
  evidence of precision.
* Everything is vectorised with numpy and deterministic given ``seed``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Fewest independent units (dialogues; for a difference of two groups, in *each* group) over
#: which a bootstrap interval is given. The percentile bootstrap cannot see variation between
#: units it does not have: over k units a resample is one of only C(2k-1, k) multisets, and the
#: interval badly under-covers. Simulated with a strong dialogue effect (the case that matters
#: here), a nominal 95% interval held the true mean about 54% of the time over 2 dialogues, about
#: 80% over 3 or 4, 85% over 5 and 93% over 10; two dialogues whose values happen to agree give
#: a zero-width interval ("0.250 [0.250, 0.250]") that reads as certainty. Below this many units
#: the honest answer is "too few to tell", which is what the report says.
MIN_CLUSTERS_FOR_CI = 5


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of means) with its bootstrap confidence interval."""

    mean: float | None
    low: float | None
    high: float | None
    #: Number of values the mean is over (both groups together for a difference of groups).
    n: int
    #: Number of independent units resampled (dialogues); equal to ``n`` without clusters.
    #: Both groups together for a difference of groups.
    clusters: int
    #: For a difference of independent groups, the units in the smaller group: each group is
    #: resampled on its own, so the smaller one limits the interval. None for a single group.
    smallest_group: int | None = None
    #: Two-sided bootstrap p-value of "the true value is 0" (None without an interval, or when
    #: the interval is uninformative). Meaningful for differences.
    p_value: float | None = None
    #: Why the interval cannot inform, in a few words (None: it can): see :func:`_uninformative`.
    uninformative: str | None = None

    @property
    def units(self) -> int:
        """The independent units that limit the interval (compared with :data:`MIN_CLUSTERS_FOR_CI`)."""
        return self.clusters if self.smallest_group is None else self.smallest_group

    @property
    def too_few_units(self) -> bool:
        """True when there is a mean but no interval: too few independent units for one.

        Every estimator here leaves the interval out for exactly that reason, so a reader should
        be told "too few to tell" rather than "within noise"."""
        return self.mean is not None and (self.low is None or self.high is None)

    @property
    def within_noise(self) -> bool:
        """True when the interval is missing or contains 0: the effect cannot be told from noise.

        Meaningful for differences (an effect minus chance, a condition minus the control). An
        uninformative interval counts as noise: it shows nothing either way."""
        if self.low is None or self.high is None or self.uninformative:
            return True
        return self.low <= 0.0 <= self.high


def _cluster_totals(values: Sequence[float], clusters: Sequence[str] | None) -> tuple[FloatArray, FloatArray]:
    """Per-cluster sums and counts of ``values`` (each value its own cluster without labels)."""
    arr = np.asarray(values, dtype=np.float64)
    if clusters is None:
        return arr, np.ones_like(arr)
    if len(clusters) != len(arr):
        raise ValueError(f"{len(arr)} values but {len(clusters)} cluster labels")
    _, inverse = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    k = int(inverse.max()) + 1 if len(inverse) else 0
    sums = np.bincount(inverse, weights=arr, minlength=k).astype(np.float64)
    counts = np.bincount(inverse, minlength=k).astype(np.float64)
    return sums, counts


def _multiplicities(k: int, n_boot: int, rng: np.random.Generator) -> FloatArray:
    """How often each of ``k`` units is drawn in each of ``n_boot`` resamples (n_boot × k).

    Turning resamples into a multiplicity matrix lets every bootstrap statistic that is a ratio
    of sums be one matrix product."""
    draws = rng.integers(0, k, size=(n_boot, k))
    flat = draws + (np.arange(n_boot)[:, None] * k)
    return np.bincount(flat.ravel(), minlength=n_boot * k).reshape(n_boot, k).astype(np.float64)


def _boot_means(sums: FloatArray, counts: FloatArray, n_boot: int, rng: np.random.Generator) -> FloatArray:
    """Bootstrap distribution of the mean, resampling the units whose totals are given."""
    mult = _multiplicities(len(sums), n_boot, rng)
    result: FloatArray = (mult @ sums) / (mult @ counts)
    return result


def _interval(boot: FloatArray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(low), float(high)


#: Two values closer than this are the same (floating-point sums of the same numbers in another order).
_TIE = 1e-12


def student_t_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` (a whole number) degrees of freedom, from the
    closed-form finite series for whole ``df`` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1 (got {df})")
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        series, term = 0.0, math.cos(theta)
        if df > 1:
            series = term
            for k in range(3, df - 1, 2):
                term *= cos2 * (k - 1) / k
                series += term
        inside = 2.0 / math.pi * (theta + sin * series)
    else:
        series, term = 1.0, 1.0
        for k in range(2, df - 1, 2):
            term *= cos2 * (k - 1) / k
            series += term
        inside = sin * series
    return min(1.0, max(0.0, 1.0 - inside))


def bootstrap_p_value(mean: float, boot: FloatArray, units: int) -> float:
    """Two-sided p-value of "the true value is 0": the estimate over its bootstrap standard
    error, read on Student's t with ``units - 1`` degrees of freedom.

    The percentile interval's own tail share (how many resamples fall beyond 0) would be the
    obvious p-value, but over tens of dialogues it is too small: the bootstrap spread of a mean
    over k units is (k - 1)/k of its variance, and its tails are normal where the estimate's
    are t. Simulated with 40 null comparisons of 12 dialogues each, that p-value let
    Benjamini–Hochberg call 13% of its findings false where it promises 5%; this one keeps the
    promise (tests/test_multiplicity.py). The standard error is rescaled by sqrt(k / (k - 1))."""
    se = float(np.std(boot)) * math.sqrt(units / (units - 1))
    if se <= 0.0:
        return 1.0 if abs(mean) <= _TIE else 0.0
    return student_t_two_sided(mean / se, units - 1)


def _uninformative(unit_values: FloatArray, boot: FloatArray, mean: float, low: float, high: float) -> str | None:
    """Why an interval cannot inform, or None. Every unit's value the same (no variation to
    resample), every resample the same, or the estimate sitting on the interval's edge (the
    resamples cannot fall on one side of it: a skewed, bounded or nearly constant measure)."""
    if len(unit_values) and float(np.ptp(unit_values)) <= _TIE:
        return "every value is the same"
    if float(np.ptp(boot)) <= _TIE:
        return "every resample gave the same value"
    if abs(mean - low) <= _TIE or abs(mean - high) <= _TIE:
        return "the estimate is on the interval's edge"
    return None


def _estimate(
    mean: float,
    boot: FloatArray,
    unit_values: FloatArray,
    confidence: float,
    n: int,
    k: int,
    smallest: int | None = None,
) -> Estimate:
    """An estimate from its bootstrap distribution: the interval, the p-value (over the units
    that limit it: the smaller group's for a difference of groups), and whether the interval
    can inform (no p-value when it cannot: there is nothing to test)."""
    low, high = _interval(boot, confidence)
    why = _uninformative(unit_values, boot, mean, low, high)
    p = None if why else bootstrap_p_value(mean, boot, k if smallest is None else smallest)
    return Estimate(mean, low, high, n, k, smallest, p_value=p, uninformative=why)


def _rng(seed: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def mean_ci(
    values: Sequence[float],
    *,
    clusters: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    min_units: int = MIN_CLUSTERS_FOR_CI,
) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval.

    With ``clusters`` (one label per value, e.g. the dialogue id), whole clusters are resampled:
    predictions within one dialogue are correlated, and the dialogue is the independent unit.
    The bootstrap mean is the mean over all values of the resampled clusters, so larger
    dialogues weigh more, exactly as in the point estimate. No interval with fewer than
    ``min_units`` units (:data:`MIN_CLUSTERS_FOR_CI`; never fewer than 2).
    """
    sums, counts = _cluster_totals(values, clusters)
    n, k = int(counts.sum()), len(sums)
    if n == 0:
        return Estimate(None, None, None, 0, 0)
    mean = float(sums.sum() / counts.sum())
    if k < max(2, min_units):
        return Estimate(mean, None, None, n, k)
    boot = _boot_means(sums, counts, n_boot, _rng(seed))
    return _estimate(mean, boot, np.asarray(values, dtype=np.float64), confidence, n, k)


def difference_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    a_clusters: Sequence[str] | None = None,
    b_clusters: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    min_units: int = MIN_CLUSTERS_FOR_CI,
) -> Estimate:
    """``mean(a) - mean(b)`` for independent groups (e.g. two conditions, which never share a
    dialogue); each group is resampled on its own, by cluster if labels are given.

    ``n`` and ``clusters`` of the result count both groups together; ``smallest_group`` is the
    smaller group's units, and each group needs ``min_units`` of them for an interval."""
    sa, ca = _cluster_totals(a, a_clusters)
    sb, cb = _cluster_totals(b, b_clusters)
    n, k, smallest = int(ca.sum() + cb.sum()), len(sa) + len(sb), min(len(sa), len(sb))
    if ca.sum() == 0 or cb.sum() == 0:
        return Estimate(None, None, None, n, k, smallest)
    mean = float(sa.sum() / ca.sum() - sb.sum() / cb.sum())
    if smallest < max(2, min_units):
        return Estimate(mean, None, None, n, k, smallest)
    boot = _boot_means(sa, ca, n_boot, _rng(seed, 1)) - _boot_means(sb, cb, n_boot, _rng(seed, 2))
    values = np.concatenate([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])
    return _estimate(mean, boot, values, confidence, n, k, smallest)


def paired_difference_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    clusters: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    min_units: int = MIN_CLUSTERS_FOR_CI,
) -> Estimate:
    """Mean of ``a_i - b_i`` for values measured on the same units (a prediction's score and its
    shuffled baseline; partner and self predictions of the same turn). Pairing removes the
    variation the two share, so the interval is narrower than that of independent groups."""
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return mean_ci(
        diffs.tolist(), clusters=clusters, confidence=confidence, n_boot=n_boot, seed=seed, min_units=min_units
    )


def chance_match_rate(answers: Sequence[str]) -> float | None:
    """Probability that two independent draws from the pooled answers match: the sum of squared
    answer frequencies. ``""`` (no answer) counts in the total but never matches, as in
    ``CoordinationPair.match``. None when there are no answers."""
    if not answers:
        return None
    counts = Counter(answers)
    total = len(answers)
    return sum((c / total) ** 2 for answer, c in counts.items() if answer != "")


def _answer_codes(answers_a: Sequence[str], answers_b: Sequence[str]) -> tuple[NDArray[np.int64], int, int]:
    """Integer codes for both agents' answers (a first, then b), their count, and the code of ""
    (-1 if no answer is empty)."""
    labels, codes = np.unique(np.asarray([*answers_a, *answers_b], dtype=object).astype(str), return_inverse=True)
    empty = int(np.flatnonzero(labels == "")[0]) if (labels == "").any() else -1
    return codes.astype(np.int64), len(labels), empty


def match_minus_chance_ci(
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    min_units: int = MIN_CLUSTERS_FOR_CI,
) -> Estimate:
    """Match rate of the pairs ``(answers_a[i], answers_b[i])`` minus the chance rate of their
    pooled answers, with chance recomputed in every bootstrap resample of the pairs.

    Chance is estimated from the same answers, so treating it as a constant would understate the
    uncertainty of the difference; resampling pairs and recomputing both keeps them together.
    Each pair is one resampled unit (one dialogue's answers to one question), so no interval with
    fewer than ``min_units`` pairs. Chance is a non-linear function of the answers, so the
    interval need not be centred on the estimate."""
    n = len(answers_a)
    if n != len(answers_b):
        raise ValueError(f"{n} answers from A but {len(answers_b)} from B")
    if n == 0:
        return Estimate(None, None, None, 0, 0)
    codes, n_labels, empty = _answer_codes(answers_a, answers_b)
    code_a, code_b = codes[:n], codes[n:]
    match = ((code_a == code_b) & (code_a != empty)).astype(np.float64)
    per_pair = np.zeros((n, n_labels))
    np.add.at(per_pair, (np.arange(n), code_a), 1.0)
    np.add.at(per_pair, (np.arange(n), code_b), 1.0)
    if empty >= 0:
        per_pair[:, empty] = 0.0  # no answer never matches; it still counts in the total (2 per pair)
    chance = chance_match_rate([*answers_a, *answers_b]) or 0.0
    mean = float(match.mean()) - chance
    if n < max(2, min_units):
        return Estimate(mean, None, None, n, n)
    mult = _multiplicities(n, n_boot, _rng(seed, 3))
    boot_match = (mult @ match) / n
    boot_chance = ((mult @ per_pair) / (2.0 * n)) ** 2
    # No "unit values" check: a pair's answers are not a value; a pool of identical answers
    # shows as every resample being the same.
    return _estimate(mean, boot_match - boot_chance.sum(axis=1), np.empty(0), confidence, n, n)


def stranger_match_rate(answers_a: Sequence[str], answers_b: Sequence[str]) -> float | None:
    """How often A's answer in one dialogue matches B's answer in a *different* dialogue: the
    match rate of strangers with the same framing (all ordered pairs ``i != j``). None with
    fewer than two dialogues."""
    n = len(answers_a)
    if n != len(answers_b):
        raise ValueError(f"{n} answers from A but {len(answers_b)} from B")
    if n < 2:
        return None
    count_a = Counter(x for x in answers_a if x != "")
    count_b = Counter(x for x in answers_b if x != "")
    all_pairs = sum(c * count_b[answer] for answer, c in count_a.items())
    same_dialogue = sum(1 for x, y in zip(answers_a, answers_b, strict=True) if x != "" and x == y)
    return (all_pairs - same_dialogue) / (n * (n - 1))


def format_ci(est: Estimate, *, digits: int = 3, unit: str = "dialogues") -> str:
    """``"0.412 [0.380, 0.447]"``; ``"0.412 [too few dialogues]"`` with too few units for an
    interval (the mean is kept, the missing interval is explained); ``"0.412 [uninformative]"``
    when the interval cannot inform (:attr:`Estimate.uninformative`); ``"–"`` with no data."""
    if est.mean is None:
        return "–"
    if est.low is None or est.high is None:
        return f"{est.mean:.{digits}f} [too few {unit}]"
    if est.uninformative:
        return f"{est.mean:.{digits}f} [uninformative]"
    return f"{est.mean:.{digits}f} [{est.low:.{digits}f}, {est.high:.{digits}f}]"


def describe(est: Estimate, *, digits: int = 3, unit: str = "dialogues") -> str:
    """``"0.412 [0.380, 0.447] (n=120 in 10 dialogues)"``; the unit is left out when every value
    is its own unit."""
    if est.mean is None:
        return "no data (n=0)"
    if est.clusters == est.n:
        return f"{format_ci(est, digits=digits, unit=unit)} (n={est.n})"
    name = unit[:-1] if est.clusters == 1 and unit.endswith("s") else unit
    return f"{format_ci(est, digits=digits, unit=unit)} (n={est.n} in {est.clusters} {name})"
