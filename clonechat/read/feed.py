"""What other connections committed to a run database since a cursor: the live feed's questions.

The TUI follows a dialogue another process is writing by polling, so each question here must
cost next to nothing when nothing happened and never re-read what was already seen:

- **Did anything change?** ``PRAGMA data_version`` (:meth:`FeedReader.data_version`) changes on
  a connection whenever *another* connection commits; asking touches no table (microseconds).
- **Which nodes are new?** ``node`` is a rowid table, nodes are never deleted and SQLite
  serialises writers, so a later commit's nodes have larger rowids than everything before it.
  :meth:`FeedReader.max_rowid` (the rightmost b-tree entry, O(log n)) is an exact cursor, and
  :meth:`FeedReader.nodes_between` a range search on the table's own b-tree: O(new rows)
  whatever the size of the table, in commit order.
- **Which dialogues changed?** :meth:`FeedReader.dialogues_since`: dialogue rows stamped at or
  after a time. ``dialogue`` has no index on ``updated_at``, so this scans that (small) table;
  the feed asks only when ``data_version`` moved.

:class:`FeedReader` holds one raw read-only connection (:func:`~clonechat.read.connect.open_sqlite`:
``mode=ro``, ``query_only``, the schema check), in autocommit mode so each poll sees the newest
commits, and :meth:`FeedReader.snapshot` reads several answers from one snapshot. The polling
itself (what was reported already, filters, threads) is :class:`clonechat.tui.feed.DatabaseFeed`.

**On PostgreSQL** (:class:`ServerFeedReader`) none of the SQLite reasoning holds: many writer
processes commit at once, and an identity value is handed out when a row is inserted, not when
it commits, so a node with a *smaller* ``rowid`` can become visible *after* one with a larger
rowid. A single cursor on the table would skip it for good. Instead:

- **Did anything change?** Every write transaction that stores nodes or changes a dialogue
  sends ``NOTIFY clonechat`` naming its dialogues, delivered only at (and only if) commit
  (:mod:`clonechat.store.notify`). The reader holds a dedicated connection that does nothing
  but ``LISTEN``; :meth:`ServerFeedReader.notified` drains what arrived without waiting (no
  statement at all when nothing did) and :meth:`ServerFeedReader.fileno` is the socket to wait
  on, so the feed wakes within milliseconds of a commit instead of polling.
- **Which nodes are new?** A *per-dialogue* cursor: the highest rowid reported for that
  dialogue. It is exact because a dialogue has one writer at a time (the batch lease; a
  takeover waits for the old holder's transaction), and that writer commits its transactions
  one after another, so within one dialogue rowid order is commit order.
  :meth:`ServerFeedReader.nodes_after` reads the notified dialogues past their cursors, one
  indexed statement each (the rowid index for a dialogue being written: O(rows committed since
  the last poll); the ``dialogue_id`` index for one read from far back: O(its nodes)), never a
  scan of ``node``.
- **Which dialogues changed?** The notified ones, looked up by id
  (:meth:`ServerFeedReader.dialogues`).

The listening connection runs ``LISTEN`` (and commits it) before the feed reads its first
snapshot, so every transaction not visible in that snapshot commits after the ``LISTEN`` and is
notified; a transaction visible in it may be notified too, and re-reading a dialogue past its
cursor then finds nothing. Reads go through a second connection whose transactions are
REPEATABLE READ, READ ONLY (and the session's default is read-only too): the server refuses any
write, and a poll's questions see one snapshot.

Limitation: the per-dialogue cursor relies on one writer per dialogue at a time. Two processes
writing nodes to the same dialogue concurrently (a batch and a researcher's fork of the same
live dialogue in the TUI, or a lease broken without fencing) could commit a lower rowid after a
higher one was read; that node would not be reported live (it is stored, and a reload shows it).
The identity column must also keep its default ``CACHE 1`` (values handed out in order across
sessions): a per-session cache would let a new lease holder insert below the old holder's rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from clonechat.engine.records import NodeRecord
from clonechat.errors import StoreError
from clonechat.location import DbLocation, ServerDatabase, db_location
from clonechat.read.connect import open_reader, open_sqlite, server_reason, stored_time
from clonechat.store.notify import CHANNEL, parse_payload

if TYPE_CHECKING:
    import psycopg

#: The raw connection a :class:`FeedReader` holds (for diagnostics and tests).
Connection = sqlite3.Connection
#: The raw reading connection a :class:`ServerFeedReader` holds (for diagnostics and tests).
ServerConnection: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

NODE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(NodeRecord))
_NODE_SELECT = f"SELECT rowid, {', '.join(NODE_COLUMNS)} FROM node"
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
DATA_VERSION_SQL = "PRAGMA data_version"

#: How stored timestamps are written (naive UTC text); they sort as text.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# -- PostgreSQL -------------------------------------------------------------------------------------

_SERVER_NODE_COLUMNS = ", ".join(f"n.{name}" for name in NODE_COLUMNS)
#: New nodes of one dialogue past its cursor, in rowid order (commit order within a dialogue).
#: Run once per dialogue (all in one round trip, see ``nodes_after``) so the planner sees each
#: dialogue's own bounds as constants: for a dialogue being written, ``rowid > cursor`` is a
#: range of ``node_rowid_key`` holding only the rows committed since the last poll; for one
#: read from far back, ``ix_node_dialogue_id`` holds just that dialogue's rows. Either way an
#: index, never the table. (An index on ``(dialogue_id, rowid)`` would make it O(new rows) in
#: every case.)
SERVER_NODES_SQL = (
    f"SELECT n.rowid, {_SERVER_NODE_COLUMNS} FROM node n WHERE n.dialogue_id = %s AND n.rowid > %s ORDER BY n.rowid"
)
#: Each listed dialogue's newest node rowid (0: none yet): its cursor now, by the index.
SERVER_CURSORS_SQL = (
    "SELECT c.id, coalesce((SELECT max(n.rowid) FROM node n WHERE n.dialogue_id = c.id), 0) "
    "FROM unnest(%s::varchar[]) AS c(id)"
)
#: Every dialogue's cursor now (a feed that follows all dialogues, when it opens).
SERVER_ALL_CURSORS_SQL = (
    "SELECT d.id, coalesce((SELECT max(n.rowid) FROM node n WHERE n.dialogue_id = d.id), 0) FROM dialogue d"
)
#: ``updated_at`` as the text SQLite stores (naive UTC, microseconds), so the feed compares and
#: sorts the same values on both backends.
_SERVER_DIALOGUE_COLUMNS = (
    "id, condition_id, status, stop_reason, error, head_node_id, to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS.US')"
)
SERVER_DIALOGUES_SQL = f"SELECT {_SERVER_DIALOGUE_COLUMNS} FROM dialogue WHERE id = ANY(%s::varchar[])"
SERVER_ALL_DIALOGUES_SQL = f"SELECT {_SERVER_DIALOGUE_COLUMNS} FROM dialogue"
#: Both connections' sessions: UTC (stored timestamps are naive UTC) and read-only by default,
#: so even a statement outside a snapshot cannot write.
_SERVER_OPTIONS = "-c timezone=UTC -c default_transaction_read_only=on"


def _node_from_row(row: Sequence[Any]) -> NodeRecord:
    """A raw ``node`` row (without its leading rowid) as a record, decoded like the ORM would:
    ``params`` is JSON text and ``created_at`` naive UTC text."""
    values = dict(zip(NODE_COLUMNS, row, strict=True))
    params = values["params"]
    values["params"] = json.loads(params) if isinstance(params, str | bytes) else dict(params or {})
    values["created_at"] = stored_time(values["created_at"])
    return NodeRecord(**values)


class DialogueState(NamedTuple):
    """A dialogue row's changeable state, as stored (raw text, so comparing two reads of an
    unchanged row can never find a difference that is only a format quirk)."""

    id: str
    condition_id: str
    status: str
    stop_reason: str | None
    error: str | None
    head_node_id: str | None
    updated_at: str


class FeedReader:
    """One read-only connection answering the feed's questions on an SQLite file (see the
    module docstring; a PostgreSQL database has :class:`ServerFeedReader`).

    Not thread-safe on its own: the caller serialises use (``DatabaseFeed`` holds a lock).
    """

    def __init__(self, path: Path | str) -> None:
        location = db_location(path)
        if not isinstance(location, Path):
            raise StoreError(f"{location} is a server database: follow it with ServerFeedReader (open_feed_reader)")
        self.path = location
        if not self.path.is_file():
            # mode=ro would fail anyway; say why in words rather than "unable to open".
            raise FileNotFoundError(f"no database at {self.path}")
        conn = open_sqlite(self.path)
        if conn is None:
            raise StoreError(f"{self.path} has no clonechat tables yet: nothing to follow")
        self.connection: Connection = conn

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the file."""
        return int(self.connection.execute(DATA_VERSION_SQL).fetchone()[0])

    def max_rowid(self) -> int:
        """The newest node's rowid (0: no nodes): the cursor after everything committed."""
        return int(self.connection.execute(MAX_ROWID_SQL).fetchone()[0])

    def nodes_between(self, after: int, upto: int, dialogue_ids: Sequence[str] | None = None) -> list[NodeRecord]:
        """Nodes with ``after < rowid <= upto`` (of ``dialogue_ids`` only, unless ``None``), in
        commit order."""
        if dialogue_ids is None:
            rows = self.connection.execute(NODES_SQL, (after, upto))
        else:
            rows = self.connection.execute(NODES_FILTERED_SQL, (after, upto, json.dumps(list(dialogue_ids))))
        return [_node_from_row(row[1:]) for row in rows]

    def dialogues_since(self, since: datetime | None) -> list[DialogueState]:
        """Dialogues whose ``updated_at`` is at or after ``since`` (``None``: every dialogue)."""
        bound = "" if since is None else since.strftime(TIMESTAMP_FORMAT)  # "" sorts before any stamp
        return [DialogueState(*row) for row in self.connection.execute(DIALOGUES_SQL, (bound,))]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read everything inside the block from one snapshot (one read transaction)."""
        self.connection.execute("BEGIN")
        try:
            yield
        finally:
            self.connection.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


class ServerFeedReader:
    """The feed's questions on a PostgreSQL database (see the module docstring): a listening
    connection that tells which dialogues changed, and a read-only connection that reads them.

    Not thread-safe on its own: the caller serialises use (``DatabaseFeed`` holds a lock). The
    listening connection is only ever drained without waiting (:meth:`notified`) or watched for
    readability through :meth:`fileno`; nothing else runs on it.
    """

    def __init__(self, location: ServerDatabase) -> None:
        import psycopg

        self.path = location
        # The schema check every reader makes (and "no clonechat tables yet" in words).
        with open_reader(location) as checked:
            if checked is None:
                raise StoreError(f"{location} has no clonechat tables yet: nothing to follow")
        self._pending: set[str] = set()
        self._everything = False
        try:
            self.listener: psycopg.Connection[tuple[Any, ...]] = self._connect("clonechat feed (listen)")
        except psycopg.Error as exc:
            raise StoreError(f"cannot follow {location}: {server_reason(exc)}") from None
        try:
            # Autocommit: the LISTEN is committed, so in force, before the first snapshot below.
            self.listener.execute(f"LISTEN {CHANNEL}")
            self.connection: ServerConnection = self._connect("clonechat feed")
            self.connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self.connection.read_only = True
            # Anything the server sent with the LISTEN's reply is taken now, so from here on a
            # notification not yet drained is always data waiting on the socket (see fileno).
            self._drain()
        except BaseException as exc:
            self.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot follow {location}: {server_reason(exc)}") from None
            raise

    def _connect(self, name: str) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        return psycopg.connect(
            self.path.libpq_url,
            autocommit=True,
            connect_timeout=10,
            application_name=name,
            options=_SERVER_OPTIONS,
            # Never a server-side prepared statement: a generic plan would not see the cursors
            # (the bounds that make the rowid index the cheap way in); each poll's own plan does.
            prepare_threshold=None,
        )

    def fileno(self) -> int:
        """The listening connection's socket: readable when a notification (or the server's
        goodbye) arrived, so an event loop can wait on it instead of polling."""
        return self.listener.fileno()

    def _drain(self) -> None:
        for notification in self.listener.notifies(timeout=0):
            if notification.channel != CHANNEL:
                continue
            ids = parse_payload(notification.payload)
            if ids is None:
                self._everything = True
            else:
                self._pending |= ids
        # One read of the socket: anything beyond it (a burst larger than a read) is still on
        # the socket, which therefore stays readable, so the next wait returns at once.

    def notified(self) -> tuple[set[str], bool]:
        """The dialogue ids notified since the last call, and whether a notification asked to
        re-read everything. Never waits, sends no statement: an idle poll is one non-blocking
        read of the listening socket."""
        self._drain()
        ids, everything = self._pending, self._everything
        self._pending, self._everything = set(), False
        return ids, everything

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until a notification is waiting (for callers without
        an event loop; the feed's ``watch`` waits on :meth:`fileno` instead)."""
        import select

        if self._pending or self._everything:
            return True
        ready, _, _ = select.select([self.fileno()], [], [], max(0.0, timeout))
        return bool(ready)

    def cursors(self, dialogue_ids: Sequence[str] | None) -> dict[str, int]:
        """Each dialogue's newest node rowid now (0: no nodes yet); ``None``: every dialogue."""
        if dialogue_ids is None:
            rows = self.connection.execute(SERVER_ALL_CURSORS_SQL).fetchall()
        else:
            rows = self.connection.execute(SERVER_CURSORS_SQL, (list(dialogue_ids),)).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def nodes_after(self, cursors: Mapping[str, int]) -> list[tuple[int, NodeRecord]]:
        """Nodes of the dialogues in ``cursors``, each with ``rowid`` past its dialogue's cursor,
        as ``(rowid, node)`` in rowid order (so in commit order within each dialogue)."""
        if not cursors:
            return []
        rows: list[tuple[Any, ...]] = []
        with self.connection.cursor() as cur:
            # One statement per dialogue, sent together (psycopg pipelines them): one round trip.
            cur.executemany(SERVER_NODES_SQL, list(cursors.items()), returning=True)
            while True:
                rows.extend(cur.fetchall())
                if not cur.nextset():
                    break
        rows.sort(key=lambda row: int(row[0]))
        return [(int(row[0]), _node_from_row(row[1:])) for row in rows]

    def dialogues(self, dialogue_ids: Sequence[str] | None) -> list[DialogueState]:
        """The rows of these dialogues (``None``: of every dialogue), looked up by id."""
        if dialogue_ids is None:
            rows = self.connection.execute(SERVER_ALL_DIALOGUES_SQL).fetchall()
        else:
            rows = self.connection.execute(SERVER_DIALOGUES_SQL, (list(dialogue_ids),)).fetchall()
        return [DialogueState(*row) for row in rows]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read everything inside the block from one snapshot (a REPEATABLE READ, READ ONLY
        transaction, ended at once so the feed never holds one open between polls)."""
        with self.connection.transaction():
            yield

    def close(self) -> None:
        for name in ("connection", "listener"):
            conn = getattr(self, name, None)
            if conn is not None:
                conn.close()


def open_feed_reader(path: DbLocation | str) -> FeedReader | ServerFeedReader:
    """The feed reader for a location: an SQLite file's, or a PostgreSQL database's."""
    location = db_location(path)
    if isinstance(location, ServerDatabase):
        return ServerFeedReader(location)
    return FeedReader(location)
