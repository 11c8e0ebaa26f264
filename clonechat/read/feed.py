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
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from clonechat.engine.records import NodeRecord
from clonechat.errors import StoreError
from clonechat.location import DbLocation, db_location
from clonechat.read.connect import open_sqlite, stored_time

#: The raw connection a :class:`FeedReader` holds (for diagnostics and tests).
Connection = sqlite3.Connection

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
    """One read-only connection answering the feed's questions (see the module docstring).

    Not thread-safe on its own: the caller serialises use (``DatabaseFeed`` holds a lock).
    """

    def __init__(self, path: DbLocation | str) -> None:
        location = db_location(path)
        if not isinstance(location, Path):
            raise StoreError(f"following {location} live needs LISTEN/NOTIFY, which is not built yet")
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
