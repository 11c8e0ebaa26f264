"""The report's statistics against answers known in advance: coverage of the bootstrap intervals
on synthetic data, chance rates of known distributions, and the edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from clonechat.analysis.stats import (
    MIN_CLUSTERS_FOR_CI,
    Estimate,
    chance_match_rate,
    describe,
    difference_ci,
    format_ci,
    match_minus_chance_ci,
    mean_ci,
    paired_difference_ci,
    stranger_match_rate,
)


def covers(est: Estimate, truth: float) -> bool:
    assert est.low is not None and est.high is not None
    return est.low <= truth <= est.high


def test_mean_ci_coverage_on_normal_data() -> None:
    """400 samples of n=40 from N(3, 2): the 95% interval holds the true mean about 95% of the time
    (percentile bootstrap with n=40 runs a little under, hence the band)."""
    rng = np.random.default_rng(12345)
    samples = rng.normal(3.0, 2.0, size=(400, 40))
    hits = [covers(mean_ci(row.tolist(), n_boot=1000, seed=i), 3.0) for i, row in enumerate(samples)]
    assert 0.91 <= np.mean(hits) <= 0.98


def clustered_sample(rng: np.random.Generator, k: int, size: int) -> tuple[list[float], list[str]]:
    """k clusters of ``size`` values sharing a strong cluster effect (sd 1) over small noise (sd 0.1)."""
    effects = rng.normal(0.0, 1.0, size=k)
    values = (np.repeat(effects, size) + rng.normal(0.0, 0.1, size=k * size)).tolist()
    labels = [f"d{i}" for i in range(k) for _ in range(size)]
    return values, labels


def test_cluster_bootstrap_is_wider_and_covers() -> None:
    """With strong within-dialogue correlation the naive bootstrap treats 320 values as independent
    and under-covers badly; resampling whole clusters restores coverage near 95% (40 clusters:
    with few clusters the percentile bootstrap itself runs a little under)."""
    rng = np.random.default_rng(7)
    naive_hits, cluster_hits, wider = [], [], []
    for rep in range(300):
        values, labels = clustered_sample(rng, k=40, size=8)
        naive = mean_ci(values, n_boot=1000, seed=rep)
        clustered = mean_ci(values, clusters=labels, n_boot=1000, seed=rep)
        assert clustered.clusters == 40 and clustered.n == 320 and naive.clusters == 320
        assert naive.low is not None and naive.high is not None
        assert clustered.low is not None and clustered.high is not None
        naive_hits.append(covers(naive, 0.0))
        cluster_hits.append(covers(clustered, 0.0))
        wider.append(clustered.high - clustered.low > 1.5 * (naive.high - naive.low))
    assert all(wider)
    assert 0.91 <= np.mean(cluster_hits) <= 0.98
    assert np.mean(naive_hits) < 0.65


def test_cluster_mean_weighs_values_not_clusters() -> None:
    est = mean_ci([1.0, 1.0, 1.0, 0.0], clusters=["a", "a", "a", "b"])
    assert est.mean == pytest.approx(0.75)
    assert (est.n, est.clusters) == (4, 2)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["a"] * 50 + ["b"] * 50, 0.5),
        (["x"] * 10, 1.0),
        (["w", "x", "y", "z"] * 7, 0.25),
        (["a", "a", "b", "c"], 0.25 + 0.0625 + 0.0625),
        (["a", "a", "", ""], 0.25),  # no answer counts in the total but never matches
    ],
)
def test_chance_match_rate_known(answers: list[str], expected: float) -> None:
    assert chance_match_rate(answers) == pytest.approx(expected)


def test_chance_match_rate_empty() -> None:
    assert chance_match_rate([]) is None


def test_difference_of_clearly_different_groups_excludes_zero() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.1, size=50).tolist(), rng.normal(0.2, 0.1, size=50).tolist()
    est = difference_ci(a, b)
    assert est.mean == pytest.approx(np.mean(a) - np.mean(b))
    assert est.low is not None and est.low > 0.5
    assert not est.within_noise
    assert (est.n, est.clusters) == (100, 100)


def test_difference_of_same_distribution_includes_zero() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.5, 0.1, size=50).tolist(), rng.normal(0.5, 0.1, size=50).tolist()
    est = difference_ci(a, b)
    assert est.within_noise


def test_difference_by_clusters() -> None:
    a = [0.9, 0.8, 0.85, 0.9, 0.7, 0.8, 0.75, 0.95, 0.8, 0.85]
    b = [0.1, 0.2, 0.15, 0.1, 0.2, 0.05, 0.1, 0.15, 0.2, 0.1, 0.15, 0.2]
    est = difference_ci(
        a, b, a_clusters=[f"a{i // 2}" for i in range(10)], b_clusters=[f"b{i // 2}" for i in range(12)]
    )
    assert (est.n, est.clusters, est.smallest_group, est.units) == (22, 11, 5, 5)
    assert not est.within_noise and not est.too_few_units


def test_too_few_clusters_give_no_interval() -> None:
    """Fewer than MIN_CLUSTERS_FOR_CI dialogues: the mean is kept but no interval is given, however
    many values there are and however clear the effect looks (2 dialogues once gave a zero-width
    interval that read as certainty)."""
    assert MIN_CLUSTERS_FOR_CI == 5
    labels = [f"d{i // 10}" for i in range(40)]  # 4 dialogues of 10 values
    est = mean_ci([0.25] * 40, clusters=labels)
    assert (est.mean, est.low, est.high, est.n, est.clusters) == (0.25, None, None, 40, 4)
    assert est.too_few_units and est.within_noise
    assert format_ci(est) == "0.250 [too few dialogues]"
    five = mean_ci([0.25] * 50, clusters=[f"d{i // 10}" for i in range(50)])
    assert (five.low, five.high) == (0.25, 0.25) and not five.too_few_units
    # a difference needs enough units in *each* group: 10 + 3 dialogues is too few
    diff = difference_ci([0.9] * 10, [0.1] * 3, a_clusters=[f"a{i}" for i in range(10)], b_clusters=["x", "y", "z"])
    assert diff.mean == pytest.approx(0.8) and diff.low is None
    assert (diff.clusters, diff.smallest_group, diff.units) == (13, 3, 3)
    assert paired_difference_ci([1.0] * 4, [0.0] * 4).too_few_units
    assert match_minus_chance_ci(["7"] * 4, ["7"] * 4).too_few_units
    assert mean_ci([0.5] * 4, min_units=2).low == 0.5  # the threshold can be lowered explicitly
    assert not mean_ci([]).too_few_units  # no data is not "too few to tell"


def test_paired_difference() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 5.0, size=30)  # large shared variation, cancelled by pairing
    a, b = (base + 0.3).tolist(), (base + rng.normal(0.0, 0.05, size=30)).tolist()
    paired = paired_difference_ci(a, b)
    assert paired.mean == pytest.approx(0.3, abs=0.05)
    assert not paired.within_noise
    assert difference_ci(a, b).within_noise
    with pytest.raises(ValueError, match="different lengths"):
        paired_difference_ci([1.0], [1.0, 2.0])


def test_edge_cases() -> None:
    empty = mean_ci([])
    assert empty == Estimate(None, None, None, 0, 0)
    assert empty.within_noise
    one = mean_ci([0.7])
    assert (one.mean, one.low, one.high, one.n, one.clusters) == (0.7, None, None, 1, 1)
    assert one.within_noise
    one_cluster = mean_ci([0.2, 0.4], clusters=["d", "d"])
    assert one_cluster.mean == pytest.approx(0.3) and one_cluster.low is None
    assert difference_ci([], [1.0, 2.0]).mean is None
    assert difference_ci([1.0], [0.0, 0.5]).low is None
    constant = mean_ci([0.5] * 10)
    assert (constant.low, constant.high) == (0.5, 0.5)


def test_deterministic_with_seed() -> None:
    values = np.random.default_rng(4).normal(size=30).tolist()
    assert mean_ci(values, seed=5) == mean_ci(values, seed=5)
    assert mean_ci(values, seed=5) != mean_ci(values, seed=6)
    assert difference_ci(values, values[::-1], seed=5) == difference_ci(values, values[::-1], seed=5)


def test_match_minus_chance_and_strangers() -> None:
    """10 dialogues, 6 matching on "7": pooled answers are 12x "7", 4x "3", 4x "42", so chance is
    0.36 + 0.04 + 0.04 = 0.44; strangers match when A said 7 and B said 7 in another dialogue:
    6*6 - 6 = 30 of 90 ordered pairs."""
    answers_a = ["7"] * 6 + ["3"] * 4
    answers_b = ["7"] * 6 + ["42"] * 4
    assert chance_match_rate(answers_a + answers_b) == pytest.approx(0.44)
    est = match_minus_chance_ci(answers_a, answers_b)
    assert est.mean == pytest.approx(0.16)
    assert est.low is not None and est.high is not None and est.low < 0.16 < est.high
    assert stranger_match_rate(answers_a, answers_b) == pytest.approx(30 / 90)
    assert stranger_match_rate(["1"], ["1"]) is None
    assert match_minus_chance_ci([], []).mean is None


def test_match_minus_chance_ignores_empty_answers() -> None:
    est = match_minus_chance_ci(["", "", "a", "b"], ["", "", "a", "b"])
    # matches: a, b (2 of 4); chance: (2/8)^2 + (2/8)^2 = 0.125
    assert est.mean == pytest.approx(0.5 - 0.125)


def test_describe() -> None:
    assert describe(Estimate(0.4123, 0.38, 0.4471, 120, 10)) == "0.412 [0.380, 0.447] (n=120 in 10 dialogues)"
    assert describe(Estimate(0.5, 0.4, 0.6, 12, 12), digits=2) == "0.50 [0.40, 0.60] (n=12)"
    assert describe(Estimate(0.5, None, None, 3, 1)) == "0.500 [too few dialogues] (n=3 in 1 dialogue)"
    assert describe(Estimate(None, None, None, 0, 0)) == "no data (n=0)"
    assert format_ci(Estimate(None, None, None, 0, 0)) == "–"
