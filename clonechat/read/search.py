"""Which messages contain these words: the full-text index, or a plain substring scan.

A query is written in FTS5's syntax on both backends (see :mod:`clonechat.query.search` for
what it may say). Each hit comes with where it was said (experiment, condition, turn, speaker)
and a snippet with the matched words between :data:`MARK_START` and :data:`MARK_END`; a
substring scan returns the whole content, which the caller cuts around the match.

- **SQLite**: the FTS5 table ``node_fts`` over ``node.content`` answers the query as it is
  (``unicode61 remove_diacritics 2``), ranked by ``bm25``, with FTS5's ``snippet``.
- **PostgreSQL**: the GIN index ``node_fts`` over ``to_tsvector('simple',
  clonechat_fold(content))`` (``unaccent``-folded words). The query is parsed here with FTS5's
  grammar (:func:`parse_fts5`), so the same text means the same thing and an invalid one is
  refused the same way, and rebuilt as a ``tsquery`` (:func:`tsquery`): bare words and AND are
  ``&``, OR is ``|``, ``a NOT b`` is ``a & !b``, a phrase is ``<->``, ``prefix*`` is ``:*``.
  Every word is first folded by the server's own ``clonechat_fold`` (the index's), then quoted
  as a lexeme, so what the user typed is never tsquery syntax, and the tsquery is a bound
  parameter of ``to_tsquery``, never SQL text. Ranked by ``ts_rank``; snippets by
  ``ts_headline``. ``NEAR(...)``, ``^`` and column filters are FTS5's only and are refused
  with one line (:class:`UnsupportedSearchError`). The two tokenizers agree on words; they
  differ on text such as ``3.5`` or ``e-mail`` (PostgreSQL keeps those whole as well as in
  parts), and on a database whose character type is ``C`` PostgreSQL's parser takes every
  non-ASCII symbol (an emoji) for a word, so a phrase with one between its words is not found
  there. A query about such text can find different messages on the two backends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from clonechat.errors import QueryError
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
_SERVER_VECTOR = "to_tsvector('simple', clonechat_fold(n.content))"
#: (dialect, substring scan?) -> the parts of :data:`_CONTEXT`.
_STATEMENT_PARTS = {
    ("sqlite", False): {
        "snippet": f"snippet(node_fts, 0, '{MARK_START}', '{MARK_END}', '…', 16)",
        "source": "node_fts JOIN node n ON n.rowid = node_fts.rowid",
        "match": "node_fts MATCH :query",
        "order": "node_fts.rank",
    },
    ("postgresql", False): {
        "snippet": "ts_headline('simple', n.content, q.query, :headline)",
        "source": "node n CROSS JOIN (SELECT to_tsquery('simple', :query) AS query) q",
        "match": f"{_SERVER_VECTOR} @@ q.query",
        "order": f"ts_rank({_SERVER_VECTOR}, q.query) DESC, n.rowid",
    },
    ("sqlite", True): {
        "snippet": "n.content",
        "source": "node n",
        "match": "instr(lower(n.content), lower(:query)) > 0",
        "order": "n.rowid",
    },
    ("postgresql", True): {
        "snippet": "n.content",
        "source": "node n",
        "match": "strpos(lower(n.content), lower(:query)) > 0",
        "order": "n.rowid",
    },
}
#: ``ts_headline``'s options: about as much text as FTS5's 16-token snippet, one fragment.
_HEADLINE = f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=16, MinWords=8, ShortWord=0, MaxFragments=1"
#: The index's folding, asked of the server for each word of a query (in order).
_FOLD = "SELECT clonechat_fold(part) FROM unnest(CAST(:parts AS text[])) WITH ORDINALITY AS p(part, at) ORDER BY at"


#: The server's folding (``clonechat_fold``) of several texts, in order.
Fold = Callable[[list[str]], list[str]]


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


class UnsupportedSearchError(QueryError):
    """A valid FTS5 query that PostgreSQL's full-text search cannot ask (NEAR, ``^``, a column filter)."""


#: What a search looks in: the messages, or the private reasoning (its own index, step 9).
SearchField = Literal["content", "reasoning"]


def _parts(dialect: str, substring: bool, field: SearchField) -> dict[str, str]:
    """:data:`_STATEMENT_PARTS` for ``field``: the reasoning's index and column in place of the
    messages' (same tokenizer, same expression over the other column)."""
    parts = _STATEMENT_PARTS[(dialect, substring)]
    if field == "content":
        return parts
    return {
        k: v.replace("node_fts", "node_fts_reasoning").replace("n.content", "n.reasoning") for k, v in parts.items()
    }


