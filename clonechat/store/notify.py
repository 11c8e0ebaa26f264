"""Telling live viewers which dialogues a write transaction changed (PostgreSQL ``NOTIFY``).

On PostgreSQL many writer processes commit concurrently, so a viewer (the TUI's live feed,
:mod:`clonechat.read.feed`) cannot learn what is new by watching one cursor on the node table
the way it does on SQLite. Instead every write transaction that stores turns or changes a
dialogue's state says which dialogues it touched, with ``pg_notify`` *inside* that transaction:
PostgreSQL delivers a notification only when, and only if, its transaction commits (a rolled
back write notifies nobody), and only after the commit is visible, so a listener that reads the
notified dialogues next sees what was committed. An SQLite file has one writer at a time and a
cheap ``PRAGMA data_version``, so there :func:`notify_changed` does nothing.

The payload is a JSON array of dialogue ids. PostgreSQL refuses a payload of 8000 bytes or
more, so a long list is split over several notifications of one transaction (they are all
delivered at its commit; a listener reads each dialogue past its own cursor, so reading one
part before the next arrives loses nothing). A payload of :data:`EVERYTHING` (``NOTIFY
clonechat, '*'`` by hand, after a bulk import say) or one that is not such an array tells a
listener to re-read every dialogue it follows. Identical notifications of one transaction are
delivered once (PostgreSQL folds them), so calling this for every write of a batch costs one
statement per write and nothing at the listener.

A notification queued by a transaction stays in the server's queue until every listening
session has read it; the feed's listening connection does nothing else and never holds a
transaction, so it never holds the queue back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

#: The channel the writers notify and the feed listens on (one per database: a notification
#: reaches only sessions connected to the database it was sent in).
CHANNEL = "clonechat"
#: A payload meaning "anything may have changed": re-read every followed dialogue.
EVERYTHING = "*"
#: Under PostgreSQL's payload limit (8000 bytes with the default block size), with room to spare.
MAX_PAYLOAD_BYTES = 7000

_NOTIFY_SQL = "SELECT pg_notify(%s, %s)"


def payloads(dialogue_ids: Iterable[str]) -> list[str]:
    """The payloads naming ``dialogue_ids`` (each once, sorted), each under
    :data:`MAX_PAYLOAD_BYTES`; none for no ids."""
    found: list[str] = []
    chunk: list[str] = []
    size = 2  # "[]"
    for dialogue_id in sorted(set(dialogue_ids)):
        item = len(json.dumps(dialogue_id).encode()) + 2  # the id and a ", "
        if chunk and size + item > MAX_PAYLOAD_BYTES:
            found.append(json.dumps(chunk))
            chunk, size = [], 2
        chunk.append(dialogue_id)
        size += item
    if chunk:
        found.append(json.dumps(chunk))
    return found


def parse_payload(payload: str) -> set[str] | None:
    """The dialogue ids a payload names, or ``None`` for "re-read everything" (:data:`EVERYTHING`,
    or anything that is not a JSON array of strings: a stranger's message on the channel must
    not make the feed miss a change)."""
    if payload == EVERYTHING:
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return set(value)


def notify_changed(conn: Connection, dialogue_ids: Iterable[str]) -> None:
    """Tell listeners, at this transaction's commit, that ``dialogue_ids`` changed (PostgreSQL);
    nothing on SQLite. Call it in the transaction that made the change, never after it: the
    notification must not outlive a rollback nor arrive before the rows are visible."""
    if conn.dialect.name == "sqlite":
        return
    for payload in payloads(dialogue_ids):
        conn.exec_driver_sql(_NOTIFY_SQL, (CHANNEL, payload))
