"""What a PostgreSQL statement typed at the read-only console does, read from its tokens
before it is sent: :func:`check_server_statement` (one statement, a read, nothing with a side
effect) and :func:`bind` (``:name`` and ``?`` parameters in psycopg's spelling). The tokenizer
knows PostgreSQL's literals (strings, ``E''``, ``U&""``, dollar quotes, nested comments, ``::``
casts), so a keyword inside a string never counts and one outside it is never missed. The
console that uses it is :mod:`clonechat.read.server_console`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from clonechat.errors import QueryError

ONE_STATEMENT = "give one SQL statement at a time"

Params = Mapping[str, Any] | Sequence[Any]


class Token(NamedTuple):
    """A lexical token of PostgreSQL SQL. ``kind``: word (keyword or identifier, ``value``
    lower-cased), ident (a quoted identifier, ``value`` unquoted), string, number, param
    (``:name``, ``value`` the name), qmark (``?``), semicolon, punct, space (whitespace and
    comments)."""

    kind: str
    text: str
    value: str


_WORD_START = re.compile(r"[^\W\d]|[^\x00-\x7f]")
_WORD = re.compile(r"(?:[\w$]|[^\x00-\x7f])+")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_DOLLAR_TAG = re.compile(r"\$(?:(?:[^\W\d]|[^\x00-\x7f])(?:\w|[^\x00-\x7f])*)?\$")


def _quoted_end(sql: str, start: int, quote: str, backslashes: bool = False) -> int:
    """The index after the closing ``quote`` of a literal opened at ``start`` (doubled quotes
    and, in ``E'...'``, backslashes escape); the end of the text if it never closes."""
    i = start + 1
    while i < len(sql):
        char = sql[i]
        if backslashes and char == "\\":
            i += 2
            continue
        if char == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)


def _block_comment_end(sql: str, start: int) -> int:
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def _unicode_identifier(body: str, escape: str = "\\") -> str:
    r"""The name a ``U&"..."`` identifier spells (``\XXXX`` and ``\+XXXXXX`` escapes)."""
    out, i = [], 0
    while i < len(body):
        if body[i] == escape:
            if body.startswith(escape, i + 1):
                out.append(escape)
                i += 2
                continue
            width = 7 if body.startswith("+", i + 1) else 4
            digits = body[i + 1 + (width == 7) : i + 1 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                out.append(body[i : i + 1 + width])
            i += 1 + width
            continue
        out.append(body[i])
        i += 1
    return "".join(out)


def tokenize(sql: str) -> list[Token]:
    """``sql`` as PostgreSQL reads it: literals, quoted identifiers, dollar quoting and nested
    comments are single tokens, so nothing inside them is taken for a keyword, a parameter or
    the end of a statement. Joining the tokens' texts gives ``sql`` back."""
    tokens: list[Token] = []
    i = 0
    while i < len(sql):
        char, rest = sql[i], sql[i : i + 3]
        if char.isspace():
            end = i + 1
            while end < len(sql) and sql[end].isspace():
                end += 1
            tokens.append(Token("space", sql[i:end], ""))
        elif rest.startswith("--"):
            newline = sql.find("\n", i)
            end = len(sql) if newline < 0 else newline
            tokens.append(Token("space", sql[i:end], ""))
        elif rest.startswith("/*"):
            end = _block_comment_end(sql, i)
            tokens.append(Token("space", sql[i:end], ""))
        elif char == "'":
            end = _quoted_end(sql, i, "'")
            tokens.append(Token("string", sql[i:end], ""))
        elif char in "eE" and sql.startswith("'", i + 1):
            end = _quoted_end(sql, i + 1, "'", backslashes=True)
            tokens.append(Token("string", sql[i:end], ""))
        elif char in "bBxXnN" and sql.startswith("'", i + 1):
            end = _quoted_end(sql, i + 1, "'")
            tokens.append(Token("string", sql[i:end], ""))
        elif rest.lower() in ("u&'", 'u&"'):
            end = _quoted_end(sql, i + 2, rest[2])
            body = sql[i + 3 : end - 1].replace(rest[2] * 2, rest[2])
            kind = "string" if rest[2] == "'" else "ident"
            tokens.append(Token(kind, sql[i:end], _unicode_identifier(body) if kind == "ident" else ""))
        elif char == '"':
            end = _quoted_end(sql, i, '"')
            tokens.append(Token("ident", sql[i:end], sql[i + 1 : end - 1].replace('""', '"')))
        elif char == "$" and (tag := _DOLLAR_TAG.match(sql, i)):
            close = sql.find(tag.group(), tag.end())
            end = len(sql) if close < 0 else close + len(tag.group())
            tokens.append(Token("string", sql[i:end], ""))
        elif char == ":" and sql.startswith(":", i + 1):
            tokens.append(Token("punct", "::", "::"))
            end = i + 2
        elif (
            char == ":"
            and i + 1 < len(sql)
            and _WORD_START.match(sql[i + 1])
            and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_"))
        ):
            name = _WORD.match(sql, i + 1)
            assert name is not None
            end = name.end()
            tokens.append(Token("param", sql[i:end], name.group()))
        elif _WORD_START.match(char):
            word = _WORD.match(sql, i)
            assert word is not None
            end = word.end()
            tokens.append(Token("word", word.group(), word.group().lower()))
        elif char.isdigit():
            number = _NUMBER.match(sql, i)
            assert number is not None
            end = number.end()
            tokens.append(Token("number", number.group(), number.group()))
        else:
            end = i + 1
            kind = {";": "semicolon", "?": "qmark"}.get(char, "punct")
            tokens.append(Token(kind, char, char))
        i = end
    return _decode_uescape(tokens)


