"""The Markdown report: ``report.md`` with its plots as PNG files beside it, linked by relative
paths, so the folder can be moved or zipped whole. It renders the same document as the HTML
report (:mod:`clonechat.analysis.document`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from clonechat.analysis.document import (
    Block,
    Bullets,
    Code,
    Document,
    Paragraph,
    Plot,
    Quote,
    Section,
    Table,
    Transcripts,
)

#: Resolution of the PNG plots.
PNG_DPI = 100


def cell(text: object) -> str:
    """A value made safe for a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fenced(text: str, language: str) -> str:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


class _Writer:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def block(self, block: Block) -> list[str]:
        """The lines of one block (no trailing blank line)."""
        if isinstance(block, Section):
            return self.section(block)
        if isinstance(block, Paragraph):
            return [block.text]
        if isinstance(block, Table):
            return [md_table(block.headers, block.rows)]
        if isinstance(block, Bullets):
            head = [block.title, ""] if block.title else []
            return [*head, *(f"- {item}" for item in block.items)]
        if isinstance(block, Plot):
            figure = block.draw()
            figure.savefig(self.out_dir / f"{block.name}.png", dpi=PNG_DPI)
            return [f"![{block.alt}]({block.name}.png)"]
        if isinstance(block, Quote):
            body = [f"> {line}" if line.strip() else ">" for line in block.text.splitlines()]
            return ["\n".join([f"> {cell(block.heading)}", ">", *body])]
        if isinstance(block, Code):
            return [fenced(block.text, block.language)]
        if isinstance(block, Transcripts):
            return []  # the section's lead says where to read them
        raise TypeError(f"no Markdown for {type(block).__name__}")

    def section(self, section: Section) -> list[str]:
        lines = ["#" * section.level + " " + section.title, ""]
        for block in section.blocks:
            rendered = self.block(block)
            if rendered:
                lines += [*rendered, ""]
        return lines[:-1] if lines[-1] == "" else lines


def render_markdown(doc: Document, out_dir: Path) -> str:
    """The report's Markdown text; its plots are written into ``out_dir`` as PNG files."""
    writer = _Writer(out_dir)
    parts = ["\n".join([f"# {doc.title}", "", *(f"- {fact}" for fact in doc.facts)])]
    parts += ["\n".join(writer.section(s)) for s in doc.sections]
    return "\n\n".join(parts) + "\n"


def write_markdown(doc: Document, out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` and its plots; return the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    path.write_text(render_markdown(doc, out_dir), encoding="utf-8")
    return path
