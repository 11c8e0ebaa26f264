"""The ``clonechat`` command line.

Importing this module declares the commands and nothing more: typer needs only their options
at import time, so every command imports what it runs inside its own function. ``--help`` then
starts without SQLAlchemy, SQLModel, the engine, the session, the providers or anyio, and
``query`` without any of them either (``tests/test_cli_startup.py`` holds that;
``benchmarks/startup.py`` times it). Defaults the options show come from
:mod:`clonechat.constants`, which imports nothing heavy. Display commands (``ls``, ``show``,
``query``, ``search``, ``keywords``, ``export``) read through :mod:`clonechat.read` and never
open the database for writing; ``db upgrade`` upgrades an older one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clonechat.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, report_errors
from clonechat.constants import ADHOC_EXPERIMENT, DB_ENV_VAR, DEFAULT_DB, DEFAULT_STOP_PHRASE, MODELS_ENV_VAR
from clonechat.errors import ConfigError
from clonechat.location import DbLocation, db_location
from clonechat.redaction import without_credentials

if TYPE_CHECKING:
    from clonechat.registry import Registry
    from clonechat.store.models import Node

app = typer.Typer(
    help="Two instances of the same language model talking to each other, recorded for research.",
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=DB_ENV_VAR,
        metavar="PATH|URL",
        help=(
            f"Run database: an SQLite file (default {DEFAULT_DB}) or postgresql://user@host:port/dbname; "
            f"or ${DB_ENV_VAR}."
        ),
        show_default=False,
    ),
]
#: ``--db``'s default as the option's text (the option is text: a path or a server URL).
DEFAULT_DB_TEXT = str(DEFAULT_DB)


ModelsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--models-file",
        envvar=MODELS_ENV_VAR,
        help="Extra model registry (TOML); models.toml here and ~/.config/clonechat/models.toml are read too.",
        show_default=False,
    ),
]


def _use_registry(models_file: Path | None) -> Registry:
    from clonechat.registry import Registry, load_registry, set_default_registry

    registry = Registry(load_registry(models_file))
    set_default_registry(registry)
    return registry


def _check_backend(backend: str) -> None:
    if backend not in ("asyncio", "trio"):
        raise ConfigError(f"--backend must be asyncio or trio (got {backend!r})")


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--var expects NAME=VALUE (got {pair!r})")
        values[name.strip()] = value
    return values


@app.callback(invoke_without_command=True)
def _no_command(ctx: typer.Context) -> None:
    # Bare `clonechat` opens the TUI in a terminal; piped or scripted, it prints the help as before.
    if ctx.invoked_subcommand is not None:
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from clonechat.store.database import default_db_path

    _open_tui(default_db_path())


def _open_tui(db: DbLocation | str) -> None:
    """The app on ``db``, after checking in plain text that it can be read at all."""
    from clonechat.tui import data
    from clonechat.tui.app import run_tui

    report_errors(lambda: data.check_readable(db))
    run_tui(db)


@app.command()
def run(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model of both agents (and of A if --model-b is given).")
    ] = "local",
    model_b: Annotated[str | None, typer.Option(help="A different model for agent B (cross-model control).")] = None,
    condition: Annotated[
        str, typer.Option("--condition", "-c", help="Framing template in prompts/conditions/.")
    ] = "clone-aware",
    turns: Annotated[int, typer.Option("--turns", "-n", help="Maximum number of turns (both agents together).")] = 6,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling; random (and recorded) if omitted.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (model default if omitted).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Maximum tokens per turn (model default if omitted).")] = None,
    token_budget: Annotated[
        int | None, typer.Option(help="Stop once both agents together generated this many tokens.")
    ] = None,
    stop_phrase: Annotated[
        str, typer.Option(help="Either agent ends the dialogue by writing this; '' disables it.")
    ] = DEFAULT_STOP_PHRASE,
    opening: Annotated[str, typer.Option(help="Opening template in prompts/openings/.")] = "default",
    first: Annotated[
        str | None, typer.Option(help="Who speaks first, A or B (default: alternates by replicate).")
    ] = None,
    experiment: Annotated[str, typer.Option(help="Experiment to file the dialogue under.")] = ADHOC_EXPERIMENT,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="Set a prompt variable, NAME=VALUE (repeatable).")
    ] = None,
    predict: Annotated[
        bool, typer.Option("--predict", help="Before each message, the partner predicts it (blinded side channel).")
    ] = False,
    self_predict: Annotated[
        bool, typer.Option("--self-predict", help="Control: the speaker also predicts its own message first.")
    ] = False,
    cross_predictor: Annotated[
        str | None, typer.Option(metavar="MODEL", help="Control: a different model predicts from the partner's view.")
    ] = None,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Experiment: show the speaker its partner's prediction first.")
    ] = False,
    coordination: Annotated[
        list[str] | None,
        typer.Option(metavar="TASK", help="Coordination task in prompts/coordination/, asked before and after."),
    ] = None,
    report_back: Annotated[
        bool, typer.Option("--report-back", help="At the end, each agent writes to the researcher.")
    ] = False,
    backend: Annotated[str, typer.Option(help="Async backend: asyncio or trio.", hidden=True)] = "asyncio",
    models_file: ModelsFileOption = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Run a live clone dialogue, streamed here and stored turn by turn."""
    import anyio

    from clonechat.cli.run import run_live
    from clonechat.measures import CoordinationOptions, MeasureOptions, PredictionOptions, ReportOptions
    from clonechat.session import DialogueRequest
    from clonechat.store.database import Database

    def go() -> int:
        _use_registry(models_file)
        if first not in (None, "A", "B"):
            raise ConfigError(f"--first must be A or B (got {first!r})")
        _check_backend(backend)
        request = DialogueRequest(
            condition=condition,
            model_a=model,
            model_b=model_b,
            max_turns=turns,
            seed=seed,
            temperature=temperature,
            max_tokens=max_tokens,
            stop_phrase=stop_phrase,
            token_budget=token_budget,
            opening=opening,
            first_speaker=first,  # type: ignore[arg-type]
            experiment=experiment,
            variables=_parse_vars(var or []),
            measures=MeasureOptions(
                prediction=PredictionOptions(self_predict, cross_predictor, reveal)
                if predict or self_predict or cross_predictor or reveal
                else None,
                coordination=CoordinationOptions(tuple(coordination)) if coordination else None,
                report_back=ReportOptions() if report_back else None,
            ),
        )
        console = Console(highlight=False)
        with Database.open(db) as database:
            outcome = anyio.run(run_live, database, request, console, backend=backend)
        if outcome is None:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if outcome.status == "failed" else 0

    raise typer.Exit(report_errors(go))


