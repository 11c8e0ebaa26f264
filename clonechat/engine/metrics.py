"""Per-turn conversation metrics: pure functions of the path, shared by the store (which
stores them with every turn) and the engine (whose convergence stop reads them).

Attractor questions (do clone pairs converge, loop, drift into symbols and emoji?) need the
same handful of numbers for every turn; the store computes them when it stores a turn
(:mod:`clonechat.store.turn_metrics`), the engine when it decides a convergence stop, so both
read one definition.

Definitions (version :data:`METRICS_VERSION`); words are case-folded runs of letters, digits,
``_`` and apostrophes, without apostrophes at their ends; "the path" is the conversation from
the opening down to this turn, agent turns only (the researcher's opening is not the agents'
vocabulary):

- ``chars``: characters; ``words``: words; ``distinct_words``: distinct words in the turn.
- ``new_words``: distinct words of this turn not used earlier on the path (vocabulary growth);
  ``vocabulary``: distinct words on the path up to and including this turn.
- ``overlap_partner``: Jaccard similarity of this turn's word set and the partner's latest
  turn's (lexical overlap between the agents); NULL before the partner has spoken.
- ``overlap_self``: the same against the speaker's own previous turn; NULL on its first turn.
- ``repetition``: share of this turn's word trigrams already seen, earlier in the turn or in
  either agent's latest turn (loops and echoing); NULL under three words.
- ``symbol_rate``: share of non-space characters that are punctuation or symbols (Unicode P*
  and S*), emoji excepted; ``emoji_rate``: share that are emoji (Extended_Pictographic).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import regex

METRICS_VERSION = 1
_WORD_RUN = regex.compile(r"[\w'’]+")
#: Every ASCII character that is not a letter, digit, ``_`` or apostrophe becomes a space.
_ASCII_WORD_BREAKS = str.maketrans({c: " " for c in range(128) if not (chr(c).isalnum() or chr(c) in "_'")})
#: One pass over the text: an emoji fills the group, any other punctuation or symbol leaves it empty.
_SYMBOL_OR_EMOJI = regex.compile(r"(\p{Extended_Pictographic})|[\p{P}\p{S}]")


@dataclass(slots=True)
class TurnMetrics:
    node_id: str
    dialogue_id: str
    chars: int
    words: int
    distinct_words: int
    new_words: int
    vocabulary: int
    overlap_partner: float | None
    overlap_self: float | None
    repetition: float | None
    symbol_rate: float
    emoji_rate: float
    version: int = METRICS_VERSION


def words_of(content: str) -> list[str]:
    """Case-folded runs of letters, digits, ``_`` and apostrophes, without apostrophes at
    their ends ("it's" is one word, "'tis" is "tis")."""
    folded = content.casefold()
    # Plain ASCII (most turns) at C speed: a batch computes this for every turn it stores.
    runs = folded.translate(_ASCII_WORD_BREAKS).split() if folded.isascii() else _WORD_RUN.findall(folded)
    if "'" not in folded and "’" not in folded:
        return runs
    return [word for run in runs if (word := run.strip("'’"))]


def _jaccard(a: set[str] | frozenset[str], b: set[str] | frozenset[str]) -> float | None:
    union = len(a | b)
    return len(a & b) / union if union else None


Trigram = tuple[str, str, str]


def _trigrams(words: Sequence[str]) -> frozenset[Trigram]:
    return frozenset(zip(words, words[1:], words[2:], strict=False))


def _repetition(count: int, distinct: frozenset[Trigram], earlier: frozenset[Trigram]) -> float | None:
    """Of ``count`` trigrams, every occurrence but the first of one new to the path's latest
    turns is a repeat."""
    if count <= 0:
        return None
    return (count - len(distinct - earlier)) / count


#: ASCII's punctuation and symbols (Unicode P* and S*): for the fast path of plain-ASCII turns.
_DELETE_ASCII_SYMBOLS = str.maketrans("", "", string.punctuation)


def _character_rates(content: str) -> tuple[float, float]:
    visible = len("".join(content.split()))
    if visible == 0:
        return 0.0, 0.0
    if content.isascii():  # most turns; no emoji, and str.translate counts at C speed
        return (len(content) - len(content.translate(_DELETE_ASCII_SYMBOLS))) / visible, 0.0
    found = _SYMBOL_OR_EMOJI.findall(content)
    emoji = sum(1 for group in found if group)
    return (len(found) - emoji) / visible, emoji / visible


@dataclass(frozen=True)
class _Said:
    """An agent's latest turn, as the next turn's metrics need it."""

    words: frozenset[str]
    trigrams: frozenset[Trigram]


@dataclass
class PathState:
    """What the metrics of the next turn depend on: the path's vocabulary and each agent's
    latest turn."""

    vocabulary: set[str] = field(default_factory=set)
    latest: dict[str, _Said] = field(default_factory=dict)

    def advance(self, node_id: str, dialogue_id: str, speaker: str, content: str) -> TurnMetrics:
        """The metrics of a turn said on this path; the state moves past it."""
        words = words_of(content)
        distinct = frozenset(words)
        distinct_grams = _trigrams(words)
        partner = next((said for s, said in self.latest.items() if s != speaker), None)
        own = self.latest.get(speaker)
        new = distinct - self.vocabulary
        symbol_rate, emoji_rate = _character_rates(content)
        metrics = TurnMetrics(
            node_id=node_id,
            dialogue_id=dialogue_id,
            chars=len(content),
            words=len(words),
            distinct_words=len(distinct),
            new_words=len(new),
            vocabulary=len(self.vocabulary) + len(new),
            overlap_partner=_jaccard(distinct, partner.words) if partner is not None else None,
            overlap_self=_jaccard(distinct, own.words) if own is not None else None,
            repetition=_repetition(
                len(words) - 2, distinct_grams, frozenset().union(*(s.trigrams for s in self.latest.values()))
            ),
            symbol_rate=symbol_rate,
            emoji_rate=emoji_rate,
        )
        self.vocabulary |= new
        self.latest[speaker] = _Said(distinct, distinct_grams)
        return metrics

    def copy(self) -> PathState:
        return PathState(set(self.vocabulary), dict(self.latest))
