"""The forest plot of a report section's comparisons (each difference with its interval against
zero), drawn on a bare :class:`matplotlib.figure.Figure` like the report's other plots."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from clonechat.analysis.findings import Contrast


def forest_figure(contrasts: Sequence[Contrast], significant: Sequence[bool]) -> Figure:
    """A forest plot of differences: each comparison's estimate with its 95% interval against a
    line at zero, top to bottom in the order the findings list them; a filled marker is a
    difference that survives the correction for multiplicity, a hollow one a difference that
    does not. Comparisons without an interval, or with one that cannot inform, are left out (the
    findings say why)."""
    shown = [
        (c, s)
        for c, s in zip(contrasts, significant, strict=True)
        if c.estimate.low is not None and not c.estimate.uninformative
    ]
    fig = Figure(figsize=(9, 1.2 + 0.32 * max(1, len(shown))), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(shown)))[::-1]
    for y, (contrast, kept) in zip(ys, shown, strict=True):
        est = contrast.estimate
        assert est.mean is not None and est.low is not None and est.high is not None
        colour = "C3" if kept else "C0"
        ax.errorbar(
            [est.mean],
            [y],
            xerr=[[est.mean - est.low], [est.high - est.mean]],
            fmt="o",
            color=colour,
            mfc=colour if kept else "white",
            capsize=3,
        )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [c.label.replace("`", "") for c, _ in shown], fontsize="small")
    ax.set_xlabel("difference with 95% CI (filled red: significant after correction)")
    ax.grid(axis="x", alpha=0.3)
    return fig
