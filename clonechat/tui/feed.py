"""Following a run database that another process (a batch) is writing: each change once, cheaply.

The TUI shows new turns of a dialogue run elsewhere within half a second, so it polls; polling
must therefore cost next to nothing when nothing happened and must never re-read what it has
already seen. The questions a poll asks are the read layer's (:mod:`clonechat.read.feed`, which
says why each is cheap): has another connection committed since the last poll (an idle poll is
that one check, microseconds, no table touched, so polling every 0.1 s is free); which nodes
lie past the cursor (the highest node rowid reported: a range search costing O(new rows),
in commit order); which dialogues were stamped since the newest change seen.

:class:`DatabaseFeed` keeps what was reported. A dialogue's status, stop reason and head change
without necessarily adding a node (a dialogue can end, fail or be interrupted), so dialogues are
checked too: rows whose ``updated_at`` is at or after the newest one seen (minus a slack, for
clock steps between two writing processes), compared with a per-dialogue snapshot so each change
is reported once.

The feed holds its own read-only connection: it can never write, checkpoint or hold a write lock
the batch would wait on. All questions of a poll are read from one snapshot, so nodes and
dialogue heads agree. Nothing here imports Textual: the TUI calls :meth:`DatabaseFeed.poll` from
a worker or iterates :meth:`DatabaseFeed.watch`.

To show a live dialogue without a gap, open the feed *before* loading the initial view (with
``clonechat.read.paths``) and drop nodes already shown by id: a node committed in between then
arrives twice rather than never. Limitation: ``VACUUM`` may renumber rowids; the feed notices a
shrinking table and restarts its cursor at the current end (:attr:`FeedUpdate.reset`), and the
caller should then reload.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType

import anyio
import anyio.to_thread

from clonechat.engine.records import NodeRecord
from clonechat.location import DbLocation, db_location
from clonechat.read import feed as read_feed
from clonechat.read.connect import stored_time
from clonechat.read.feed import DialogueState, FeedReader

#: How far before the newest ``updated_at`` seen the dialogue check looks again. Two processes
#: writing one file stamp rows with their own wall clocks; the snapshot removes the duplicates.
CLOCK_SLACK = timedelta(seconds=2)


@dataclass(frozen=True)
class DialogueChange:
    """A dialogue row as it is now, reported because it is new or its state changed."""

    id: str
    condition_id: str
    status: str
    stop_reason: str | None
    error: str | None
    head_node_id: str | None
    updated_at: datetime
    #: The status before this change; ``None`` for a dialogue the feed had not seen.
    previous_status: str | None


@dataclass(frozen=True)
class FeedUpdate:
    """What other connections committed since the previous update."""

    #: New nodes, in commit order (rowid order), each exactly once.
    nodes: list[NodeRecord] = field(default_factory=list)
    #: Dialogues created or changed (status, stop reason, error, head or ``updated_at``).
    dialogues: list[DialogueChange] = field(default_factory=list)
    #: The node table shrank (a ``VACUUM`` renumbered it): the cursor restarted at the end and
    #: nodes may have been missed; reload the view.
    reset: bool = False


_Snapshot = tuple[str, str | None, str | None, str | None, str]


def _state(row: DialogueState) -> _Snapshot:
    """What the feed compares to tell whether a dialogue changed (raw stored values)."""
    return (row.status, row.stop_reason, row.error, row.head_node_id, row.updated_at)


class DatabaseFeed:
    """Polls one run database for nodes and dialogue changes committed by other connections.

    ``from_start=False`` (the default) reports only what is committed after the feed opens;
    ``from_start=True`` makes the first poll return every existing node and dialogue (fine for
    small files and tests; the TUI should page existing history with ``clonechat.read.paths``).
    ``node_filter`` restricts reported *nodes* to those dialogue ids (dialogue changes are always
    reported for every dialogue: a list view needs them and they are few); it may be changed at
    any time with :meth:`set_node_filter`.

    ``poll`` is blocking and thread-safe (a lock serialises it), so it can run in a worker thread.
    """

    def __init__(
        self, path: DbLocation | str, *, from_start: bool = False, node_filter: Iterable[str] | None = None
    ) -> None:
        self.path = db_location(path)
        self._reader = FeedReader(self.path)
        self._lock = threading.Lock()
        self._node_filter: tuple[str, ...] | None = None
        self.set_node_filter(node_filter)
        try:
            self._data_version: int | None = None if from_start else self._reader.data_version()
            self._cursor = 0
            self._snapshot: dict[str, _Snapshot] = {}
            #: The newest ``updated_at`` seen (raw text; "" before any).
            self._since = ""
            if not from_start:
                with self._reader.snapshot():
                    self._cursor = self._reader.max_rowid()
                    self._remember(self._changed_dialogues())
        except BaseException:
            self._reader.close()
            raise

    @property
    def connection(self) -> read_feed.Connection:
        """The feed's own read-only connection (for diagnostics and tests; do not share it)."""
        return self._reader.connection

    @property
    def cursor(self) -> int:
        """The highest node rowid already reported (or skipped as existing)."""
        return self._cursor

    def set_node_filter(self, dialogue_ids: Iterable[str] | None) -> None:
        """Report nodes of these dialogues only (``None``: of all). Nodes of other dialogues
        committed meanwhile are skipped for good: load a newly watched dialogue's history with
        ``clonechat.read.paths`` after setting the filter."""
        watched = None if dialogue_ids is None else tuple(sorted(set(dialogue_ids)))
        with self._lock:
            self._node_filter = watched

    def poll(self) -> FeedUpdate | None:
        """What was committed since the last poll, or ``None`` if nothing was (or nothing this
        feed reports). When no other connection committed, this is one ``data_version`` check."""
        with self._lock:
            version = self._reader.data_version()
            if version == self._data_version:
                return None
            update = self._fetch()
            # Only now: if the fetch raised, the next poll tries again instead of missing it.
            self._data_version = version
            return update

    async def watch(self, interval: float = 0.1) -> AsyncIterator[FeedUpdate]:
        """Poll every ``interval`` seconds (in a worker thread, so the event loop never waits on
        SQLite) and yield each non-empty update. Works under asyncio (Textual) and trio."""
        while True:
            update = await anyio.to_thread.run_sync(self.poll)
            if update is not None:
                yield update
            await anyio.sleep(interval)

    def close(self) -> None:
        with self._lock:
            self._reader.close()

    def __enter__(self) -> DatabaseFeed:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals (called with the lock held) ---------------------------------------------------

    def _fetch(self) -> FeedUpdate | None:
        # One snapshot: the nodes and the dialogue heads come from the same commit.
        # The feed's state changes only once everything is read, so an error loses nothing.
        with self._reader.snapshot():
            newest = self._reader.max_rowid()
            reset = newest < self._cursor
            nodes: list[NodeRecord] = []
            if newest > self._cursor:
                nodes = self._reader.nodes_between(self._cursor, newest, self._node_filter)
            changed = self._changed_dialogues()
        self._cursor = newest
        self._remember(changed)
        dialogues = [change for change, _ in changed]
        if not nodes and not dialogues and not reset:
            return None
        return FeedUpdate(nodes=nodes, dialogues=dialogues, reset=reset)

    def _changed_dialogues(self) -> list[tuple[DialogueChange, _Snapshot]]:
        """Dialogues new or changed since the snapshot, oldest change first, each with the raw
        values to remember (raw text, so a format quirk can never make a row look changed)."""
        since = datetime.fromisoformat(self._since) - CLOCK_SLACK if self._since else None
        found: list[tuple[DialogueChange, _Snapshot]] = []
        for row in self._reader.dialogues_since(since):
            now = _state(row)
            before = self._snapshot.get(row.id)
            if before == now:
                continue
            change = DialogueChange(
                id=row.id,
                condition_id=row.condition_id,
                status=row.status,
                stop_reason=row.stop_reason,
                error=row.error,
                head_node_id=row.head_node_id,
                updated_at=stored_time(row.updated_at),
                previous_status=None if before is None else before[0],
            )
            found.append((change, now))
        return sorted(found, key=lambda pair: pair[1][4])

    def _remember(self, changes: list[tuple[DialogueChange, _Snapshot]]) -> None:
        for change, now in changes:
            self._snapshot[change.id] = now
            self._since = max(self._since, now[4])
