"""Taking what is private (:mod:`clonechat.share.private`) out of what is shared, and counting
what was taken, by kind (the datasheet gives the counts; the values are never kept).

Three strengths, because not all text is the same:

- **metadata** (the spec, condition and dialogue settings, node params, error messages, model
  names): credentials in URLs (``scheme://user:pass@host`` becomes ``scheme://[redacted]@host``)
  and ``key=`` / ``token=`` URL parameters; exact secrets; every absolute path (``[path]``;
  counted as the working directory, home or database folder when it is under one); then the
  known local paths wherever else they appear.
- **content** (what a model wrote or was shown: node content and reasoning, prompt texts and
  their variables, template sources, stop phrases, scores' details such as normalised answers):
  only the exact secret values and the known local paths. These are the data the statistics were
  computed on; a pattern (an absolute path in a story, a URL a model made up) is theirs to keep,
  so a share reproduces the sender's figures.
- **document** (the report and the datasheet, already built from scrubbed rows): exact secrets,
  known paths and URL credentials, also as HTML and JSON spell them (``&#47;``, ``\\/``), never
  the absolute-path pattern, which base64 images would match.

Identifiers (ids, hashes, times) are left alone, so every reference between rows still holds.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from sqlmodel import SQLModel

import clonechat.store.models  # noqa: F401  (registers the tables in SQLModel.metadata)
from clonechat.read.export_rows import Rows
from clonechat.redaction import PATH, REDACTED, URL_CREDENTIALS, URL_PARAMETER
from clonechat.share.private import PathKind, Private

PATH_MARK = "[path]"
MARKS = {PathKind.DATABASE: "[database-folder]", PathKind.WORKING: "[working-dir]", PathKind.HOME: "[home]"}


class Kind(StrEnum):
    """What a redaction took out (the datasheet's rows)."""

    SECRET = "secret values (API keys, tokens, passwords, .env values)"
    URL_CREDENTIALS = "credentials in URLs (user:password@)"
    URL_PARAMETER = "key= / token= URL parameters"
    DATABASE = "the database's folder"
    WORKING = "the working directory"
    HOME = "the home directory"
    PATH = "other absolute paths (metadata only)"


_PATH_KIND = {PathKind.DATABASE: Kind.DATABASE, PathKind.WORKING: Kind.WORKING, PathKind.HOME: Kind.HOME}
_URL_CREDENTIALS, _URL_PARAMETER, _PATH = URL_CREDENTIALS, URL_PARAMETER, PATH
#: Ids and hashes inside JSON values (a prompt hash in settings, a node id in a score's detail).
_IDENTIFIER = re.compile(r"^(?:[0-9a-f]{64}|[0-9A-HJKMNP-TV-Z]{26})$")

#: Per table, the text columns holding what a model wrote or was shown (see the module docstring).
CONTENT_COLUMNS = {
    "prompt_template": {"source"},
    "prompt": {"text", "variables"},
    "dialogue": {"stop_phrase"},
    "node": {"content", "reasoning"},
    "score": {"detail"},
}


class Scrubber:
    """Applies one machine's :class:`Private` values to text, counting each replacement."""

    def __init__(self, private: Private) -> None:
        self.private = private
        self.counts: Counter[Kind] = Counter()
        self._paths = [(_exact(path), kind) for path, kind in private.paths]

    # -- the three strengths ---------------------------------------------------------------------

    def content(self, text: str) -> str:
        """What a model wrote or saw: only exact secrets and the known local paths."""
        return self._known_paths(self._secrets(text))

    def metadata(self, text: str) -> str:
        """Settings, specs, errors: secrets, URL credentials, every absolute path, known paths."""
        text = self._secrets(self._urls(text))
        text = _PATH.sub(self._path, text)
        return self._known_paths(text)

    def document(self, text: str) -> str:
        """A finished document (report, datasheet): secrets, known paths and URL credentials,
        also as HTML and JSON escape them."""
        text = self._urls(text)
        for value in self.private.secrets:
            for spelling in _spellings(value):
                self.counts[Kind.SECRET] += text.count(spelling)
                text = text.replace(spelling, REDACTED)
        for path, kind in self.private.paths:
            for spelling in _spellings(path):
                text, found = _exact(spelling).subn(MARKS[kind], text)
                self.counts[_PATH_KIND[kind]] += found
        return text

    # -- rules -----------------------------------------------------------------------------------

    def _secrets(self, text: str) -> str:
        for value in self.private.secrets:
            if value in text:
                self.counts[Kind.SECRET] += text.count(value)
                text = text.replace(value, REDACTED)
        return text

    def _urls(self, text: str) -> str:
        text, found = _URL_CREDENTIALS.subn(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
        self.counts[Kind.URL_CREDENTIALS] += found
        text, found = _URL_PARAMETER.subn(lambda m: f"{m.group('name')}{REDACTED}", text)
        self.counts[Kind.URL_PARAMETER] += found
        return text

    def _path(self, match: re.Match[str]) -> str:
        found = match.group(0)
        for pattern, kind in self._paths:
            if pattern.match(found):
                self.counts[_PATH_KIND[kind]] += 1
                break
        else:
            self.counts[Kind.PATH] += 1
        return PATH_MARK

    def _known_paths(self, text: str) -> str:
        for (_, kind), (pattern, _) in zip(self.private.paths, self._paths, strict=True):
            text, found = pattern.subn(MARKS[kind], text)
            self.counts[_PATH_KIND[kind]] += found
        return text

    # -- rows ------------------------------------------------------------------------------------

    def json_text(self, text: str, scrub: Callable[[str], str]) -> str:
        """A JSON column's stored text with ``scrub`` applied to every string value in it (not
        to keys or identifiers); the very same text when nothing changed, so unchanged rows
        stay byte for byte as stored."""
        try:
            value = json.loads(text)
        except ValueError:
            return scrub(text)
        cleaned = _walk(value, scrub)
        return text if cleaned == value else json.dumps(cleaned)

    def tables(self, tables: dict[str, Rows]) -> dict[str, Rows]:
        """Every string of every row of an experiment's tables, scrubbed by what its column
        holds (see :data:`CONTENT_COLUMNS`); identifiers and times are kept."""
        out: dict[str, Rows] = {}
        for table, (columns, rows) in tables.items():
            rules = [self._rule(table, column) for column in columns]
            out[table] = (columns, [tuple(_apply(rule, v) for rule, v in zip(rules, row, strict=True)) for row in rows])
        return out

    def _rule(self, table: str, column: str) -> Callable[[str], str] | None:
        definition = SQLModel.metadata.tables[table].columns[column]
        if (
            definition.primary_key
            or definition.foreign_keys
            or column == "hash"
            or column.endswith(("_id", "_hash", "_at"))
        ):
            return None
        scrub = self.content if column in CONTENT_COLUMNS.get(table, ()) else self.metadata
        if str(definition.type).upper() == "JSON":
            return lambda text: self.json_text(text, scrub)
        return scrub


def _apply(rule: Callable[[str], str] | None, value: Any) -> Any:
    return rule(value) if rule is not None and isinstance(value, str) else value


def _walk(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return value if _IDENTIFIER.match(value) else scrub(value)
    if isinstance(value, list):
        return [_walk(v, scrub) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, scrub) for k, v in value.items()}
    return value


def _exact(path: str) -> re.Pattern[str]:
    """A known path where it stands whole: not inside a longer name (``/home/me`` is not in
    ``/home/meg`` or ``/home/me.old``, but is in ``/home/me.`` ending a sentence), nor the tail
    of another path (``/x/home/me``)."""
    return re.compile(r"(?<![\w.~-])" + re.escape(path) + r"(?![\w~-]|\.[\w~-])")


def _spellings(value: str) -> list[str]:
    """``value`` as a document may spell it: as is, HTML-escaped (with ``/`` as ``&#47;`` too),
    and inside a JSON string (``\\/`` for ``/``); longest first, so one replacement is whole."""
    forms = {
        value,
        html.escape(value),
        html.escape(value).replace("/", "&#47;"),
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value)[1:-1].replace("/", "\\/"),
    }
    return sorted(forms, key=lambda form: (-len(form), form))
