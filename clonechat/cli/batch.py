"""``clonechat batch``: run, resume or retry an experiment described by a spec file."""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clonechat.batch.budget import EXIT_BUDGET, Budget, BudgetGuard
from clonechat.batch.capacity import capacity_notes
from clonechat.batch.estimate import estimate
from clonechat.batch.progress import BatchProgress, PlainProgress, RichProgress
from clonechat.batch.runner import BatchControl, run_jobs
from clonechat.batch.spec import LoadedSpec, load_spec_file, parse_spec
from clonechat.batch.store import UNFINISHED, check_same_spec, provider_pool, store_plan
from clonechat.batch.worker import DEFAULT_LEASE_SECONDS, LeasedJobs
from clonechat.cli.analysis import run_self_knowledge, self_knowledge_line
from clonechat.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED
from clonechat.engine.events import fan_out
from clonechat.errors import ConfigError, ProviderError
from clonechat.location import DbLocation
from clonechat.read.experiments import experiment_counts, find_experiment, free_name, require_experiment
from clonechat.read.spending import experiment_spending
from clonechat.registry import Registry
from clonechat.rendering import format_cost
from clonechat.scoring.runner import score_text
from clonechat.store.database import Database
from clonechat.store.models import Experiment
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer


@dataclass(frozen=True)
class BatchArgs:
    spec: Path | None
    resume: str | None
    retry_failed: str | None
    new: bool
    dry_run: bool
    as_json: bool
    concurrency: int | None
    grace: float
    progress_interval: float
    db: DbLocation | str
    backend: str
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    #: Override the spec's budget (None: the spec's).
    max_cost: float | None = None
    max_tokens_total: int | None = None

    def budget(self, loaded: LoadedSpec) -> Budget:
        spec = loaded.spec
        return Budget(
            spec.max_cost if self.max_cost is None else self.max_cost,
            spec.max_tokens_total if self.max_tokens_total is None else self.max_tokens_total,
        )


def _mode(args: BatchArgs) -> str:
    given = [
        name
        for name, value in (("SPEC", args.spec), ("--resume", args.resume), ("--retry-failed", args.retry_failed))
        if value is not None
    ]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of SPEC, --resume EXPERIMENT or --retry-failed EXPERIMENT"
            + (f" (got {' and '.join(given)})" if given else "")
        )
    if args.new and args.spec is None:
        raise ConfigError("--new starts a fresh experiment from a SPEC file; it cannot be used with --resume")
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1 (got {args.concurrency})")
    if args.grace < 0:
        raise ConfigError(f"--grace must not be negative (got {args.grace})")
    if not args.lease_seconds > 0:
        raise ConfigError(f"--lease must be a positive number of seconds (got {args.lease_seconds:g})")
    if args.max_cost is not None and not args.max_cost > 0:
        raise ConfigError(f"--max-cost must be a positive number of US dollars (got {args.max_cost:g})")
    if args.max_tokens_total is not None and args.max_tokens_total < 1:
        raise ConfigError(f"--max-tokens-total must be at least 1 (got {args.max_tokens_total})")
    return given[0]


def _dollars(value: float | None) -> str:
    return "?" if value is None else format_cost(value)