def _decode_uescape(tokens: list[Token]) -> list[Token]:
    """``U&"..." UESCAPE '!'`` names its identifier with another escape character: decode it."""
    significant = [i for i, t in enumerate(tokens) if t.kind != "space"]
    for position, index in enumerate(significant[:-2]):
        token = tokens[index]
        after, char = tokens[significant[position + 1]], tokens[significant[position + 2]]
        if token.kind == "ident" and token.text[:2].lower() == "u&" and after.value == "uescape":
            escape = char.text[1:-1] if char.kind == "string" and len(char.text) == 3 else "\\"
            body = token.text[3:-1].replace('""', '"')
            tokens[index] = token._replace(value=_unicode_identifier(body, escape))
            # The clause belongs to the name: read past it (a call's "(" follows the name).
            for clause in (significant[position + 1], significant[position + 2]):
                tokens[clause] = Token("space", tokens[clause].text, "")
    return tokens


#: What a read may start with, and whether it can be a server-side cursor (``DECLARE``).
_READS = {"select": True, "values": True, "table": True, "with": True, "explain": False, "show": False}
#: Every other statement PostgreSQL has (its "SQL Commands"), each refused by name.
_SERVER_COMMANDS = frozenset(
    [
        "abort",
        "alter",
        "analyse",
        "analyze",
        "begin",
        "call",
        "checkpoint",
        "close",
        "cluster",
        "comment",
        "commit",
        "copy",
        "create",
        "deallocate",
        "declare",
        "delete",
        "discard",
        "do",
        "drop",
        "end",
        "execute",
        "fetch",
        "grant",
        "import",
        "insert",
        "listen",
        "load",
        "lock",
        "merge",
        "move",
        "notify",
        "prepare",
        "reassign",
        "refresh",
        "reindex",
        "release",
        "reset",
        "revoke",
        "rollback",
        "savepoint",
        "security",
        "set",
        "start",
        "truncate",
        "unlisten",
        "update",
        "vacuum",
    ]
)
_TRANSACTION_CONTROL = frozenset({"abort", "begin", "commit", "end", "rollback", "start"})
#: Words between CREATE/DROP/ALTER and the kind of object.
_OBJECT_MODIFIERS = frozenset(
    [
        "or",
        "replace",
        "global",
        "local",
        "temp",
        "temporary",
        "unlogged",
        "unique",
        "trusted",
        "procedural",
        "recursive",
        "constraint",
    ]
)
#: Kinds of object named by two words.
_TWO_WORD_OBJECTS = frozenset(
    {
        "materialized view",
        "foreign table",
        "event trigger",
        "access method",
        "text search",
        "user mapping",
        "foreign data",
        "default privileges",
        "operator class",
        "operator family",
    }
)

