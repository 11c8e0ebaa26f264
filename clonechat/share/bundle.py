"""``clonechat share``: one experiment as one archive another researcher can open and import.

The steps, in order:

1. Score the text scorers first, as ``clonechat report`` does, so the archive never lacks
   figures a report would show.
2. Read every row of the experiment (:func:`~clonechat.read.export_rows.experiment_tables`, one
   read transaction) and scrub every string of every row (:mod:`clonechat.share.scrub`).
3. Write the JSONL export of the scrubbed rows, then load it into a fresh run database with the
   importer's own code (:mod:`clonechat.share.records`) and write the HTML report *from that
   database*: the report in the archive is the one its receiver's ``clonechat report`` computes,
   it cannot show anything the rows do not hold, and a share whose data would not import fails
   here, on the sharer's machine, rather than on the receiver's.
4. The spec (scrubbed), the datasheet and the manifest; then the zip, deterministically
   (:mod:`clonechat.share.archive`): the same rows shared twice give the same bytes.

The members, in the archive's order: ``manifest.json``, ``DATASHEET.md``, ``report.html``,
``spec.toml``, ``data/EXPERIMENT.jsonl``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from clonechat.analysis.load import experiment_id
from clonechat.analysis.provenance import clonechat_version
from clonechat.analysis.publish import html_report
from clonechat.errors import ConfigError
from clonechat.query.export import write_jsonl
from clonechat.read.export_rows import Rows, experiment_tables
from clonechat.scoring.runner import score_text
from clonechat.share.archive import member, write_archive
from clonechat.share.datasheet import render_datasheet
from clonechat.share.manifest import FORMAT, FORMAT_VERSION, Manifest
from clonechat.share.manifest import NAME as MANIFEST
from clonechat.share.private import Machine, private_values
from clonechat.share.records import load_records
from clonechat.share.scrub import Kind, Scrubber
from clonechat.store.database import Database
from clonechat.store.migrations import SCHEMA_VERSION

DEFAULT_DIR = Path("runs") / "shares"
REPORT = "report.html"
DATASHEET = "DATASHEET.md"
SPEC = "spec.toml"


@dataclass(frozen=True)
class Shared:
    """What :func:`share_experiment` wrote."""

    path: Path
    size: int
    experiment: str
    dialogues: int
    #: Replacements made, by kind (only the counts).
    redactions: dict[Kind, int]


def file_name(experiment: str) -> str:
    """An experiment's name as a file name (a name from ``clonechat run --experiment`` may
    hold any character)."""
    return re.sub(r"[^A-Za-z0-9_.:+-]", "_", experiment).lstrip(".") or "experiment"


def default_path(experiment: str) -> Path:
    """Where ``clonechat share`` writes without ``--out``: ``runs/shares/EXPERIMENT.zip``."""
    return DEFAULT_DIR / f"{file_name(experiment)}.zip"


def share_experiment(db: Database, experiment: str, out: Path, machine: Machine) -> Shared:
    """Write the share archive of ``experiment`` to ``out`` (see the module docstring); what
    is private is what ``machine`` says (:class:`~clonechat.share.private.Machine`)."""
    score_text(db, experiment_id(db, experiment))  # a NotFoundError naming the known ones first
    tables = experiment_tables(db, experiment)
    if not tables["dialogue"][1]:
        raise ConfigError(f"experiment {experiment!r} has no dialogues: nothing to share")
    (experiment_row,) = _records(tables["experiment"])
    private = private_values(machine, spec=experiment_row["spec"], database=db.path)
    scrubber = Scrubber(private)
    clean = scrubber.tables(tables)
    (clean_row,) = _records(clean["experiment"])
    data_member = f"data/{file_name(experiment)}.jsonl"
    with TemporaryDirectory(prefix="clonechat-share-") as temporary:
        folder = Path(temporary)
        data = write_jsonl(folder / "data.jsonl", clean)
        report = scrubber.document(_report(data, folder / "check.db", experiment))
        spec = clean_row["spec"] or (
            f"# Experiment {experiment!r} was not started from a spec (clonechat run), so it has none.\n"
        )
        redactions = {kind: scrubber.counts[kind] for kind in Kind}
        datasheet = scrubber.document(
            render_datasheet(
                clean,
                data_member=data_member,
                redactions=redactions,
                clonechat_version=clonechat_version(),
                schema_version=SCHEMA_VERSION,
            )
        )
        files = {DATASHEET: datasheet, REPORT: report, SPEC: spec}
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        members = [(name, folder / name) for name in files] + [(data_member, data)]
        manifest = Manifest(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            experiment=experiment,
            experiment_id=str(experiment_row["id"]),
            clonechat_version=clonechat_version(),
            schema_version=SCHEMA_VERSION,
            data=data_member,
            members=dict(member(name, path) for name, path in members),
        )
        (folder / MANIFEST).write_text(manifest.text(), encoding="utf-8")
        write_archive(out, [(MANIFEST, folder / MANIFEST), *members])
    return Shared(out, out.stat().st_size, experiment, len(tables["dialogue"][1]), redactions)


def _records(rows: Rows) -> list[dict[str, Any]]:
    columns, values = rows
    return [dict(zip(columns, row, strict=True)) for row in values]


def _report(data: Path, check: Path, experiment: str) -> str:
    """The HTML report of the shared rows, from a run database built from ``data`` exactly as
    an import builds one."""
    with Database.open(check) as database:
        with data.open(encoding="utf-8") as lines:
            load_records(lines, database, label=f"the shared rows of {experiment!r}")
        return html_report(database, experiment)
