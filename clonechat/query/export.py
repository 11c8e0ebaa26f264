"""Exporting an experiment (``clonechat export``): everything stored about it, in a form
another tool reads without clonechat.

- ``csv`` / ``parquet``: one file per table (``experiment``, ``condition``, ``dialogue``,
  ``node``, ``score``, ``turn_metrics``, ``prompt``), the rows exactly as stored, so an analysis
  joins them as it would in SQL. In CSV an empty field is NULL in a column that can be NULL
  (text columns that cannot be NULL keep their empty strings); JSON columns hold JSON text;
  times are UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``. Parquet columns are typed (pyarrow).
- ``jsonl``: one line per dialogue, with its experiment, condition, prompts, every node of
  its tree, its scores and its turn metrics; JSON columns as objects.
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
from typing import Any, Literal

from sqlmodel import SQLModel

import clonechat.store.models  # noqa: F401  (registers the tables in SQLModel.metadata)
from clonechat.branching import EDIT_MODEL
from clonechat.errors import MissingExtraError, NotFoundError
from clonechat.query.sql import ReadOnlyConnection

ExportFormat = Literal["jsonl", "csv", "parquet", "markdown"]
#: A table's column names and rows.
Rows = tuple[list[str], list[tuple[Any, ...]]]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "parquet", "markdown")
TABLES = ("experiment", "condition", "dialogue", "node", "score", "turn_metrics", "prompt")
JSON_COLUMNS = {"condition": ("settings",), "dialogue": ("settings",), "node": ("params",), "score": ("detail",),
                "prompt": ("variables",)}  # fmt: skip

_DIALOGUES = "SELECT d.id FROM dialogue d JOIN condition c ON c.id = d.condition_id WHERE c.experiment_id = :e"
#: Each table's rows belonging to the experiment ``:e``, in a stable order.
_ROWS = {
    "experiment": "SELECT * FROM experiment WHERE id = :e",
    "condition": "SELECT * FROM condition WHERE experiment_id = :e ORDER BY name",
    "dialogue": f"SELECT * FROM dialogue WHERE id IN ({_DIALOGUES}) ORDER BY id",
    "node": f"SELECT * FROM node WHERE dialogue_id IN ({_DIALOGUES}) ORDER BY dialogue_id, rowid",
    "score": f"""SELECT s.* FROM score s JOIN node n ON n.id = s.node_id
                 WHERE n.dialogue_id IN ({_DIALOGUES}) ORDER BY s.id""",
    "turn_metrics": f"SELECT * FROM turn_metrics WHERE dialogue_id IN ({_DIALOGUES}) ORDER BY node_id",
    # Prompts the experiment's dialogues, conditions and forks refer to (by hash, in a column or
    # inside their settings).
    "prompt": f"""SELECT p.* FROM prompt p WHERE
        EXISTS (SELECT 1 FROM dialogue d WHERE d.id IN ({_DIALOGUES}) AND p.hash IN
                (d.system_prompt_a, d.system_prompt_b, d.opening_prompt) OR instr(d.settings, p.hash))
        OR EXISTS (SELECT 1 FROM condition c WHERE c.experiment_id = :e AND instr(c.settings, p.hash))
        OR EXISTS (SELECT 1 FROM node n WHERE n.dialogue_id IN ({_DIALOGUES}) AND n.model = 'researcher-edit'
                   AND instr(n.params, p.hash))
        ORDER BY p.hash""",
}


@dataclass(frozen=True)
class ExportSummary:
    experiment: str
    files: list[Path]
    dialogues: int
    rows: dict[str, int]


def _experiment_id(conn: ReadOnlyConnection, name: str) -> str:
    row = conn.execute("SELECT id FROM experiment WHERE name = ?", (name,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT name FROM experiment ORDER BY name").fetchall()]
        raise NotFoundError(f"no experiment {name!r} in {conn.path} (known: {', '.join(known) or 'none'})")
    return str(row[0])


def table_rows(conn: ReadOnlyConnection, table: str, experiment_id: str) -> Rows:
    """A table's rows for one experiment, as stored."""
    cursor = conn.execute(_ROWS[table], {"e": experiment_id})
    return [d[0] for d in cursor.description], cursor.fetchall()


def _with_json(table: str, columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(columns, row, strict=True))
    for name in JSON_COLUMNS.get(table, ()):
        if isinstance(record.get(name), str):
            record[name] = json.loads(record[name])
    return record


def export(conn: ReadOnlyConnection, experiment: str, fmt: ExportFormat, out: Path) -> ExportSummary:
    """Write ``experiment`` in ``fmt`` under the folder ``out``; the files written are listed."""
    if fmt == "parquet":
        _require_pyarrow()
    experiment_id = _experiment_id(conn, experiment)
    tables = {t: table_rows(conn, t, experiment_id) for t in TABLES}
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        files = [_write_csv(out / f"{t}.csv", *tables[t]) for t in TABLES]
    elif fmt == "parquet":
        files = [_write_parquet(out / f"{t}.parquet", t, *tables[t]) for t in TABLES]
    elif fmt == "jsonl":
        files = [_write_jsonl(out / f"{experiment}.jsonl", tables)]
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


def _dialogue_records(tables: dict[str, Rows]) -> Iterator[dict[str, Any]]:
    experiment = _with_json("experiment", tables["experiment"][0], tables["experiment"][1][0])
    conditions = {
        r["id"]: r for r in (_with_json("condition", tables["condition"][0], row) for row in tables["condition"][1])
    }
    prompts = {r["hash"]: r for r in (_with_json("prompt", tables["prompt"][0], row) for row in tables["prompt"][1])}
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
        yield {
            "experiment": experiment,
            "condition": condition,
            "dialogue": dialogue,
            "prompts": [p for h, p in prompts.items() if h in own],
            "nodes": own_nodes,
            "scores": scores.get(dialogue["id"], []),
            "turn_metrics": metrics.get(dialogue["id"], []),
        }


def _write_jsonl(path: Path, tables: dict[str, Rows]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for record in _dialogue_records(tables):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _head_path(nodes: list[dict[str, Any]], head: str | None) -> list[dict[str, Any]]:
    by_id = {n["id"]: n for n in nodes}
    path: list[dict[str, Any]] = []
    node = by_id.get(head) if head else None
    while node is not None:
        path.append(node)
        node = by_id.get(node["parent_id"]) if node["parent_id"] else None
    return path[::-1]


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text.splitlines() or [""]))


def _write_markdown(path: Path, tables: dict[str, Rows]) -> Path:
    records = list(_dialogue_records(tables))
    experiment = _with_json("experiment", tables["experiment"][0], tables["experiment"][1][0])
    lines = [f"# {experiment['name']}", "", f"{len(records)} dialogues, exported from clonechat.", ""]
    for record in records:
        d, c = record["dialogue"], record["condition"]
        conversation = _head_path(record["nodes"], d["head_node_id"])
        side: dict[str, list[dict[str, Any]]] = {}
        for n in record["nodes"]:
            if n["kind"] == "prediction" and n["target_node_id"]:
                side.setdefault(n["target_node_id"], []).append(n)
        others = [n for n in record["nodes"] if n["kind"] in ("coordination", "report", "error")]
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
            for p in side.get(n["id"], []):  # made before the turn was written
                lines += [f"*predicted by {p['speaker']} ({p['variant']}):* {' '.join(p['content'].split())}", ""]
            lines += [_quote(n["content"]), ""]
        for n in others:
            what = n["kind"] + (f" {n['variant']}" if n["variant"] else "")
            lines += [f"*{what}, {n['speaker']}:*", "", _quote(n["content"]), ""]
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
