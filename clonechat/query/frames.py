"""The run database as pandas DataFrames: ``clonechat.open_run_db(path)``.

Each frame is one of the documented views (``docs/schema.md``) read through the same
read-only connection as ``clonechat query``, so a notebook cannot change the database either.
Columns ending in ``_at`` are parsed as UTC timestamps. pandas is an optional extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from clonechat.errors import MissingExtraError
from clonechat.query import sql

if TYPE_CHECKING:
    import pandas as pd

_SCORES = """
SELECT e.name AS experiment, c.name AS condition, n.dialogue_id, n.id AS node_id, n.kind, n.variant,
       n.turn_index, s.scorer, s.version, s.value, s.detail, s.created_at
FROM score s
JOIN node n ON n.id = s.node_id
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
ORDER BY s.id"""


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

    def __init__(self, path: Path | str) -> None:
        self._pd = _pandas()
        self.path = Path(path)
        self._conn = sql.connect(self.path)

    def sql(self, query: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> pd.DataFrame:
        """Any read-only query as a DataFrame (writes are refused, as in ``clonechat query``)."""
        result = sql.run(self._conn, query, params)
        frame: pd.DataFrame = self._pd.DataFrame.from_records(list(result.rows), columns=result.columns)
        for column in frame.columns:
            if str(column).endswith("_at"):
                frame[column] = self._pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    @property
    def dialogues(self) -> pd.DataFrame:
        """``v_dialogue``: one row per dialogue."""
        return self.sql("SELECT * FROM v_dialogue ORDER BY dialogue_id")

    @property
    def turns(self) -> pd.DataFrame:
        """``v_turn``: every agent turn with its context and metrics (``on_head`` for the current conversation)."""
        return self.sql("SELECT * FROM v_turn ORDER BY dialogue_id, turn_index, node_id")

    @property
    def predictions(self) -> pd.DataFrame:
        """``v_prediction``: one row per prediction and scorer version, with the shuffled control beside it."""
        return self.sql("SELECT * FROM v_prediction ORDER BY dialogue_id, turn_index, prediction_id, scorer")

    @property
    def scores(self) -> pd.DataFrame:
        """Every score row with the scored node's experiment, condition, kind and turn."""
        return self.sql(_SCORES)

    @property
    def coordination(self) -> pd.DataFrame:
        """``v_coordination``: both agents' answers to each coordination question, and whether they matched."""
        return self.sql("SELECT * FROM v_coordination ORDER BY dialogue_id, task, phase")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunDB:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def open_run_db(path: Path | str) -> RunDB:
    """The run database at ``path`` for analysis in pandas (read-only)."""
    return RunDB(path)
