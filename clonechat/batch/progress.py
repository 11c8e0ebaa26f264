"""Batch progress: an engine-event consumer that counts, and two ways of showing the counts.

``BatchProgress`` only counts (cheap enough to see every event of a thousand dialogues);
``RichProgress`` redraws a per-condition table a few times a second on a terminal, and
``PlainProgress`` prints one line every so often for logs (CI, nohup). Neither the engine nor
the store knows they exist.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from clonechat.batch.store import DialogueJob
from clonechat.engine.events import DialogueEnded, DialogueStarted, Event, NodeCompleted
from clonechat.providers.base import ProviderLoad
from clonechat.read.workers import ExperimentTotals

#: Seconds of history the turn rate (and so the ETA) is computed over.
RATE_WINDOW = 30.0


@dataclass
class ConditionProgress:
    name: str
    #: Dialogues this run set out to run, and of those: finished, in flight, failed, stopped.
    total: int = 0
    done: int = 0
    running: int = 0
    failed: int = 0
    interrupted: int = 0
    #: Turns stored by this run, and at most how many remain (a stop phrase may end sooner).
    turns: int = 0
    turns_left: int = 0


@dataclass
class FailedDialogue:
    dialogue_id: str
    condition: str
    error: str


@dataclass
class BatchProgress:
    """Counts per condition, fed by engine events."""

    conditions: dict[str, ConditionProgress] = field(default_factory=dict)
    failures: list[FailedDialogue] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    #: Requests in flight and queued per backend, read when the progress is shown.
    loads: Callable[[], Sequence[ProviderLoad]] | None = None
    #: The whole experiment, every worker on every host (refreshed with the heartbeat).
    experiment: ExperimentTotals | None = None
    _condition_of: dict[str, str] = field(default_factory=dict)
    _turns_left_of: dict[str, int] = field(default_factory=dict)
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    @classmethod
    def for_jobs(
        cls, jobs: Iterable[DialogueJob], loads: Callable[[], Sequence[ProviderLoad]] | None = None
    ) -> BatchProgress:
        progress = cls(loads=loads)
        for job in jobs:
            progress.add_job(job)
        return progress

    def add_job(self, job: DialogueJob) -> None:
        """Count a dialogue this process runs (a worker adds each one as it claims it)."""
        entry = self.conditions.setdefault(job.condition, ConditionProgress(job.condition))
        entry.total += 1
        done = sum(1 for node in job.prepared.path if node.kind == "turn")
        left = max(0, job.prepared.settings.max_turns - done)
        entry.turns_left += left
        self._condition_of[job.dialogue_id] = job.condition
        self._turns_left_of[job.dialogue_id] = left

    async def __call__(self, event: Event) -> None:
        if isinstance(event, NodeCompleted):
            if event.node.kind == "turn":
                dialogue_id = event.node.dialogue_id
                entry = self.conditions[self._condition_of[dialogue_id]]
                entry.turns += 1
                if self._turns_left_of[dialogue_id] > 0:
                    self._turns_left_of[dialogue_id] -= 1
                    entry.turns_left -= 1
        elif isinstance(event, DialogueStarted):
            self.conditions[self._condition_of[event.dialogue_id]].running += 1
        elif isinstance(event, DialogueEnded):
            entry = self.conditions[self._condition_of[event.dialogue_id]]
            entry.running -= 1
            # Whatever the plan still allowed this dialogue will not run in this batch (it
            # stopped early, failed, or was interrupted).
            entry.turns_left -= self._turns_left_of[event.dialogue_id]
            self._turns_left_of[event.dialogue_id] = 0
            if event.status == "completed":
                entry.done += 1
            elif event.status == "failed":
                entry.failed += 1
                self.failures.append(FailedDialogue(event.dialogue_id, entry.name, event.error or "unknown error"))
            else:
                entry.interrupted += 1

    @property
    def turns(self) -> int:
        return sum(c.turns for c in self.conditions.values())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def sample(self) -> None:
        """Record the turn count now, for the rate over the recent window."""
        now = time.monotonic()
        self._samples.append((now, self.turns))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()

    def rate(self, condition: str | None = None) -> float:
        """Turns per second over the recent window (whole run if no samples yet)."""
        if condition is not None:
            entry = self.conditions[condition]
            return entry.turns / self.elapsed if self.elapsed > 0 else 0.0
        if len(self._samples) >= 2:
            (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
            if t1 > t0:
                return (n1 - n0) / (t1 - t0)
        return self.turns / self.elapsed if self.elapsed > 0 else 0.0

    def eta(self, condition: str | None = None) -> float | None:
        left = (
            self.conditions[condition].turns_left
            if condition is not None
            else sum(c.turns_left for c in self.conditions.values())
        )
        if left == 0:
            # Dialogues still running with every turn taken are asking their closing questions
            # (coordination, reports-back), which the turn rate cannot time: unknown, not zero.
            running = (
                self.conditions[condition].running
                if condition is not None
                else sum(c.running for c in self.conditions.values())
            )
            return None if running else 0.0
        rate = self.rate(condition)
        return left / rate if rate > 0 else None

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed
        return {
            "turns_this_run": self.turns,
            "elapsed_s": round(elapsed, 3),
            "turns_per_s": round(self.turns / elapsed, 2) if elapsed > 0 else None,
            "failures": [f.__dict__ for f in self.failures],
        }


def requests_summary(progress: BatchProgress) -> str:
    """Per backend, requests being served and waiting: "8 running" dialogues may be 8 requests
    on a server, or 1 being generated and 7 queued behind it."""
    if progress.loads is None:
        return ""
    return "; ".join(
        f"{load.label}: {load.in_flight} in flight, {load.queued} queued (limit {load.limit})"
        for load in progress.loads()
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return str(timedelta(seconds=round(seconds)))


def progress_table(progress: BatchProgress, title: str) -> Table:
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in ("condition", "done", "running", "failed", "stopped", "turns", "turns/s", "ETA"):
        table.add_column(column, justify="left" if column == "condition" else "right")
    for entry in progress.conditions.values():
        table.add_row(
            escape(entry.name),
            f"{entry.done}/{entry.total}",
            str(entry.running),
            f"[red]{entry.failed}[/red]" if entry.failed else "0",
            str(entry.interrupted),
            str(entry.turns),
            f"{progress.rate(entry.name):.1f}",
            _duration(progress.eta(entry.name)),
        )
    total = sum(c.total for c in progress.conditions.values())
    done = sum(c.done for c in progress.conditions.values())
    table.add_row(
        "[bold]all[/bold]",
        f"{done}/{total}",
        str(sum(c.running for c in progress.conditions.values())),
        str(len(progress.failures)),
        str(sum(c.interrupted for c in progress.conditions.values())),
        str(progress.turns),
        f"{progress.rate():.1f}",
        _duration(progress.eta()),
        style="bold",
    )
    return table


def experiment_summary(progress: BatchProgress) -> str:
    """The whole experiment across workers: "experiment: 40/120 done, 3 workers"."""
    totals = progress.experiment
    if totals is None:
        return ""
    done = totals.count(("completed",))
    failed = totals.count(("failed",))
    workers = f"{totals.workers} worker{'s' if totals.workers != 1 else ''}"
    return f"experiment: {done}/{totals.dialogues} done, {failed} failed, {workers}"


def progress_line(progress: BatchProgress, title: str) -> str:
    conditions = progress.conditions.values()
    total = sum(c.total for c in conditions)
    done = sum(c.done for c in conditions)
    running = sum(c.running for c in conditions)
    requests = requests_summary(progress)
    whole = experiment_summary(progress)
    return (
        f"{time.strftime('%H:%M:%S')} {title}: {done}/{total} dialogues done, {running} running, "
        f"{len(progress.failures)} failed · {progress.turns} turns · {progress.rate():.1f} turns/s · "
        f"ETA {_duration(progress.eta())}"
        + (f" · {whole}" if whole else "")
        + (f" · requests {requests}" if requests else "")
    )


class _View:
    def __init__(self, progress: BatchProgress, console: Console, title: str) -> None:
        self.progress = progress
        self.console = console
        self.title = title
        self._shown_failures = 0

    def _print_new_failures(self, console: Console) -> None:
        """Each new failure's reason, on stderr (progress stays on ``console``). Under a live
        table rich stands in for ``sys.stderr``: a terminal gets the line through it (above the
        table), a file or pipe gets it directly."""
        new = self.progress.failures[self._shown_failures :]
        if not new:
            return
        real = getattr(sys.stderr, "rich_proxied_file", sys.stderr)
        errors = Console(file=sys.stderr if real.isatty() else real, highlight=False, soft_wrap=True)
        for failure in new:
            errors.print(
                f"[red]dialogue {failure.dialogue_id} ({escape(failure.condition)}) failed:[/red] "
                f"{escape(failure.error)}"
            )
        self._shown_failures = len(self.progress.failures)


class RichProgress(_View):
    """A live per-condition table on a terminal."""

    def _render(self) -> RenderableType:
        table = progress_table(self.progress, self.title)
        # Under the table, not its caption: a caption wraps at the table's width.
        requests = requests_summary(self.progress)
        texts = (experiment_summary(self.progress), f"requests · {requests}" if requests else "")
        lines = [Text(text, style="dim", no_wrap=True, overflow="ellipsis") for text in texts if text]
        return Group(table, *lines) if lines else table

    async def show(self) -> None:
        """Redraw until cancelled."""
        with Live(self._render(), console=self.console, auto_refresh=False, transient=False) as live:
            try:
                while True:
                    self.progress.sample()
                    self._print_new_failures(live.console)
                    live.update(self._render(), refresh=True)
                    await anyio.sleep(0.25)
            finally:
                self._print_new_failures(live.console)
                live.update(self._render(), refresh=True)


class PlainProgress(_View):
    """A line every ``interval`` seconds, and one per failure, for logs."""

    def __init__(self, progress: BatchProgress, console: Console, title: str, interval: float) -> None:
        super().__init__(progress, console, title)
        self.interval = interval

    async def show(self) -> None:
        """Print until cancelled, then a last line."""
        last_line = time.monotonic()
        try:
            while True:
                await anyio.sleep(min(1.0, self.interval))
                self.progress.sample()
                self._print_new_failures(self.console)
                if time.monotonic() - last_line >= self.interval:
                    self.console.print(
                        progress_line(self.progress, self.title), highlight=False, markup=False, soft_wrap=True
                    )
                    last_line = time.monotonic()
        finally:
            self._print_new_failures(self.console)
            self.console.print(progress_line(self.progress, self.title), highlight=False, markup=False, soft_wrap=True)
