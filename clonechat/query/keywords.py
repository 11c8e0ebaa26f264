"""Keyword rates per dialogue: the ready-made query for attractor questions ("how often did
clone pairs drift into talk of consciousness, eternity, dance, 🌀?").

One SQL statement (:mod:`clonechat.read.keywords`) over ``v_turn`` (the dialogue's current
conversation, agent turns only), taking the keywords as a JSON list (and ``:experiment``, empty
or NULL for all), so the same text runs in ``clonechat keywords``, in ``clonechat query``, in Datasette (which asks for
``:keywords`` and ``:experiment`` in a form) and in pandas; on PostgreSQL the statement differs
only in how it reads the JSON list. Matching is a case-insensitive substring count (``lower``
folds ASCII only on SQLite): ``dance`` also counts ``dancer``; use ``clonechat search`` for
whole words.
"""

from __future__ import annotations

from collections.abc import Sequence

from clonechat.errors import QueryError
from clonechat.read.console import QueryResult, ReadOnlyConnection
from clonechat.read.keywords import keyword_rate_rows

DEFAULT_KEYWORDS = ("consciousness", "eternal", "dance", "🌀")


def keyword_rates(
    conn: ReadOnlyConnection, keywords: Sequence[str] = DEFAULT_KEYWORDS, *, experiment: str | None = None
) -> QueryResult:
    """Per dialogue and keyword: turns, turns mentioning it, occurrences, words, per 1,000 words."""
    words = [k for k in keywords if k.strip()]
    if not words:
        raise QueryError("keywords: give at least one non-empty keyword")
    return keyword_rate_rows(conn, words, experiment)
