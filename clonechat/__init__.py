"""clonechat: two instances of the same language model talking to each other, recorded for research.

``clonechat.open_run_db(path)`` opens a run database for analysis in pandas (read-only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clonechat.query.frames import RunDB

__all__ = ["open_run_db"]


def open_run_db(path: Path | str) -> RunDB:
    """The run database at ``path`` for analysis in pandas, read-only: ``.dialogues``,
    ``.turns``, ``.predictions``, ``.scores``, ``.coordination`` and ``.sql(query)``."""
    # Imported here: the engine and the command line should not load the analysis API.
    from clonechat.query.frames import RunDB

    return RunDB(path)
