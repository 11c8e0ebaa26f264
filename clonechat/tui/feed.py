"""Cheap change detection for a run database that another process (a batch) is writing.

The TUI shows new turns of a dialogue run elsewhere within half a second, so it polls; polling
must therefore cost next to nothing when nothing happened and must never re-read what it has
already seen. :class:`DatabaseFeed` does this with three facts about the store:

- ``PRAGMA data_version`` changes on a connection whenever *another* connection commits. An idle
  poll is that one pragma (microseconds, no table touched), so polling every 0.1 s is free.
- ``node`` is a rowid table and nodes are never deleted, and SQLite serialises writers, so a
  later commit's nodes always have larger rowids than everything committed before it. The max
  rowid seen is thus an exact cursor: ``rowid > cursor`` is a range search on the table's own
  b-tree, costing O(new rows) whatever the size of the table, and yields nodes in commit order.
- A dialogue's status, stop reason and head change without necessarily adding a node (a dialogue
  can end, fail or be interrupted), so dialogues are checked too: rows whose ``updated_at`` is at
  or after the newest one seen (minus a slack, for clock steps between two writing processes),
  compared with a per-dialogue snapshot so each change is reported once. ``dialogue`` has no
  index on ``updated_at`` (the schema is not this module's to change), so this scans the dialogue
  table, but only when ``data_version`` moved, and that table is small (one row per dialogue,
  against tens of turns per dialogue in ``node``).

The feed opens its own read-only connection (``mode=ro`` plus ``PRAGMA query_only``): it can never
write, checkpoint or hold a write lock the batch would wait on. Both queries of a poll run in one
read transaction, so nodes and dialogue heads are from the same snapshot. Nothing here imports
Textual: the TUI calls :meth:`DatabaseFeed.poll` from a worker or iterates :meth:`DatabaseFeed.watch`.

To show a live dialogue without a gap, open the feed *before* loading the initial view (with
``clonechat.store.reads``) and drop nodes already shown by id: a node committed in between then
arrives twice rather than never. Limitation: ``VACUUM`` may renumber rowids; the feed notices a
shrinking table and restarts its cursor at the current end (:attr:`FeedUpdate.reset`), and the
caller should then reload.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from clonechat.engine.records import NodeRecord

#: How far before the newest ``updated_at`` seen the dialogue check looks again. Two processes
#: writing one file stamp rows with their own wall clocks; the snapshot removes the duplicates.
CLOCK_SLACK = timedelta(seconds=2)

_NODE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(NodeRecord))
_NODE_SELECT = f"SELECT rowid, {', '.join(_NODE_COLUMNS)} FROM node"
#: New nodes, all dialogues: a rowid range search on the table b-tree.
NODES_SQL = f"{_NODE_SELECT} WHERE rowid > ? AND rowid <= ? ORDER BY rowid"
#: New nodes of watched dialogues. ``NOT INDEXED`` keeps SQLite from preferring the
#: ``dialogue_id`` index, which would visit every old node of the watched dialogues.
NODES_FILTERED_SQL = (
    f"{_NODE_SELECT} NOT INDEXED WHERE rowid > ? AND rowid <= ? "
    "AND dialogue_id IN (SELECT value FROM json_each(?)) ORDER BY rowid"
)
#: The newest rowid: the rightmost b-tree entry, O(log n).
MAX_ROWID_SQL = "SELECT coalesce(max(rowid), 0) FROM node"
DIALOGUES_SQL = (
    "SELECT id, condition_id, status, stop_reason, error, head_node_id, updated_at FROM dialogue WHERE updated_at >= ?"
)

_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
#: Sorts before any stored timestamp (they are text "YYYY-MM-DD HH:MM:SS.ffffff").
_BEGINNING = ""


def parse_timestamp(value: str | datetime) -> datetime:
    """A stored timestamp as an aware UTC datetime. SQLAlchemy keeps SQLite times as naive UTC
    text; the engine's own records carry aware UTC times, so the feed returns those."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _node_from_row(row: tuple[Any, ...]) -> NodeRecord:
    """A raw ``node`` row (without its leading rowid) as a record, decoded like the ORM would:
    ``params`` is JSON text and ``created_at`` naive UTC text."""
    values = dict(zip(_NODE_COLUMNS, row, strict=True))
    params = values["params"]
    values["params"] = json.loads(params) if isinstance(params, str | bytes) else dict(params or {})
    values["created_at"] = parse_timestamp(values["created_at"])
    return NodeRecord(**values)


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


