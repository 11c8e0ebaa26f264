"""The text scorers and their registry, on hand-made cases whose values are derived by hand."""

from __future__ import annotations

import json

import pytest
import sacrebleu

from clonechat.errors import ConfigError
from clonechat.scoring.registry import DEFAULT_SCORERS, TEXT_SCORERS, get_text_scorer, parse_rating
from clonechat.scoring.text import (
    LENGTH_BUCKETS,
    ScoreResult,
    TextScorer,
    asks_question,
    first_word,
    length_bucket,
    normalise,
)

STOP = "^C^C"  # the engine's default stop phrase: "^" is a symbol, not punctuation


def value(scorer: str, predicted: str, actual: str, stop_phrase: str | None = None) -> float | None:
    return get_text_scorer(scorer).score(predicted, actual, stop_phrase=stop_phrase).value


def words(n: int) -> str:
    return " ".join(["word"] * n)


# --- exact and normalised ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "actual", "expected"),
    [
        ("Hello", "Hello", 1.0),
        ("  Hello \n", "Hello", 1.0),  # outer whitespace ignored
        ("Hello", "hello", 0.0),  # case matters
        ("Hello.", "Hello", 0.0),  # punctuation matters
        ("Hello world", "Hello  world", 0.0),  # inner whitespace matters
        (f"bye {STOP}", "bye", 0.0),  # the stop phrase is part of the text
    ],
)
def test_exact(predicted: str, actual: str, expected: float) -> None:
    assert value("exact", predicted, actual, STOP) == expected


@pytest.mark.parametrize(
    ("predicted", "actual", "stop_phrase", "expected"),
    [
        ("Hello, World!", "hello world", None, 1.0),
        ("  hello \n\t world ", "hello world", None, 1.0),
        ("don't", "dont", None, 1.0),  # punctuation deleted, not replaced by a space
        ("ＨＥＬＬＯ", "hello", None, 1.0),  # full-width letters, NFKC
        ("Straße", "STRASSE", None, 1.0),  # casefold, not lower
        (f"Hello world {STOP}", "hello world", STOP, 1.0),
        (f"Hello world {STOP}", "hello world", None, 0.0),  # "^c^c" survives without the stop phrase
        ("hello world", "hello there", None, 0.0),
        ("", "", None, 1.0),
        ("...", "", None, 1.0),
    ],
)
def test_normalised(predicted: str, actual: str, stop_phrase: str | None, expected: float) -> None:
    assert value("normalised", predicted, actual, stop_phrase) == expected


def test_normalise_function() -> None:
    assert normalise("  Well, — I THINK… so!  ") == "well i think so"
    assert normalise(f"{STOP}Yes{STOP}", STOP) == "yes"


# --- chrF ---------------------------------------------------------------------------------------


def test_chrf_identical_is_one() -> None:
    assert value("chrf", "The cat sat on the mat.", "The cat sat on the mat.") == pytest.approx(1.0)


def test_chrf_disjoint_characters_is_zero() -> None:
    assert value("chrf", "abc", "xyz") == 0.0


def test_chrf_partial_by_hand() -> None:
    # sacrebleu 2.x chrF: per order n, precision P_n = matches/hyp n-grams and recall R_n =
    # matches/ref n-grams; P and R are averaged over the orders where both sides have n-grams,
    # then F_beta = (1+b²)PR / (b²P + R) with b = 2.
    # predicted "ab", actual "abc":
    #   n=1: hyp {a,b}, ref {a,b,c}, 2 matches -> P=1, R=2/3
    #   n=2: hyp {ab}, ref {ab,bc}, 1 match     -> P=1, R=1/2
    #   n>=3: no hypothesis n-grams             -> not counted
    #   P = 1, R = (2/3 + 1/2)/2 = 7/12, F2 = 5·(7/12) / (4 + 7/12) = 35/55 = 7/11
    assert value("chrf", "ab", "abc") == pytest.approx(7 / 11, abs=1e-6)
    # predicted "abc", actual "ab": n=1 P=2/3 R=1; n=2 P=1/2 R=1; n=3 no reference 3-grams.
    #   P = 7/12, R = 1, F2 = 5·(7/12) / (4·7/12 + 1) = 35/40 = 7/8
    assert value("chrf", "abc", "ab") == pytest.approx(7 / 8, abs=1e-6)


