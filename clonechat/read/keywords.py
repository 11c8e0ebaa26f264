"""Keyword rates per dialogue as one SQL statement: the text ``clonechat keywords`` runs and
``docs/querying.md`` prints verbatim, so the same query runs in ``clonechat query``, Datasette
(which asks for ``:keywords`` and ``:experiment`` in a form) and pandas.

Over ``v_turn`` (the dialogue's current conversation, agent turns only), with the keywords as a
JSON list and ``:experiment`` (empty or NULL for all). Matching is a case-insensitive substring
count (``lower`` folds ASCII only on SQLite, and on a PostgreSQL database with the C locale),
see :mod:`clonechat.query.keywords`. The statement is the same on both backends except where
the JSON list is read (``json_each`` on SQLite, ``json_array_elements_text`` on PostgreSQL):
:data:`KEYWORD_LISTS`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from clonechat.read.console import QueryResult, ReadOnlyConnection, run

#: How each backend reads ``:keywords``, a JSON list of strings, as rows of ``value``.
KEYWORD_LISTS = {
    "sqlite": "SELECT value FROM json_each(:keywords)",
    "postgresql": "SELECT value FROM json_array_elements_text(CAST(:keywords AS json))",
}

#: ``{keywords}`` is the backend's :data:`KEYWORD_LISTS` entry.
_KEYWORD_RATE = """\
WITH keyword(word) AS ({keywords}),
turn AS (SELECT * FROM v_turn WHERE on_head = 1 AND coalesce(:experiment, '') IN ('', experiment)),
counted AS (
    SELECT t.experiment, t.condition, t.dialogue_id, k.word, t.words,
           (length(lower(t.content)) - length(replace(lower(t.content), lower(k.word), ''))) / length(k.word)
               AS occurrences
    FROM turn t CROSS JOIN keyword k
)
SELECT experiment, condition, dialogue_id, word AS keyword,
       count(*) AS turns,
       sum(CASE WHEN occurrences > 0 THEN 1 ELSE 0 END) AS turns_with,
       sum(occurrences) AS occurrences,
       sum(words) AS words,
       round(1000.0 * sum(occurrences) / coalesce(nullif(sum(words), 0), 1), 2) AS per_1000_words
FROM counted
GROUP BY experiment, condition, dialogue_id, word
ORDER BY experiment, condition, dialogue_id, word"""


def keyword_rate_sql(dialect: str) -> str:
    """The keyword-rate statement for a backend (``sqlite`` or ``postgresql``)."""
    return _KEYWORD_RATE.format(keywords=KEYWORD_LISTS[dialect])


#: The statement on SQLite, as ``docs/querying.md`` prints it.
KEYWORD_RATE_SQL = keyword_rate_sql("sqlite")


def keyword_rate_rows(conn: ReadOnlyConnection, words: Sequence[str], experiment: str | None) -> QueryResult:
    """Per dialogue and keyword: turns, turns mentioning it, occurrences, words, per 1,000 words."""
    params = {"keywords": json.dumps(list(words)), "experiment": experiment}
    return run(conn, keyword_rate_sql(conn.dialect.name), params)