@app.command()
def batch(
    spec: Annotated[
        Path | None, typer.Argument(metavar="[SPEC]", help="Experiment spec (TOML), e.g. runs/smoke.toml.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(metavar="EXPERIMENT", help="Continue a stored experiment from its stored spec.")
    ] = None,
    retry_failed: Annotated[
        str | None,
        typer.Option(metavar="EXPERIMENT", help="Rerun only the failed dialogues of a stored experiment."),
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start a fresh experiment even if one of this name exists (name-2, ...).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (dialogues, model calls, tokens) and stop.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout at the end.")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(help="Dialogues in flight at once (overrides the spec).")] = None,
    grace: Annotated[float, typer.Option(help="After the first Ctrl-C, seconds to let turns in flight finish.")] = 60.0,
    progress_interval: Annotated[
        float, typer.Option(help="Without a terminal: seconds between progress lines.")
    ] = 10.0,
    lease: Annotated[
        float,
        typer.Option(
            help="Seconds a worker's claim on a dialogue lasts without a heartbeat; a killed worker's "
            "dialogues continue elsewhere after this."
        ),
    ] = 30.0,
    max_cost: Annotated[
        float | None,
        typer.Option(help="Stop at this many US dollars spent (overrides the spec's max_cost; raise it to resume)."),
    ] = None,
    max_tokens_total: Annotated[
        int | None, typer.Option(help="Stop at this many tokens used (overrides the spec's max_tokens_total).")
    ] = None,
    backend: Annotated[str, typer.Option(help="Async backend: asyncio or trio.", hidden=True)] = "asyncio",
    models_file: ModelsFileOption = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Run an experiment: every condition x replicate of a spec, many dialogues at once.

    Re-running the same spec resumes it exactly where it stopped. The first Ctrl-C lets the
    turns in flight finish; a second cancels them. Started on several hosts against one
    PostgreSQL database (--db postgresql://...), the workers share the experiment: each claims
    dialogues by lease, and a dead worker's dialogues continue on the others.
    """
    from clonechat.cli.batch import BatchArgs, batch_command

    def go() -> int:
        _check_backend(backend)
        registry = _use_registry(models_file)
        args = BatchArgs(
            spec=spec,
            resume=resume,
            retry_failed=retry_failed,
            new=new,
            dry_run=dry_run,
            as_json=as_json,
            concurrency=concurrency,
            grace=grace,
            progress_interval=progress_interval,
            db=db,
            backend=backend,
            lease_seconds=lease,
            max_cost=max_cost,
            max_tokens_total=max_tokens_total,
        )
        return batch_command(args, registry)

    raise typer.Exit(report_errors(go))


@app.command()
def score(
    experiment: Annotated[str | None, typer.Argument(help="Experiment name (see 'clonechat ls').")] = None,
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            "-s",
            help="Scorer to run (repeatable); default: every text scorer, surprisal and self_knowledge.",
        ),
    ] = None,
    judge: Annotated[str, typer.Option(help="Model that judges, for --scorer judge.")] = "local",
    list_scorers: Annotated[bool, typer.Option("--list", help="List the scorers and stop.")] = False,
    models_file: ModelsFileOption = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Score the predictions of a stored experiment.

    Adds score rows; never touches turns; re-running skips what is already scored."""
    from clonechat.cli.analysis import score_command, scorer_descriptions

    def go() -> int:
        if list_scorers:
            console = Console(highlight=False, soft_wrap=True)
            for name, description in scorer_descriptions():
                console.print(f"[bold]{name:<14}[/bold] {escape(description)}")
            return 0
        if experiment is None:
            raise ConfigError("name the experiment to score (see 'clonechat ls'), or use --list")
        return score_command(db, experiment, scorer or [], judge, _use_registry(models_file))

    raise typer.Exit(report_errors(go))


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see 'clonechat ls').")],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the report (default runs/reports/EXPERIMENT, or EXPERIMENT-vs-OTHER)."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="markdown (report.md with PNG plots) or html (one self-contained report.html)."),
    ] = "markdown",
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="Another experiment to put beside this one, measure by measure."),
    ] = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Write the experiment's report: Markdown and PNG plots, or one self-contained HTML page.

    Every figure comes with n, a 95% bootstrap CI, its chance baseline and its control; every
    comparison is corrected for multiplicity (the spec's primary measures with Holm, the rest
    with Benjamini-Hochberg)."""
    from clonechat.cli.analysis import report_command

    raise typer.Exit(report_errors(lambda: report_command(db, experiment, out, fmt, compare)))


@app.command("models")
def list_models(
    check: Annotated[
        bool, typer.Option("--check", help="Ask each model for one token and say whether it answers.")
    ] = False,
    models_file: ModelsFileOption = None,
) -> None:
    """List the models --model can name: built in, and from the registry files."""
    import os

    import anyio

    from clonechat.cli.models import check_all

    def go() -> int:
        registry = _use_registry(models_file)
        verdicts = anyio.run(check_all, registry) if check else {}
        table = Table(box=None, header_style="bold")
        for column in ("name", "provider", "model", "endpoint", "api key", "max conn", "defined in"):
            table.add_column(column)
        if check:
            table.add_column("check")
        for spec in registry.models.values():
            if spec.api_key_env:
                have = bool(os.environ.get(spec.api_key_env)) or spec.api_key_env in _dotenv_names()
                key = f"${spec.api_key_env} ({'set' if have else 'MISSING'})"
            else:
                key = "-"
            row = [
                spec.name,
                spec.provider,
                spec.model_id or spec.display_name,
                without_credentials(spec.base_url) if spec.base_url else "in-process",
                key,
                str(spec.max_connections) if spec.base_url else "-",
                spec.source,
            ]
            if check:
                row.append(verdicts.get(spec.name, ""))
            table.add_row(*row)
        Console().print(table)
        return 1 if any(not v.startswith("ok") for v in verdicts.values()) else 0

    raise typer.Exit(report_errors(go))


def _dotenv_names() -> set[str]:
    from dotenv import dotenv_values

    return {name for name, value in dotenv_values(".env").items() if value}


@app.command("ls")
def list_dialogues(
    experiment: Annotated[str | None, typer.Option(help="Only dialogues of this experiment.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 50,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """List stored dialogues, newest first.

    Turns are those of each dialogue's current conversation. Only reads: the file is never
    written, created or migrated."""
    from clonechat.read.connect import nothing_to_read, open_reader
    from clonechat.read.dialogues import dialogue_summaries
    from clonechat.read.spending import spending_by_experiment
    from clonechat.rendering import format_cost

    def go() -> None:
        if not db_location(db).exists():
            raise nothing_to_read(db)
        with open_reader(db) as reader:
            rows = [] if reader is None else dialogue_summaries(reader, experiment=experiment, limit=limit)
            every = {} if reader is None or not rows else spending_by_experiment(reader)
        spent = {name: every[name] for name in dict.fromkeys(r.experiment for r in rows) if name in every}
        if not rows:
            Console().print("no dialogues yet: start one with [bold]clonechat run[/bold]")
            return
        table = Table(box=None, header_style="bold")
        table.add_column("id", no_wrap=True, min_width=26)  # ids are copied: never cut them
        for column in ("experiment", "condition", "rep", "status", "turns", "models", "created (UTC)"):
            table.add_column(column)
        for r in rows:
            status = r.status + (f" ({r.stop_reason})" if r.stop_reason else "")
            models = r.model_a if r.model_a == r.model_b else f"{r.model_a} / {r.model_b}"
            table.add_row(
                r.id,
                r.experiment,
                r.condition,
                str(r.replicate),
                status,
                str(r.turns),
                models,
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        Console().print(table)
        for name, money in spent.items():
            if money.has_cost:
                Console(highlight=False).print(
                    f"[dim]experiment {escape(name)} spent {format_cost(money.cost_usd)} "
                    f"({money.tokens:,} tokens, {money.priced_calls:,} priced calls)[/dim]"
                )

    report_errors(go)


@app.command()
def workers(
    experiment: Annotated[str | None, typer.Argument(help="Only the workers of this experiment.")] = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """List the live batch workers: their host, dialogues and last heartbeat.

    A worker is live until it stops, or until its lease runs out after its last heartbeat (a
    killed worker's dialogues then continue on the others). Only reads."""
    from clonechat.read.connect import nothing_to_read, open_reader
    from clonechat.read.workers import live_workers

    def go() -> None:
        if not db_location(db).exists():
            raise nothing_to_read(db)
        with open_reader(db) as reader:
            rows = [] if reader is None else live_workers(reader, experiment)
        console = Console(highlight=False)
        if not rows:
            where = f" on experiment '{escape(experiment)}'" if experiment else ""
            console.print(f"no live workers{where}")
            return
        table = Table(box=None, header_style="bold")
        for column in ("worker", "experiment", "host", "pid", "heartbeat", "lease", "dialogues"):
            right = column in ("pid", "heartbeat", "lease")
            table.add_column(column, justify="right" if right else "left", no_wrap=column != "dialogues")
        for w in rows:
            held = ", ".join(d[:10] for d in w.dialogues)
            table.add_row(
                w.id[:10],
                escape(w.experiment),
                escape(w.host),
                str(w.pid),
                f"{w.silent_s:.1f}s ago",
                f"{w.lease_seconds:g}s",
                f"{len(w.dialogues)}/{w.concurrency}" + (f": {held}" if held else ""),
            )
        console.print(table)

    report_errors(go)


# -- sharing (clonechat/cli/sharing.py does the work, clonechat/share/ the logic) -----------------


@app.command()
def share(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see 'clonechat ls').")],
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="The archive to write (default runs/shares/EXPERIMENT.zip).")
    ] = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Write one zip archive to share an experiment with another researcher.

    It holds the HTML report, every row (JSONL), the spec, a datasheet and a manifest of
    checksums. API keys, passwords, tokens and local paths are taken out (the datasheet counts
    them). The same data shared twice gives the same bytes. Scores first, as 'report' does."""
    from clonechat.cli.sharing import share_command

    raise typer.Exit(report_errors(lambda: share_command(db, experiment, out)))


@app.command("import")
def import_shared(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A share archive (.zip) or a JSONL export.")],
    as_name: Annotated[
        str | None, typer.Option("--as", metavar="NAME", help="Import the experiment under this name.")
    ] = None,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Import a shared experiment (a share archive or a JSONL export) into the run database.

    The archive is verified first (manifest, checksums); rows keep their ids, so the report
    reproduces. Importing it again adds nothing; a name the database gives another experiment
    is refused (use --as)."""
    from clonechat.cli.sharing import import_command

    raise typer.Exit(report_errors(lambda: import_command(file, db, as_name)))


