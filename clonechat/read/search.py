"""Which messages contain these words: the full-text index, or a plain substring scan.

The index is the FTS5 table ``node_fts`` over ``node.content`` (kept in sync by the store, see
:mod:`clonechat.query.search` for what a query may say). Each hit comes with where it was said
(experiment, condition, turn, speaker) and a snippet with the matched words between
:data:`MARK_START` and :data:`MARK_END`; a substring scan returns the whole content, which the
caller cuts around the match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clonechat.read.console import ReadOnlyConnection

#: Marks around the matched words in a snippet.
MARK_START, MARK_END = "\x02", "\x03"

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
_INDEXED = {
    "snippet": f"snippet(node_fts, 0, '{MARK_START}', '{MARK_END}', '…', 16)",
    "source": "node_fts JOIN node n ON n.rowid = node_fts.rowid",
    "match": "node_fts MATCH :query",
    "order": "node_fts.rank",
}
_SUBSTRING = {
    "snippet": "n.content",
    "source": "node n",
    "match": "instr(lower(n.content), lower(:query)) > 0",
    "order": "n.rowid",
}


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


def find_messages(
    conn: ReadOnlyConnection,
    query: str,
    *,
    experiment: str | None = None,
    kinds: Sequence[str] = (),
    substring: bool = False,
    limit: int = 50,
) -> list[SearchHit]:
    """Messages matching ``query`` (FTS5 syntax), best match first; with ``substring``, those
    containing it case-insensitively, oldest first. An invalid FTS5 query is SQLite's
    ``QueryError`` (``SQL error: ...``)."""
    params: dict[str, object] = {"query": query, "limit": limit}
    filters = ""
    if experiment is not None:
        filters += " AND e.name = :experiment"
        params["experiment"] = experiment
    if kinds:
        names = [f":kind{i}" for i in range(len(kinds))]
        filters += f" AND n.kind IN ({', '.join(names)})"
        params.update({f"kind{i}": k for i, k in enumerate(kinds)})
    sql = _CONTEXT.format(filters=filters, **(_SUBSTRING if substring else _INDEXED))
    return [SearchHit(*row) for row in conn.execute(sql, params).fetchall()]
