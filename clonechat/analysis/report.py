"""Write an experiment's report: one Markdown file a researcher can share, with PNG plots beside
it linked by relative paths, so the folder can be moved or zipped whole.

Every section is always present; a section without data says so in one sentence, so a reader can
tell "nothing happened" from "the report forgot". All figures come from
:mod:`clonechat.analysis.stats` with fixed seeds: the same data gives the same report.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from clonechat.analysis.data import ReportBack, ReportData
from clonechat.analysis.report_plots import plot_coordination, plot_prediction_by_turn, safe_name
from clonechat.analysis.report_tables import (
    CoordinationRow,
    cell,
    condition_order,
    coordination_rows,
    coordination_section,
    md_table,
    prediction_section,
    primary_scorers,
)
from clonechat.analysis.stats import MIN_CLUSTERS_FOR_CI
from clonechat.rendering import format_cost

#: Characters of a report back quoted in the report.
EXCERPT_CHARS = 400
#: Report-back excerpts shown per agent (speaker) and condition.
EXCERPTS_PER_AGENT = 3

HOW_TO_READ = (
    "Each figure is a mean followed by its 95% confidence interval in brackets. Intervals are "
    "percentile bootstrap intervals that resample whole dialogues (2,000 resamples, fixed seed, so "
    "the same data always gives the same report), because turns and answers within one dialogue are "
    "not independent. *n* counts the values (predictions or answer pairs) with the number of dialogues "
    f"they come from in parentheses. With fewer than {MIN_CLUSTERS_FOR_CI} dialogues (in each group, for a "
    "difference between conditions) the interval is shown as *[too few dialogues]* and the finding says "
    "*too few dialogues to tell*: a bootstrap over so few independent units gives intervals far narrower "
    "than the real uncertainty. *Chance* is what the "
    "same measurement gives without any real connection between the two agents: for predictions, the "
    "prediction scored against a message from another dialogue of the same condition (the shuffled "
    "baseline); for coordination, two answers drawn independently from the pooled answers. The "
    "*control* is the condition the spec names as `control`, which the others are compared with. A "
    "difference whose interval includes zero is reported as *within noise*: these data cannot tell it "
    "from no difference."
)


def header_section(data: ReportData) -> str:
    return "\n".join(
        [
            f"# Clonechat report: {data.experiment}",
            "",
            f"- Experiment: `{data.experiment}`",
            f"- Date: {data.created_at:%Y-%m-%d %H:%M}",
            f"- Control condition: `{data.control}`" if data.control else "- Control condition: none",
            "",
            "## How to read this",
            "",
            HOW_TO_READ,
            "",
        ]
    )


def conditions_section(data: ReportData) -> str:
    lines = ["## Conditions", ""]
    if not data.conditions:
        return "\n".join([*lines, "No conditions were recorded for this experiment.", ""])
    headers = ["Condition", "Template", "Model A", "Model B", "Pairing", "Dialogues", "Completed", "Turns"]
    rows = [
        [
            f"{c.name} (control)" if c.name == data.control else c.name,
            c.template,
            c.model_a,
            c.model_b,
            "**cross-model**" if c.cross_model else "clone",
            str(c.dialogues),
            str(c.completed),
            str(c.turns),
        ]
        for c in data.conditions
    ]
    return "\n".join([*lines, md_table(headers, rows), "", *spending_lines(data)])


def spending_lines(data: ReportData) -> list[str]:
    """What the experiment spent, in one paragraph (nothing when no model reported usage)."""
    spent = data.spending
    if spent is None or not spent.tokens:
        return []
    parts = [f"{spent.tokens:,} tokens"]
    if spent.cached_tokens or spent.cache_written_tokens:
        parts.append(f"{spent.cached_tokens:,} read from a prompt cache, {spent.cache_written_tokens:,} written to one")
    if spent.reasoning_tokens:
        parts.append(f"{spent.reasoning_tokens:,} of reasoning")
    cost = f"**{format_cost(spent.cost_usd)}** over {spent.priced_calls:,} priced calls" if spent.has_cost else ""
    unpriced = (
        f" ({spent.unpriced_calls:,} calls of models without prices are not costed)" if spent.unpriced_calls else ""
    )
    text = f"Spent: {cost}{'; ' if cost else ''}{'; '.join(parts)}.{unpriced if spent.has_cost else ''}"
    return [text, ""]


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of ``text``, cut at a word boundary near ``limit`` and marked with an ellipsis."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + " …"


def quote(report: ReportBack) -> str:
    """A report back as a Markdown block quote headed by its dialogue id prefix and model."""
    body = [f"> {line}" if line.strip() else ">" for line in excerpt(report.text).splitlines()]
    return "\n".join([f"> **`{report.dialogue_id[:8]}`** · {cell(report.model)}", ">", *body])


def reports_section(data: ReportData) -> str:
    lines = ["## Reports back", ""]
    if not data.reports:
        return "\n".join([*lines, "No agent wrote a report back in this experiment.", ""])
    lines += [
        f"Up to {EXCERPTS_PER_AGENT} reports per agent and condition, first {EXCERPT_CHARS} characters each.",
        "",
    ]
    by_cell: dict[tuple[str, str], list[ReportBack]] = defaultdict(list)
    for report in data.reports:
        by_cell[(report.condition, report.speaker)].append(report)
    for condition in condition_order(data):
        lines += [f"### {condition}", ""]
        speakers = sorted(s for c, s in by_cell if c == condition)
        if not speakers:
            lines += ["No reports back from this condition.", ""]
        for speaker in speakers:
            reports = by_cell[(condition, speaker)]
            shown = reports[:EXCERPTS_PER_AGENT]
            lines += [f"#### Agent {speaker} ({len(shown)} of {len(reports)})", ""]
            for report in shown:
                lines += [quote(report), ""]
    return "\n".join(lines)


def appendix_section(data: ReportData) -> str:
    lines = ["## Appendix: experiment spec", ""]
    if not data.spec_text.strip():
        return "\n".join([*lines, "The spec text was not recorded.", ""])
    longest = max((len(run) for run in re.findall(r"`+", data.spec_text)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([*lines, f"{fence}toml", data.spec_text.rstrip("\n"), fence, ""])


def write_plots(
    data: ReportData, rows: list[CoordinationRow], out_dir: Path
) -> tuple[list[tuple[str, str]], str | None]:
    """Draw the plots; returns (scorer, file name) of the by-turn plots and the coordination
    plot's file name (None without coordination data)."""
    conditions = condition_order(data)
    by_turn = []
    if data.predictions:
        for scorer in primary_scorers(data.predictions):
            name = f"prediction_by_turn_{safe_name(scorer)}.png"
            plot_prediction_by_turn(data.predictions, scorer, conditions, out_dir / name)
            by_turn.append((scorer, name))
    if not rows:
        return by_turn, None
    plot_coordination(rows, out_dir / "coordination.png")
    return by_turn, "coordination.png"


def write_report(data: ReportData, out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` and its PNG plots into ``out_dir``; return the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = coordination_rows(data)
    by_turn, coordination_plot = write_plots(data, rows, out_dir)
    sections = [
        header_section(data),
        conditions_section(data),
        prediction_section(data, by_turn),
        coordination_section(data, rows, coordination_plot),
        reports_section(data),
        appendix_section(data),
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(s.rstrip("\n") + "\n" for s in sections), encoding="utf-8")
    return path
