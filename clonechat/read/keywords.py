"""Keyword rates per dialogue as one SQL statement: the text ``clonechat keywords`` runs and
``docs/querying.md`` prints verbatim, so the same query runs in ``clonechat query``, Datasette
(which asks for ``:keywords`` and ``:experiment`` in a form) and pandas.

Over ``v_turn`` (the dialogue's current conversation, agent turns only), with the keywords as a
JSON list and ``:experiment`` (empty or NULL for all). Matching is a case-insensitive substring
count (SQLite's ``lower`` folds ASCII only), see :mod:`clonechat.query.keywords`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from clonechat.read.console import QueryResult, ReadOnlyConnection, run

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


def keyword_rate_rows(conn: ReadOnlyConnection, words: Sequence[str], experiment: str | None) -> QueryResult:
    """Per dialogue and keyword: turns, turns mentioning it, occurrences, words, per 1,000 words."""
    return run(conn, KEYWORD_RATE_SQL, {"keywords": json.dumps(list(words)), "experiment": experiment})
