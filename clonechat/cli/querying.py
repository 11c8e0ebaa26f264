"""``clonechat query``, ``search``, ``keywords``, ``export`` and ``schema``: asking questions of
the run database. Every one opens it read-only, through :mod:`clonechat.read` (``query``,
``search`` and ``keywords`` on the console connection of :mod:`clonechat.read.console`).

As in :mod:`clonechat.cli.app`, each command imports what it runs when it runs: importing this
module only declares the commands, for ``--help`` and for the command that was typed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clonechat.cli.app import DEFAULT_DB_TEXT, DbOption, app
from clonechat.cli.errors import report_errors
from clonechat.errors import ConfigError

#: Rows a terminal table shows before it says how many more there are.
TABLE_ROWS = 1000


def _run(fn: Callable[[], None]) -> None:
    """``report_errors`` for commands whose output is often piped: a reader that stops early
    (``| head``) ends the command quietly instead of with a traceback."""
    try:
        report_errors(fn)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="How rows are printed.")]


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def print_rows(columns: list[str], rows: Iterable[tuple[Any, ...]], fmt: OutputFormat) -> int:
    """Print rows as a table, CSV or a JSON array of objects (streamed); returns how many."""
    count = 0
    if fmt is OutputFormat.csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for count, row in enumerate(rows, start=1):  # noqa: B007
            writer.writerow(row)
        return count
    if fmt is OutputFormat.json:
        import json

        sys.stdout.write("[")
        for count, row in enumerate(rows, start=1):
            sys.stdout.write(
                ("\n" if count == 1 else ",\n")
                # default=str: a value JSON has no type for (a date, an interval) as its text.
                + json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, default=str)
            )
        sys.stdout.write("\n]\n" if count else "]\n")
        return count
    # One line per row, as sqlite3 prints: cut with an ellipsis to fit a terminal; in full
    # when piped (a file has no width).
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(escape(column), no_wrap=True, overflow="ellipsis", min_width=min(len(column), 12))
    more = 0
    for row in rows:
        count += 1
        if count <= TABLE_ROWS:
            table.add_row(*(escape(_cell(v)) for v in row))
        else:
            more += 1
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=Console(width=1_000_000).measure(table).maximum)
    console.print(table)
    if more:
        console.print(f"... {more} more rows (use --format csv or json, or a LIMIT)", style="dim")
    console.print(f"({count} row{'s' if count != 1 else ''})", style="dim")
    return count


def _param(pair: str) -> tuple[str, Any]:
    name, sep, value = pair.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--param expects NAME=VALUE (got {pair!r})")
    for convert in (int, float):
        try:
            return name.strip(), convert(value)
        except ValueError:
            pass
    return name.strip(), value


@app.command()
def query(
    statement: Annotated[
        str,
        typer.Argument(
            metavar="SQL",
            help="One read-only SQL statement (select ..., with ...; on SQLite also pragma table_info(node)).",
        ),
    ],
    fmt: FormatOption = OutputFormat.table,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Bind :NAME in the SQL, NAME=VALUE (repeatable).")
    ] = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Run SQL on the run database, read-only.

    Any write (insert, update, delete, drop, attach, ...) is refused and the database is left
    exactly as it was. Tables and views: docs/schema.md."""
    from clonechat.read import console

    def go() -> None:
        params = dict(_param(p) for p in param or [])
        with console.read_only(db) as conn:
            result = console.run(conn, statement, params)
            print_rows(result.columns, result.rows, fmt)

    _run(go)


