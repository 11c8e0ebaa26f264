"""A report as a document: a tree of plain blocks that the Markdown writer and the HTML writer
both render, so the two formats say the same things (the same tables, figures and sentences).

The report's content is decided once, in :mod:`clonechat.analysis.report` and
:mod:`clonechat.analysis.report_tables`; the writers (:mod:`clonechat.analysis.report_markdown`,
:mod:`clonechat.analysis.report_html`) only decide how a block looks.

Text in blocks (paragraphs, table cells, findings) uses a small inline subset of Markdown:
```code```, ``**strong**`` and ``*emphasis*``. The Markdown writer writes it as it is; the HTML
writer escapes everything and turns those three marks into tags.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Bullets:
    """A list of sentences; ``title`` (e.g. "Findings:") is a lead-in line above it."""

    items: Sequence[str]
    title: str | None = None


@dataclass(frozen=True)
class Plot:
    """A figure: a PNG file beside the Markdown report, an inline SVG in the HTML one.

    ``draw`` makes the figure when a writer needs it (each writer draws its own copy)."""

    name: str
    alt: str
    draw: Callable[[], Figure]


@dataclass(frozen=True)
class Quote:
    """A quoted text (a report back) under a heading line (dialogue id, model)."""

    heading: str
    text: str


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


@dataclass(frozen=True)
class Transcripts:
    """Every dialogue's transcript. The HTML report embeds them (collapsible, rendered when
    opened); the Markdown report says where to read them. ``dialogues`` is the data the HTML
    writer embeds (see :mod:`clonechat.analysis.transcripts`)."""

    dialogues: Sequence[object] = ()


@dataclass(frozen=True)
class Section:
    title: str
    blocks: Sequence[Block] = ()
    #: 2 for the report's sections, 3 and 4 for their subsections.
    level: int = 2

    @property
    def anchor(self) -> str:
        """A stable id for links (``#prediction-accuracy``)."""
        return slug(self.title)


Block = Paragraph | Table | Bullets | Plot | Quote | Code | Transcripts | Section


@dataclass(frozen=True)
class Document:
    title: str
    #: Lines under the title (experiment, date, control).
    facts: Sequence[str] = ()
    sections: Sequence[Section] = field(default_factory=list)


def slug(text: str) -> str:
    """``"Prediction accuracy"`` → ``"prediction-accuracy"`` (letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def safe_name(text: str) -> str:
    """A file-name-safe version of a scorer name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "scorer"
