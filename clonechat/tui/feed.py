"""Following a run database that another process (a batch) is writing: each change once, cheaply.

The TUI shows new turns of a dialogue run elsewhere within half a second. The questions the feed
asks are the read layer's (:mod:`clonechat.read.feed`, which says why each is cheap); how it
learns that something happened differs by backend:

- **An SQLite file** is polled: has another connection committed since the last poll (an idle
  poll is that one check, microseconds, no table touched, so polling every 0.1 s is free); which
  nodes lie past the cursor (the highest node rowid reported: a range search costing O(new
  rows), in commit order, because SQLite serialises writers); which dialogues were stamped since
  the newest change seen.
- **A PostgreSQL database** tells the feed: every write transaction notifies the dialogues it
  changed when it commits (:mod:`clonechat.store.notify`), and :meth:`DatabaseFeed.watch` sleeps
  on the listening socket until one arrives, so a turn shows up milliseconds after its commit
  with no polling at all. Many writers commit concurrently there and rowids are handed out
  before commit, so one cursor cannot work: the feed keeps a cursor *per dialogue* (the highest
  rowid reported for it; exact because a dialogue has one writer at a time, see the read
  layer's limitation) and reads only the notified dialogues past their cursors, and their rows.
  An idle poll sends no statement.

:class:`DatabaseFeed` keeps what was reported. A dialogue's status, stop reason and head change
without necessarily adding a node (a dialogue can end, fail or be interrupted), so dialogues are
checked too, and compared with a per-dialogue snapshot so each change is reported once. On
SQLite the candidates are the rows whose ``updated_at`` is at or after the newest one seen
(minus a slack, for clock steps between two writing processes); on PostgreSQL, the notified ones.

The feed holds its own read-only connection(s): it can never write, checkpoint or hold a write
lock the batch would wait on. All questions of a poll are read from one snapshot, so nodes and
dialogue heads agree. Nothing here imports Textual: the TUI iterates :meth:`DatabaseFeed.watch`
(or calls :meth:`DatabaseFeed.poll` from a worker).

To show a live dialogue without a gap, open the feed *before* loading the initial view (with
``clonechat.read.paths``) and drop nodes already shown by id: a node committed in between then
arrives twice rather than never. Limitation (SQLite): ``VACUUM`` may renumber rowids; the feed
notices a shrinking table and restarts its cursor at the current end (:attr:`FeedUpdate.reset`),
and the caller should then reload. PostgreSQL never renumbers an identity column.
"""

from __future__ import annotations

import threading
import time
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
from clonechat.read.feed import DialogueState, FeedReader, ServerFeedReader, open_feed_reader

#: How far before the newest ``updated_at`` seen the dialogue check looks again. Two processes
#: writing one file stamp rows with their own wall clocks; the snapshot removes the duplicates.
CLOCK_SLACK = timedelta(seconds=2)
#: On PostgreSQL, how long :meth:`DatabaseFeed.watch` sleeps on the socket before it drains it
#: anyway. Not needed for latency (a notification wakes it at once); a cheap safety net, since
#: an idle poll there sends no statement.
RECHECK_S = 5.0
#: On SQLite, how long one :meth:`DatabaseFeed.wait` sleeps (there are no notifications to wait on).
SQLITE_WAIT_S = 0.05


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

    #: New nodes, each exactly once, in commit order within each dialogue (and, on SQLite,
    #: overall: rowid order). Within one update they are in rowid order.
    nodes: list[NodeRecord] = field(default_factory=list)
    #: Dialogues created or changed (status, stop reason, error, head or ``updated_at``).
    dialogues: list[DialogueChange] = field(default_factory=list)
    #: The node table shrank (a ``VACUUM`` renumbered it): the cursor restarted at the end and
    #: nodes may have been missed; reload the view. Never on PostgreSQL.
    reset: bool = False


_Snapshot = tuple[str, str | None, str | None, str | None, str]


def _state(row: DialogueState) -> _Snapshot:
    """What the feed compares to tell whether a dialogue changed (raw stored values)."""
    return (row.status, row.stop_reason, row.error, row.head_node_id, row.updated_at)


