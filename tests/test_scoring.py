"""``clonechat score`` and ``clonechat report`` end to end, on a real (scripted) experiment.

One small experiment is run through the real ``clonechat batch`` entry point (2 conditions × 3
replicates × 4 turns, partner and self predictions, two coordination tasks, reports back, a
control condition) and copied for each test, so tests that delete or add rows do not see each
other. The ``scripted`` model is deterministic and needs no network, so the whole file runs in
seconds; what it checks is the plumbing (which rows exist, what they point at, what is never
touched), not what a real model would score.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from clonechat.analysis.load import load_report_data
from clonechat.cli import app
from clonechat.cli.analysis import MODEL_SCORERS
from clonechat.read.connect import open_reader
from clonechat.scoring.registry import DEFAULT_SCORERS, TEXT_SCORERS, get_text_scorer
from clonechat.scoring.runner import SHUFFLED_SUFFIX
from clonechat.tui import scores_data

EXPERIMENT = "scoring"
CONDITIONS = 2
REPLICATES = 3
TURNS = 4
TASKS = ("number", "pair")
PHASES = ("before", "after")
DIALOGUES = CONDITIONS * REPLICATES
#: A partner and a self prediction before every turn.
PREDICTIONS = DIALOGUES * TURNS * 2

SPEC = f"""\
name = "{EXPERIMENT}"
replicates = {REPLICATES}
max_turns = {TURNS}
seed = 11
concurrency = 4
model_a = "scripted"
control = "base"

[prediction]
self_predict = true

[coordination]
tasks = {json.dumps(list(TASKS))}

[report_back]

[[conditions]]
name = "base"
template = "no-frame"

