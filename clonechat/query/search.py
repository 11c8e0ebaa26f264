"""Full-text search over message content (``clonechat search``).

The index is the FTS5 table ``node_fts`` over ``node.content``. The store indexes every node
in the transaction that stores it (``writes.index_new_nodes``), so every message (turns,
predictions, reports, forks, resumed turns) is searchable the moment it is committed, from any
process; triggers keep it in sync with edits and deletions made with other tools. The
tokenizer is ``unicode61``: words match case- and accent-insensitively, and FTS5 query syntax works (``"two words"``,
``consciousness OR awareness``, ``conscious*``, ``NEAR(spiral dance)``). Emoji and other
symbols are not words to it, so a query without letters or digits (``🌀``) is run as a
case-insensitive substring scan instead, as is any query given with ``literal=True``.
The statements are :mod:`clonechat.read.search`'s; this module says what a query means.
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
) -> list[SearchHit]:
    """Messages matching ``query``, best match first (oldest first for a substring scan)."""
    if not query.strip():
        raise QueryError("search: give something to search for")
    literal = literal or is_literal(query)
    try:
        hits = find_messages(conn, query, experiment=experiment, kinds=kinds, substring=literal, limit=limit)
    except QueryError as exc:
        if not literal and str(exc).startswith("SQL error"):
            # The statement is ours; what SQLite rejects is the query string.
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
    if at < 0:  # lower() of SQLite and Python disagree outside ASCII: show the start
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