class DatabaseFeed:
    """Polls one run database for nodes and dialogue changes committed by other connections.

    ``from_start=False`` (the default) reports only what is committed after the feed opens;
    ``from_start=True`` makes the first poll return every existing node and dialogue (fine for
    small files and tests; the TUI should page existing history with ``clonechat.store.reads``).
    ``node_filter`` restricts reported *nodes* to those dialogue ids (dialogue changes are always
    reported for every dialogue: a list view needs them and they are few); it may be changed at
    any time with :meth:`set_node_filter`.

    ``poll`` is blocking and thread-safe (a lock serialises it), so it can run in a worker thread.
    """

    def __init__(self, path: Path | str, *, from_start: bool = False, node_filter: Iterable[str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            # mode=ro would fail anyway; say why in words rather than "unable to open".
            raise FileNotFoundError(f"no database at {self.path}")
        # as_uri() percent-encodes the path, so a "?" or "#" in a folder name cannot end it early.
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._node_filter: str | None = None
        self.set_node_filter(node_filter)
        try:
            self._conn.execute("PRAGMA query_only = 1")
            self._data_version: int | None = None if from_start else self._read_data_version()
            self._cursor = 0
            self._snapshot: dict[str, _Snapshot] = {}
            self._since = _BEGINNING
            if not from_start:
                self._conn.execute("BEGIN")
                try:
                    self._cursor = self._max_rowid()
                    self._remember(self._changed_dialogues())
                finally:
                    self._conn.execute("COMMIT")
        except BaseException:
            self._conn.close()
            raise

    @property
    def connection(self) -> sqlite3.Connection:
        """The feed's own read-only connection (for diagnostics and tests; do not share it)."""
        return self._conn

    @property
    def cursor(self) -> int:
        """The highest node rowid already reported (or skipped as existing)."""
        return self._cursor

    def set_node_filter(self, dialogue_ids: Iterable[str] | None) -> None:
        """Report nodes of these dialogues only (``None``: of all). Nodes of other dialogues
        committed meanwhile are skipped for good: load a newly watched dialogue's history with
        ``clonechat.store.reads`` after setting the filter."""
        filter_json = None if dialogue_ids is None else json.dumps(sorted(set(dialogue_ids)))
        with self._lock:
            self._node_filter = filter_json

    def poll(self) -> FeedUpdate | None:
        """What was committed since the last poll, or ``None`` if nothing was (or nothing this
        feed reports). When no other connection committed, this is one ``PRAGMA data_version``."""
        with self._lock:
            version = self._read_data_version()
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
            self._conn.close()

    def __enter__(self) -> DatabaseFeed:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals (called with the lock held) ---------------------------------------------------

    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _max_rowid(self) -> int:
        return int(self._conn.execute(MAX_ROWID_SQL).fetchone()[0])

    def _fetch(self) -> FeedUpdate | None:
        # One read transaction: the nodes and the dialogue heads come from the same snapshot.
        # The feed's state changes only once everything is read, so an error loses nothing.
        self._conn.execute("BEGIN")
        try:
            newest = self._max_rowid()
            reset = newest < self._cursor
            nodes: list[NodeRecord] = []
            if newest > self._cursor:
                if self._node_filter is None:
                    rows = self._conn.execute(NODES_SQL, (self._cursor, newest))
                else:
                    rows = self._conn.execute(NODES_FILTERED_SQL, (self._cursor, newest, self._node_filter))
                nodes = [_node_from_row(row[1:]) for row in rows]
            changed = self._changed_dialogues()
        finally:
            self._conn.execute("COMMIT")
        self._cursor = newest
        self._remember(changed)
        dialogues = [change for change, _ in changed]
        if not nodes and not dialogues and not reset:
            return None
        return FeedUpdate(nodes=nodes, dialogues=dialogues, reset=reset)

    def _changed_dialogues(self) -> list[tuple[DialogueChange, _Snapshot]]:
        """Dialogues new or changed since the snapshot, oldest change first, each with the raw
        values to remember (raw text, so a format quirk can never make a row look changed)."""
        since = self._since
        if since != _BEGINNING:
            since = (datetime.fromisoformat(since) - CLOCK_SLACK).strftime(_TIMESTAMP_FORMAT)
        changes: list[tuple[DialogueChange, _Snapshot]] = []
        for id_, condition_id, status, stop_reason, error, head, updated_at in self._conn.execute(
            DIALOGUES_SQL, (since,)
        ):
            now: _Snapshot = (status, stop_reason, error, head, updated_at)
            before = self._snapshot.get(id_)
            if before == now:
                continue
            change = DialogueChange(
                id=id_,
                condition_id=condition_id,
                status=status,
                stop_reason=stop_reason,
                error=error,
                head_node_id=head,
                updated_at=parse_timestamp(updated_at),
                previous_status=None if before is None else before[0],
            )
            changes.append((change, now))
        return sorted(changes, key=lambda pair: pair[1][4])

    def _remember(self, changes: list[tuple[DialogueChange, _Snapshot]]) -> None:
        for change, now in changes:
            self._snapshot[change.id] = now
            self._since = max(self._since, now[4])
