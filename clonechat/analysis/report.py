"""An experiment's report, as a document (:mod:`clonechat.analysis.document`) that the Markdown
writer (:mod:`clonechat.analysis.report_markdown`: one ``report.md`` with PNG plots beside it)
and the HTML writer (:mod:`clonechat.analysis.report_html`: one self-contained page) both
render, so the two say the same things.

Every section is always present; a section without data says so in one sentence, so a reader can
tell "nothing happened" from "the report forgot". All figures come from
:mod:`clonechat.analysis.stats` with fixed seeds: the same data gives the same report. Every
comparison the report makes is judged together (:mod:`clonechat.analysis.findings`) before a
sentence is written, so each finding is worded after the correction for multiplicity.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clonechat.analysis.compare import compare_section
from clonechat.analysis.convergence_section import convergence_results, convergence_section, convergence_tests
from clonechat.analysis.data import ReportBack, ReportData
from clonechat.analysis.document import (
    Block,
    Code,
    Document,
    Paragraph,
    Plot,
    Quote,
    Section,
    Table,
    Transcripts,
    safe_name,
)
from clonechat.analysis.findings import Judgement, judge
from clonechat.analysis.interjection_section import interjection_results, interjection_section, interjection_tests
from clonechat.analysis.primary import primary_from_spec
from clonechat.analysis.provenance import redacted_spec
from clonechat.analysis.recognition_section import recognition_results, recognition_section, recognition_tests
from clonechat.analysis.report_plots import coordination_figure, prediction_by_turn_figure
from clonechat.analysis.report_tables import (
    CoordinationRow,
    clone_vs_cross,
    condition_order,
    coordination_rows,
    coordination_section,
    coordination_tests,
    prediction_results,
    prediction_section,
    prediction_tests,
    primary_scorers,
)
from clonechat.analysis.self_knowledge_section import (
    self_knowledge_results,
    self_knowledge_section,
    self_knowledge_tests,
)
from clonechat.analysis.stats import MIN_CLUSTERS_FOR_CI
from clonechat.analysis.tests_section import tests_section
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
    "from no difference. An interval marked *[uninformative]* cannot show uncertainty (every value the "
    "same, every resample the same, or the estimate on the interval's edge), so it is not evidence "
    "either way and is not tested. Each difference also has a two-sided p-value (the estimate over its "
    "bootstrap standard error, on Student's t with one degree of freedom fewer than its dialogues), and because "
    "a report makes many comparisons, each finding is judged after correcting for them: the spec's "
    "*primary* measures with Holm's method, every other (*exploratory*) comparison with "
    "Benjamini–Hochberg; the section *Statistical tests* lists them all with raw and adjusted values. "
    "The sections on self-recognition, privileged self-knowledge, interjections and convergence follow "
    "the same rules; each says what its chance level or reference is."
)


def header(data: ReportData) -> tuple[str, list[str]]:
    """The report's title and the facts under it."""
    control = f"Control condition: `{data.control}`" if data.control else "Control condition: none"
    return f"Clonechat report: {data.experiment}", [
        f"Experiment: `{data.experiment}`",
        f"Date: {data.created_at:%Y-%m-%d %H:%M}",
        control,
    ]


def conditions_section(data: ReportData) -> Section:
    title = "Conditions"
    if not data.conditions:
        return Section(title, [Paragraph("No conditions were recorded for this experiment.")])
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
    spent = spending_line(data)
    return Section(title, [Table(headers, rows), *([Paragraph(spent)] if spent else [])])


def spending_line(data: ReportData) -> str | None:
    """What the experiment spent, in one paragraph (nothing when no model reported usage)."""
    spent = data.spending
    if spent is None or not spent.tokens:
        return None
    parts = [f"{spent.tokens:,} tokens"]
    if spent.cached_tokens or spent.cache_written_tokens:
        parts.append(f"{spent.cached_tokens:,} read from a prompt cache, {spent.cache_written_tokens:,} written to one")
    if spent.reasoning_tokens:
        parts.append(f"{spent.reasoning_tokens:,} of reasoning")
    cost = f"**{format_cost(spent.cost_usd)}** over {spent.priced_calls:,} priced calls" if spent.has_cost else ""
    unpriced = (
        f" ({spent.unpriced_calls:,} calls of models without prices are not costed)" if spent.unpriced_calls else ""
    )
    return f"Spent: {cost}{'; ' if cost else ''}{'; '.join(parts)}.{unpriced if spent.has_cost else ''}"


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


def quote(report: ReportBack) -> Quote:
    """A report back headed by its dialogue id prefix and model."""
    return Quote(f"**`{report.dialogue_id[:8]}`** · {report.model}", excerpt(report.text))


