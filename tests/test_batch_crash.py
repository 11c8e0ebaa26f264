"""Crash test: a batch killed with SIGKILL again and again, some kills inside an open write
transaction, resumed each time, ends exactly as an uninterrupted run does."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

from typer.testing import CliRunner

from clonechat.cli import app
from clonechat.location import DbLocation
from clonechat.read.connect import schema_state_of
from tests.conftest import on_both_backends
from tests.helpers import raw_sql, statuses, stored_conversations

SPEC = """\
name = "crash"
replicates = 12
max_turns = 12
seed = 11
concurrency = 2
model_a = "scripted"

[params]
max_tokens = 40

# The measures too: their side nodes must survive kills exactly like turns.
[prediction]

[coordination]
tasks = ["number"]
when = "both"

[report_back]

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "told-other-ai"

[[conditions]]
template = "no-frame"
"""
KILLS = 24
ROOT = Path(__file__).resolve().parent.parent


def start(spec: Path, db: DbLocation) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash.driver", str(spec), "--db", str(db), "--progress-interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


class Lines:
    """Reads a child's output on a thread and signals each line it is waiting for."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.ready = threading.Event()
        self.in_commit = threading.Event()
        self.text: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.text.append(line)
            if line.startswith("READY"):
                self.ready.set()
            elif line.startswith("IN-COMMIT"):
                self.in_commit.set()

    def join(self) -> None:
        self._thread.join(timeout=10)


#: The first kills land while the process starts (imports, migrations, the plan); the others
#: after the run has committed a turn.
EARLY_KILLS = 3


def turn_rows(db: DbLocation) -> int:
    if schema_state_of(db) in (None, (0, False)):
        return 0
    with raw_sql(db) as conn:
        return int(conn.execute("SELECT count(*) FROM node WHERE kind = 'turn'").scalar_one())


def wait_for_turns(db: DbLocation, proc: subprocess.Popen[str], before: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while turn_rows(db) <= before and proc.poll() is None:
        assert time.monotonic() < deadline, "the resumed batch stored no turn"
        time.sleep(0.02)


def check_consistent(db: DbLocation) -> None:
    if isinstance(db, Path):
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # (PostgreSQL enforces its foreign keys on every commit; a killed client leaves no torn page.)
    with raw_sql(db) as conn:
        # No turn outside a dialogue's current conversation: nothing duplicated or orphaned.
        duplicates = conn.execute(
            "SELECT dialogue_id, turn_index, count(*) FROM node WHERE kind = 'turn' "
            "GROUP BY dialogue_id, turn_index HAVING count(*) > 1"
        ).fetchall()
        assert duplicates == []
        turn_rows = conn.execute("SELECT count(*) FROM node WHERE kind = 'turn'").fetchone()[0]
        # Side answers: at most one per dialogue, channel and agent; one prediction per turn.
        side_duplicates = conn.execute(
            "SELECT dialogue_id, kind, variant, speaker, count(*) FROM node WHERE kind IN ('coordination', 'report') "
            "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1"
        ).fetchall()
        assert side_duplicates == []
        predictions = conn.execute(
            "SELECT p.target_node_id, count(*), sum(CASE WHEN t.kind = 'turn' THEN 1 ELSE 0 END) FROM node p "
            "JOIN node t ON t.id = p.target_node_id WHERE p.kind = 'prediction' GROUP BY 1"
        ).fetchall()
        assert all(n == 1 and turns == 1 for _, n, turns in predictions)
        # A prediction is committed with its turn, never without it, and never the turn without it.
        assert len(predictions) == turn_rows
    on_paths = sum(len(path) - 1 for path in stored_conversations(db).values())
    assert turn_rows == on_paths
    for path in stored_conversations(db).values():
        assert [turn_index for _, turn_index, _ in path] == list(range(len(path)))


@on_both_backends
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path, db_path: DbLocation) -> None:
    spec, db = tmp_path / "crash.toml", db_path
    spec.write_text(SPEC)
    rng = random.Random(20261123)
    kills = kills_in_commit = runs = 0
    progress: list[int] = []
    while kills < KILLS:
        runs += 1
        assert runs < KILLS * 3, "the batch keeps finishing before it can be killed: make it slower"
        before = turn_rows(db)
        proc = start(spec, db)
        lines = Lines(proc)
        assert lines.ready.wait(60), "".join(lines.text)
        if kills >= EARLY_KILLS:
            # Each run stores something before it dies, however slowly a busy machine starts
            # it: wait for its first committed turn, then kill at a random moment after it.
            wait_for_turns(db, proc, before)
        during_commit = kills % 2 == 0
        if during_commit:
            # Kill while the writer holds an open transaction with rows inserted: the driver
            # pauses 50 ms inside the transaction after announcing it.
            time.sleep(rng.uniform(0.0, 0.5))
            lines.in_commit.clear()
            hit = lines.in_commit.wait(5)
        else:
            time.sleep(rng.uniform(0.0, 0.8))
            hit = False
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            kills_in_commit += int(during_commit and hit)
        proc.wait(timeout=30)
        lines.join()
        if finished:
            # It completed before the kill: the test needs more dialogues.
            assert proc.returncode == 0, "".join(lines.text)
            break
        if schema_state_of(db) not in (None, (0, False)):
            check_consistent(db)
            progress.append(sum(len(p) - 1 for p in stored_conversations(db).values()))

    assert kills >= 20, f"only {kills} kills landed before the batch finished"
    assert kills_in_commit >= 5, f"only {kills_in_commit} kills landed inside a transaction"
    assert progress == sorted(progress), "a kill must never lose committed turns"
    assert progress and progress[-1] >= 20, "the kills all landed before turns were stored: nothing was tested"
    print(f"turns stored after each kill: {progress}")

    final = start(spec, db)
    out, _ = final.communicate(timeout=120)
    assert final.returncode == 0, out
    check_consistent(db)
    assert statuses(db) == {"completed": 36}

    clean = tmp_path / "clean.db"
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(clean)])
    assert result.exit_code == 0, result.output
    crashed, uninterrupted = stored_conversations(db), stored_conversations(clean)
    assert len(uninterrupted) == 36
    assert all(len(path) == 13 for path in uninterrupted.values())
    assert crashed == uninterrupted
    assert side_answers(db) == side_answers(clean)
    assert sum(len(v) for v in side_answers(clean).values()) == 36 * (12 + 4 + 2)


def side_answers(db: DbLocation) -> dict[tuple[str, int], list[tuple[str, str, str, int, str]]]:
    """Per (condition, replicate): every prediction, coordination answer and report."""
    out: dict[tuple[str, int], list[tuple[str, str, str, int, str]]] = {}
    with raw_sql(db) as conn:
        rows = conn.execute(
            "SELECT c.name, d.replicate, n.kind, coalesce(n.variant, ''), n.speaker, n.turn_index, n.content "
            "FROM node n JOIN dialogue d ON d.id = n.dialogue_id JOIN condition c ON c.id = d.condition_id "
            "WHERE n.kind IN ('prediction', 'coordination', 'report')"
        ).fetchall()
    for condition, replicate, *rest in rows:
        out.setdefault((condition, replicate), []).append(tuple(rest))  # type: ignore[arg-type]
    return {key: sorted(value) for key, value in out.items()}