def find_messages(
    conn: ReadOnlyConnection,
    query: str,
    *,
    experiment: str | None = None,
    kinds: Sequence[str] = (),
    substring: bool = False,
    limit: int = 50,
    field: SearchField = "content",
) -> list[SearchHit]:
    """Messages matching ``query`` (FTS5 syntax), best match first; with ``substring``, those
    containing it case-insensitively, oldest first; with ``field="reasoning"``, the nodes whose
    private reasoning matches (the snippet is of the reasoning). An invalid query is a
    ``QueryError`` starting ``SQL error:``, on either backend."""
    dialect = conn.dialect.name
    params: dict[str, object] = {"query": query, "limit": limit}
    if dialect == "postgresql" and not substring:
        params["query"] = tsquery(parse_fts5(query, on=str(conn.location)), _folder(conn))
        params["headline"] = _HEADLINE
        if not params["query"]:
            return []  # no word to look for (FTS5 finds nothing either)
    filters = ""
    if experiment is not None:
        filters += " AND e.name = :experiment"
        params["experiment"] = experiment
    if kinds:
        names = [f":kind{i}" for i in range(len(kinds))]
        filters += f" AND n.kind IN ({', '.join(names)})"
        params.update({f"kind{i}": k for i, k in enumerate(kinds)})
    sql = _CONTEXT.format(filters=filters, **_parts(dialect, substring, field))
    return [SearchHit(*row) for row in conn.execute(sql, params).fetchall()]


def _folder(conn: ReadOnlyConnection) -> Fold:
    def fold(parts: list[str]) -> list[str]:
        if not parts:
            return []
        return [str(row[0]) for row in conn.execute(_FOLD, {"parts": parts}).fetchall()]

    return fold


# -- FTS5's query syntax, parsed -----------------------------------------------------------------


@dataclass(frozen=True)
class Phrase:
    """Strings that must appear in order (``"a b"``, ``a + b``); each (text, prefix?)."""

    parts: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class Operation:
    """``left AND right``, ``left OR right``, ``left NOT right`` (FTS5's NOT is binary), or
    ``left right`` (NEXT: phrases side by side, an implicit AND)."""

    operator: str
    left: Expression
    right: Expression


Expression = Phrase | Operation

#: FTS5's bareword characters: ASCII letters, digits, ``_``, ``\x1a`` and anything non-ASCII.
_BAREWORD = re.compile(r"[A-Za-z0-9_\x1a\x80-\U0010ffff]+")
_SPACE = " \t\n\r\f\v"
_PUNCTUATION = "(){}:,+*-^"


