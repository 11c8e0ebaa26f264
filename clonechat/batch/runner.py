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

from collections.abc import Sequence

import anyio

from clonechat.batch.store import DialogueJob
from clonechat.engine.dialogue import DialogueOutcome, run_dialogue
from clonechat.engine.events import EventSink


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

    with control.scope:
        async with anyio.create_task_group() as tg:
            for _ in range(min(concurrency, len(jobs))):
                tg.start_soon(worker)
    receive.close()
    return outcomes
