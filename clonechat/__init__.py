"""clonechat: two instances of the same language model talking to each other, recorded for research.

``clonechat.open_run_db(path)`` opens a run database for analysis in pandas (read-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clonechat.location import DbLocation
    from clonechat.query.frames import RunDB

__all__ = ["open_run_db"]


def open_run_db(path: DbLocation | str) -> RunDB:
    """The run database at ``path`` (a file, or a ``postgresql://`` URL) for analysis in pandas,
    read-only: ``.dialogues``, ``.turns``, ``.predictions``, ``.scores``, ``.coordination`` and
    ``.sql(query)``."""
    # Imported here: the engine and the command line should not load the analysis API.
    from clonechat.query.frames import RunDB

    return RunDB(path)
