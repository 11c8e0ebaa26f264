"""Running many dialogues at once: a fixed pool of workers under one global limit.

Each worker takes the next dialogue from a queue and runs it to its end; per-endpoint limits
live in the providers (one adaptive limiter per base URL, one slot for the embedded model), so
the global limit only says how many dialogues may be in flight. Workers (not one task per
dialogue) keep memory flat however long the plan is.

Stopping has two strengths, both leaving the store consistent: ``stop()`` lets every turn in
flight finish and be stored, starts no new turn and no new dialogue, and marks the dialogues it
interrupted ``interrupted``/``stopped``; ``cancel()`` abandons turns in flight at once (their
partial text is never stored) and marks them ``interrupted``/``cancelled``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import anyio
import anyio.lowlevel

from clonechat.batch.store import DialogueJob
from clonechat.engine.dialogue import DialogueOutcome, run_dialogue
from clonechat.engine.events import EventSink

#: Workers started per pass of the event loop.
START_GROUP = 32
#: Allocations between young-generation collections while a batch runs (Python's default: 700).
BATCH_GC_THRESHOLD = 20_000


@contextmanager
def _batch_gc() -> Iterator[None]:
    """Collect garbage less often while a batch runs. A batch makes many small objects per turn
    (records, views, events) that mostly live as long as their dialogue, and the default
    thresholds spent 15-20% of a large scripted batch in collections (measured with
    benchmarks/batch.py). Objects alive at the start (the loaded plan) are frozen out of
    collection; both settings are restored afterwards."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(BATCH_GC_THRESHOLD, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


class BatchControl:
    """The handle a CLI, a TUI or a test uses to stop a running batch."""

    def __init__(self) -> None:
        self.stopping = anyio.Event()
        self.scope = anyio.CancelScope()

    def stop(self) -> None:
        """Finish the turns in flight, start nothing new."""
        self.stopping.set()

    def cancel(self) -> None:
        """Abandon the turns in flight now."""
        self.scope.cancel()

    @property
    def stopped(self) -> bool:
        return self.stopping.is_set() or self.scope.cancel_called


class JobSource(Protocol):
    """Where a batch's dialogues come from: a fixed list (:class:`ListedJobs`), or claims on a
    shared experiment (:class:`clonechat.batch.worker.LeasedJobs`)."""

    async def next_job(self) -> DialogueJob | None:
        """The next dialogue to run, waiting if others may still become free; None: no more."""
        ...

    def started(self, job: DialogueJob, scope: anyio.CancelScope) -> None:
        """``job`` is running under ``scope`` (cancelling it abandons that dialogue alone)."""
        ...

    async def finished(self, job: DialogueJob) -> None:
        """``job`` ended (or was abandoned); called on the way out, even when cancelled."""
        ...


class ListedJobs:
    """A fixed list of jobs, each run once."""

    def __init__(self, jobs: Sequence[DialogueJob]) -> None:
        self._jobs = list(reversed(jobs))

    async def next_job(self) -> DialogueJob | None:
        return self._jobs.pop() if self._jobs else None

    def started(self, job: DialogueJob, scope: anyio.CancelScope) -> None:
        pass

    async def finished(self, job: DialogueJob) -> None:
        pass


async def run_jobs(
    jobs: Sequence[DialogueJob] | JobSource, *, concurrency: int, emit: EventSink, control: BatchControl
) -> dict[str, DialogueOutcome]:
    """Run ``jobs`` with at most ``concurrency`` dialogues in flight; returns the outcome of
    each dialogue that ended (an interrupted one has none if it was cancelled mid-turn)."""
    outcomes: dict[str, DialogueOutcome] = {}
    source: JobSource = ListedJobs(jobs) if isinstance(jobs, Sequence) else jobs
    workers = min(concurrency, len(jobs)) if isinstance(jobs, Sequence) else concurrency

    async def worker() -> None:
        while not control.stopping.is_set():
            job = await source.next_job()
            if job is None or control.stopping.is_set():
                if job is not None:
                    await source.finished(job)
                return
            p = job.prepared
            try:
                with anyio.CancelScope() as scope:
                    source.started(job, scope)
                    outcomes[job.dialogue_id] = await run_dialogue(
                        p.settings, p.agents, p.path, emit, stop=control.stopping
                    )
            finally:
                with anyio.CancelScope(shield=True):
                    await source.finished(job)

    with control.scope, _batch_gc():
        async with anyio.create_task_group() as tg:
            for index in range(workers):
                if index and index % START_GROUP == 0:
                    # Let each group reach its first model call before starting the next, so a
                    # thousand first requests do not all run in one pass of the event loop.
                    await anyio.lowlevel.checkpoint()
                tg.start_soon(worker)
    return outcomes