#: Functions that change something a read-only transaction does not protect: the session or
#: the server (settings, locks held past the statement, other backends, replication, WAL,
#: statistics), large objects, sequences, index maintenance, notifications, files, and the ones
#: that run SQL given as text (which could hide any of the others in a string).
_SIDE_EFFECT_FUNCTIONS = frozenset(
    {
        "set_config",
        "pg_cancel_backend",
        "pg_terminate_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_promote",
        "pg_log_backend_memory_contexts",
        "pg_log_standby_snapshot",
        "pg_notify",
        "nextval",
        "setval",
        "lowrite",
        "loread",
        "gin_clean_pending_list",
        "brin_summarize_new_values",
        "brin_summarize_range",
        "brin_desummarize_range",
        "pg_import_system_collations",
        "pg_replication_slot_advance",
        "pg_sync_replication_slots",
        "pg_start_backup",
        "pg_stop_backup",
        "ts_stat",
        "cursor_to_xml",
        "cursor_to_xmlschema",
    }
)
_SIDE_EFFECT_PREFIXES = (
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "pg_stat_reset",
    "pg_stat_statements_reset",
    "pg_replication_origin_",
    "pg_logical_",
    "pg_create_",
    "pg_drop_",
    "pg_copy_",
    "pg_backup_",
    "pg_wal_replay_",
    "pg_file_",
    "dblink",
    "query_to_xml",
)


def has_side_effects(function: str) -> bool:
    return function in _SIDE_EFFECT_FUNCTIONS or function.startswith(_SIDE_EFFECT_PREFIXES)


