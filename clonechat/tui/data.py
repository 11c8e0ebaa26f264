"""What the dialogue browser shows, read by the database *path*. No Textual here, and no SQL.

The questions are the read layer's (:mod:`clonechat.read.dialogues`: the one definition of
"turns", the facets, a dialogue's experiment); this module only adapts them to how the browser
asks. The browser calls from a worker thread with a path, so each call opens its own read-only
:func:`~clonechat.read.connect.open_reader` and closes it again: nothing is shared between
threads, nothing is ever written (the file stays byte-identical), and a batch writing in
another process never waits on us. A path with no database yet reads as empty.
"""

from __future__ import annotations

from clonechat.location import DbLocation
from clonechat.read import dialogues
from clonechat.read.connect import open_reader
from clonechat.read.dialogues import DialogueSummary, Facets

#: Rows the browser shows at most (the newest; filters reach the others).
DEFAULT_LIMIT = 500


def check_readable(db_path: DbLocation | str) -> None:
    """Raise the StoreError the browser would show if ``db_path`` cannot be opened (a directory,
    not SQLite, another program's database, another schema), so the command line can say it in
    one line and exit non-zero before the app takes the terminal. A missing file is fine: the
    app starts empty and creates it only when a dialogue is run."""
    with open_reader(db_path):
        pass


def browse(
    db_path: DbLocation | str,
    *,
    experiment: str | None = None,
    condition: str | None = None,
    status: str | None = None,
    text: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[DialogueSummary]:
    """Dialogues matching every given filter, newest first, at most ``limit`` (see
    :func:`clonechat.read.dialogues.dialogue_summaries`)."""
    with open_reader(db_path) as reader:
        if reader is None:
            return []
        return dialogues.dialogue_summaries(
            reader, experiment=experiment, condition=condition, status=status, text=text, limit=limit
        )


def facets(db_path: DbLocation | str) -> Facets:
    """Experiments, their conditions and the statuses that have at least one dialogue."""
    with open_reader(db_path) as reader:
        return Facets() if reader is None else dialogues.facets(reader)


def experiment_of(db_path: DbLocation | str, dialogue_id: str) -> str | None:
    """The name of the experiment a dialogue belongs to (``None`` if there is no such dialogue)."""
    with open_reader(db_path) as reader:
        return None if reader is None else dialogues.experiment_of(reader, dialogue_id)