def test_chrf_ignores_whitespace_and_handles_empty() -> None:
    assert value("chrf", "a b", "ab") == pytest.approx(1.0)
    assert value("chrf", "", "") == 1.0
    assert value("chrf", " ", "\n") == 1.0
    assert value("chrf", "", "abc") == 0.0
    assert value("chrf", "abc", "") == 0.0


def test_chrf_version_names_sacrebleu() -> None:
    assert sacrebleu.__version__ in get_text_scorer("chrf").version


# --- token F1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "actual", "expected"),
    [
        ("the cat sat", "the cat ran", 2 / 3),  # P = R = 2/3
        ("cat cat", "cat", 2 / 3),  # counts: 1 common, P = 1/2, R = 1
        ("a b", "a c d e", 1 / 3),  # P = 1/2, R = 1/4, F1 = 2·(1/8)/(3/4)
        ("The cat.", "the CAT", 1.0),  # normalised
        ("sat cat the", "the cat sat", 1.0),  # a bag: order is ignored
        ("dog", "cat", 0.0),
        ("", "", 1.0),
        ("", "cat", 0.0),
        ("cat", "", 0.0),
        ("!!!", "", 1.0),  # punctuation only is empty
    ],
)
def test_token_f1(predicted: str, actual: str, expected: float) -> None:
    assert value("token_f1", predicted, actual) == pytest.approx(expected, abs=1e-12)


def test_token_f1_strips_stop_phrase() -> None:
    assert value("token_f1", f"yes {STOP}", "yes", STOP) == 1.0
    assert value("token_f1", f"yes {STOP}", "yes", None) == pytest.approx(2 / 3)  # "yes", "^c^c" vs "yes"


# --- property scorers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Well, I think so.", "well"),
        ("“Yes!” she said.", "yes"),
        ("  ... hello there", "hello"),
        ("Don't go", "dont"),
        ("", ""),
        ("  ?!  ", ""),
    ],
)
def test_first_word(text: str, expected: str) -> None:
    assert first_word(text) == expected


def test_first_word_scorer() -> None:
    result = get_text_scorer("first_word").score("Sure, why not.", "SURE! Let's go.")
    assert result == ScoreResult(1.0, {"predicted": "sure", "actual": "sure"})
    result = get_text_scorer("first_word").score("No.", "Yes.")
    assert result == ScoreResult(0.0, {"predicted": "no", "actual": "yes"})
    assert first_word(f"{STOP} bye", STOP) == "bye"


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0-9"),
        (1, "0-9"),
        (9, "0-9"),
        (10, "10-29"),
        (29, "10-29"),
        (30, "30-59"),
        (59, "30-59"),
        (60, "60-99"),
        (99, "60-99"),
        (100, "100+"),
        (250, "100+"),
    ],
)
def test_length_bucket_boundaries(n: int, expected: str) -> None:
    assert length_bucket(words(n)) == expected


def test_length_buckets_constant() -> None:
    assert [label for _, label in LENGTH_BUCKETS] == ["0-9", "10-29", "30-59", "60-99", "100+"]
    assert [lowest for lowest, _ in LENGTH_BUCKETS] == [0, 10, 30, 60, 100]


def test_length_bucket_counts_words_not_punctuation_or_stop_phrase() -> None:
    assert length_bucket(words(9) + " — !") == "0-9"
    assert length_bucket(f"{words(9)} {STOP}", STOP) == "0-9"
    assert length_bucket(f"{words(9)} {STOP}") == "10-29"


def test_length_bucket_scorer() -> None:
    scorer = get_text_scorer("length_bucket")
    assert scorer.score(words(9), words(10)) == ScoreResult(0.0, {"predicted": "0-9", "actual": "10-29"})
    assert scorer.score(words(30), words(59)) == ScoreResult(1.0, {"predicted": "30-59", "actual": "30-59"})


