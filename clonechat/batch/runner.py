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


async def run_jobs(
    jobs: Sequence[DialogueJob], *, concurrency: int, emit: EventSink, control: BatchControl
) -> dict[str, DialogueOutcome]:
    """Run ``jobs`` with at most ``concurrency`` dialogues in flight; returns the outcome of
    each dialogue that ended (an interrupted one has none if it was cancelled mid-turn)."""
    outcomes: dict[str, DialogueOutcome] = {}
    send, receive = anyio.create_memory_object_stream[DialogueJob](max_buffer_size=max(1, len(jobs)))
    for job in jobs:
        send.send_nowait(job)
    send.close()

    async def worker() -> None:
        async for job in receive:
            if control.stopping.is_set():
                return
            p = job.prepared
            outcomes[job.dialogue_id] = await run_dialogue(p.settings, p.agents, p.path, emit, stop=control.stopping)

    with control.scope, _batch_gc():
        async with anyio.create_task_group() as tg:
            for index in range(min(concurrency, len(jobs))):
                if index and index % START_GROUP == 0:
                    # Let each group reach its first model call before starting the next, so a
                    # thousand first requests do not all run in one pass of the event loop.
                    await anyio.lowlevel.checkpoint()
                tg.start_soon(worker)
    receive.close()
    return outcomes
