"""The batch's self-knowledge scoring when the model of (c) is unreachable: the run's turns are
kept, one error line on stderr says what failed and how to finish, and the summary says so."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
name = "skdown"
max_turns = 2
model_a = "scripted"

[self_knowledge]
cross_model = "srv"

[[conditions]]
template = "clone-aware"

[models.srv]
provider = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"
model = "m"
prompt_logprobs = "vllm"
retry_budget = 1
"""


def test_unreachable_scoring_model_keeps_the_run_and_says_how_to_finish(tmp_path: Path) -> None:
    spec, db = tmp_path / "sk.toml", tmp_path / "runs.db"
    spec.write_text(SPEC)
    done = subprocess.run(
        [sys.executable, "-m", "clonechat", "batch", str(spec), "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "self-knowledge not finished: model 'srv' at http://127.0.0.1:9/v1" in errors[0]
    assert errors[0].endswith("finish it with clonechat score skdown --scorer self_knowledge")
    summary = json.loads(done.stdout)
    assert "srv" in summary["scores"]["self_knowledge_error"]
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM node WHERE kind = 'turn'").fetchone() == (2,)
        assert conn.execute("SELECT status FROM dialogue").fetchall() == [("completed",)]
    # `clonechat score` knows the models the stored spec defines: it tries "srv" again (and says
    # so in one line, exit non-zero), instead of calling a spec-only model unavailable.
    again = subprocess.run(
        [sys.executable, "-m", "clonechat", "score", "skdown", "--scorer", "self_knowledge", "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert again.returncode != 0
    assert "model 'srv' at http://127.0.0.1:9/v1: connection failed" in again.stderr, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
