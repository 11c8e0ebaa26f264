"""Find the line of a TOML file where a key path is written.

``tomllib`` gives values without positions, but a researcher fixing a spec wants "line 14",
not just ``conditions[2].temperature``. This scans the text for table headers and ``key =``
lines and tracks which table each belongs to; it understands ``[a.b]``, ``[[a]]`` (numbered by
occurrence) and dotted keys, which is all a spec uses. Anything it cannot place falls back to
the nearest enclosing table it can.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Loc = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_dotted(key: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", key)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _positions(text: str) -> dict[Loc, int]:
    """Every table header and key the text defines, with its 1-based line number."""
    found: dict[Loc, int] = {}
    array_counts: dict[tuple[str, ...], int] = {}
    table: Loc = ()
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header:
            names = _split_dotted(header.group(2))
            if header.group(1) == "[[":
                index = array_counts.get(tuple(names), 0)
                array_counts[tuple(names)] = index + 1
                table = (*names, index)
            else:
                # [conditions.params] after [[conditions]] means the latest element's table.
                count = array_counts.get((names[0],))
                table = tuple(names) if count is None else (names[0], count - 1, *names[1:])
            found.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            loc = (*table, *_split_dotted(key.group(1)))
            found.setdefault(loc, number)
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return found


def line_of(text: str, loc: Sequence[str | int]) -> int | None:
    """The line defining ``loc``, or its nearest enclosing table; ``None`` at the top level."""
    positions = _positions(text)
    path = tuple(loc)
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return None


def format_loc(loc: Sequence[str | int]) -> str:
    """``("conditions", 1, "params")`` as ``conditions[2].params`` (1-based, as people count)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"
