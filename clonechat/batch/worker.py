"""One batch worker's share of an experiment: claim dialogues by lease, keep the leases alive,
give them back, and stop a dialogue the moment its lease is lost.

Any number of ``clonechat batch`` processes, on any hosts, can run one experiment: each is a
:class:`LeasedJobs` source for :func:`clonechat.batch.runner.run_jobs`. A dialogue is claimed
just before it runs (so a worker that starts late, or on a new host, takes its share) and is
loaded from its committed head after the claim, so it continues exactly where the last worker
left it. The rules of claiming, renewing and fencing are :mod:`clonechat.store.leases`'s;
this module is their timing: a heartbeat every third of the lease, a look for abandoned
dialogues every :func:`poll_interval`, and the exit when nothing in the experiment is left to
run or held by anyone else.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection
from functools import partial

import anyio
import anyio.to_thread

from clonechat.batch.progress import BatchProgress
from clonechat.batch.store import DialogueJob, load_claimed
from clonechat.engine.records import new_id
from clonechat.read.connect import connection
from clonechat.read.workers import experiment_totals
from clonechat.registry import ProviderPool, Registry
from clonechat.store import leases
from clonechat.store.database import Database
from clonechat.store.writer import StoreWriter

#: ``--lease``'s default, in seconds.
DEFAULT_LEASE_SECONDS = 30.0


def poll_interval(lease_seconds: float) -> float:
    """How often a worker with nothing to claim looks again (a killed worker's dialogues are
    free a lease after its last heartbeat, and picked up within this much more)."""
    return max(0.2, min(2.0, lease_seconds / 10))


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a reused id counts as alive: then its
    leases simply expire, which is always safe)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeasedJobs:
    """Claims the experiment's dialogues one at a time for this worker (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        writer: StoreWriter,
        experiment_id: str,
        statuses: Collection[str],
        pool: ProviderPool,
        registry: Registry,
        *,
        concurrency: int,
        lease_seconds: float,
        progress: BatchProgress,
        stopping: anyio.Event,
        say: Callable[[str], None],
    ) -> None:
        self.db = db
        self.writer = writer
        self.experiment_id = experiment_id
        self.statuses = tuple(statuses)
        self.pool = pool
        self.registry = registry
        self.lease_seconds = lease_seconds
        self.progress = progress
        self.stopping = stopping
        self.say = say
        self.info = leases.WorkerInfo(
            new_id(), experiment_id, socket.gethostname(), os.getpid(), concurrency, lease_seconds
        )
        self.fence = leases.Fence(self.info.id, self._lost)
        #: Dialogues this worker has claimed (each runs at most once per process).
        self.claimed: list[str] = []
        #: Dialogues whose lease this worker lost.
        self.lost: list[str] = []
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._claiming = anyio.Lock()
        #: Claimed and loaded, not yet started.
        self._ready: list[DialogueJob] = []
        self._running = 0
        self._exhausted = False
        #: Dialogues whose release is being committed.
        self._releasing: set[str] = set()

    async def start(self) -> None:
        """Register the worker and make its writer check every leased write."""
        info = self.info
        await self.writer.call(lambda conn: leases.register_worker(conn, info))
        self.writer.fence = self.fence
        await self.expire_dead_neighbours()

    async def expire_dead_neighbours(self) -> None:
        """Workers of this experiment on this host whose process is gone (killed, crashed) give
        up their leases now: a batch killed and restarted here continues its dialogues at once
        rather than a lease later. Workers on other hosts cannot be asked; their leases expire."""
        others = partial(leases.workers_on_host, experiment_id=self.experiment_id, host=self.info.host)
        for worker_id, pid in await self.writer.call(others):
            if worker_id != self.info.id and not _process_alive(pid):
                await self.writer.call(partial(leases.expire_dead_worker, worker_id=worker_id))

    async def heartbeat(self) -> None:
        """Renew the leases every third of the lease, and the experiment's totals with them;
        runs until cancelled. A lease that could not be renewed in time is lost."""
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            held = self.fence.snapshot()
            still = await self.writer.call(
                partial(leases.renew, worker_id=self.info.id, held=held, lease_seconds=self.lease_seconds)
            )
            # A dialogue being released (it ended) is no longer renewed, and not lost either.
            gone = (set(held) - still - self._releasing) & set(self.fence.snapshot())
            if gone:
                self.fence.mark_lost(gone)
                self.fence.deliver()
            await self.refresh_totals()

    async def refresh_totals(self) -> None:
        totals = await anyio.to_thread.run_sync(lambda: experiment_totals(self.db, self.experiment_id))
        self.progress.experiment = totals

    async def next_job(self) -> DialogueJob | None:
        async with self._claiming:
            while not self.stopping.is_set() and not self._exhausted:
                if self._ready:
                    return self._ready.pop(0)
                await self._claim()
                if self._ready:
                    continue
                if await anyio.to_thread.run_sync(self._held_elsewhere) == 0:
                    # Nothing to claim and nobody else holds anything: nothing can become free
                    # again (this worker's own dialogues end here), so every idle slot stops now.
                    self._exhausted = True
                    return None
                await self.expire_dead_neighbours()
                # Others hold the rest: wait for one of them to finish, or to die and leave
                # its dialogues to us once their leases expire.
                with anyio.move_on_after(poll_interval(self.lease_seconds)):
                    await self.stopping.wait()
        return None

    async def _claim(self) -> None:
        """Claim as many dialogues as there are free slots, in one transaction, and load them
        (a thousand dialogues at the start of a batch are a few queries, not a few thousand)."""
        free = max(1, self.info.concurrency - self._running)
        claim = partial(
            leases.claim,
            worker_id=self.info.id,
            experiment_id=self.experiment_id,
            statuses=self.statuses,
            exclude=list(self.claimed),
            limit=free,
            lease_seconds=self.lease_seconds,
        )
        grants = await self.writer.call(claim)
        if not grants:
            return
        for grant in grants:
            self.claimed.append(grant.dialogue_id)
            self.fence.grant(grant.dialogue_id, grant.epoch)
        ids = [g.dialogue_id for g in grants]
        load = partial(load_claimed, self.db, self.experiment_id, self.statuses, ids, self.pool, self.registry)
        jobs = await anyio.to_thread.run_sync(load)
        for job in jobs:
            self.progress.add_job(job)
        self._ready.extend(jobs)

    def _held_elsewhere(self) -> int:
        with connection(self.db) as conn:
            return leases.leased_elsewhere(conn, self.info.id, self.experiment_id, self.statuses, self.claimed)

    def started(self, job: DialogueJob, scope: anyio.CancelScope) -> None:
        self._running += 1
        self._scopes[job.dialogue_id] = scope
        if self.fence.is_lost(job.dialogue_id):
            scope.cancel()

    async def finished(self, job: DialogueJob) -> None:
        dialogue_id = job.dialogue_id
        if self._scopes.pop(dialogue_id, None) is not None:
            self._running -= 1
        # The fence keeps the dialogue until the release has committed: writes of it still queued
        # behind a stalled connection (a cut link) must be checked against the lease, never
        # waved through. Meanwhile the heartbeat must not take the released lease for a lost one.
        epoch = self.fence.snapshot().get(dialogue_id)
        if epoch is not None:
            self._releasing.add(dialogue_id)
            worker_id, reason = self.info.id, "stopped" if self.stopping.is_set() else "ended"
            try:
                await self.writer.call(
                    lambda conn: leases.release(conn, worker_id, dialogue_id, epoch, reason), dialogue_id=dialogue_id
                )
            finally:
                self.fence.forget(dialogue_id)
                self._releasing.discard(dialogue_id)

    def _lost(self, dialogue_id: str) -> None:
        """The lease on ``dialogue_id`` is gone (expired, or taken by another worker): stop it
        here; the fence has already kept its writes out of the database."""
        self.lost.append(dialogue_id)
        self.say(
            f"lost the lease on dialogue {dialogue_id} (not renewed within {self.lease_seconds:g} s): "
            "stopped it here; this worker writes nothing more to it, another worker continues it"
        )
        scope = self._scopes.get(dialogue_id)
        if scope is not None:
            scope.cancel()

    async def close(self) -> None:
        """The worker is done: stamp its row (``clonechat workers`` stops listing it)."""
        for job in self._ready:  # claimed but never started (the batch was stopped): give them back
            await self.finished(job)
        self._ready.clear()
        worker_id = self.info.id
        await self.writer.call(lambda conn: leases.stop_worker(conn, worker_id))
