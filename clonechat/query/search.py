"""Full-text search over message content (``clonechat search``).

The index is the FTS5 table ``node_fts`` over ``node.content``. The store indexes every node
in the transaction that stores it (``writes.index_new_nodes``), so every message (turns,
predictions, reports, forks, resumed turns) is searchable the moment it is committed, from any
process; triggers keep it in sync with edits and deletions made with other tools. The tokenizer is ``unicode61``: words
match case- and accent-insensitively, and FTS5 query syntax works (``"two words"``,
``consciousness OR awareness``, ``conscious*``, ``NEAR(spiral dance)``). Emoji and other
symbols are not words to it, so a query without letters or digits (``🌀``) is run as a
case-insensitive substring scan instead, as is any query given with ``literal=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import regex

from clonechat.errors import QueryError
from clonechat.query.sql import ReadOnlyConnection

#: Marks around the matched words in a snippet.
MARK_START, MARK_END = "\x02", "\x03"
_HAS_WORD = regex.compile(r"[\p{L}\p{N}]")

_CONTEXT = """
SELECT n.id, n.dialogue_id, e.name, c.name, n.turn_index, n.speaker, n.kind, n.variant, {snippet}
FROM {source}
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
WHERE {match} {filters}
ORDER BY {order}
LIMIT :limit
"""


@dataclass(frozen=True)
class SearchHit:
    node_id: str
    dialogue_id: str
    experiment: str
    condition: str
    turn_index: int
    speaker: str
    kind: str
    variant: str | None
    #: The content around the match, matches between MARK_START and MARK_END.
    snippet: str

    def plain_snippet(self) -> str:
        return self.snippet.replace(MARK_START, "").replace(MARK_END, "")


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
    params: dict[str, object] = {"query": query, "limit": limit}
    filters = ""
    if experiment is not None:
        filters += " AND e.name = :experiment"
        params["experiment"] = experiment
    if kinds:
        names = [f":kind{i}" for i in range(len(kinds))]
        filters += f" AND n.kind IN ({', '.join(names)})"
        params.update({f"kind{i}": k for i, k in enumerate(kinds)})
    literal = literal or is_literal(query)
    if literal:
        sql = _CONTEXT.format(
            snippet="n.content",
            source="node n",
            match="instr(lower(n.content), lower(:query)) > 0",
            filters=filters,
            order="n.rowid",
        )
    else:
        sql = _CONTEXT.format(
            snippet=f"snippet(node_fts, 0, '{MARK_START}', '{MARK_END}', '…', 16)",
            source="node_fts JOIN node n ON n.rowid = node_fts.rowid",
            match="node_fts MATCH :query",
            filters=filters,
            order="node_fts.rank",
        )
    try:
        rows = conn.execute(sql, params).fetchall()
    except QueryError as exc:
        if not literal and str(exc).startswith("SQL error"):
            # The statement is ours; what SQLite rejects is the query string.
            raise QueryError(
                f"search {query!r}: not a valid full-text query ({str(exc).removeprefix('SQL error: ')}); "
                "put words with punctuation in double quotes, or use --literal"
            ) from None
        raise
    hits = [SearchHit(*row) for row in rows]
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