class RefusedError(Exception):
    """A statement the console does not send; ``what`` names it (``DELETE on node``)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class ServerStatement:
    """One statement that may run: its tokens (without the final ``;``) and whether it can be a
    server-side cursor (a SELECT, WITH, VALUES or TABLE; EXPLAIN and SHOW cannot)."""

    tokens: list[Token]
    cursor: bool


def _significant(tokens: Iterable[Token]) -> list[Token]:
    return [t for t in tokens if t.kind != "space"]


def _name_at(sig: list[Token], i: int) -> str:
    """The (last part of the) possibly qualified name starting at ``sig[i]``, as written."""
    name = ""
    while i < len(sig) and sig[i].kind in ("word", "ident"):
        name = sig[i].value if sig[i].kind == "ident" else sig[i].text
        if i + 2 < len(sig) and sig[i + 1].text == "." and sig[i + 2].kind in ("word", "ident"):
            i += 2
            continue
        break
    return name


def _object(sig: list[Token], i: int) -> tuple[str, bool, int]:
    """After CREATE/DROP/ALTER at ``sig[i - 1]``: the kind of object (``TABLE``), whether it is
    temporary, and where its name starts."""
    temporary = False
    while i < len(sig) and sig[i].kind == "word" and sig[i].value in _OBJECT_MODIFIERS:
        temporary = temporary or sig[i].value in ("temp", "temporary")
        i += 1
    words = [sig[i].value] if i < len(sig) and sig[i].kind == "word" else []
    if words and i + 1 < len(sig) and f"{words[0]} {sig[i + 1].value}" in _TWO_WORD_OBJECTS:
        words.append(sig[i + 1].value)
    i += len(words)
    while i < len(sig) and sig[i].kind == "word" and sig[i].value in ("concurrently", "if", "not", "exists"):
        i += 1
    return " ".join(words).upper(), temporary, i


def _describe_command(sig: list[Token], i: int) -> str:
    """A refused statement starting at ``sig[i]``, named as the SQLite console names it."""
    verb = sig[i].value
    following = sig[i + 1].value if i + 1 < len(sig) else ""
    if verb in _TRANSACTION_CONTROL or (verb == "prepare" and following == "transaction"):
        return "a transaction (BEGIN/COMMIT)"
    if verb in ("savepoint", "release"):
        return "SAVEPOINT"
    if verb in ("insert", "merge", "replace"):
        return f"{'MERGE' if verb == 'merge' else 'INSERT'} on {_name_at(sig, i + 2)}"
    if verb == "delete":
        return f"DELETE on {_name_at(sig, i + 2)}"
    if verb == "update":
        return f"UPDATE on {_name_at(sig, i + 2 if following == 'only' else i + 1)}"
    if verb == "truncate":
        return f"TRUNCATE {_name_at(sig, i + 2 if following == 'table' else i + 1)}".rstrip()
    if verb in ("create", "drop", "alter"):
        kind, temporary, at = _object(sig, i + 1)
        name = "" if at < len(sig) and sig[at].value in ("on", "as") else _name_at(sig, at)
        return " ".join(part for part in (verb.upper(), "TEMP" if temporary else "", kind, name) if part)
    if verb in ("set", "reset"):
        if following in ("session", "local") and i + 2 < len(sig):
            following = sig[i + 2].value
        named = {"transaction": "TRANSACTION", "characteristics": "SESSION CHARACTERISTICS"}.get(following, following)
        return f"{verb.upper()} {named}".rstrip()
    if verb == "pragma":
        setting = next((j for j in range(i, len(sig)) if sig[j].text == "="), None)
        value = " ".join(t.text for t in sig[setting + 1 :]) if setting is not None else ""
        return f"PRAGMA {_name_at(sig, i + 1)} = {value}"
    return verb.upper()


def _name_end(sig: list[Token], i: int) -> int:
    """Where the possibly qualified name starting at ``sig[i]`` ends."""
    while i < len(sig) and sig[i].kind in ("word", "ident"):
        if i + 2 < len(sig) and sig[i + 1].text == "." and sig[i + 2].kind in ("word", "ident"):
            i += 2
            continue
        return i + 1
    return i


def _is_update_statement(sig: list[Token], i: int) -> bool:
    """Whether the UPDATE at ``sig[i]`` starts ``UPDATE [ONLY] name [*] [[AS] alias] SET``,
    which a row lock (``FOR [NO KEY] UPDATE [OF t]``) never does."""
    if i and sig[i - 1].value in ("for", "key"):
        return False
    j = i + 1
    if j < len(sig) and sig[j].value == "only":
        j += 1
    j = _name_end(sig, j)
    if j < len(sig) and sig[j].text == "*":
        j += 1
    if j < len(sig) and sig[j].value == "as":
        j += 1
    if j < len(sig) and sig[j].kind in ("word", "ident") and sig[j].value != "set":
        j += 1
    return j < len(sig) and sig[j].value == "set"


def _modifying(sig: list[Token]) -> str | None:
    """A data-modifying statement anywhere in a read (``WITH d AS (DELETE FROM node ...)``)."""
    for i, token in enumerate(sig):
        if token.kind != "word":
            continue
        following = sig[i + 1].value if i + 1 < len(sig) else ""
        if (
            (token.value in ("insert", "merge") and following == "into")
            or (token.value == "delete" and following == "from")
            or (token.value == "update" and _is_update_statement(sig, i))
        ):
            return _describe_command(sig, i)
    return None


def _side_effect(sig: list[Token]) -> str | None:
    for i, token in enumerate(sig[:-1]):
        if token.kind in ("word", "ident") and sig[i + 1].text == "(" and has_side_effects(token.value):
            return f"{token.value}()"
    return None


def _read_start(sig: list[Token], i: int) -> tuple[str, int]:
    """The first word of the statement at ``sig[i]`` (opening parentheses skipped) and its index."""
    while i < len(sig) and sig[i].text == "(":
        i += 1
    return (sig[i].value if i < len(sig) and sig[i].kind == "word" else ""), i


def _explained(sig: list[Token], i: int) -> int:
    """Where the statement an EXPLAIN at ``sig[i]`` explains starts."""
    i += 1
    if i < len(sig) and sig[i].text == "(":
        depth = 0
        while i < len(sig):
            depth += {"(": 1, ")": -1}.get(sig[i].text, 0)
            i += 1
            if depth == 0:
                break
    while i < len(sig) and sig[i].value in ("analyze", "analyse", "verbose"):
        i += 1
    return i


def check_server_statement(sql: str) -> ServerStatement | None:
    """The one statement in ``sql`` if it only reads (``None``: there is none); otherwise
    :class:`RefusedError` naming it, or QueryError for several statements or a statement that is
    not PostgreSQL's. See the module docstring for what counts as a read."""
    tokens = tokenize(sql)
    ends = [i for i, t in enumerate(tokens) if t.kind == "semicolon"]
    if ends and _significant(tokens[ends[0] + 1 :]):
        raise QueryError(ONE_STATEMENT)
    statement = tokens[: ends[0]] if ends else tokens
    sig = _significant(statement)
    if not sig:
        return None
    verb, at = _read_start(sig, 0)
    explained = verb == "explain"
    while verb == "explain":
        verb, at = _read_start(sig, _explained(sig, at))
    if verb not in _READS:
        if verb in _SERVER_COMMANDS or verb in ("attach", "detach", "replace"):
            raise RefusedError(_describe_command(sig, at))
        if verb == "pragma" and any(t.text == "=" for t in sig):
            raise RefusedError(_describe_command(sig, at))
        if verb == "pragma":
            raise QueryError("SQL error: PRAGMA is SQLite's; on PostgreSQL ask information_schema (tables, columns)")
        what = sig[at].text if at < len(sig) else sig[0].text
        raise QueryError(
            f"SQL error: {what!r} does not start a read (give SELECT, WITH, VALUES, TABLE, EXPLAIN or SHOW)"
        )
    found = _modifying(sig) or _side_effect(sig)
    if found is not None:
        raise RefusedError(found)
    if any(t.value == "into" for t in _top_level(sig)):
        into = next(i for i, t in enumerate(sig) if t.value == "into")
        raise RefusedError(f"SELECT INTO {_name_at(sig, into + 1)}".rstrip())
    return ServerStatement(statement, cursor=_READS[verb] and not explained)


