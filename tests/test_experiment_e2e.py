"""End to end on the real embedded model: a small experiment with prediction (and the
self-prediction control), coordination before and after, and reports-back; scored (text
scorers at the end of the batch, surprisal on request) and written up with every section
of the report filled. A second one switches on self-recognition, self-knowledge by surprisal,
a scheduled interjection and the convergence rule for a clone and a cross-model condition."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.cli import app

SPEC = """\
name = "e2e"
replicates = 2
max_turns = 2
seed = 11
concurrency = 2
model_a = "local"
control = "no-frame"

[params]
max_tokens = 24

[prediction]
self_predict = true

[coordination]
tasks = ["pair"]
when = "both"
max_tokens = 12

[report_back]
max_tokens = 40

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "no-frame"
"""


def cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.model
def test_small_experiment_on_the_embedded_model_fills_every_section(tmp_path: Path) -> None:
    spec, db, out = tmp_path / "e2e.toml", tmp_path / "runs.db", tmp_path / "report"
    spec.write_text(SPEC)
    cli("batch", spec, "--db", db)

    with closing(sqlite3.connect(db)) as conn:
        kinds = dict(conn.execute("SELECT kind || ':' || coalesce(variant, ''), count(*) FROM node GROUP BY 1"))
        scored_nodes = conn.execute("SELECT count(DISTINCT node_id) FROM score WHERE scorer != 'answer'").fetchone()[0]
        answers = conn.execute(
            "SELECT count(*) FROM score s JOIN node n ON n.id = s.node_id "
            "WHERE s.scorer = 'answer' AND n.kind = 'coordination'"
        ).fetchone()[0]
    # 4 dialogues x 2 turns, each predicted by the partner and by the speaker itself.
    assert kinds["turn:"] == 8
    assert kinds["prediction:partner"] == 8 and kinds["prediction:self"] == 8
    assert kinds["coordination:pair@before"] == 8 and kinds["coordination:pair@after"] == 8
    assert kinds["report:"] == 8
    assert scored_nodes == 16  # the batch scored every prediction with the text scorers
    assert answers == 16  # ... and read every coordination answer by its task's rule

    # `show` prints the side channels beside the conversation, each marked as such.
    with closing(sqlite3.connect(db)) as conn:
        (dialogue_id,) = conn.execute("SELECT id FROM dialogue LIMIT 1").fetchone()
    shown = cli("show", dialogue_id, "--db", db)
    for label in ("prediction (partner) of turn 1", "prediction (self)", "coordination pair@before", "report to"):
        assert label in shown, label

    output = cli("score", "e2e", "--scorer", "surprisal", "--db", db)
    assert "surprisal: 32 new score rows for 16 predictions" in output  # actual + shuffled for each
    with closing(sqlite3.connect(db)) as conn:
        surprisals = [v for (v,) in conn.execute("SELECT value FROM score WHERE scorer = 'surprisal'")]
    assert len(surprisals) == 16 and all(v < 0 for v in surprisals)  # log-probabilities

    cli("report", "e2e", "--db", db, "--out", out)
    report = (out / "report.md").read_text()
    for heading in ("## Conditions", "## Prediction accuracy", "## Coordination", "## Reports back", "## Appendix"):
        assert heading in report
    for empty in ("No predictions", "No coordination", "No reports"):
        assert empty not in report, empty
    prediction = report.split("## Prediction accuracy")[1].split("## Coordination")[0]
    for scorer in ("chrf", "token_f1", "surprisal", "first_word"):
        table = prediction.split(f"### Scorer: {scorer}")[1].split("###")[0]
        # A row per condition and variant, each with a number in the accuracy column.
        rows = [r for r in table.splitlines() if r.startswith("| clone-aware") or r.startswith("| no-frame")]
        assert len(rows) == 4, table
        assert all(re.search(r"\| -?\d+\.\d{3}", r) for r in rows), rows
    coordination = report.split("## Coordination")[1].split("## Reports back")[0]
    assert re.search(r"\| clone-aware \| pair \| before \| \d\.\d{3}", coordination)
    assert re.search(r"\| no-frame .*\| pair \| after \| \d\.\d{3}", coordination)
    reports = report.split("## Reports back")[1].split("## Appendix")[0]
    assert reports.count("\n> ") >= 8  # every agent's report quoted
    assert 'control = "no-frame"' in report.split("## Appendix")[1]
    for png in ("prediction_by_turn_chrf.png", "coordination.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
        assert f"]({png})" in report


MEASURES_SPEC = """\
name = "e2e-measures"
replicates = 2
max_turns = 4
seed = 12
concurrency = 2
model_a = "local"
control = "cross"