[[conditions]]
name = "aware"
template = "clone-aware"
"""

HEADINGS = [
    f"# Clonechat report: {EXPERIMENT}",
    "## How to read this",
    "## Conditions",
    "## Prediction accuracy",
    "## Coordination",
    "## Reports back",
    "## Appendix: experiment spec",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [*map(str, args)])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experiment, run once for the module through ``clonechat batch``."""
    folder = tmp_path_factory.mktemp("scoring")
    spec, db = folder / f"{EXPERIMENT}.toml", folder / "runs.db"
    spec.write_text(SPEC)
    result = cli("batch", spec, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dialogues"] == {"total": DIALOGUES, "completed": DIALOGUES}
    assert summary["scores"]["predictions"] == PREDICTIONS
    return db


@pytest.fixture
def db(built: Path, tmp_path: Path) -> Path:
    """A private copy of the experiment's database (sqlite's backup API, so the WAL is included)."""
    copy = tmp_path / "runs.db"
    with closing(sqlite3.connect(built)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    return copy


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(sql, params).fetchall())


def node_dump(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT * FROM node ORDER BY id")


def score_dump(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT node_id, scorer, version, value, detail FROM score ORDER BY node_id, scorer, version")


def score_count(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM score")[0][0])


def test_batch_scores_every_prediction_with_a_shuffled_control(db: Path) -> None:
    """Every prediction has a row per default text scorer and a ``NAME~shuffled`` row whose
    message comes from another dialogue of the same condition, at the same turn."""
    predictions = query(
        db,
        "SELECT p.id, p.dialogue_id, d.condition_id, t.turn_index FROM node p "
        "JOIN node t ON t.id = p.target_node_id JOIN dialogue d ON d.id = p.dialogue_id "
        "WHERE p.kind = 'prediction'",
    )
    assert len(predictions) == PREDICTIONS
    turns = {
        row[0]: row[1:]
        for row in query(
            db,
            "SELECT n.id, n.kind, n.dialogue_id, d.condition_id, n.turn_index FROM node n "
            "JOIN dialogue d ON d.id = n.dialogue_id",
        )
    }
    scores: dict[tuple[str, str], dict[str, Any]] = {
        (node, scorer): json.loads(str(detail))
        for node, scorer, detail in query(db, "SELECT node_id, scorer, detail FROM score WHERE scorer != 'answer'")
    }
    assert len(scores) == PREDICTIONS * len(DEFAULT_SCORERS) * 2
    for prediction, dialogue, condition, turn_index in predictions:
        for name in DEFAULT_SCORERS:
            assert (prediction, name) in scores
            against = scores[(prediction, name + SHUFFLED_SUFFIX)]["against"]
            kind, other_dialogue, other_condition, other_turn = turns[against]
            assert kind == "turn"
            assert other_dialogue != dialogue, "the shuffled control must come from another dialogue"
            assert other_condition == condition
            # every dialogue has every turn here, so the same turn is always available
            assert other_turn == turn_index


def test_score_is_idempotent_and_never_touches_turns(db: Path) -> None:
    nodes, count = node_dump(db), score_count(db)
    first = cli("score", EXPERIMENT, "--db", db)
    assert first.exit_code == 0, first.output
    assert score_count(db) == count  # the batch already scored every text scorer
    second = cli("score", EXPERIMENT, "--db", db)
    assert second.exit_code == 0, second.output
    done = PREDICTIONS * len(DEFAULT_SCORERS)
    assert f"0 new score rows for {PREDICTIONS} predictions, {done} already scored" in " ".join(second.stdout.split())
    assert score_count(db) == count
    assert node_dump(db) == nodes


def test_scorer_option_runs_only_that_scorer(db: Path) -> None:
    nodes, before = node_dump(db), score_dump(db)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM score WHERE scorer IN ('chrf', 'chrf~shuffled')")
    assert score_count(db) == len(before) - 2 * PREDICTIONS
    result = cli("score", EXPERIMENT, "--scorer", "chrf", "--db", db)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("chrf: ")
    assert f"{2 * PREDICTIONS} new score rows for {PREDICTIONS} predictions" in result.stdout
    assert "surprisal" not in result.stdout
    # exactly the deleted rows come back (same values, same shuffled messages), nothing else
    assert score_dump(db) == before
    assert node_dump(db) == nodes


def test_unknown_scorer_experiment_and_list(db: Path) -> None:
    count = score_count(db)
    bad = cli("score", EXPERIMENT, "--scorer", "chrff", "--db", db)
    assert bad.exit_code == 2
    line = bad.stderr.strip()
    assert line.startswith("error: unknown scorer 'chrff'") and "\n" not in line
    for name in [*TEXT_SCORERS, *MODEL_SCORERS]:
        assert name in line
    missing = cli("score", "no-such-experiment", "--db", db)
    assert missing.exit_code != 0
    assert missing.stderr.strip().startswith(f"error: no experiment named 'no-such-experiment' in {db} (known: ")
    assert score_count(db) == count
    listed = cli("score", "--list")
    assert listed.exit_code == 0, listed.output
    names = {line.split()[0] for line in listed.stdout.splitlines() if line and not line[0].isspace()}
    assert {*TEXT_SCORERS, *MODEL_SCORERS} <= names


def test_surprisal_with_a_scripted_predictor_is_not_available(db: Path) -> None:
    nodes, count = node_dump(db), score_count(db)
    result = cli("score", EXPERIMENT, "--scorer", "surprisal", "--db", db)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert (
        f"surprisal: 0 new score rows for {PREDICTIONS} predictions; not available for scripted ({PREDICTIONS})" in text
    )
    assert query(db, "SELECT count(*) FROM score WHERE scorer LIKE 'surprisal%'") == [(0,)]
    assert score_count(db) == count and node_dump(db) == nodes


def test_stored_value_is_the_scorer_applied_to_the_messages(db: Path) -> None:
    """Recompute every stored text score from the prediction and the message it names as
    ``against`` (the predicted turn, or the shuffled control's message)."""
    rows = query(
        db,
        "SELECT s.scorer, s.value, s.detail, p.content, p.target_node_id, d.stop_phrase FROM score s "
        "JOIN node p ON p.id = s.node_id JOIN dialogue d ON d.id = p.dialogue_id WHERE p.kind = 'prediction'",
    )
    content: dict[str, str] = dict(query(db, "SELECT id, content FROM node WHERE kind = 'turn'"))
    checked = 0
    for scorer_name, value, detail, predicted, target, stop_phrase in rows:
        name, shuffled, _ = str(scorer_name).partition(SHUFFLED_SUFFIX)
        against = json.loads(str(detail))["against"]
        if not shuffled:
            assert against == target
        expected = get_text_scorer(name).score(str(predicted), str(content[against]), stop_phrase=stop_phrase)
        assert value == pytest.approx(expected.value), (scorer_name, predicted, content[against])
        checked += 1
    assert checked == PREDICTIONS * len(DEFAULT_SCORERS) * 2
    # and the graded scorers really vary, so the comparison above is not trivially 0 == 0
    assert len({v for s, v, *_ in rows if s == "chrf"}) > 1


def test_load_report_data_counts(db: Path) -> None:
    with open_reader(db) as reader:  # display only: the read-only reader is enough
        assert reader is not None
        data = load_report_data(reader, EXPERIMENT)
    assert data.experiment == EXPERIMENT
    assert data.control == "base"
    assert [c.name for c in data.conditions] == ["base", "aware"]
    assert all((c.dialogues, c.completed, c.turns) == (3, 3, 12) for c in data.conditions)
    assert len(data.predictions) == PREDICTIONS * len(DEFAULT_SCORERS)
    assert {p.scorer for p in data.predictions} == set(DEFAULT_SCORERS)
    assert all(p.baseline is not None for p in data.predictions)
    assert {p.variant for p in data.predictions} == {"partner", "self"}
    assert {p.turn_index for p in data.predictions} == set(range(1, TURNS + 1))
    assert len(data.coordination) == DIALOGUES * len(TASKS) * len(PHASES)
    assert {(p.task, p.phase) for p in data.coordination} == {(t, p) for t in TASKS for p in PHASES}
    assert len(data.reports) == DIALOGUES * 2
    assert {r.speaker for r in data.reports} == {"A", "B"}


def test_report_has_every_section_and_is_deterministic(db: Path, tmp_path: Path) -> None:
    nodes = node_dump(db)
    texts = []
    for out in (tmp_path / "one", tmp_path / "two", tmp_path / "one"):
        result = cli("report", EXPERIMENT, "--out", out, "--db", db)
        assert result.exit_code == 0, result.output
        texts.append((out / "report.md").read_text(encoding="utf-8"))
    assert texts[0] == texts[1] == texts[2]
    text = texts[0]
    for heading in HEADINGS:
        assert heading in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(links) == {"prediction_by_turn_chrf.png", "prediction_by_turn_token_f1.png", "coordination.png"}
    for link in links:
        assert (tmp_path / "one" / link).read_bytes()[:8] == PNG_MAGIC
    assert "| base (control) |" in text
    # 3 dialogues per condition are too few for an interval: nothing may be called above chance
    assert "too few dialogues to tell (n=3 dialogues" in text
    assert " above chance" not in text and "within noise:" not in text
    assert node_dump(db) == nodes
    missing = cli("report", "no-such-experiment", "--out", tmp_path / "none", "--db", db)
    assert missing.exit_code != 0 and "no experiment named 'no-such-experiment'" in missing.stderr


def test_missing_shuffled_control_is_filled_in_on_rescoring(db: Path) -> None:
    """A prediction scored while its condition had no other dialogue yet (a batch stopped after
    its first dialogue with concurrency 1: the batch scores what it has on the way out) has its
    ``NAME`` row but no ``NAME~shuffled`` row. Re-scoring once more dialogues exist ("it can be
    re-run after more dialogues finish") should add the control; simulated by deleting the
    shuffled rows of one dialogue."""
    before = score_dump(db)
    (dialogue,) = query(db, "SELECT dialogue_id FROM node WHERE kind = 'prediction' ORDER BY id LIMIT 1")[0]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "DELETE FROM score WHERE scorer LIKE '%~shuffled' AND node_id IN "
            "(SELECT id FROM node WHERE dialogue_id = ? AND kind = 'prediction')",
            (dialogue,),
        )
    assert len(score_dump(db)) < len(before)
    result = cli("score", EXPERIMENT, "--db", db)
    assert result.exit_code == 0, result.output
    assert score_dump(db) == before


def test_judge_scores_through_a_model_server_with_its_rubric(db: Path, tmp_path: Path) -> None:
    """The judge is a model behind the same providers as the agents: here a loopback
    OpenAI-compatible server that answers every rubric with a rating of 7 (stored as 0.7)."""
    from tests.servers.fake_model import Reply, fake_model_server, openai_body

    with fake_model_server(Reply(body=openai_body("Rating: 7/10"))) as server:
        models = tmp_path / "models.toml"
        models.write_text(
            f'[models.judge]\nprovider = "openai-compatible"\nbase_url = "{server.url}/v1"\nmodel = "j"\n'
            "stream = false\n"
        )
        result = cli("score", EXPERIMENT, "--scorer", "judge", "--judge", "judge", "--models-file", models, "--db", db)
        assert result.exit_code == 0, result.output
        rubrics = [r.json()["messages"][-1]["content"] for r in server.requests]
        again = cli("score", EXPERIMENT, "--scorer", "judge", "--judge", "judge", "--models-file", models, "--db", db)
        assert again.exit_code == 0, again.output
        assert len(server.requests) == len(rubrics)  # idempotent: nothing asked twice
    rows = query(db, "SELECT value, version, json_extract(detail, '$.raw') FROM score WHERE scorer LIKE 'judge%'")
    assert len(rows) == 2 * PREDICTIONS  # against the actual message and the shuffled control
    assert {value for value, _, _ in rows} == {0.7}
    assert all(version.startswith("judge/") for _, version, _ in rows)  # the judge model and the rubric's hash
    # The rubric shows the judge both messages.
    prediction, actual = query(
        db,
        "SELECT p.content, t.content FROM node p JOIN node t ON t.id = p.target_node_id WHERE p.kind = 'prediction' "
        "ORDER BY p.id LIMIT 1",
    )[0]
    assert any(prediction in rubric and actual in rubric for rubric in rubrics)


# -- the scorer version in force ----------------------------------------------------------------

#: Stored after the batch's own rows (which carry today's date), version "9" before "10".
STORED_9, STORED_10 = "2100-01-01 00:00:00.000000", "2100-01-02 00:00:00.000000"
#: ``v_score`` as it would be with "the newest version" meaning max(version) compared as text.
MAX_AS_TEXT_V_SCORE = """
CREATE VIEW v_score AS
SELECT s.id, s.node_id, s.scorer, s.version, s.value, s.detail, s.created_at FROM score s
WHERE s.id = (SELECT v.id FROM score v WHERE v.node_id = s.node_id AND v.scorer = s.scorer
              ORDER BY v.version DESC LIMIT 1)
"""


def store_score(db: Path, node: str, scorer: str, version: str, value: float | None, detail: str, at: str) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO score (node_id, scorer, version, value, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (node, scorer, version, value, detail, at),
        )


def rescore_at_9_then_10(db: Path) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """One prediction rescored by ``chrf`` at version "9", then "10" (stored later), with its
    shuffled control scored at "9" only; one coordination question's answers read at "9" (the
    agents agree) then "10" (they do not). Max-as-text would pick "9" for both."""
    prediction = query(
        db,
        "SELECT p.id, p.dialogue_id, t.turn_index, p.variant FROM node p JOIN node t ON t.id = p.target_node_id "
        "WHERE p.kind = 'prediction' ORDER BY p.id LIMIT 1",
    )[0]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM score WHERE node_id = ? AND scorer IN ('chrf', 'chrf~shuffled')", (prediction[0],))
    store_score(db, prediction[0], "chrf", "9", 0.9, "{}", STORED_9)
    store_score(db, prediction[0], "chrf~shuffled", "9", 0.09, "{}", STORED_9)
    store_score(db, prediction[0], "chrf", "10", 0.1, "{}", STORED_10)
    coordination = query(
        db,
        "SELECT a.id, b.id, a.dialogue_id, a.variant FROM node a JOIN node b ON b.dialogue_id = a.dialogue_id "
        "AND b.kind = 'coordination' AND b.speaker = 'B' AND b.variant = a.variant "
        "WHERE a.kind = 'coordination' AND a.speaker = 'A' ORDER BY a.id LIMIT 1",
    )[0]
    for node, speaker in ((coordination[0], "a"), (coordination[1], "b")):
        store_score(db, node, "answer", "9", None, json.dumps({"answer": "same"}), STORED_9)
        store_score(db, node, "answer", "10", None, json.dumps({"answer": f"ten-{speaker}"}), STORED_10)
    return prediction, coordination


def every_reader(db: Path, prediction: tuple[Any, ...], coordination: tuple[Any, ...]) -> dict[str, Any]:
    """What each reader says of the rescored prediction and coordination question: the views,
    the report's data, and the scores screen's data (each through its own read-only path)."""
    prediction_id, dialogue, turn, variant = prediction
    _a, _b, coordination_dialogue, question = coordination
    task, _, phase = question.partition("@")
    with open_reader(db) as reader:
        assert reader is not None
        report = load_report_data(reader, EXPERIMENT)
    screen = scores_data.load_scores(db, EXPERIMENT)
    points = scores_data.turn_accuracy(db, dialogue, "chrf")

    def prediction_of(rows: list[Any]) -> list[tuple[float, float | None]]:
        return [
            (r.value, r.baseline)
            for r in rows
            if (r.dialogue_id, r.turn_index, r.variant, r.scorer) == (dialogue, turn, variant, "chrf")
        ]

    def answers_of(pairs: list[Any]) -> list[tuple[str, str]]:
        return [
            (p.answer_a, p.answer_b)
            for p in pairs
            if (p.dialogue_id, p.task, p.phase) == (coordination_dialogue, task, phase)
        ]

    return {
        "v_score": query(db, "SELECT version FROM v_score WHERE node_id = ? AND scorer = 'chrf'", prediction_id),
        "v_prediction": query(
            db,
            "SELECT version, value, shuffled_value FROM v_prediction WHERE prediction_id = ? AND scorer = 'chrf'",
            prediction_id,
        ),
        "v_coordination": query(
            db,
            "SELECT answer_a, answer_b, matched FROM v_coordination WHERE dialogue_id = ? AND task = ? AND phase = ?",
            coordination_dialogue,
            task,
            phase,
        ),
        "report predictions": prediction_of(report.predictions),
        "report coordination": answers_of(report.coordination),
        "screen predictions": prediction_of(screen.data.predictions),
        "screen turn": [(p.value, p.baseline) for p in points if (p.turn_index, p.variant) == (turn, variant)],
        "screen coordination": answers_of(screen.data.coordination),
        # the screen's match rates are v_coordination's, pair for pair
        "screen match rates": sorted((r.condition, r.task, r.phase, r.match_rate) for r in screen.coordination),
        "v_coordination match rates": sorted(
            (str(c), str(t), str(p), float(m))
            for c, t, p, m in query(
                db,
                "SELECT condition, task, phase, avg(matched) FROM v_coordination WHERE experiment = ? "
                "GROUP BY condition, task, phase",
                EXPERIMENT,
            )
        ),
    }


def test_every_reader_uses_the_scorer_version_stored_last(db: Path) -> None:
    """Version "10" was stored after "9": the views, the report and the scores screen all show
    it, although "9" > "10" as text; the shuffled control, scored at "9" only, gives no
    baseline at "10" rather than one from another version."""
    prediction, coordination = rescore_at_9_then_10(db)
    seen = every_reader(db, prediction, coordination)
    assert seen["v_score"] == [("10",)]
    assert seen["v_prediction"] == [("10", 0.1, None)]
    assert seen["v_coordination"] == [("ten-a", "ten-b", 0)]
    for reader in ("report predictions", "screen predictions", "screen turn"):
        assert seen[reader] == [(0.1, None)], reader
    for reader in ("report coordination", "screen coordination"):
        assert seen[reader] == [("ten-a", "ten-b")], reader
    assert seen["screen match rates"] == seen["v_coordination match rates"]


def test_readers_follow_v_score_not_a_rule_of_their_own(db: Path) -> None:
    """Redefine ``v_score`` in this copy as max(version) by text: every reader then shows "9".
    So none of them decides which version counts by itself; the view is the one definition."""
    prediction, coordination = rescore_at_9_then_10(db)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP VIEW v_score")
        conn.execute(MAX_AS_TEXT_V_SCORE)
    seen = every_reader(db, prediction, coordination)
    assert seen["v_score"] == [("9",)]
    assert seen["v_prediction"] == [("9", 0.9, 0.09)]
    assert seen["v_coordination"] == [("same", "same", 1)]
    for reader in ("report predictions", "screen predictions", "screen turn"):
        assert seen[reader] == [(0.9, 0.09)], reader
    for reader in ("report coordination", "screen coordination"):
        assert seen[reader] == [("same", "same")], reader
    assert seen["screen match rates"] == seen["v_coordination match rates"]
