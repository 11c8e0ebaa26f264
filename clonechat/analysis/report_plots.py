"""The report's plots (PNG beside the Markdown report, SVG inside the HTML one), drawn on bare
:class:`matplotlib.figure.Figure` objects.

No pyplot: pyplot keeps global state and picks an interactive backend when a display exists,
whereas a bare Figure renders with Agg, is safe to use from any thread and needs no display.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import cycle

import numpy as np
from matplotlib.figure import Figure

from clonechat.analysis.data import PredictionScore
from clonechat.analysis.report_tables import VARIANT_ORDER, CoordinationRow, label, ordered


def _by_turn(scores: Sequence[PredictionScore], baseline: bool) -> tuple[list[int], list[float]]:
    """Mean value (or mean shuffled baseline) per turn index."""
    groups: dict[int, list[float]] = defaultdict(list)
    for p in scores:
        value = p.baseline if baseline else p.value
        if value is not None:
            groups[p.turn_index].append(value)
    turns = sorted(groups)
    return turns, [float(np.mean(groups[t])) for t in turns]


def prediction_by_turn_figure(predictions: Sequence[PredictionScore], scorer: str, conditions: Sequence[str]) -> Figure:
    """Mean accuracy by turn, one solid line per condition × variant, its shuffled baseline dashed
    in the same colour: whether reading the partner improves as the dialogue goes on."""
    groups: dict[tuple[str, str], list[PredictionScore]] = defaultdict(list)
    for p in predictions:
        if p.scorer == scorer:
            groups[(p.condition, p.variant)].append(p)
    variants = ordered((v for _, v in groups), VARIANT_ORDER)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colours = cycle(f"C{i}" for i in range(10))
    for condition in conditions:
        for variant in variants:
            scores = groups.get((condition, variant))
            if not scores:
                continue
            colour = next(colours)
            ax.plot(*_by_turn(scores, False), marker="o", ms=3, color=colour, label=f"{condition}, {variant}")
            turns, base = _by_turn(scores, True)
            if turns:
                ax.plot(turns, base, linestyle="--", color=colour, alpha=0.7)
    ax.set_xlabel("turn index")
    ax.set_ylabel(f"mean {scorer}")
    ax.set_title(f"Prediction accuracy by turn ({scorer}; dashed: shuffled baseline)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def coordination_figure(rows: Sequence[CoordinationRow]) -> Figure:
    """Match rate per condition, task and phase as horizontal bars with 95% CI whiskers; chance
    marked by a black diamond, strangers (same framing, different dialogue) by a grey cross."""
    fig = Figure(figsize=(9, 1.5 + 0.35 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    means = [r.match.mean or 0.0 for r in rows]
    low_err = [m - r.match.low if r.match.low is not None else 0.0 for m, r in zip(means, rows, strict=True)]
    high_err = [r.match.high - m if r.match.high is not None else 0.0 for m, r in zip(means, rows, strict=True)]
    colours = ["C1" if r.cross_model else "C0" for r in rows]
    ax.barh(ys, means, xerr=[low_err, high_err], color=colours, alpha=0.8, capsize=3)
    chance = [(y, r.chance) for y, r in zip(ys, rows, strict=True) if r.chance is not None]
    strangers = [(y, r.strangers) for y, r in zip(ys, rows, strict=True) if r.strangers is not None]
    if chance:
        ax.scatter(
            [c for _, c in chance], [y for y, _ in chance], marker="D", s=30, color="black", label="chance", zorder=3
        )
    if strangers:
        xs, ys_ = [s for _, s in strangers], [y for y, _ in strangers]
        ax.scatter(xs, ys_, marker="x", color="grey", label="strangers", zorder=3)
    ax.set_yticks(ys, [f"{label(r)} · {r.task} · {r.phase}" for r in rows], fontsize="small")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("match rate (blue: clone pairs, orange: cross-model pairs)")
    ax.set_title("Coordination: how often both agents gave the same answer")
    ax.grid(axis="x", alpha=0.3)
    if chance or strangers:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