def _top_level(sig: list[Token]) -> Iterator[Token]:
    depth = 0
    for token in sig:
        depth += {"(": 1, ")": -1}.get(token.text, 0)
        if depth == 0:
            yield token


def bind(tokens: Sequence[Token], params: Params) -> tuple[str, Params | None]:
    """The statement for psycopg and its values: ``:name`` becomes ``%(name)s`` (``?`` becomes
    ``%s`` when the values are a sequence), and every other ``%`` is doubled. Without
    placeholders the text is sent as it is, with no values."""
    named = isinstance(params, Mapping)
    placeholders = [t for t in tokens if t.kind == "param" or (t.kind == "qmark" and not named and params)]
    if not placeholders:
        return "".join(t.text for t in tokens), None
    parts: list[str] = []
    for token in tokens:
        if token.kind == "param":
            if not named or token.value not in params:
                raise QueryError(
                    f"SQL error: no value for the parameter :{token.value} (give --param {token.value}=...)"
                )
            parts.append(f"%({token.value})s")
        elif token.kind == "qmark" and not named and params:
            parts.append("%s")
        else:
            parts.append(token.text.replace("%", "%%"))
    if not named and len(params) != sum(t.kind == "qmark" for t in placeholders):
        raise QueryError(f"SQL error: {len(params)} values for {len(placeholders)} ? parameters")
    return "".join(parts), params


# -- PostgreSQL: one READ ONLY transaction per statement ---------------------------------------
