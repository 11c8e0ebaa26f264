"""The text scorers by name, and parsing of an LLM judge's rating.

Scorers are looked up by the name stored with each score, so a name, once used, must keep
meaning the same scorer (a behaviour change bumps the scorer's ``version`` instead).
"""

from __future__ import annotations

import re

from clonechat.errors import ConfigError
from clonechat.scoring.text import (
    AsksQuestion,
    ChrF,
    EndsDialogue,
    ExactMatch,
    FirstWord,
    LengthBucket,
    NormalisedMatch,
    TextScorer,
    TokenF1,
)

_SCORERS: tuple[TextScorer, ...] = (
    ExactMatch(),
    NormalisedMatch(),
    ChrF(),
    TokenF1(),
    FirstWord(),
    LengthBucket(),
    AsksQuestion(),
    EndsDialogue(),
)

#: Every text scorer by registry name, strictest first, then the property scorers.
TEXT_SCORERS: dict[str, TextScorer] = {scorer.name: scorer for scorer in _SCORERS}

#: Scorers run when none are named: all of them, since each costs microseconds per pair.
DEFAULT_SCORERS: tuple[str, ...] = tuple(TEXT_SCORERS)


def get_text_scorer(name: str) -> TextScorer:
    """The scorer registered as ``name``; a typo is a :class:`ConfigError` naming the known ones."""
    try:
        return TEXT_SCORERS[name]
    except KeyError:
        known = ", ".join(TEXT_SCORERS)
        raise ConfigError(f"unknown scorer '{name}' (known: {known})") from None


# A number not glued to a preceding word, letter or dot ("gpt4", "v1.2" are not ratings); the
# sign is part of it so that "-3" is read as out of range rather than as 3.
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?")


def parse_rating(text: str, low: float, high: float) -> float | None:
    """A judge model's rating from its free-text reply: the first number, if within [low, high].

    Judges are asked for a bare number but often wrap it ("Rating: 7/10", "I'd say 8.5.").
    The first number is taken ("7/10" gives 7: the denominator comes after it). If that number
    is outside the scale the reply is treated as unparseable (None) rather than searched for a
    later number that happens to fit: a judge answering off-scale has misunderstood the task,
    and guessing would hide that. Numbers in words ("eleven") are not recognised.
    """
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group())
    return value if low <= value <= high else None
