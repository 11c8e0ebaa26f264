"""End to end on the real embedded model: a small experiment with prediction (and the
self-prediction control), coordination before and after, and reports-back; scored (text
scorers at the end of the batch, surprisal on request) and written up with every section
of the report filled."""

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
