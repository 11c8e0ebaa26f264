"""The single writer: one task owns every write to the database and commits in small batches.

Producers hand it write functions; it drains whatever has queued up (up to ``max_batch``),
runs them in one ``BEGIN IMMEDIATE`` transaction in a worker thread, and moves on. Batching
amortises the commit cost when hundreds of dialogues are in flight, while a lone dialogue still
sees each turn committed within milliseconds. On shutdown (including cancellation) it drains
the queue before returning, so every turn handed to it is stored.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from clonechat.engine.records import NodeRecord
from clonechat.errors import StoreError
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.store.leases import Fence
from clonechat.store.turn_metrics import MetricsTracker

T = TypeVar("T")
WriteFunction = Callable[[Connection], Any]


@dataclass
class _Job:
    fn: WriteFunction | None
    done: anyio.Event | None = None
    result: Any = None
    error: BaseException | None = field(default=None)
    #: A node write: kept as data so consecutive ones commit as one multi-row insert.
    nodes: Sequence[NodeRecord] = ()
    #: The dialogue a function job writes to, if any: a leased one is fenced (see ``Fence``).
    dialogue_id: str | None = None

    def dialogues(self) -> set[str]:
        ids = {node.dialogue_id for node in self.nodes}
        if self.dialogue_id is not None:
            ids.add(self.dialogue_id)
        return ids


def _reason(error: BaseException) -> str:
    """One line: the database's own message, without SQLAlchemy's SQL echo and links."""
    original = getattr(error, "orig", None)
    return str(original if original is not None else error).splitlines()[0]


class StoreWriter:
    def __init__(self, db: Database, *, max_batch: int = 512) -> None:
        self.db = db
        self.max_batch = max_batch
        self._send: MemoryObjectSendStream[_Job]
        self._receive: MemoryObjectReceiveStream[_Job]
        self._send, self._receive = anyio.create_memory_object_stream[_Job](max_buffer_size=math.inf)
        self._failure: StoreError | None = None
        self.committed_batches = 0
        #: Path states for turn metrics; used only in the commit thread, one batch at a time.
        self.metrics = MetricsTracker()
        #: A batch worker's leases: writes to a leased dialogue are checked against it in their
        #: own transaction, and dropped if the lease was lost (None: no leases, write everything).
        self.fence: Fence | None = None

    async def submit(self, fn: WriteFunction, *, dialogue_id: str | None = None) -> None:
        """Queue a write; it commits soon, in order with every other write. ``dialogue_id``
        names the dialogue it writes to, so a lost lease stops it."""
        self._raise_if_failed()
        await self._send.send(_Job(fn, dialogue_id=dialogue_id))

    def submit_nodes(self, nodes: Sequence[NodeRecord]) -> None:
        """Queue finished nodes; a conversation node also becomes its dialogue's head, in the same
        transaction. Never blocks (the queue is unbounded), so it costs a turn no scheduling."""
        self._raise_if_failed()
        self._send.send_nowait(_Job(None, nodes=nodes))

    async def call(self, fn: Callable[[Connection], T], *, dialogue_id: str | None = None) -> T:
        """Run a write and wait until it has committed; return its result (``None`` if it was
        fenced: ``dialogue_id``'s lease was lost)."""
        self._raise_if_failed()
        job = _Job(fn, done=anyio.Event(), dialogue_id=dialogue_id)
        await self._send.send(job)
        assert job.done is not None
        await job.done.wait()
        if job.error is not None:
            raise self._store_error(job.error) from job.error
        return job.result  # type: ignore[no-any-return]

    def _store_error(self, error: BaseException) -> StoreError:
        return StoreError(f"write to {self.db.path} failed: {_reason(error)}")

    async def flush(self) -> None:
        """Wait until everything queued so far has committed."""
        await self.call(lambda _conn: None)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _apply(self, conn: Connection, jobs: list[_Job]) -> None:
        """Run the jobs in order; runs of node writes go in as one multi-row insert. With a
        fence, the leases of every dialogue the jobs touch are checked first, in this
        transaction, and whatever belongs to a lost one is left out."""
        fenced: set[str] = set()
        if self.fence is not None:
            fenced = self.fence.check(conn, set().union(*(job.dialogues() for job in jobs)))
        pending: list[NodeRecord] = []
        for job in jobs:
            if job.fn is None:
                pending.extend(n for n in job.nodes if n.dialogue_id not in fenced)
                continue
            if job.dialogue_id in fenced:
                continue
            if pending:
                writes.insert_nodes_and_heads(conn, pending, self.metrics)
                pending = []
            job.result = job.fn(conn)
        if pending:
            writes.insert_nodes_and_heads(conn, pending, self.metrics)

    def _commit(self, jobs: list[_Job]) -> None:
        """Worker thread: one transaction for the batch; if it fails, retry each job alone so
        one bad write cannot take innocent ones down with it."""
        try:
            with self.db.writer_engine.begin() as conn:
                self._apply(conn, jobs)
            return
        except SQLAlchemyError:
            # The rolled-back turns moved the metric states on: start again from what is stored.
            self.metrics = MetricsTracker()
            if len(jobs) == 1:
                raise
        for job in jobs:
            try:
                with self.db.writer_engine.begin() as conn:
                    self._apply(conn, [job])
            except SQLAlchemyError as exc:
                job.error = exc

    async def _run(self) -> None:
        # Shielded: a cancelled dialogue must not stop its finished turns from being stored.
        # The loop ends when the queue is closed and drained.
        with anyio.CancelScope(shield=True):
            async with self._receive:
                async for first in self._receive:
                    jobs = [first]
                    while len(jobs) < self.max_batch:
                        try:
                            jobs.append(self._receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    try:
                        await anyio.to_thread.run_sync(self._commit, jobs)
                    except SQLAlchemyError as exc:
                        jobs[0].error = exc
                    self.committed_batches += 1
                    if self.fence is not None:
                        self.fence.deliver()
                    for job in jobs:
                        if job.error is not None and job.done is None and self._failure is None:
                            self._failure = self._store_error(job.error)
                        if job.done is not None:
                            job.done.set()

    def close(self) -> None:
        self._send.close()


@asynccontextmanager
async def open_writer(db: Database, *, max_batch: int = 512) -> AsyncIterator[StoreWriter]:
    """Start the writer task; on exit, wait until everything submitted has committed."""
    writer = StoreWriter(db, max_batch=max_batch)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer._run)
            try:
                yield writer
            finally:
                writer.close()
    except BaseExceptionGroup as group:
        # The writer task itself never raises, so a group here wraps the caller's own single
        # exception: hand it back unwrapped, as if there were no task group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group.exceptions[0].__cause__
        raise
    # Raised here, after the task group, so callers see a plain StoreError.
    writer._raise_if_failed()
