"""Exporting an experiment (``clonechat export``): everything stored about it, in a form
another tool reads without clonechat.

- ``csv`` / ``parquet``: one file per table (``experiment``, ``condition``, ``dialogue``,
  ``node``, ``score``, ``turn_metrics``, ``prompt``, ``prompt_template``), the rows exactly as
  stored, so an analysis joins them as it would in SQL. In CSV an empty field is NULL in a
  column that can be NULL (text columns that cannot be NULL keep their empty strings); JSON
  columns hold JSON text; times are UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``. Parquet columns are
  typed (pyarrow).
- ``jsonl``: one line per dialogue, with its experiment, condition, prompts, every node of
  its tree, its scores, its turn metrics and the templates its prompts were rendered from
  (``prompt_templates``); JSON columns as objects. Every row of the experiment is in it, so
  ``clonechat import`` rebuilds the experiment in another database from this file alone.
- ``markdown``: a transcript to read: each dialogue's current conversation with the
  side-channel messages (predictions, coordination answers, reports) beside it.

:func:`read_table` reads a CSV or Parquet table back into the rows the database holds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from sqlmodel import SQLModel

import clonechat.store.models  # noqa: F401  (registers the tables in SQLModel.metadata)
from clonechat.branching import EDIT_MODEL
from clonechat.errors import MissingExtraError
from clonechat.read.connect import Readable
from clonechat.read.export_rows import TABLES, Rows, experiment_tables
from clonechat.read.paths import path_in
from clonechat.read.sides import SIDE_KINDS, group_by_anchor

ExportFormat = Literal["jsonl", "csv", "parquet", "markdown"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "parquet", "markdown")
__all__ = [
    "FORMATS",
    "JSON_COLUMNS",
    "TABLES",
    "ExportFormat",
    "ExportSummary",
    "dialogue_records",
    "export",
    "read_table",
    "write_jsonl",
]
JSON_COLUMNS = {"condition": ("settings",), "dialogue": ("settings",), "node": ("params",), "score": ("detail",),
                "prompt": ("variables",)}  # fmt: skip


@dataclass(frozen=True)
class ExportSummary:
    experiment: str
    files: list[Path]
    dialogues: int
    rows: dict[str, int]


def _with_json(table: str, columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(columns, row, strict=True))
    for name in JSON_COLUMNS.get(table, ()):
        if isinstance(record.get(name), str):
            record[name] = json.loads(record[name])
    return record


def export(db: Readable, experiment: str, fmt: ExportFormat, out: Path) -> ExportSummary:
    """Write ``experiment`` in ``fmt`` under the folder ``out``; the files written are listed."""
    if fmt == "parquet":
        _require_pyarrow()
    tables = experiment_tables(db, experiment)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        files = [_write_csv(out / f"{t}.csv", *tables[t]) for t in TABLES]
    elif fmt == "parquet":
        files = [_write_parquet(out / f"{t}.parquet", t, *tables[t]) for t in TABLES]
    elif fmt == "jsonl":
        files = [write_jsonl(out / f"{experiment}.jsonl", tables)]
    else:
        files = [_write_markdown(out / f"{experiment}.md", tables)]
    return ExportSummary(experiment, files, len(tables["dialogue"][1]), {t: len(r) for t, (_, r) in tables.items()})


def _write_csv(path: Path, columns: list[str], rows: list[tuple[Any, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)  # None is written as an empty field
    return path


def _require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingExtraError(
            "Parquet export needs pyarrow, an optional extra: pip install 'clonechat[parquet]' "
            "(or uv sync --extra parquet)"
        ) from None
    return pyarrow


def _arrow_type(pa: Any, table: str, column: str) -> Any:
    sql_type = str(SQLModel.metadata.tables[table].columns[column].type).upper()
    if sql_type in ("INTEGER", "BIGINT"):
        return pa.int64()
    if sql_type in ("FLOAT", "REAL"):
        return pa.float64()
    return pa.string()


def _write_parquet(path: Path, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Path:
    pa = _require_pyarrow()
    schema = pa.schema([(c, _arrow_type(pa, table, c)) for c in columns])
    data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    pa.parquet.write_table(pa.table(data, schema=schema), path)
    return path


def _grouped(table: str, columns: list[str], rows: list[tuple[Any, ...]], key: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for row in rows:
        record = _with_json(table, columns, row)
        out.setdefault(record[key], []).append(record)
    return out


def dialogue_records(tables: dict[str, Rows]) -> Iterator[dict[str, Any]]:
    """The JSONL export's records, one per dialogue, from an experiment's rows (as
    :func:`~clonechat.read.export_rows.experiment_tables` reads them): what ``clonechat share``
    writes after it has scrubbed the rows."""
    experiment = _with_json("experiment", tables["experiment"][0], tables["experiment"][1][0])
    conditions = {
        r["id"]: r for r in (_with_json("condition", tables["condition"][0], row) for row in tables["condition"][1])
    }
    prompts = {r["hash"]: r for r in (_with_json("prompt", tables["prompt"][0], row) for row in tables["prompt"][1])}
    columns = tables["prompt_template"][0]
    templates = {t["hash"]: t for t in (dict(zip(columns, r, strict=True)) for r in tables["prompt_template"][1])}
    nodes = _grouped("node", *tables["node"], key="dialogue_id")
    node_dialogue = {n["id"]: d for d, ns in nodes.items() for n in ns}
    metrics = _grouped("turn_metrics", *tables["turn_metrics"], key="dialogue_id")
    scores: dict[str, list[Any]] = {}
    for row in tables["score"][1]:
        record = _with_json("score", tables["score"][0], row)
        scores.setdefault(node_dialogue[record["node_id"]], []).append(record)
    for row in tables["dialogue"][1]:
        dialogue = _with_json("dialogue", tables["dialogue"][0], row)
        condition = conditions[dialogue["condition_id"]]
        own_nodes = nodes.get(dialogue["id"], [])
        # Its system prompts and opening, the measures' prompts its settings name, and the
        # prompts of the researcher's forks.
        referring = json.dumps(
            [dialogue["settings"], condition["settings"], [n["params"] for n in own_nodes if n["model"] == EDIT_MODEL]]
        )
        own = {dialogue["system_prompt_a"], dialogue["system_prompt_b"], dialogue["opening_prompt"]}
        own |= {h for h in prompts if h in referring}
        own_prompts = [p for h, p in prompts.items() if h in own]
        rendered_from = {p["template_hash"] for p in own_prompts}
        yield {
            "experiment": experiment,
            "condition": condition,
            "dialogue": dialogue,
            "prompts": own_prompts,
            "nodes": own_nodes,
            "scores": scores.get(dialogue["id"], []),
            "turn_metrics": metrics.get(dialogue["id"], []),
            "prompt_templates": [t for h, t in templates.items() if h in rendered_from],
        }


def write_jsonl(path: Path, tables: dict[str, Rows]) -> Path:
    """The JSONL export of an experiment's rows, written to ``path``."""
    with path.open("w", encoding="utf-8") as f:
        for record in dialogue_records(tables):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _head_path(nodes: list[dict[str, Any]], head: str | None) -> list[dict[str, Any]]:
    """The dialogue's current conversation, walked in the nodes the export holds."""
    if head is None:
        return []
    by_id = {n["id"]: n for n in nodes}
    return [by_id[i] for i in path_in({n["id"]: n["parent_id"] for n in nodes}, head)]


