"""Scorers that compare a predicted message with the message the clone actually sent.

The experiment asks one agent to predict its clone's next message; a scorer turns a
(prediction, actual) pair into a number so predictions can be compared across models and
conditions. No single measure is right, so there are several, from strict to lenient:

* ``exact`` and ``normalised`` — did the agent predict the message itself?
* ``chrf`` and ``token_f1`` — how much of the message's surface did it get right?
* property scorers (``first_word``, ``length_bucket``, ``asks_question``, ``ends_dialogue``) —
  did it predict *properties* of the message, in the style of Binder et al. 2024, "Looking
  Inward: Language Models Can Learn About Themselves by Introspection", where models predict
  properties of their own behaviour rather than the behaviour verbatim. Properties are coarse
  enough that a model can get them right even when the exact wording is unpredictable.

Every scorer is cheap, deterministic and pure, so runs can be re-scored at will; each carries a
``version`` that is bumped whenever its behaviour changes, because stored scores are keyed by
(scorer, version) and a changed scorer must not be mistaken for the old one.

The stop phrase (the marker an agent writes to end the dialogue) is passed to every scorer: the
lenient scorers remove it before comparing, since whether the dialogue ends is a separate
question that ``ends_dialogue`` scores on its own.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import sacrebleu
from sacrebleu.metrics.chrf import CHRF

#: Word-count buckets for ``length_bucket``, as (lowest word count, label), ascending. A message
#: falls in the last bucket whose lower bound it reaches. Wide buckets, widening with length,
#: because predicting "a short reply" is meaningful and predicting 37 vs 38 words is not.
LENGTH_BUCKETS: tuple[tuple[int, str], ...] = (
    (0, "0-9"),
    (10, "10-29"),
    (30, "30-59"),
    (60, "60-99"),
    (100, "100+"),
)


@dataclass(frozen=True)
class ScoreResult:
    """One scorer's verdict on one (prediction, actual) pair.

    ``value`` is None when the pair could not be scored (``detail`` says why), so that an
    unscorable pair is never averaged in as a zero. ``detail`` must be JSON-serialisable: it is
    stored beside the value so a surprising score can be explained later without re-running.
    """

    value: float | None
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TextScorer(Protocol):
    """What the scoring pipeline needs from a scorer.

    The attributes are read-only properties so that both plain classes and frozen dataclasses
    satisfy the protocol.
    """

    @property
    def name(self) -> str:
        """Registry name, e.g. ``"chrf"``; stored with every score."""
        ...

    @property
    def version(self) -> str:
        """Bumped whenever the scorer's behaviour changes, so old and new scores stay apart."""
        ...

    @property
    def description(self) -> str:
        """One line, shown by ``clonechat score --list`` and in the report."""
        ...

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        """Score ``predicted`` against ``actual``; ``stop_phrase`` is the dialogue's end marker."""
        ...


def strip_stop_phrase(text: str, stop_phrase: str | None) -> str:
    """Remove every occurrence of the stop phrase.

    Done on the raw text, before any normalisation, because normalising could change the phrase
    (the default ``^C^C`` would be casefolded) and then it would no longer be found.
    """
    if not stop_phrase:
        return text
    return text.replace(stop_phrase, " ")


def normalise(text: str, stop_phrase: str | None = None) -> str:
    """The text with surface variation removed: what the lenient scorers compare.

    Strips the stop phrase, applies Unicode NFKC (so full-width and compatibility characters
    match their plain forms), casefolds, deletes punctuation (every Unicode ``P*`` character, as
    SQuAD does, so "don't" and "dont" match), collapses runs of whitespace and strips.
    Articles are *not* removed (unlike SQuAD): that rule is English-only.
    """
    text = unicodedata.normalize("NFKC", strip_stop_phrase(text, stop_phrase)).casefold()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())


def _tokens(text: str, stop_phrase: str | None) -> list[str]:
    """Whitespace-split tokens of the normalised text: the 'words' of the token-level scorers."""
    return normalise(text, stop_phrase).split()


def _bool_score(matched: bool) -> float:
    return 1.0 if matched else 0.0


@dataclass(frozen=True)
class ExactMatch:
    """Exact match after stripping outer whitespace.

    The strictest measure: it only rewards predicting the message character for character, which
    is rare for free dialogue but is the upper anchor every other scorer is read against.
    """

    name: str = "exact"
    version: str = "1"
    description: str = "1 if the prediction equals the message exactly (outer whitespace ignored), else 0"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        return ScoreResult(_bool_score(predicted.strip() == actual.strip()))


@dataclass(frozen=True)
class NormalisedMatch:
    """Exact match after :func:`normalise`.

    Exists for tasks that constrain the answer (a number, a one-word reply, a choice from a
    list), where the content is what matters and case, punctuation or a trailing stop phrase
    should not turn a correct prediction into a miss.
    """

    name: str = "normalised"
    version: str = "1"
    description: str = "1 if equal after normalising case, punctuation, whitespace and the stop phrase, else 0"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        return ScoreResult(_bool_score(normalise(predicted, stop_phrase) == normalise(actual, stop_phrase)))


#: Default chrF (character order 6, word order 0, beta 2), built once: sentence_score with explicit
#: references keeps no state between calls.
_CHRF = CHRF()