def _watched(dialogue_ids: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if dialogue_ids is None else tuple(sorted(set(dialogue_ids)))


class DatabaseFeed:
    """Follows one run database for nodes and dialogue changes committed by other connections.

    ``from_start=False`` (the default) reports only what is committed after the feed opens;
    ``from_start=True`` makes the first poll return every existing node and dialogue (fine for
    small files and tests; the TUI should page existing history with ``clonechat.read.paths``).
    ``node_filter`` restricts reported *nodes* to those dialogue ids (dialogue changes are always
    reported for every dialogue: a list view needs them and they are few); it may be changed at
    any time with :meth:`set_node_filter`.

    ``poll`` answers at once (it never waits for a change, though it does blocking I/O) and is
    thread-safe (a lock serialises it), so it can run in a worker thread; ``watch`` drives it
    from an event loop, waiting on a PostgreSQL notification or sleeping between polls of an
    SQLite file.
    """

    def __init__(
        self, path: DbLocation | str, *, from_start: bool = False, node_filter: Iterable[str] | None = None
    ) -> None:
        self.path = db_location(path)
        self._reader: FeedReader | ServerFeedReader = open_feed_reader(self.path)
        self._lock = threading.Lock()
        self._node_filter = _watched(node_filter)
        self._snapshot: dict[str, _Snapshot] = {}
        #: The newest ``updated_at`` seen (raw text; "" before any). SQLite only.
        self._since = ""
        #: SQLite: the highest rowid reported, and ``data_version`` at the last poll.
        self._cursor = 0
        self._data_version: int | None = None
        #: PostgreSQL: the highest rowid reported per dialogue (nodes of the feed's watched
        #: dialogues; unfiltered, a dialogue missing here was created after the feed looked, so
        #: all its nodes are new), and the dialogues notified but not read yet.
        self._cursors: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._everything = from_start
        try:
            reader = self._reader
            if isinstance(reader, ServerFeedReader):
                if not from_start:
                    with reader.snapshot():
                        self._cursors = reader.cursors(self._node_filter)
                        self._remember(self._compare(reader.dialogues(None)))
            else:
                self._data_version = None if from_start else reader.data_version()
                if not from_start:
                    with reader.snapshot():
                        self._cursor = reader.max_rowid()
                        self._remember(self._changed_since(reader))
        except BaseException:
            self._reader.close()
            raise

    @property
    def connection(self) -> read_feed.Connection | read_feed.ServerConnection:
        """The feed's own read-only connection (for diagnostics and tests; do not share it):
        an ``sqlite3`` connection, or the psycopg one that reads a PostgreSQL database."""
        return self._reader.connection

    @property
    def on_server(self) -> bool:
        """Whether this feed follows a PostgreSQL database (notified) rather than a file (polled)."""
        return isinstance(self._reader, ServerFeedReader)

    @property
    def cursor(self) -> int:
        """The highest node rowid already reported (or skipped as existing); on PostgreSQL the
        highest of the per-dialogue :attr:`cursors` (not a position to resume from)."""
        with self._lock:
            if isinstance(self._reader, ServerFeedReader):
                return max(self._cursors.values(), default=0)
            return self._cursor

    @property
    def cursors(self) -> dict[str, int]:
        """PostgreSQL: the highest node rowid reported (or skipped as existing) per dialogue."""
        with self._lock:
            return dict(self._cursors)

    def set_node_filter(self, dialogue_ids: Iterable[str] | None) -> None:
        """Report nodes of these dialogues only (``None``: of all). Nodes of other dialogues
        committed meanwhile are skipped for good: load a newly watched dialogue's history with
        ``clonechat.read.paths`` after setting the filter. On PostgreSQL a newly watched
        dialogue's cursor is read here (one indexed statement), so everything it commits after
        this call is reported."""
        watched = _watched(dialogue_ids)
        with self._lock:
            if isinstance(self._reader, ServerFeedReader):
                self._cursors = self._cursors_for(self._reader, watched)
            self._node_filter = watched

    def poll(self) -> FeedUpdate | None:
        """What was committed since the last poll, or ``None`` if nothing was (or nothing this
        feed reports). Never waits. When nothing was committed this is one ``data_version``
        check (SQLite), or one non-blocking read of the listening socket and no statement
        (PostgreSQL)."""
        with self._lock:
            reader = self._reader
            if isinstance(reader, ServerFeedReader):
                return self._poll_server(reader)
            version = reader.data_version()
            if version == self._data_version:
                return None
            update = self._fetch(reader)
            # Only now: if the fetch raised, the next poll tries again instead of missing it.
            self._data_version = version
            return update

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a sign that something was committed, for callers
        without an event loop (``watch`` waits natively). PostgreSQL: until a notification is
        waiting (``True``) or the time is up (``False``). An SQLite file sends no signal: this
        sleeps a short step (at most ``timeout``) and returns ``True``; poll again."""
        reader = self._reader
        if isinstance(reader, ServerFeedReader):
            return reader.wait(timeout)
        time.sleep(max(0.0, min(timeout, SQLITE_WAIT_S)))
        return True

    async def watch(self, interval: float = 0.1) -> AsyncIterator[FeedUpdate]:
        """Yield each non-empty update, polling in a worker thread (the event loop never waits
        on the database). An SQLite file is polled every ``interval`` seconds. On PostgreSQL
        the loop sleeps on the listening socket and polls as soon as a notification arrives;
        ``interval`` is then only the shortest time between two polls, so a burst of commits
        is read in a few polls rather than one per commit. Works under asyncio (Textual) and
        trio."""
        server = self._reader if isinstance(self._reader, ServerFeedReader) else None
        while True:
            started = anyio.current_time()
            update = await anyio.to_thread.run_sync(self.poll)
            if update is not None:
                yield update
            if server is None:
                await anyio.sleep(interval)
                continue
            with anyio.move_on_after(RECHECK_S):
                await anyio.wait_readable(server.fileno())
            await anyio.sleep(max(0.0, started + interval - anyio.current_time()))

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

    def _fetch(self, reader: FeedReader) -> FeedUpdate | None:
        # One snapshot: the nodes and the dialogue heads come from the same commit.
        # The feed's state changes only once everything is read, so an error loses nothing.
        with reader.snapshot():
            newest = reader.max_rowid()
            reset = newest < self._cursor
            nodes: list[NodeRecord] = []
            if newest > self._cursor:
                nodes = reader.nodes_between(self._cursor, newest, self._node_filter)
            changed = self._changed_since(reader)
        self._cursor = newest
        self._remember(changed)
        dialogues = [change for change, _ in changed]
        if not nodes and not dialogues and not reset:
            return None
        return FeedUpdate(nodes=nodes, dialogues=dialogues, reset=reset)

    def _changed_since(self, reader: FeedReader) -> list[tuple[DialogueChange, _Snapshot]]:
        """SQLite: the dialogue rows stamped since the newest change seen, minus the slack."""
        since = datetime.fromisoformat(self._since) - CLOCK_SLACK if self._since else None
        return self._compare(reader.dialogues_since(since))

    def _poll_server(self, reader: ServerFeedReader) -> FeedUpdate | None:
        ids, everything = reader.notified()
        self._dirty |= ids
        self._everything = self._everything or everything
        if not self._dirty and not self._everything:
            return None
        update = self._fetch_server(reader)
        # Only now: if the fetch raised, the next poll reads the same dialogues again.
        self._dirty = set()
        self._everything = False
        return update

    def _fetch_server(self, reader: ServerFeedReader) -> FeedUpdate | None:
        """The notified dialogues' rows, and the watched ones' nodes past their cursors, from
        one snapshot; everything (every dialogue row, every watched dialogue) when asked to."""
        wanted = None if self._everything else sorted(self._dirty)
        with reader.snapshot():
            rows = reader.dialogues(wanted)
            if self._node_filter is None:
                watched = [row.id for row in rows] if wanted is None else wanted
            elif wanted is None:
                watched = list(self._node_filter)
            else:
                watched = sorted(set(wanted) & set(self._node_filter))
            found = reader.nodes_after({d: self._cursors.get(d, 0) for d in watched})
        changed = self._compare(rows)
        for rowid, node in found:
            if rowid > self._cursors.get(node.dialogue_id, 0):
                self._cursors[node.dialogue_id] = rowid
        self._remember(changed)
        nodes = [node for _, node in found]
        dialogues = [change for change, _ in changed]
        if not nodes and not dialogues:
            return None
        return FeedUpdate(nodes=nodes, dialogues=dialogues)

    def _cursors_for(self, reader: ServerFeedReader, watched: tuple[str, ...] | None) -> dict[str, int]:
        """The per-dialogue cursors after the filter becomes ``watched``: dialogues watched
        before keep theirs (what they committed since the last poll is still to be reported),
        newly watched ones start at their newest node now."""
        before = None if self._node_filter is None else set(self._node_filter)
        if watched is None:
            if before is None:
                return self._cursors
            cursors = reader.cursors(None)
            cursors.update({d: self._cursors.get(d, 0) for d in before})
            return cursors
        if before is None:
            # Unfiltered, every dialogue was watched: one missing here was created since.
            return {d: self._cursors.get(d, 0) for d in watched}
        cursors = {d: self._cursors.get(d, 0) for d in watched if d in before}
        fresh = [d for d in watched if d not in before]
        if fresh:
            cursors.update(reader.cursors(fresh))
        return cursors

    def _compare(self, rows: Iterable[DialogueState]) -> list[tuple[DialogueChange, _Snapshot]]:
        """Of these dialogue rows, those new or changed since the snapshot, oldest change first,
        each with the raw values to remember (raw text, so a format quirk can never make a row
        look changed)."""
        found: list[tuple[DialogueChange, _Snapshot]] = []
        for row in rows:
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