def _fts5_tokens(query: str) -> list[tuple[str, str]]:
    """(kind, text) tokens as FTS5 reads them: punctuation, "string" (a quoted string, its
    doubled quotes undone), word (a bareword or keyword)."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(query):
        char = query[i]
        if char in _SPACE:
            i += 1
        elif char in _PUNCTUATION:
            tokens.append((char, char))
            i += 1
        elif char == '"':
            text: list[str] = []
            i += 1
            while True:
                if i >= len(query):
                    raise QueryError("SQL error: unterminated string")
                if query[i] == '"':
                    if query.startswith('"', i + 1):
                        text.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                text.append(query[i])
                i += 1
            tokens.append(("string", "".join(text)))
        elif word := _BAREWORD.match(query, i):
            tokens.append(("word", word.group()))
            i = word.end()
        else:
            raise QueryError(f'SQL error: syntax error near "{char}"')
    return tokens


class _Fts5Parser:
    """FTS5's grammar (``fts5parse.y``), tightest first: a run of phrases (implicit AND), NOT,
    AND, OR; parentheses group, and no implicit AND joins a parenthesised group."""

    def __init__(self, query: str, on: str) -> None:
        self.query, self.on = query, on
        self.tokens = _fts5_tokens(query)
        self.at = 0

    def peek(self, ahead: int = 0) -> tuple[str, str]:
        at = self.at + ahead
        return self.tokens[at] if at < len(self.tokens) else ("end", "")

    def keyword(self, ahead: int = 0) -> str:
        kind, text = self.peek(ahead)
        if kind == "word" and text in ("AND", "OR", "NOT"):
            return text
        if kind == "word" and text == "NEAR" and self.peek(ahead + 1)[0] == "(":
            return "NEAR"
        return ""

    def error(self) -> QueryError:
        return QueryError(f'SQL error: syntax error near "{self.peek()[1]}"')

    def unsupported(self, what: str) -> UnsupportedSearchError:
        return UnsupportedSearchError(
            f"search {self.query!r}: {what} is SQLite-only (FTS5); on {self.on} search words, "
            '"phrases", prefix*, AND, OR, NOT and parentheses'
        )

    def parse(self) -> Expression:
        expression = self.disjunction()
        if self.at != len(self.tokens):
            raise self.error()
        return expression

    def disjunction(self) -> Expression:
        left = self.conjunction()
        while self.keyword() == "OR":
            self.at += 1
            left = Operation("OR", left, self.conjunction())
        return left

    def conjunction(self) -> Expression:
        left = self.negation()
        while self.keyword() == "AND":
            self.at += 1
            left = Operation("AND", left, self.negation())
        return left

    def negation(self) -> Expression:
        left = self.group()
        while self.keyword() == "NOT":
            self.at += 1
            left = Operation("NOT", left, self.group())
        return left

    def group(self) -> Expression:
        if self.peek()[0] == "(":
            self.at += 1
            inner = self.disjunction()
            if self.peek()[0] != ")":
                raise self.error()
            self.at += 1
            return inner
        phrases = [self.phrase()]
        while self.starts_phrase():
            phrases.append(self.phrase())
        expression: Expression = phrases[0]
        for phrase in phrases[1:]:
            expression = Operation("NEXT", expression, phrase)
        return expression

    def starts_phrase(self) -> bool:
        kind = self.peek()[0]
        return kind in ("string", "^", "-", "{") or (kind == "word" and self.keyword() in ("", "NEAR"))

    def phrase(self) -> Phrase:
        kind = self.peek()[0]
        if self.keyword() == "NEAR":
            raise self.unsupported("NEAR(...)")
        if kind == "^":
            raise self.unsupported("^ (the start of a message)")
        if kind in ("-", "{") or (kind in ("word", "string") and self.peek(1)[0] == ":"):
            raise self.unsupported("a column filter")
        parts = [self.string()]
        while self.peek()[0] == "+":
            self.at += 1
            parts.append(self.string())
        return Phrase(tuple(parts))

    def string(self) -> tuple[str, bool]:
        kind, text = self.peek()
        if kind not in ("word", "string") or self.keyword():
            raise self.error()
        self.at += 1
        prefix = self.peek()[0] == "*"
        self.at += prefix
        return text, prefix


def parse_fts5(query: str, on: str = "PostgreSQL") -> Expression:
    """``query`` read with FTS5's grammar; an invalid one is ``QueryError('SQL error: ...')``, a
    part PostgreSQL cannot ask is :class:`UnsupportedSearchError` (``on`` names the database)."""
    return _Fts5Parser(query, on).parse()


# -- ... and asked as a tsquery ------------------------------------------------------------------

_WORD_CHARS = re.compile(r"[^\W_]+")


def _strings(expression: Expression) -> list[str]:
    if isinstance(expression, Phrase):
        return [text for text, _prefix in expression.parts]
    return _strings(expression.left) + _strings(expression.right)


def _lexeme(text: str) -> str:
    """``text`` as one quoted tsquery lexeme (the server splits it into words as the index
    did); quotes and backslashes escaped, so it can never be an operator."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _phrase(parts: list[tuple[str, bool]]) -> str | None:
    words: list[str] = []
    for text, prefix in parts:
        if not _WORD_CHARS.search(text):
            continue  # no word in it (FTS5's tokenizer finds none either)
        last = [*_WORD_CHARS.finditer(text)][-1:] if prefix else []
        if not last:
            words.append(_lexeme(text))
            continue
        # FTS5's prefix applies to the string's last word only.
        body = text[: last[0].start()]
        if body.strip():
            words.append(_lexeme(body))
        words.append(_lexeme(last[0].group()) + ":*")
    return f"({' <-> '.join(words)})" if words else None


def tsquery(expression: Expression, fold: Fold) -> str:
    """The tsquery asking what ``expression`` asks of FTS5, every string folded by ``fold``
    (the server's ``clonechat_fold``); "" if it matches nothing.

    A phrase without words (``""``, ``"..."``) matches nothing, as in FTS5: an AND with it
    matches nothing, an OR is its other side, ``a NOT ""`` is ``a``; side by side with other
    phrases (``a "" b``) it is left out."""
    folded = iter(fold(_strings(expression)))

    def render(node: Expression) -> str | None:
        if isinstance(node, Phrase):
            return _phrase([(next(folded), prefix) for _text, prefix in node.parts])
        left, right = render(node.left), render(node.right)
        if node.operator == "NOT":
            return left if right is None or left is None else f"({left} & !{right})"
        if node.operator == "AND":
            return None if left is None or right is None else f"({left} & {right})"
        if left is None or right is None:
            return left or right
        return f"({left} {'&' if node.operator == 'NEXT' else '|'} {right})"

    return render(expression) or ""
