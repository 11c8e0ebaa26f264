"""Per-turn metrics, by hand-computed cases, and the writer's cached path states against a
replay from the database (scripted dialogues, real SQLite)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from clonechat.store import turn_metrics
from clonechat.store.database import Database
from clonechat.store.turn_metrics import PathState, words_of


def test_words_are_case_folded_word_runs() -> None:
    assert words_of("Hello, hello WORLD! It's 42 — déjà vu") == ["hello", "hello", "world", "it's", "42", "déjà", "vu"]


def test_first_turn_has_no_overlaps() -> None:
    m = PathState().advance("n1", "d", "A", "the cat sat on the mat")
    assert (m.chars, m.words, m.distinct_words, m.new_words, m.vocabulary) == (22, 6, 5, 5, 5)
    assert m.overlap_partner is None and m.overlap_self is None
    # trigrams: (the cat sat) (cat sat on) (sat on the) (on the mat): none repeated
    assert m.repetition == 0.0


def test_overlap_vocabulary_and_repetition_follow_the_path() -> None:
    state = PathState()
    state.advance("n1", "d", "A", "the cat sat on the mat")
    b = state.advance("n2", "d", "B", "the cat sat quietly")
    # {the, cat, sat, quietly} vs {the, cat, sat, on, mat}: 3 shared of 6
    assert b.overlap_partner == pytest.approx(3 / 6)
    assert b.overlap_self is None
    assert (b.new_words, b.vocabulary) == (1, 6)
    # trigrams (the cat sat) seen in A's turn, (cat sat quietly) new
    assert b.repetition == pytest.approx(1 / 2)
    a = state.advance("n3", "d", "A", "quietly quietly quietly quietly")
    assert a.overlap_partner == pytest.approx(1 / 4)  # {quietly} vs B's 4 words
    assert a.overlap_self == 0.0
    assert (a.new_words, a.vocabulary) == (0, 6)
    # (quietly quietly quietly) twice: the second repeats the first
    assert a.repetition == pytest.approx(1 / 2)


def test_symbol_and_emoji_rates_count_visible_characters() -> None:
    m = PathState().advance("n", "d", "A", "ok 🌀✨ ∞!")
    # visible: o k 🌀 ✨ ∞ ! = 6; emoji 🌀 ✨; symbols ∞ ! (emoji excepted)
    assert m.emoji_rate == pytest.approx(2 / 6)
    assert m.symbol_rate == pytest.approx(2 / 6)
    empty = PathState().advance("n", "d", "A", "   ")
    assert (empty.words, empty.emoji_rate, empty.symbol_rate, empty.repetition) == (0, 0.0, 0.0, None)


def test_a_branch_copy_does_not_change_its_parent() -> None:
    state = PathState()
    state.advance("n1", "d", "A", "alpha beta")
    branch = state.copy()
    branch.advance("n2", "d", "B", "gamma")
    assert state.vocabulary == {"alpha", "beta"} and "B" not in state.latest


@pytest.mark.anyio
async def test_the_writer_stores_metrics_with_every_turn_and_a_replay_agrees(db: Database, db_path: Path) -> None:
    from clonechat.session import DialogueRequest
    from clonechat.tui.live import LiveDialogue, UiEvent

    async def ignore(_event: UiEvent) -> None:
        pass

    live = LiveDialogue(db, ignore)
    await live.start(DialogueRequest(model_a="scripted", max_turns=6, seed=3))
    assert live.dialogue_id is not None
    with closing(sqlite3.connect(db_path)) as conn:
        stored = conn.execute("SELECT * FROM turn_metrics ORDER BY node_id").fetchall()
        turns = conn.execute("SELECT count(*) FROM node WHERE kind = 'turn'").fetchone()[0]
        assert len(stored) == turns == 6
        conn.execute("DELETE FROM turn_metrics")
        conn.commit()
    assert db.write(turn_metrics.backfill) == 6
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT * FROM turn_metrics ORDER BY node_id").fetchall() == stored
