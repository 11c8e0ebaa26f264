"""The run database as pandas DataFrames: ``clonechat.open_run_db(path_or_url)``.

Each frame is one of the documented views (``docs/schema.md``, queries in
:mod:`clonechat.read.frames`) read through the same read-only connection as ``clonechat query``
(:mod:`clonechat.read.console`), so a notebook cannot change the database either, an SQLite
file or a PostgreSQL database (``postgresql://...``), and the frames hold the same rows from
either. Columns ending in ``_at`` are parsed as UTC timestamps. pandas is an optional extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from clonechat.errors import MissingExtraError
from clonechat.location import ServerDatabase, db_location
from clonechat.read import console
from clonechat.read.console import QueryResult
from clonechat.read.frames import frame_rows

if TYPE_CHECKING:
    import pandas as pd


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise MissingExtraError(
            "open_run_db needs pandas, an optional extra: pip install 'clonechat[pandas]' (or uv sync --extra pandas)"
        ) from None
    return pandas


class RunDB:
    """A run database opened read-only for analysis. Use as a context manager, or ``close()``."""

    def __init__(self, path: Path | str | ServerDatabase) -> None:
        self._pd = _pandas()
        self.path = db_location(path)
        self._conn = console.connect(self.path)

    def sql(self, query: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> pd.DataFrame:
        """Any read-only query as a DataFrame (writes are refused, as in ``clonechat query``)."""
        return self._frame(console.run(self._conn, query, params))

    def _frame(self, result: QueryResult) -> pd.DataFrame:
        frame: pd.DataFrame = self._pd.DataFrame.from_records(list(result.rows), columns=result.columns)
        for column in frame.columns:
            if str(column).endswith("_at"):
                frame[column] = self._pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    @property
    def dialogues(self) -> pd.DataFrame:
        """``v_dialogue``: one row per dialogue."""
        return self._frame(frame_rows(self._conn, "dialogues"))

    @property
    def turns(self) -> pd.DataFrame:
        """``v_turn``: every agent turn with its context and metrics (``on_head`` for the current conversation)."""
        return self._frame(frame_rows(self._conn, "turns"))

    @property
    def predictions(self) -> pd.DataFrame:
        """``v_prediction``: one row per prediction and scorer (the version in force, ``v_score``),
        with the shuffled control of that version beside it."""
        return self._frame(frame_rows(self._conn, "predictions"))

    @property
    def scores(self) -> pd.DataFrame:
        """Every score row with the scored node's experiment, condition, kind and turn."""
        return self._frame(frame_rows(self._conn, "scores"))

    @property
    def coordination(self) -> pd.DataFrame:
        """``v_coordination``: both agents' answers to each coordination question, and whether they matched."""
        return self._frame(frame_rows(self._conn, "coordination"))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunDB:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def open_run_db(path: Path | str | ServerDatabase) -> RunDB:
    """The run database at ``path`` (a file, or a PostgreSQL URL) for analysis in pandas (read-only)."""
    return RunDB(path)