@app.command()
def search(
    text: Annotated[str, typer.Argument(help='Words to find (FTS5 syntax: "a phrase", OR, NOT, prefix*).')],
    experiment: Annotated[str | None, typer.Option(help="Only this experiment.")] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="Only these node kinds (turn, prediction, report, ...; repeatable).")
    ] = None,
    literal: Annotated[
        bool, typer.Option("--literal", help="Find TEXT as a substring (automatic when it has no letters, e.g. emoji).")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many messages, best match first.")] = 50,
    reasoning: Annotated[
        bool, typer.Option("--reasoning", help="Search the models' private reasoning instead of their messages.")
    ] = False,
    fmt: FormatOption = OutputFormat.table,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Full-text search over every stored message (or, with --reasoning, every reasoning trace)."""
    from clonechat.query.search import MARK_END, MARK_START, search
    from clonechat.read.console import read_only

    def go() -> None:
        with read_only(db) as conn:
            hits = search(
                conn, text, experiment=experiment, kinds=kind or [], literal=literal, limit=limit, reasoning=reasoning
            )
        if fmt is not OutputFormat.table:
            columns = ["node_id", "dialogue_id", "experiment", "condition", "turn_index", "speaker", "kind", "variant"]
            rows = ([*(getattr(h, c) for c in columns), h.plain_snippet()] for h in hits)
            print_rows([*columns, "snippet"], (tuple(r) for r in rows), fmt)
            return
        console = Console(highlight=False, soft_wrap=True)
        if not hits:
            console.print(f"no {'reasoning' if reasoning else 'messages'} match {escape(text)!r}")
            return
        for h in hits:
            where = f"{h.experiment}/{h.condition} {h.dialogue_id[:10]} turn {h.turn_index} {h.speaker} {h.kind}"
            where += " (private reasoning)" if reasoning else ""
            snippet = escape(" ".join(h.snippet.split())).replace(MARK_START, "[bold reverse]").replace(MARK_END, "[/]")
            console.print(f"[dim]{escape(where)}[/dim]  {snippet}")
        console.print(
            f"({len(hits)} message{'s' if len(hits) != 1 else ''}; 'clonechat show ID' for a dialogue)", style="dim"
        )

    _run(go)


@app.command()
def keywords(
    words: Annotated[
        list[str] | None, typer.Argument(help="Keywords (default: consciousness eternal dance 🌀).", show_default=False)
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="Only this experiment.")] = None,
    fmt: FormatOption = OutputFormat.table,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """How often each dialogue's conversation uses each keyword.

    Turns, turns mentioning it, occurrences, per 1,000 words (case-insensitive substring count)."""
    from clonechat.query.keywords import DEFAULT_KEYWORDS, keyword_rates
    from clonechat.read.console import read_only

    def go() -> None:
        with read_only(db) as conn:
            result = keyword_rates(conn, words or DEFAULT_KEYWORDS, experiment=experiment)
            print_rows(result.columns, result.rows, fmt)

    _run(go)


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"
    markdown = "markdown"


@app.command()
def export(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see 'clonechat ls').")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="File format.")] = ExportFormat.jsonl,
    out: Annotated[Path | None, typer.Option(help="Folder to write into (default runs/exports/EXPERIMENT).")] = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Export everything stored about an experiment.

    JSONL (a dialogue per line), CSV or Parquet (a file per table, rows as stored), or Markdown
    transcripts."""
    from clonechat.query.export import export as write_export
    from clonechat.read.connect import open_existing

    def go() -> None:
        target = out or Path("runs") / "exports" / experiment
        with open_existing(db) as reader:
            summary = write_export(reader, experiment, fmt.value, target)
        console = Console(highlight=False, soft_wrap=True)
        console.print(f"{summary.dialogues} dialogues of {escape(experiment)} exported as {fmt.value}:")
        for file in summary.files:
            console.print(f"  {escape(str(file))}")

    _run(go)


@app.command()
def schema(
    write: Annotated[Path | None, typer.Option(help="Write the Markdown here instead of printing it.")] = None,
) -> None:
    """The run database's tables, columns and views, as Markdown (docs/schema.md is this output)."""
    from clonechat.store.schema_doc import schema_markdown

    text = schema_markdown()
    if write is None:
        sys.stdout.write(text)
    else:
        write.write_text(text, encoding="utf-8")