class _Side(NamedTuple):
    """An exported side node, as :func:`~clonechat.read.sides.group_by_anchor` reads it."""

    kind: str
    parent_id: str | None
    target_node_id: str | None
    node: dict[str, Any]


def _side_text(n: dict[str, Any]) -> list[str]:
    if n["kind"] == "prediction":
        return [f"*predicted by {n['speaker']} ({n['variant']}):* {' '.join(n['content'].split())}", ""]
    what = n["kind"] + (f" {n['variant']}" if n["variant"] else "")
    return [f"*{what}, {n['speaker']}:*", "", _quote(n["content"]), ""]


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text.splitlines() or [""]))


def _write_markdown(path: Path, tables: dict[str, Rows]) -> Path:
    records = list(dialogue_records(tables))
    experiment = _with_json("experiment", tables["experiment"][0], tables["experiment"][1][0])
    lines = [f"# {experiment['name']}", "", f"{len(records)} dialogues, exported from clonechat.", ""]
    for record in records:
        d, c = record["dialogue"], record["condition"]
        conversation = _head_path(record["nodes"], d["head_node_id"])
        on_path = {n["id"] for n in conversation}
        side = group_by_anchor(
            _Side(n["kind"], n["parent_id"], n["target_node_id"], n) for n in record["nodes"] if n["kind"] in SIDE_KINDS
        )
        placed = {s.node["id"] for key, group in side.items() if key in on_path for s in group}
        # Answers asked on another branch and errors (a record off the path) come last; a
        # prediction of a turn on another branch is that branch's, not this conversation's.
        others = [
            n for n in record["nodes"] if n["kind"] in ("coordination", "report", "error") and n["id"] not in placed
        ]
        branches = sum(1 for n in record["nodes"] if n["kind"] == "turn") - sum(
            1 for n in conversation if n["kind"] == "turn"
        )
        lines += [
            f"## {c['name']} #{d['replicate']} · {d['id']}",
            "",
            f"{d['model_a']} (A) and {d['model_b']} (B), seed {d['seed']}, {d['status']}"
            + (f" ({d['stop_reason']})" if d["stop_reason"] else "")
            + (f", {branches} turns on other branches" if branches else ""),
            "",
        ]
        for n in conversation:
            who = "researcher" if n["speaker"] == "researcher" else f"{n['speaker']}"
            label = f"**{who}**" + (f" · turn {n['turn_index']}" if n["turn_index"] else " · opening")
            if n["model"] == EDIT_MODEL:
                label += " · edited by the researcher"
            lines += [label, ""]
            if n.get("reasoning") is not None:
                # Collapsed where Markdown renders HTML (GitHub, most viewers), like the TUI's.
                heading = f"private reasoning of {who}, never shown to the partner"
                lines += [
                    "<details>",
                    f"<summary>{heading}</summary>",
                    "",
                    _quote(n["reasoning"]),
                    "",
                    "</details>",
                    "",
                ]
            beside = [s.node for s in side.get(n["id"], [])]
            for p in beside:
                if p["kind"] == "prediction":  # made before the turn was written
                    lines += _side_text(p)
            lines += [_quote(n["content"]), ""]
            for p in beside:
                if p["kind"] != "prediction":  # asked after this node
                    lines += _side_text(p)
        for n in others:
            lines += _side_text(n)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def read_table(path: Path | str) -> list[dict[str, Any]]:
    """The rows of an exported CSV or Parquet table (named ``TABLE.csv`` / ``TABLE.parquet``),
    typed as the database holds them: what was exported reads back to the same rows."""
    file = Path(path)
    table = file.stem
    columns = SQLModel.metadata.tables[table].columns
    if file.suffix == ".parquet":
        pa = _require_pyarrow()
        return list(pa.parquet.read_table(file).to_pylist())
    with file.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = []
        for raw in reader:
            row: dict[str, Any] = {}
            for name, value in raw.items():
                column = columns[name]
                sql_type = str(column.type).upper()
                if value == "" and (column.nullable or sql_type not in ("VARCHAR", "JSON", "DATETIME")):
                    row[name] = None
                elif sql_type in ("INTEGER", "BIGINT"):
                    row[name] = int(value)
                elif sql_type in ("FLOAT", "REAL"):
                    row[name] = float(value)
                else:
                    row[name] = value
            rows.append(row)
        return rows