[params]
max_tokens = 20

[recognition]
items = 2
max_tokens = 6

[self_knowledge]
cross_model = "second"

[convergence]
metric = "overlap_partner"
threshold = 0.5
turns = 2
action = "mark"

[[interjections]]
at = 3
template = "reveal-clone"
to = "B"

[[conditions]]
name = "clone"
template = "told-other-ai"

[[conditions]]
name = "cross"
template = "told-other-ai"
model_b = "second"

[models.second]
provider = "local"
display_name = "SmolLM2 (a second instance)"
"""


@pytest.mark.model
def test_the_newer_measures_on_the_embedded_model_fill_their_sections(tmp_path: Path) -> None:
    spec, db, out = tmp_path / "measures.toml", tmp_path / "runs.db", tmp_path / "report"
    spec.write_text(MEASURES_SPEC)
    cli("batch", spec, "--db", db)
    with closing(sqlite3.connect(db)) as conn:
        kinds = dict(conn.execute("SELECT kind || ':' || speaker, count(*) FROM node GROUP BY 1"))
        scorers = dict(conn.execute("SELECT scorer, count(*) FROM score WHERE scorer NOT LIKE '%~%' GROUP BY 1"))
        shown = conn.execute(
            "SELECT r.speaker, t.speaker FROM node r JOIN node t ON t.id = r.target_node_id "
            "WHERE r.kind = 'recognition'"
        ).fetchall()
    # 4 dialogues x 4 agent turns, and one interjection each (to B) before the third.
    assert kinds["turn:A"] + kinds["turn:B"] == 16 and kinds["turn:researcher"] == 4
    # Each agent is asked about one of its own messages and one of its partner's.
    assert kinds["recognition:A"] == kinds["recognition:B"] == 8
    assert sorted(asked == author for asked, author in shown) == [False] * 8 + [True] * 8
    assert scorers["recognition"] == 16  # scored at the end of the batch (NULL when unreadable)
    # (a) and (b) for every turn; (c) by the other model for every turn (it is "second" for the
    # clone condition, and the partner's model for each speaker in the cross condition).
    assert scorers["logprob_own"] == scorers["logprob_partner_view"] == scorers["logprob_other_model"] == 16

    cli("report", "e2e-measures", "--db", db, "--out", out)
    report = (out / "report.md").read_text()
    order = ["## Self-recognition", "## Privileged self-knowledge", "## Interjections", "## Convergence"]
    assert [report.index(h) for h in order] == sorted(report.index(h) for h in order)
    knowledge = report.split("## Privileged self-knowledge")[1].split("## Interjections")[0]
    assert re.search(r"\| clone \| -?\d+\.\d{3}", knowledge) and re.search(r"\| cross .*\| -?\d+\.\d{3}", knowledge)
    interjections = report.split("## Interjections")[1].split("## Convergence")[0]
    assert "turn 3, to B" in interjections
    convergence = report.split("## Convergence")[1].split("## Statistical tests")[0]
    assert "overlap_partner" in convergence and " of 2" in convergence
    for section in ("## Self-recognition", "## Privileged self-knowledge"):
        body = report.split(section)[1].split("\n## ")[0]
        assert "| clone" in body and "| cross" in body, body