@dataclass(frozen=True)
class ChrF:
    """Sentence-level chrF (sacrebleu), scaled to 0..1.

    A graded similarity that gives partial credit for partly right predictions, works on
    characters so it does not depend on a tokenizer or language, and is robust to inflection.
    The raw text is scored (stop phrase included, as in the standard metric); sacrebleu ignores
    whitespace in character n-grams. Two messages with no characters at all count as identical
    (1.0), where sacrebleu would say 0.
    """

    name: str = "chrf"
    version: str = f"sacrebleu-{sacrebleu.__version__}/1"
    description: str = "sentence chrF (sacrebleu defaults: char order 6, beta 2), scaled to 0..1"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        if not predicted.split() and not actual.split():
            return ScoreResult(1.0, {"reason": "both empty"})
        return ScoreResult(_CHRF.sentence_score(predicted, [actual]).score / 100.0)


@dataclass(frozen=True)
class TokenF1:
    """SQuAD-style token F1 over normalised tokens, counted as a bag (multiset).

    Graded like chrF but at word level: it rewards predicting the right words regardless of
    order, which is easier to read ("got 2 of the 3 words") than character n-grams.
    """

    name: str = "token_f1"
    version: str = "1"
    description: str = "F1 of the normalised word bags (SQuAD style, no article removal)"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        pred = _tokens(predicted, stop_phrase)
        act = _tokens(actual, stop_phrase)
        if not pred and not act:
            return ScoreResult(1.0)
        same = sum((Counter(pred) & Counter(act)).values())
        if same == 0:
            return ScoreResult(0.0)
        precision = same / len(pred)
        recall = same / len(act)
        return ScoreResult(2 * precision * recall / (precision + recall))


def _property_result(predicted: str | bool, actual: str | bool) -> ScoreResult:
    """1.0 if the two properties agree; both are kept in ``detail`` for confusion tables."""
    return ScoreResult(_bool_score(predicted == actual), {"predicted": predicted, "actual": actual})


def first_word(text: str, stop_phrase: str | None = None) -> str:
    """The first word of the normalised text (casefolded, punctuation removed); "" if none."""
    tokens = _tokens(text, stop_phrase)
    return tokens[0] if tokens else ""


def length_bucket(text: str, stop_phrase: str | None = None) -> str:
    """The :data:`LENGTH_BUCKETS` label of the text's normalised word count.

    Counted after normalising so that stray punctuation and the stop phrase are not words.
    """
    count = len(_tokens(text, stop_phrase))
    label = LENGTH_BUCKETS[0][1]
    for lowest, bucket in LENGTH_BUCKETS:
        if count >= lowest:
            label = bucket
    return label


def asks_question(text: str, stop_phrase: str | None = None) -> bool:
    """Whether the text contains a question mark (NFKC, so a full-width "？" counts too)."""
    return "?" in unicodedata.normalize("NFKC", strip_stop_phrase(text, stop_phrase))


@dataclass(frozen=True)
class FirstWord:
    """Did the prediction start with the same word (Binder et al. 2024 property)?

    The opening word is a cheap proxy for how a reply is framed ("Yes", "Well", "I", "Sure").
    """

    name: str = "first_word"
    version: str = "1"
    description: str = "1 if the first word (casefolded, punctuation removed) matches, else 0"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        return _property_result(first_word(predicted, stop_phrase), first_word(actual, stop_phrase))


@dataclass(frozen=True)
class LengthBucket:
    """Did the prediction have about the right length (Binder et al. 2024 property)?

    Length is a property a model might know about its own behaviour even when it cannot
    predict the words.
    """

    name: str = "length_bucket"
    version: str = "1"
    description: str = "1 if the word count falls in the same bucket (0-9, 10-29, 30-59, 60-99, 100+), else 0"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        return _property_result(length_bucket(predicted, stop_phrase), length_bucket(actual, stop_phrase))


@dataclass(frozen=True)
class AsksQuestion:
    """Did the prediction agree on whether the clone asks a question (Binder et al. 2024 property)?

    Whether a reply hands the turn back with a question shapes where the dialogue goes next.
    The stop phrase is removed first, in case it contains a "?".
    """

    name: str = "asks_question"
    version: str = "1"
    description: str = "1 if prediction and message agree on containing a '?', else 0"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        return _property_result(asks_question(predicted, stop_phrase), asks_question(actual, stop_phrase))


@dataclass(frozen=True)
class EndsDialogue:
    """Did the prediction agree on whether the clone ends the dialogue (Binder et al. 2024 property)?

    Knowing when one's copy would stop talking is a behavioural self-prediction in its own
    right. Without a stop phrase the dialogue cannot be ended this way, so the pair is
    unscorable (None) rather than trivially agreeing.
    """

    name: str = "ends_dialogue"
    version: str = "1"
    description: str = "1 if prediction and message agree on containing the stop phrase, else 0"

    def score(self, predicted: str, actual: str, *, stop_phrase: str | None = None) -> ScoreResult:
        if not stop_phrase:
            return ScoreResult(None, {"reason": "no stop phrase"})
        return _property_result(stop_phrase in predicted, stop_phrase in actual)
