"""Writing an experiment's report in either format: everything the report needs is loaded here
(the statistics' rows, the transcripts, the reproducibility facts, an experiment to compare
with), the document is built once (:func:`clonechat.analysis.report.build_document`) and the
chosen writer renders it.

Only reads: ``clonechat report`` and ``clonechat share`` score first, then call this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from clonechat.analysis.document import Document
from clonechat.analysis.load import load_report_data
from clonechat.analysis.provenance import load_provenance, provenance_section
from clonechat.analysis.report import Extras, build_document
from clonechat.analysis.report_html import render_html
from clonechat.analysis.report_markdown import write_markdown
from clonechat.analysis.transcripts import load_transcripts
from clonechat.read.connect import Readable

ReportFormat = Literal["markdown", "html"]
FORMATS: tuple[ReportFormat, ...] = ("markdown", "html")
HTML_NAME = "report.html"


def load_document(db: Readable, experiment: str, *, compare: str | None = None, html: bool = False) -> Document:
    """The report of ``experiment`` (beside ``compare``, if given) as a document; the transcripts
    are loaded only for the HTML report, which embeds them."""
    data = load_report_data(db, experiment)
    extras = Extras(
        transcripts=load_transcripts(db, experiment) if html else (),
        provenance=provenance_section(load_provenance(db, experiment)),
        compare=load_report_data(db, compare) if compare is not None else None,
    )
    return build_document(data, extras)


def html_report(db: Readable, experiment: str, *, compare: str | None = None) -> str:
    """The experiment's report as one self-contained HTML page."""
    return render_html(load_document(db, experiment, compare=compare, html=True))


def write(db: Readable, experiment: str, out_dir: Path, fmt: ReportFormat, *, compare: str | None = None) -> Path:
    """Write the report into ``out_dir`` (``report.md`` and its PNG plots, or ``report.html``)."""
    if fmt == "markdown":
        return write_markdown(load_document(db, experiment, compare=compare), out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / HTML_NAME
    path.write_text(html_report(db, experiment, compare=compare), encoding="utf-8")
    return path
