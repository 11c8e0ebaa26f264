"""Privileged self-knowledge by surprisal on the real embedded SmolLM2: a greedy clone dialogue
run and scored by the CLI, each message's log-probability under (a) its writer's own context
and (b) the partner's view; (a) ≥ (b) on the model's own greedy output."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.cli import app
from clonechat.scoring.self_knowledge import OTHER_MODEL, OWN, PARTNER_VIEW

SPEC = """\
name = "sk"
replicates = 1
max_turns = 4
seed = 5
concurrency = 1
model_a = "local"

[params]
temperature = 0.0
max_tokens = 24

[self_knowledge]

[[conditions]]
template = "clone-aware"
"""


def cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.model
def test_own_context_makes_a_greedy_message_likelier_than_the_partners_view(tmp_path: Path) -> None:
    spec, db = tmp_path / "sk.toml", tmp_path / "runs.db"
    spec.write_text(SPEC)
    cli("batch", spec, "--db", db)  # scores the decomposition when it finishes
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT n.id, s.scorer, s.value, json_extract(s.detail, '$.tokens') FROM score s "
            "JOIN node n ON n.id = s.node_id WHERE n.kind = 'turn' ORDER BY n.turn_index"
        ).fetchall()
        turns = conn.execute("SELECT count(*) FROM node WHERE kind = 'turn' AND speaker != 'researcher'").fetchone()
    by_turn: dict[str, dict[str, float]] = {}
    for node_id, scorer, value, tokens in rows:
        assert tokens > 0 and value < 0  # a log-probability of a non-empty message
        by_turn.setdefault(node_id, {})[scorer] = value
    assert turns[0] == 4 and len(by_turn) == 4
    for values in by_turn.values():
        # A clone condition has no different model: (c) is left out, never faked.
        assert set(values) == {OWN, PARTNER_VIEW}
        assert values[OWN] >= values[PARTNER_VIEW], values
    # Scoring again adds nothing (idempotent); the CLI says so.
    assert "self_knowledge: 0 new score rows for 0 turns" in cli(
        "score", "sk", "--scorer", "self_knowledge", "--db", db
    )
    assert OTHER_MODEL not in {scorer for _, scorer, _, _ in rows}
