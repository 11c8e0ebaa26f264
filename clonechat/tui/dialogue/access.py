"""The run database as the dialogue screen uses it: opened for reading, written only on demand.

Looking at a stored dialogue must leave the file exactly as it was: it is read through a
:class:`~clonechat.read.connect.Reader` (``mode=ro``, no migration, no ``IMMEDIATE``
transaction queued behind a running batch). The writer :class:`Database` is opened the first
time the researcher runs, continues or forks a dialogue, and from then on also serves the
reads (its reader engine sees the same committed data, so a part that kept the reader is not wrong).
"""

from __future__ import annotations

from contextlib import ExitStack

from clonechat.location import DbLocation
from clonechat.read.connect import Readable, Reader, open_existing
from clonechat.store.database import Database


class DatabaseAccess:
    """One screen's handles on one run database, closed together when the screen goes."""

    def __init__(self, path: DbLocation) -> None:
        self.path = path
        self._reader: Reader | None = None
        self._writer: Database | None = None
        self._stack = ExitStack()

    @property
    def reading(self) -> Readable:
        """What the screen reads from: the writer if one is open, else the read-only reader
        (opened on first use; a StoreError if there is no database yet)."""
        if self._writer is not None:
            return self._writer
        if self._reader is None:
            self._reader = self._stack.enter_context(open_existing(self.path))
        return self._reader

    @property
    def writing(self) -> bool:
        """Whether the writer has been opened (something was run or forked here)."""
        return self._writer is not None

    def writer(self) -> Database:
        """The writer, opened (and the schema migrated if need be) on first use."""
        if self._writer is None:
            self._writer = Database.open(self.path)
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._stack.close()
        self._reader = None
