"""Keyword rates per dialogue: the ready-made query for attractor questions ("how often did
clone pairs drift into talk of consciousness, eternity, dance, 🌀?").

One SQL statement over ``v_turn`` (the dialogue's current conversation, agent turns only),
taking the keywords as a JSON list (and ``:experiment``, empty or NULL for all), so the same
text runs in ``clonechat keywords``, in ``clonechat query``, in Datasette (which asks for
``:keywords`` and ``:experiment`` in a form) and in pandas. Matching is a case-insensitive
substring count (SQLite's ``lower`` folds ASCII only): ``dance`` also counts ``dancer``; use
``clonechat search`` for whole words.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from clonechat.errors import QueryError
from clonechat.query.sql import QueryResult, ReadOnlyConnection, run

DEFAULT_KEYWORDS = ("consciousness", "eternal", "dance", "🌀")

KEYWORD_RATE_SQL = """\
WITH keyword(word) AS (SELECT value FROM json_each(:keywords)),
turn AS (SELECT * FROM v_turn WHERE on_head AND coalesce(:experiment, '') IN ('', experiment))
SELECT t.experiment, t.condition, t.dialogue_id, k.word AS keyword,
       count(*) AS turns,
       sum(instr(lower(t.content), lower(k.word)) > 0) AS turns_with,
       sum((length(lower(t.content)) - length(replace(lower(t.content), lower(k.word), ''))) / length(k.word))
           AS occurrences,
       sum(t.words) AS words,
       round(1000.0 * sum((length(lower(t.content)) - length(replace(lower(t.content), lower(k.word), '')))
           / length(k.word)) / max(sum(t.words), 1), 2) AS per_1000_words
FROM turn t CROSS JOIN keyword k
GROUP BY t.experiment, t.condition, t.dialogue_id, k.word
ORDER BY t.experiment, t.condition, t.dialogue_id, k.word"""


def keyword_rates(
    conn: ReadOnlyConnection, keywords: Sequence[str] = DEFAULT_KEYWORDS, *, experiment: str | None = None
) -> QueryResult:
    """Per dialogue and keyword: turns, turns mentioning it, occurrences, words, per 1,000 words."""
    words = [k for k in keywords if k.strip()]
    if not words:
        raise QueryError("keywords: give at least one non-empty keyword")
    return run(conn, KEYWORD_RATE_SQL, {"keywords": json.dumps(words), "experiment": experiment})