db_app = typer.Typer(help="Look after a run database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade_database(db: DbOption = DEFAULT_DB_TEXT) -> None:
    """Upgrade a database made by an older clonechat to this one's schema.

    One transaction. The display commands (ls, show, query, the TUI...) only read, so they
    refuse an older schema and point here; run, batch and score upgrade as they open it to write."""

    def go() -> None:
        from clonechat.read.connect import nothing_to_read, schema_state_of
        from clonechat.store.database import Database
        from clonechat.store.migrations import SCHEMA_VERSION

        location = db_location(db)
        state = schema_state_of(location)
        if state == (0, False) or not location.exists():
            raise nothing_to_read(location)  # never turn an empty or missing file into a database
        before = None if state is None else state[0]
        Database.open(location, create=False).close()
        if before == SCHEMA_VERSION:
            print(f"{location} is already at schema version {SCHEMA_VERSION}")
        else:
            print(f"upgraded {location} from schema version {before} to {SCHEMA_VERSION}")

    report_errors(go)


@app.command()
def show(
    dialogue_id: Annotated[str, typer.Argument(metavar="ID", help="Dialogue id (a unique prefix is enough).")],
    node: Annotated[
        str | None, typer.Option(help="Print the path ending at this node instead of the dialogue's head.")
    ] = None,
    prompts: Annotated[bool, typer.Option("--prompts", help="Also print both agents' system prompts.")] = False,
    db: DbOption = DEFAULT_DB_TEXT,
) -> None:
    """Print one dialogue: a path through its tree, with per-turn metadata.

    Only reads: the file is left exactly as it was."""
    from clonechat.cli.console import SPEAKER_STYLE, print_reasoning
    from clonechat.read.connect import open_existing
    from clonechat.read.dialogues import prompt_texts, resolve_dialogue
    from clonechat.read.paths import dialogue_path, node_record, path_to
    from clonechat.read.sides import group_by_anchor, side_nodes
    from clonechat.rendering import node_metadata

    def go() -> None:
        console = Console(highlight=False)
        with open_existing(db) as reader:
            dialogue = resolve_dialogue(reader, dialogue_id)
            path = path_to(reader, node) if node else dialogue_path(reader, dialogue)
            if node and path and path[0].dialogue_id != dialogue.id:
                raise ConfigError(f"node {node} belongs to another dialogue ({path[0].dialogue_id})")
            system = {"A": dialogue.system_prompt_a, "B": dialogue.system_prompt_b}
            texts = prompt_texts(reader, set(system.values())) if prompts else {}
            # Predictions are shown after the turn they predict; other side answers after the
            # node they were asked at (the opening for "before", the last turn for "after").
            after = group_by_anchor(side_nodes(reader, dialogue.id))
        status = dialogue.status + (f" ({dialogue.stop_reason})" if dialogue.stop_reason else "")
        console.print(f"[bold]dialogue {dialogue.id}[/bold]  {status}")
        console.print(
            f"[dim]models A={dialogue.model_a} B={dialogue.model_b} · replicate {dialogue.replicate} · "
            f"seed {dialogue.seed} · {dialogue.first_speaker} first · max {dialogue.max_turns} turns[/dim]"
        )
        if dialogue.error:
            console.print(f"[red]error: {escape(dialogue.error)}[/red]")
        if prompts:
            for name, prompt_hash in system.items():
                console.print(f"\n[bold]system prompt {name}[/bold]\n[dim]{escape(texts[prompt_hash])}[/dim]")
        for n in path:
            record = node_record(n)
            style = SPEAKER_STYLE.get(n.speaker, "bold")
            label = "opening" if n.kind == "opening" else f"turn {n.turn_index}"
            if n.speaker == "researcher" and n.variant:
                label += f", to {n.variant} only"  # a scheduled interjection
            console.print(f"\n[{style}]{n.speaker}[/{style}] [dim]{label} · {n.id}[/dim]")
            print_reasoning(console, record)
            console.print(escape(n.content))
            meta = node_metadata(record)
            if meta:
                console.print(f"[dim]{escape(meta)}[/dim]")
            for extra in after.get(n.id, []):
                _print_side(console, extra)

    report_errors(go)


def _print_side(console: Console, node: Node) -> None:
    """A side-channel answer, set apart from the conversation: no agent saw it."""
    from clonechat.cli.console import SPEAKER_STYLE

    style = SPEAKER_STYLE.get(node.speaker, "bold")
    if node.kind == "prediction":
        label = f"prediction ({node.variant}) of turn {node.turn_index}, by {node.speaker} · {node.model}"
    elif node.kind == "coordination":
        label = f"coordination {node.variant}"
    elif node.kind == "recognition":
        label = f"recognition: was the message of node {node.target_node_id} yours? (shown unlabelled)"
    else:
        label = "report to the researcher"
    console.print(f"  [{style}]{node.speaker}[/{style}] [dim]{escape(label)} · {node.id}[/dim]")
    console.print(f"  [dim]{escape(node.content)}[/dim]")


@app.command()
def tui(db: DbOption = DEFAULT_DB_TEXT) -> None:
    """Browse stored dialogues in a terminal UI (also what bare 'clonechat' opens)."""
    _open_tui(db)


def main() -> None:
    app()


__all__ = ["app", "main"]