def reports_section(data: ReportData) -> Section:
    title = "Reports back"
    if not data.reports:
        return Section(title, [Paragraph("No agent wrote a report back in this experiment.")])
    blocks: list[Block] = [
        Paragraph(f"Up to {EXCERPTS_PER_AGENT} reports per agent and condition, first {EXCERPT_CHARS} characters each.")
    ]
    by_cell: dict[tuple[str, str], list[ReportBack]] = defaultdict(list)
    for report in data.reports:
        by_cell[(report.condition, report.speaker)].append(report)
    for condition in condition_order(data):
        speakers = sorted(s for c, s in by_cell if c == condition)
        inner: list[Block] = [] if speakers else [Paragraph("No reports back from this condition.")]
        for speaker in speakers:
            reports = by_cell[(condition, speaker)]
            shown = reports[:EXCERPTS_PER_AGENT]
            heading = f"Agent {speaker} ({len(shown)} of {len(reports)})"
            inner.append(Section(heading, [quote(r) for r in shown], level=4))
        blocks.append(Section(condition, inner, level=3))
    return Section(title, blocks)


def appendix_section(data: ReportData) -> Section:
    title = "Appendix: experiment spec"
    if not data.spec_text.strip():
        return Section(title, [Paragraph("The spec text was not recorded.")])
    # As stored, less what describes the machine (server addresses, key variables, file paths).
    return Section(title, [Code(redacted_spec(data.spec_text).rstrip("\n"), "toml")])


def transcripts_section(data: ReportData, dialogues: Sequence[object]) -> Section:
    """Every transcript: the HTML report embeds them (collapsible, rendered when opened), the
    Markdown report says where to read them. ``dialogues`` is the embedded data (may be empty)."""
    count = sum(c.dialogues for c in data.conditions)
    lead = Paragraph(
        f"{count:,} dialogue{'' if count == 1 else 's'}. In the HTML report each transcript opens on a click; "
        "each prediction is shown before the turn it predicted, with its scores, and forks (branches of a "
        "dialogue) are marked. From the database: `clonechat show ID`, or "
        f"`clonechat export {data.experiment} --format markdown`."
    )
    return Section("Transcripts", [lead, Transcripts(dialogues)])


def plots(data: ReportData, rows: list[CoordinationRow]) -> tuple[list[Plot], Plot | None]:
    """The by-turn plots (one per primary scorer) and the coordination plot (None without data)."""
    conditions = condition_order(data)
    by_turn = [
        Plot(
            f"prediction_by_turn_{safe_name(scorer)}",
            f"Prediction accuracy by turn, {scorer} (dashed: shuffled baseline)",
            lambda scorer=scorer: prediction_by_turn_figure(data.predictions, scorer, conditions),  # type: ignore[misc]
        )
        for scorer in (primary_scorers(data.predictions) if data.predictions else [])
    ]
    if not rows:
        return by_turn, None
    alt = "Coordination match rate with 95% CI; chance and strangers marked"
    return by_turn, Plot("coordination", alt, lambda: coordination_figure(rows))


@dataclass(frozen=True)
class Extras:
    """What a report holds beyond the statistics, each loaded by its caller (None: left out)."""

    #: The transcripts' data (:func:`clonechat.analysis.transcripts.load_transcripts`); the
    #: HTML report embeds it, the Markdown report only says where to read them.
    transcripts: Sequence[object] = ()
    #: The reproducibility section (:func:`clonechat.analysis.provenance.provenance_section`).
    provenance: Section | None = None
    #: Another experiment to compare with, side by side.
    compare: ReportData | None = None


def build_document(data: ReportData, extras: Extras | None = None) -> Document:
    """The whole report of ``data`` as a document, its comparisons judged together."""
    extras = extras or Extras()
    results = prediction_results(data)
    rows = coordination_rows(data)
    cross = clone_vs_cross(data, rows)
    recognition = recognition_results(data)
    knowledge = self_knowledge_results(data)
    interjections = interjection_results(data)
    convergence = convergence_results(data)
    tests = [
        *prediction_tests(data, results),
        *coordination_tests(rows, cross),
        *recognition_tests(recognition),
        *self_knowledge_tests(knowledge),
        *interjection_tests(interjections),
        *convergence_tests(convergence),
    ]
    judgement: Judgement = judge(tests, primary_from_spec(data.spec_text))
    by_turn, coordination_plot = plots(data, rows)
    title, facts = header(data)
    sections: list[Section | None] = [
        Section("How to read this", [Paragraph(HOW_TO_READ)]),
        conditions_section(data),
        prediction_section(data, results, judgement, by_turn),
        coordination_section(data, rows, cross, judgement, coordination_plot),
        reports_section(data),
        recognition_section(data, recognition, judgement),
        self_knowledge_section(data, knowledge, judgement),
        interjection_section(data, interjections, judgement),
        convergence_section(data, convergence, judgement),
        tests_section(judgement),
        compare_section(data, extras.compare) if extras.compare is not None else None,
        transcripts_section(data, extras.transcripts),
        extras.provenance,
        appendix_section(data),
    ]
    return Document(title, facts, [s for s in sections if s is not None])


def write_report(data: ReportData, out_dir: Path, extras: Extras | None = None) -> Path:
    """Write ``out_dir/report.md`` and its PNG plots into ``out_dir``; return the report's path."""
    from clonechat.analysis.report_markdown import write_markdown

    return write_markdown(build_document(data, extras), out_dir)