def test_asks_question() -> None:
    assert asks_question("How are you?")
    assert asks_question("What? No way.")
    assert asks_question("本当？")  # full-width question mark
    assert not asks_question("Fine, thanks.")
    assert not asks_question("")
    assert not asks_question("done ??", "??")  # a "?" inside the stop phrase does not count
    scorer = get_text_scorer("asks_question")
    assert scorer.score("And you?", "What about you?") == ScoreResult(1.0, {"predicted": True, "actual": True})
    assert scorer.score("Fine.", "Fine.") == ScoreResult(1.0, {"predicted": False, "actual": False})
    assert scorer.score("And you?", "Fine.") == ScoreResult(0.0, {"predicted": True, "actual": False})


def test_ends_dialogue() -> None:
    scorer = get_text_scorer("ends_dialogue")
    assert scorer.score(f"bye {STOP}", "bye", stop_phrase=STOP) == ScoreResult(
        0.0, {"predicted": True, "actual": False}
    )
    assert scorer.score(f"bye {STOP}", f"{STOP}", stop_phrase=STOP) == ScoreResult(
        1.0, {"predicted": True, "actual": True}
    )
    assert scorer.score("go on", "more", stop_phrase=STOP) == ScoreResult(1.0, {"predicted": False, "actual": False})
    assert scorer.score("^C", STOP, stop_phrase=STOP) == ScoreResult(0.0, {"predicted": False, "actual": True})


def test_ends_dialogue_without_stop_phrase_is_unscorable() -> None:
    scorer = get_text_scorer("ends_dialogue")
    assert scorer.score(f"bye {STOP}", "bye") == ScoreResult(None, {"reason": "no stop phrase"})
    assert scorer.score("bye", "bye", stop_phrase="") == ScoreResult(None, {"reason": "no stop phrase"})


# --- parse_rating ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high", "expected"),
    [
        ("Rating: 7/10", 1, 10, 7.0),
        ("8.5", 1, 10, 8.5),
        ("I'd say 8.", 1, 10, 8.0),
        ("Score: 1", 1, 10, 1.0),  # bounds are inclusive
        ("10/10, perfect", 1, 10, 10.0),
        ("0.75", 0, 1, 0.75),
        ("eleven", 1, 10, None),
        ("15", 1, 10, None),
        ("-3", 0, 10, None),
        ("", 1, 10, None),
        ("15, or rather 7", 1, 10, None),  # the first number decides
        ("gpt4 says 6", 1, 10, 6.0),  # digits glued to a word are not a number
    ],
)
def test_parse_rating(text: str, low: float, high: float, expected: float | None) -> None:
    assert parse_rating(text, low, high) == expected


# --- registry -------------------------------------------------------------------------------------

ALL = ("exact", "normalised", "chrf", "token_f1", "first_word", "length_bucket", "asks_question", "ends_dialogue")


def test_registry_order_and_defaults() -> None:
    assert tuple(TEXT_SCORERS) == ALL
    assert DEFAULT_SCORERS == ALL


def test_unknown_scorer_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="unknown scorer 'bleu'") as info:
        get_text_scorer("bleu")
    for name in ALL:
        assert name in str(info.value)


@pytest.mark.parametrize("key", ALL)
def test_registered_scorer_is_well_formed(key: str) -> None:
    scorer = TEXT_SCORERS[key]
    assert isinstance(scorer, TextScorer)
    assert get_text_scorer(key) is scorer
    assert scorer.name == key
    assert scorer.version.strip()
    assert scorer.description.strip()
    assert "\n" not in scorer.description
    for predicted, actual in [("Hello there?", f"Hi. {STOP}"), ("", "")]:
        for stop_phrase in (STOP, None):
            result = scorer.score(predicted, actual, stop_phrase=stop_phrase)
            assert result.value is None or 0.0 <= result.value <= 1.0
            json.dumps(result.detail)  # stored as JSON