def _total_cost(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def print_plan(loaded: LoadedSpec, console: Console, as_json: bool) -> None:
    rows = estimate(loaded)
    costs = _total_cost([r.cost_usd for r in rows])
    cached_costs = _total_cost([r.cost_usd_cached for r in rows])
    if as_json:
        plan = {
            "experiment": loaded.name,
            "spec_hash": loaded.canonical_hash,
            "concurrency": loaded.spec.concurrency,
            "conditions": [asdict(row) for row in rows],
            "dialogues": sum(r.dialogues for r in rows),
            "model_calls": sum(r.model_calls for r in rows),
            "output_tokens_max": sum(r.output_tokens for r in rows),
            "input_tokens_est": sum(r.input_tokens for r in rows),
            "cost_usd_max": costs,
            "cost_usd_max_cached": cached_costs,
        }
        print(json.dumps(plan, indent=2))
        return
    priced = any(r.cost_usd is not None for r in rows)
    table = Table(
        title=f"plan for experiment '{escape(loaded.name)}'", title_justify="left", box=None, header_style="bold"
    )
    columns = [
        "condition",
        "template",
        "model A",
        "model B",
        "dialogues",
        "turns",
        "max tok/turn",
        "model calls ≤",
        "output tok ≤",
        "input tok ≈",
    ]
    if priced:
        columns += ["cost ≤", "with caching ≤"]
    for column in columns:
        left = column in ("condition", "template", "model A", "model B")
        table.add_column(column, justify="left" if left else "right")
    for r in rows:
        cells = [
            escape(r.condition),
            r.template,
            r.model_a,
            r.model_b,
            str(r.dialogues),
            str(r.max_turns),
            str(r.max_tokens),
            f"{r.model_calls:,}",
            f"{r.output_tokens:,}",
            f"{r.input_tokens:,}",
        ]
        table.add_row(*cells, *([_dollars(r.cost_usd), _dollars(r.cost_usd_cached)] if priced else []))
    totals = [
        "[bold]total[/bold]",
        "",
        "",
        "",
        str(sum(r.dialogues for r in rows)),
        "",
        "",
        f"{sum(r.model_calls for r in rows):,}",
        f"{sum(r.output_tokens for r in rows):,}",
        f"{sum(r.input_tokens for r in rows):,}",
    ]
    table.add_row(*totals, *([_dollars(costs), _dollars(cached_costs)] if priced else []), style="bold")
    console.print(table)
    console.print(
        f"[dim]{loaded.spec.concurrency} dialogues in flight at once. Upper bounds: every dialogue runs all its "
        "turns and every turn uses its whole max_tokens; input is counted at ~4 characters a token, before any "
        "KV-cache reuse. Dry run: nothing was run or written.[/dim]"
    )
    if priced:
        unpriced = sorted({m for r in rows if r.cost_usd is None for m in (r.model_a, r.model_b)})
        console.print(
            "[dim]Cost in US dollars from the models' prices; 'with caching' bills each turn's earlier prompt at the "
            "cache-read rate and the new messages at the cache-write rate (docs in clonechat/batch/estimate.py)."
            + (f" No prices for: {', '.join(unpriced)} ('?')." if unpriced else "")
            + "[/dim]"
        )
    budget = loaded.spec.max_cost
    if budget is not None and costs is not None and costs > budget:
        console.print(
            f"[yellow]note:[/yellow] the upper bound {format_cost(costs)} is above max_cost {format_cost(budget)}: "
            "the run stops when the budget is reached"
        )


def _stored_spec(db: Database, name: str, registry: Registry) -> tuple[Experiment, LoadedSpec]:
    experiment = require_experiment(db, name)
    if experiment.spec is None:
        raise ConfigError(f"experiment '{name}' in {db.path} was not started from a spec, so it cannot be resumed")
    return experiment, parse_spec(experiment.spec, f"{db.path} [experiment {name}]", registry=registry)


async def _stop_on_signals(control: BatchControl, grace: float, console: Console) -> None:
    """First Ctrl-C (or SIGTERM): finish the turns in flight, start nothing new, and cancel
    whatever is still running after ``grace`` seconds. A second: cancel now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            async for _ in signals:
                if control.stopping.is_set():
                    console.print("[yellow]cancelling the turns in flight now[/yellow]")
                    control.cancel()
                    tg.cancel_scope.cancel()
                    return
                console.print(
                    f"[yellow]stopping: letting the turns in flight finish (at most {grace:g} s); "
                    "Ctrl-C again to cancel them now. Resume later with the same command.[/yellow]"
                )
                control.stop()

                async def cancel_after_grace() -> None:
                    await anyio.sleep(grace)
                    console.print(f"[yellow]grace period of {grace:g} s over: cancelling the turns in flight[/yellow]")
                    control.cancel()

                tg.start_soon(cancel_after_grace)


@dataclass(frozen=True)
class BatchResult:
    experiment: str
    experiment_id: str
    created: bool
    progress: BatchProgress
    jobs: int
    stopped: bool
    #: Dialogues whose lease this worker lost (another worker continues them).
    lost: int = 0
    #: Why it stopped at its budget (None: it did not).
    budget_reached: str | None = None
    #: Per endpoint: 429 responses and seconds paced by rate-limit headers (ProviderPool.rate_limits).
    rate_limits: dict[str, dict[str, float]] = field(default_factory=dict)


async def execute(
    db: Database,
    loaded: LoadedSpec,
    *,
    name: str,
    experiment_id: str | None,
    statuses: tuple[str, ...],
    concurrency: int,
    grace: float,
    console: Console,
    plain_interval: float | None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    budget: Budget | None = None,
) -> BatchResult:
    """Store the plan if ``experiment_id`` is None, then run every dialogue in ``statuses``
    (none once ``budget`` is spent)."""
    registry, pool = provider_pool(loaded)
    try:
        async with open_writer(db) as writer:
            created = False
            if experiment_id is None:
                plan = await writer.call(lambda conn: store_plan(conn, loaded, name))
                experiment_id, created = plan.experiment_id, plan.created
                if not created:
                    # Another worker stored it a moment ago: join it, if it is the same spec.
                    stored = await anyio.to_thread.run_sync(lambda: require_experiment(db, name))
                    check_same_spec(db, stored, loaded)
                    console.print(f"joining experiment '{escape(name)}' (another worker stored its plan)")
            eid = experiment_id
            progress = BatchProgress(loads=pool.loads)
            control = BatchControl()
            budget = budget or Budget()
            spent = await anyio.to_thread.run_sync(lambda: experiment_spending(db, eid))

            def stop_at_budget(reason: str) -> None:
                console.print(
                    f"[yellow]budget reached: {escape(reason)}; letting the turns in flight finish, starting nothing "
                    "new. Resume with a higher budget.[/yellow]",
                    highlight=False,
                )
                control.stop()

            guard = BudgetGuard(budget, spent, stop_at_budget)
            if guard.reason is not None:
                console.print(
                    f"[yellow]budget already reached: {escape(guard.reason)}; nothing run. Raise max_cost / "
                    "max_tokens_total (or --max-cost / --max-tokens-total) to go on.[/yellow]",
                    highlight=False,
                )
                return BatchResult(name, eid, created, progress, 0, False, budget_reached=guard.reason)
            source = LeasedJobs(
                db,
                writer,
                eid,
                statuses,
                pool,
                registry,
                concurrency=concurrency,
                lease_seconds=lease_seconds,
                progress=progress,
                stopping=control.stopping,
                say=lambda line: console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False),
            )
            await source.start()
            await source.refresh_totals()
            notes = await anyio.to_thread.run_sync(
                lambda: capacity_notes(loaded.conditions, _planned_conditions(loaded), concurrency, pool)
            )
            for note in notes:
                console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
            title = f"experiment {name}"
            view = (
                PlainProgress(progress, console, title, plain_interval)
                if plain_interval is not None
                else RichProgress(progress, console, title)
            )
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_stop_on_signals, control, grace, console)
                    tg.start_soon(source.heartbeat)
                    tg.start_soon(view.show)
                    emit = fan_out(Recorder(writer), progress, guard)
                    await run_jobs(source, concurrency=concurrency, emit=emit, control=control)
                    await source.refresh_totals()  # the last progress line shows the experiment as it ends
                    tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await source.close()
    finally:
        rate_limits = pool.rate_limits()  # before aclose forgets the endpoints
        with anyio.CancelScope(shield=True):
            await pool.aclose()
    stopped_by_user = control.stopped and guard.reason is None
    return BatchResult(
        name,
        eid,
        created,
        progress,
        len(source.claimed),
        stopped_by_user,
        lost=len(source.lost),
        budget_reached=guard.reason,
        rate_limits=rate_limits,
    )


def _planned_conditions(loaded: LoadedSpec) -> list[str]:
    """Each planned dialogue's condition (what the capacity notes weigh the endpoints by)."""
    return [planned.condition for planned in loaded.dialogues()]


def _summary(db: Database, result: BatchResult, exit_code: int) -> dict[str, Any]:
    counts = experiment_counts(db, result.experiment_id)
    totals: dict[str, int] = {}
    for entry in counts.values():
        for status, n in entry.by_status.items():
            totals[status] = totals.get(status, 0) + n
    return {
        "experiment": result.experiment,
        "experiment_id": result.experiment_id,
        "database": str(db.path),
        "created": result.created,
        "stopped_by_user": result.stopped,
        "budget_reached": result.budget_reached,
        "spent": asdict(experiment_spending(db, result.experiment_id)),
        "exit_code": exit_code,
        "dialogues": {"total": sum(c.dialogues for c in counts.values()), **totals},
        "conditions": {name: {"dialogues": c.dialogues, "turns": c.turns, **c.by_status} for name, c in counts.items()},
        "this_run": {
            "dialogues": result.jobs,
            **result.progress.summary(),
            "rate_limited": {url: dict(counts) for url, counts in result.rate_limits.items()},
        },
    }


def _print_summary(summary: dict[str, Any], console: Console) -> None:
    d = summary["dialogues"]
    parts = [f"{d.get(s, 0)} {s}" for s in ("completed", "failed", "interrupted", "pending") if d.get(s)]
    run = summary["this_run"]
    console.print(
        f"experiment {escape(summary['experiment'])}: {d['total']} dialogues ({', '.join(parts) or 'none'}) · "
        f"this run: {run['turns_this_run']} turns in {run['elapsed_s']:.1f} s · {escape(summary['database'])}",
        highlight=False,
    )
    limited = {url: c for url, c in run.get("rate_limited", {}).items() if c["429"] or c["paced_s"]}
    if limited:
        console.print(
            "rate limits this run: "
            + "; ".join(
                f"{escape(url)}: {c['429']} × HTTP 429, paced {c['paced_s']:.1f} s" for url, c in limited.items()
            ),
            highlight=False,
        )
    if d.get("failed"):
        console.print(
            f"[red]{d['failed']} dialogue(s) failed[/red]: rerun them with "
            f"[bold]clonechat batch --retry-failed {escape(summary['experiment'])}[/bold]"
        )
    spent = summary["spent"]
    if spent["priced_calls"]:
        console.print(f"spent so far: {format_cost(spent['cost_usd'])} · {spent['tokens']:,} tokens", highlight=False)
    if summary["budget_reached"]:
        console.print(
            f"[yellow]stopped at the budget[/yellow] ({escape(summary['budget_reached'])}): go on with "
            f"[bold]clonechat batch --resume {escape(summary['experiment'])} --max-cost N[/bold] "
            "(or a higher max_cost / max_tokens_total in the spec)"
        )
    elif summary["stopped_by_user"] or d.get("interrupted") or d.get("pending"):
        console.print(
            f"[yellow]unfinished dialogues remain[/yellow]: continue with "
            f"[bold]clonechat batch --resume {escape(summary['experiment'])}[/bold]"
        )


def _console(*, stderr: bool = False) -> Console:
    """A console; one writing to a log or pipe gets wide lines instead of rich's 80 columns."""
    console = Console(stderr=stderr, highlight=False)
    return console if console.is_terminal else Console(stderr=stderr, highlight=False, width=160)


def batch_command(args: BatchArgs, registry: Registry) -> int:
    mode = _mode(args)
    stdout = _console()
    # With --json, stdout carries only the summary; progress goes to stderr.
    console = _console(stderr=True) if args.as_json else stdout
    if mode == "SPEC":
        assert args.spec is not None
        loaded = load_spec_file(args.spec, registry=registry, need_keys=not args.dry_run)
        if args.dry_run:
            print_plan(loaded, stdout, args.as_json)
            return 0
    elif args.dry_run:
        raise ConfigError("--dry-run shows the plan of a SPEC file; with --resume, use 'clonechat ls' to see progress")

    with Database.open(args.db, create=mode == "SPEC") as db:
        experiment_id: str | None = None
        statuses: tuple[str, ...] = UNFINISHED
        if mode == "SPEC":
            name = loaded.name
            existing = find_experiment(db, name)
            if existing is not None and args.new:
                name = free_name(db, name)
                console.print(f"starting a fresh experiment '{escape(name)}' ('{escape(loaded.name)}' exists)")
            elif existing is not None:
                check_same_spec(db, existing, loaded)
                experiment_id = existing.id
                console.print(f"resuming experiment '{escape(name)}' from {escape(str(db.path))}")
        else:
            name = args.resume or args.retry_failed or ""
            existing, loaded = _stored_spec(db, name, registry)
            experiment_id = existing.id
            if mode == "--retry-failed":
                statuses = ("failed",)
        plain = None if console.is_terminal else args.progress_interval
        result = anyio.run(
            lambda: execute(
                db,
                loaded,
                name=name,
                experiment_id=experiment_id,
                statuses=statuses,
                concurrency=args.concurrency or loaded.spec.concurrency,
                grace=args.grace,
                console=console,
                plain_interval=plain,
                lease_seconds=args.lease_seconds,
                budget=args.budget(loaded),
            ),
            backend=args.backend,
        )
        summary = _summary(db, result, 0)
        # The text scorers cost microseconds a prediction: score whatever is new right away, so
        # `clonechat report` has figures without a separate step (idempotent on re-runs).
        scored = score_text(db, result.experiment_id)
        summary["scores"] = {"predictions": scored.predictions, "new": scored.new_scores}
        if any(c.blueprint.request.measures.self_knowledge for c in loaded.conditions) and not result.stopped:
            # The self-knowledge log-probs need the models again: worth it, as the run's own figures.
            known = Registry(loaded.models)
            console.print("scoring self-knowledge: each new turn's log-probability under three contexts …")
            try:
                knowledge = anyio.run(run_self_knowledge, db, result.experiment_id, known, backend=args.backend)
            except ProviderError as exc:
                # The turns are stored; what is scored is kept (rows are written per turn).
                _console(stderr=True).print(
                    f"[red]error: self-knowledge not finished: {escape(str(exc))}; finish it with "
                    f"clonechat score {escape(name or loaded.name)} --scorer self_knowledge[/red]",
                    soft_wrap=True,
                )
                summary["scores"]["self_knowledge_error"] = str(exc)
            else:
                summary["scores"]["self_knowledge"] = knowledge.new_scores
                console.print(escape(self_knowledge_line(knowledge)))
    failed = summary["dialogues"].get("failed", 0)
    unfinished = sum(summary["dialogues"].get(status, 0) for status in UNFINISHED)
    if not unfinished:
        summary["budget_reached"] = None  # the experiment finished as the budget ran out: nothing stopped
    exit_code = (
        EXIT_INTERRUPTED
        if result.stopped
        else EXIT_BUDGET
        if summary["budget_reached"]
        else EXIT_FAILED
        if failed
        else 0
    )
    summary["exit_code"] = exit_code
    if args.as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_summary(summary, console)
    return exit_code
