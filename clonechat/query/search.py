"""Full-text search over message content (``clonechat search``).

A query is written in FTS5's syntax, on SQLite and on PostgreSQL alike: bare words (all of them),
``"two words"`` (a phrase), ``consciousness OR awareness``, ``dance NOT spiral``, ``AND``,
parentheses, ``conscious*`` (a prefix); ``NEAR(spiral dance)``, ``^`` and column filters work on
SQLite only (PostgreSQL refuses them in one line). Words match case- and accent-insensitively.
On SQLite the index is the FTS5 table ``node_fts`` over ``node.content``; on PostgreSQL a GIN
index over the accent-folded words, asked with the same query rebuilt as a ``tsquery``
(:mod:`clonechat.read.search`). The store indexes every node in the transaction that stores it,
so every message (turns, predictions, reports, forks, resumed turns) is searchable the moment it
is committed, from any process. Emoji and other symbols are not words, so a query without
letters or digits (``🌀``) is run as a case-insensitive substring scan instead, as is any query
given with ``literal=True``. The statements are :mod:`clonechat.read.search`'s; this module
says what a query means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import regex

from clonechat.errors import QueryError
from clonechat.read.console import ReadOnlyConnection
from clonechat.read.search import MARK_END, MARK_START, SearchHit, find_messages

__all__ = ["MARK_END", "MARK_START", "SearchHit", "is_literal", "search"]

_HAS_WORD = regex.compile(r"[\p{L}\p{N}]")


def is_literal(query: str) -> bool:
    """Whether the index cannot answer ``query`` (no letters or digits: emoji, symbols)."""
    return not _HAS_WORD.search(query)


def search(
    conn: ReadOnlyConnection,
    query: str,
    *,
    experiment: str | None = None,
    kinds: Sequence[str] = (),
    literal: bool = False,
    limit: int = 50,
    reasoning: bool = False,
) -> list[SearchHit]:
    """Messages matching ``query``, best match first (oldest first for a substring scan); with
    ``reasoning``, the messages whose private reasoning matches it."""
    if not query.strip():
        raise QueryError("search: give something to search for")
    literal = literal or is_literal(query)
    try:
        hits = find_messages(
            conn,
            query,
            experiment=experiment,
            kinds=kinds,
            substring=literal,
            limit=limit,
            field="reasoning" if reasoning else "content",
        )
    except QueryError as exc:
        if not literal and str(exc).startswith("SQL error"):
            # The statement is ours; what the backend (or the FTS5 grammar) rejects is the query.
            raise QueryError(
                f"search {query!r}: not a valid full-text query ({str(exc).removeprefix('SQL error: ')}); "
                "put words with punctuation in double quotes, or use --literal"
            ) from None
        raise
    if literal:
        hits = [_mark_literal(hit, query) for hit in hits]
    return hits


def _mark_literal(hit: SearchHit, query: str, context: int = 60) -> SearchHit:
    text = hit.snippet
    at = text.lower().find(query.lower())
    if at < 0:  # lower() of the database and Python disagree outside ASCII: show the start
        return hit
    start, end = max(0, at - context), min(len(text), at + len(query) + context)
    snippet = (
        ("…" if start else "")
        + text[start:at]
        + MARK_START
        + text[at : at + len(query)]
        + MARK_END
        + text[at + len(query) : end]
        + ("…" if end < len(text) else "")
    )
    return replace(hit, snippet=snippet)
