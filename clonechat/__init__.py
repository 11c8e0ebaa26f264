"""clonechat: two instances of the same language model talking to each other, recorded for research.

``clonechat.open_run_db(path)`` opens a run database for analysis in pandas (read-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clonechat.query.frames import RunDB, open_run_db

__all__ = ["RunDB", "open_run_db"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the engine and the CLI should not pay for the analysis API.
    if name in __all__:
        from clonechat.query import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'clonechat' has no attribute {name!r}")
