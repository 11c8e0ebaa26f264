"""``DATASHEET.md``: what a share archive holds, in the spirit of "Datasheets for Datasets"
(Gebru et al. 2021), so whoever opens it knows what was run before reading a single figure:
the conditions with their models, templates and measures; how many dialogues ended how, and how
many turns, predictions, coordination answers, reports back and score rows there are; which
clonechat wrote it and when the experiment ran; and what was left out, and why, with a count of
what was redacted by kind (never a redacted value).

Built from the rows the archive holds (already scrubbed), so it cannot disagree with them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from clonechat.branching import EDIT_MODEL
from clonechat.read.export_rows import Rows
from clonechat.share.private import MIN_SECRET_CHARS
from clonechat.share.scrub import Kind
from clonechat.store.copy import NOT_COPIED

#: What each member of an archive is (the datasheet's table of contents).
MEMBERS = {
    "report.html": "the experiment's report, one self-contained page (open it in a browser)",
    "DATASHEET.md": "this file",
    "spec.toml": "the experiment's spec, as its author wrote it (private values redacted)",
    "manifest.json": "format version, experiment, clonechat version, and the SHA-256 and size of every member",
}


def _records(rows: Rows) -> list[dict[str, Any]]:
    columns, values = rows
    return [dict(zip(columns, row, strict=True)) for row in values]


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return value if value is not None else {}


def _measures(settings: Mapping[str, Any]) -> str:
    """The measures a condition ran, from its resolved settings."""
    measures = settings.get("measures") or {}
    parts = []
    prediction = measures.get("prediction")
    if isinstance(prediction, dict):
        variants = ["partner"] + [v for v in ("self", "cross_model") if prediction.get(v)]
        reveal = ", revealed to the speaker" if prediction.get("reveal") else ""
        parts.append(f"prediction ({', '.join(variants)}{reveal})")
    coordination = measures.get("coordination")
    if isinstance(coordination, dict):
        tasks = [t[0] if isinstance(t, list) and t else str(t) for t in coordination.get("tasks", [])]
        phases = "/".join(coordination.get("phases", []))
        parts.append(f"coordination: {', '.join(tasks)}" + (f" ({phases})" if phases else ""))
    if isinstance(measures.get("report"), dict):
        parts.append("report back")
    if isinstance(recognition := measures.get("recognition"), dict):
        parts.append(f"self-recognition ({recognition.get('items')} items, context {recognition.get('context')})")
    if isinstance(measures.get("self_knowledge"), dict):
        parts.append("self-knowledge by surprisal")
    if interjections := measures.get("interjections"):
        parts.append("interjections before turn " + ", ".join(str(i.get("at")) for i in interjections))
    if isinstance(convergence := measures.get("convergence"), dict):
        rule = f"{convergence.get('metric')} ≥ {convergence.get('threshold')} for {convergence.get('turns')} turns"
        parts.append(f"convergence {convergence.get('action')}: {rule}")
    return "; ".join(parts) or "none"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_datasheet(
    tables: dict[str, Rows],
    *,
    data_member: str,
    redactions: Mapping[Kind, int],
    clonechat_version: str,
    schema_version: int,
) -> str:
    """The datasheet of the (scrubbed) ``tables`` of one experiment."""
    (experiment,) = _records(tables["experiment"])
    conditions = _records(tables["condition"])
    dialogues = _records(tables["dialogue"])
    nodes = _records(tables["node"])
    scores = _records(tables["score"])
    name = experiment["name"]
    kinds = Counter(n["kind"] for n in nodes if n["model"] != EDIT_MODEL)
    edits = sum(1 for n in nodes if n["model"] == EDIT_MODEL)
    per_condition = Counter(d["condition_id"] for d in dialogues)
    statuses = Counter(d["status"] for d in dialogues)
    times = sorted(n["created_at"] for n in nodes)
    lines = [
        f"# Datasheet: {name}",
        "",
        f"A clonechat experiment shared as an archive by clonechat {clonechat_version} (run database "
        f"schema {schema_version}). Experiment id `{experiment['id']}`, created {experiment['created_at']} UTC"
        + (f"; its messages were stored from {times[0]} to {times[-1]} UTC." if times else "; nothing was stored."),
        "",
        "To work with it: `clonechat import THIS.zip` puts it into your run database as its own experiment "
        f"(`--as NAME` under another name), then `clonechat report {name}`, `clonechat query`, `clonechat score` "
        "and the TUI work on it as on a local run; the report reproduces the one in this archive.",
        "",
        "## What was run",
        "",
        "| condition | template | model A | model B | dialogues | max turns | measures |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in conditions:
        settings = _json(c["settings"])
        pair = "" if c["model_a"] != c["model_b"] else " (clone pair)"
        lines.append(
            f"| {_cell(c['name'])} | {_cell(c['template'])} | {_cell(c['model_a'])}{pair} | {_cell(c['model_b'])} | "
            f"{per_condition.get(c['id'], 0)} | {settings.get('max_turns', '')} | {_cell(_measures(settings))} |"
        )
    scorers = Counter(s["scorer"] for s in scores)
    counts = [
        ("dialogues", f"{len(dialogues)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})"),
        ("agent turns (every branch)", kinds["turn"]),
        ("researcher edits (forks)", edits),
        ("predictions", kinds["prediction"]),
        ("coordination answers", kinds["coordination"]),
        ("reports back", kinds["report"]),
        ("failed model calls (error nodes)", kinds["error"]),
        (
            "score rows",
            f"{len(scores)}" + (f" ({', '.join(f'{s} {n}' for s, n in sorted(scorers.items()))})" if scores else ""),
        ),
        ("turn metrics rows", len(tables["turn_metrics"][1])),
        ("prompts, prompt templates", f"{len(tables['prompt'][1])}, {len(tables['prompt_template'][1])}"),
    ]
    lines += ["", "## How much", "", "| what | count |", "|---|---|"]
    lines += [f"| {what} | {_cell(count)} |" for what, count in counts]
    lines += [
        "",
        "## What this archive holds",
        "",
        f"- `{data_member}`: every row of the experiment as `clonechat export --format jsonl` writes it, one "
        "dialogue a line: its experiment, condition, prompts and their templates, every node of its tree "
        "(all branches, side channels, errors), its scores and turn metrics. Ids are the original ones.",
    ]
    lines += [f"- `{member}`: {what}" for member, what in MEMBERS.items()]
    lines += [
        "",
        "## What is not included, and why",
        "",
        *(f"- `{table}`: {why}" for table, why in NOT_COPIED.items() if table != "clonechat_migrations"),
        "- `node_fts_reasoning`: the full-text index of the models' reasoning, rebuilt from `node` on import",
        "- the migration history: each database has its own; an import runs at the importer's schema",
        "- credentials: API keys (the values of the variables models name in `api_key_env`, of environment "
        "variables named like keys, tokens, secrets or passwords, and of `.env`), passwords in URLs, "
        "`key=`/`token=` URL parameters; keys are never stored, but could have reached a prompt, an error or an edit",
        "- local paths: the working directory, the home directory, the database's folder and, in settings, "
        "specs and error messages, every absolute path. In what the models wrote or were shown only exact "
        "secrets and those directories are replaced, so the data the statistics were computed on stay the data",
        "- the environment: no variable, host name or machine detail is recorded",
        "",
        "## Redactions",
        "",
        "Replaced by `[redacted]`, `[path]`, `[working-dir]`, `[home]` or `[database-folder]`; only the counts "
        f"are kept. Looked for: the sharer's secret values (of at least {MIN_SECRET_CHARS} characters), "
        "credentials and key parameters in URLs, the working directory, the home directory, the database's "
        "folder and, in metadata, any absolute path.",
        "",
        "| what | replaced |",
        "|---|---|",
        *(f"| {kind.value} | {redactions.get(kind, 0)} |" for kind in Kind),
        "",
    ]
    return "\n".join(lines)
