"""Correcting a report's many comparisons for multiplicity.

A report makes dozens of comparisons (scorers × conditions × variants × chance or control), so at
a 5% level some "above chance" findings are expected from luck alone. A spec names its
*primary* measures in advance (``primary = [...]``); those form one family, corrected with
Holm's step-down method, which keeps the chance of any false positive among them at 5%
(family-wise error). Every other comparison is *exploratory*: those are corrected together with
Benjamini–Hochberg, which keeps the expected share of false positives among the findings called
significant at 5% (false-discovery rate): the right promise for a list of leads.

Both take raw p-values and return adjusted ones, in the same order; a comparison is significant
when its adjusted p-value is at most the level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The level adjusted p-values are compared with.
ALPHA = 0.05


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values: sorted ascending, the i-th (from 0) of m is multiplied
    by m − i, made non-decreasing along the order and capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values): sorted ascending, the i-th (from 1) of m
    is multiplied by m / i, made non-decreasing from the largest down and capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]
