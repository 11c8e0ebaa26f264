"""``clonechat batch``: running, resuming, refusing a changed spec, failures, stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from clonechat.batch.progress import BatchProgress, progress_line
from clonechat.batch.store import DialogueJob
from clonechat.cli import app
from clonechat.engine.events import DialogueEnded, DialogueStarted, NodeCompleted
from clonechat.location import DbLocation
from clonechat.providers.scripted import ScriptedProvider
from clonechat.read.connect import schema_state_of
from clonechat.session import PreparedDialogue
from tests.conftest import on_both_backends as both_backends
from tests.helpers import new_path, raw_sql, settings, statuses, stored_conversations, two_agents
from tests.servers.fake_model import FakeModelServer, Hang, Reply, Stream, fake_model_server, openai_body, openai_events

SCRIPTED = """\
name = "scr"
replicates = 3
max_turns = 5
seed = 7
concurrency = 4
model_a = "scripted"

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "told-human"
first_speaker = "B"
"""


def batch(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["batch", *map(str, args)])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def node_count(db: DbLocation) -> int:
    with raw_sql(db) as conn:
        return int(conn.execute("SELECT count(*) FROM node").fetchone()[0])


@both_backends
def test_batch_runs_every_dialogue_then_rerun_resumes_nothing(tmp_path: Path, db_path: DbLocation) -> None:
    spec, db = write(tmp_path / "scr.toml", SCRIPTED), db_path
    result = batch(spec, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["experiment"] == "scr" and summary["created"] is True
    assert summary["dialogues"] == {"total": 6, "completed": 6}
    assert summary["conditions"]["told-human"] == {"dialogues": 3, "turns": 15, "completed": 3}
    assert summary["this_run"]["turns_this_run"] == 30

    conversations = stored_conversations(db)
    assert len(conversations) == 6
    for (_, condition, replicate), path in conversations.items():
        assert [turn_index for _, turn_index, _ in path] == [0, 1, 2, 3, 4, 5]
        first = "B" if condition == "told-human" else ("A" if replicate % 2 else "B")
        assert path[1][0] == first
        assert [s for s, _, _ in path[1:]] == [first, *("AB" if first == "B" else "BA") * 2]

    nodes = node_count(db)
    again = batch(spec, "--db", db, "--json")
    assert again.exit_code == 0
    assert "resuming experiment 'scr'" in again.stderr
    assert json.loads(again.stdout)["this_run"] == {
        "dialogues": 0,
        "turns_this_run": 0,
        "elapsed_s": json.loads(again.stdout)["this_run"]["elapsed_s"],
        "turns_per_s": json.loads(again.stdout)["this_run"]["turns_per_s"],
        "failures": [],
        "rate_limited": {},  # the scripted model has no endpoint
    }
    assert node_count(db) == nodes


def test_same_seed_same_content_and_trio_backend(tmp_path: Path) -> None:
    spec = write(tmp_path / "scr.toml", SCRIPTED)
    assert batch(spec, "--db", tmp_path / "a.db").exit_code == 0
    assert batch(spec, "--db", tmp_path / "b.db", "--backend", "trio", "--concurrency", "1").exit_code == 0
    assert stored_conversations(tmp_path / "a.db") == stored_conversations(tmp_path / "b.db")


@both_backends
def test_changed_spec_is_refused_unless_new(tmp_path: Path, db_path: DbLocation) -> None:
    spec, db = write(tmp_path / "scr.toml", SCRIPTED), db_path
    assert batch(spec, "--db", db).exit_code == 0
    nodes = node_count(db)
    write(spec, SCRIPTED.replace("max_turns = 5", "max_turns = 6").replace("concurrency = 4", "concurrency = 8"))
    refused = batch(spec, "--db", db)
    assert refused.exit_code == 2
    line = refused.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert "differs from the spec experiment 'scr' was started with (changed: max_turns)" in line
    assert "--new" in line and "--resume scr" in line
    assert node_count(db) == nodes

    fresh = batch(spec, "--db", db, "--new", "--json")
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.stdout)["experiment"] == "scr-2"
    assert {key[0] for key in stored_conversations(db)} == {"scr", "scr-2"}
    assert all(len(path) == 7 for key, path in stored_conversations(db).items() if key[0] == "scr-2")


@both_backends
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, db_path: DbLocation) -> None:
    spec, db = write(tmp_path / "scr.toml", SCRIPTED), db_path
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(db), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "plan for experiment 'scr'" in result.stdout
    assert "clone-aware" in result.stdout and "told-human" in result.stdout
    assert "nothing was run or written" in result.stdout
    plan = json.loads(batch(spec, "--db", db, "--dry-run", "--json").stdout)
    assert plan["dialogues"] == 6 and plan["model_calls"] == 30
    assert plan["output_tokens_max"] == 30 * 200
    if isinstance(db, Path):
        assert not db.exists()
    else:
        assert schema_state_of(db) == (0, False)  # no table was created


@both_backends
def test_usage_errors(tmp_path: Path, db_path: DbLocation) -> None:
    spec = write(tmp_path / "scr.toml", SCRIPTED)
    for args, message in [
        ([], "give exactly one of SPEC, --resume EXPERIMENT or --retry-failed EXPERIMENT"),
        ([spec, "--resume", "x"], "(got SPEC and --resume)"),
        (["--resume", "x", "--new"], "--new starts a fresh experiment"),
        ([spec, "--concurrency", "0"], "--concurrency must be at least 1"),
    ]:
        result = batch(*args, "--db", db_path)
        assert result.exit_code == 2
        assert message in result.stderr
    assert batch("--resume", "nope", "--db", db_path).exit_code == 1  # no database yet
    assert batch(spec, "--db", db_path).exit_code == 0
    missing = batch("--resume", "nope", "--db", db_path)
    assert "no experiment named 'nope'" in missing.stderr


def server_spec(server: FakeModelServer, *, stream: bool = False, replicates: int = 3, turns: int = 3) -> str:
    return f"""\
name = "srv"
replicates = {replicates}
max_turns = {turns}
seed = 3
concurrency = 1
model_a = "srv"

[[conditions]]
template = "clone-aware"

[models.srv]
provider = "openai-compatible"
base_url = "{server.url}/v1"
model = "m"
stream = {"true" if stream else "false"}
retry_budget = 1
idle_timeout = 60
"""


@both_backends
def test_failed_dialogue_is_marked_others_go_on_and_retry_failed_reruns_only_it(
    tmp_path: Path, db_path: DbLocation
) -> None:
    with fake_model_server(Reply(body=openai_body("fine, thanks"))) as server:
        # Concurrency 1: the 4th request is dialogue 2's second turn. A 400 is not retried.
        server.script = [Reply(body=openai_body(f"turn {i}")) for i in range(3)]
        server.script += [Reply(body=openai_body("turn 3")), Reply(400, {"error": {"message": "bad request"}})]
        spec, db = write(tmp_path / "srv.toml", server_spec(server)), db_path
        result = batch(spec, "--db", db, "--json")
        assert result.exit_code == 1, result.output
        summary = json.loads(result.stdout)
        assert summary["dialogues"] == {"total": 3, "completed": 2, "failed": 1}
        [failure] = summary["this_run"]["failures"]
        assert "400" in failure["error"] and "bad request" in failure["error"]
        with raw_sql(db) as conn:
            failed_id, error = conn.execute("SELECT id, error FROM dialogue WHERE status = 'failed'").fetchone()
            assert "400" in error
            # The failed turn is kept as an error node hanging off the last good turn.
            assert conn.execute("SELECT count(*) FROM node WHERE kind = 'error'").fetchone()[0] == 1
            before = dict(conn.execute("SELECT id, updated_at FROM dialogue WHERE status = 'completed'").fetchall())
        conversations = stored_conversations(db)

        requests = len(server.requests)
        retried = batch("--retry-failed", "srv", "--db", db, "--json")
        assert retried.exit_code == 0, retried.output
        assert json.loads(retried.stdout)["dialogues"] == {"total": 3, "completed": 3}
        assert len(server.requests) - requests == 2  # only the failed dialogue's remaining two turns
        with raw_sql(db) as conn:
            after = dict(
                conn.execute(
                    "SELECT id, updated_at FROM dialogue WHERE id != :failed", {"failed": failed_id}
                ).fetchall()
            )
        assert after == before  # the others untouched
        for key, path in stored_conversations(db).items():
            assert [t for _, t, _ in path] == [0, 1, 2, 3]
            if key[2] != 2:
                assert path == conversations[key]


CLONECHAT = [sys.executable, "-m", "clonechat"]
ROOT = Path(__file__).resolve().parent.parent


def start_batch(*args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.Popen(
        [*CLONECHAT, "batch", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@both_backends
def test_first_ctrl_c_lets_turns_in_flight_finish_and_starts_nothing_new(tmp_path: Path, db_path: DbLocation) -> None:
    # Each reply streams for about a second, so the signal lands mid-turn.
    slow = Stream(openai_events("a slow but complete reply"), delay=0.2)
    with fake_model_server(slow) as server:
        text = server_spec(server, stream=True, replicates=4, turns=3).replace("concurrency = 1", "concurrency = 2")
        spec, db = write(tmp_path / "srv.toml", text), db_path
        proc = start_batch(spec, "--db", db, "--json")
        wait_for(lambda: len(server.requests) >= 3)  # two turns done or in flight, a third started
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopping: letting the turns in flight finish" in err
    summary = json.loads(out)
    assert summary["stopped_by_user"] is True
    assert summary["dialogues"] == {"total": 4, "interrupted": 2, "pending": 2}
    with raw_sql(db) as conn:
        rows = conn.execute("SELECT stop_reason FROM dialogue WHERE status = 'interrupted'").fetchall()
        assert rows == [("stopped",), ("stopped",)]
    # Every request the server answered became a stored turn: the turns in flight finished.
    turns = sum(len(path) - 1 for path in stored_conversations(db).values())
    assert turns == len(server.requests) >= 3

    with fake_model_server(Reply(body=openai_body("resumed"))) as server2:
        write(spec, text.replace(server.url, server2.url))
        refused = batch(spec, "--db", db)
        assert refused.exit_code == 2 and "changed: models.srv.base_url" in refused.stderr
        # The stored spec still names the old server; resuming needs the new one: a fresh
        # experiment is the honest way. (A moved server is a new experiment.)


@both_backends
def test_second_ctrl_c_cancels_turns_in_flight(tmp_path: Path, db_path: DbLocation) -> None:
    with fake_model_server(Hang(30)) as server:
        spec, db = write(tmp_path / "srv.toml", server_spec(server)), db_path
        proc = start_batch(spec, "--db", db)
        wait_for(lambda: len(server.requests) >= 1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "cancelling the turns in flight now" in out
    with raw_sql(db) as conn:
        rows = conn.execute("SELECT status, stop_reason FROM dialogue ORDER BY replicate").fetchall()
    assert rows == [("interrupted", "cancelled"), ("pending", None), ("pending", None)]
    assert all(len(path) == 1 for path in stored_conversations(db).values())  # nothing half-written


@both_backends
def test_grace_period_then_cancel(tmp_path: Path, db_path: DbLocation) -> None:
    with fake_model_server(Hang(30)) as server:
        spec, db = write(tmp_path / "srv.toml", server_spec(server)), db_path
        proc = start_batch(spec, "--db", db, "--grace", "0.5")
        wait_for(lambda: len(server.requests) >= 1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 10
    assert proc.returncode == 130, out + err
    assert "grace period of 0.5 s over" in out
    assert statuses(db) == {"interrupted": 1, "pending": 2}


@pytest.mark.parametrize("how", ["rerun spec", "--resume"])
@both_backends
def test_resume_after_stop_completes_exactly_like_an_uninterrupted_run(
    tmp_path: Path, db_path: DbLocation, how: str
) -> None:
    slow = Stream(openai_events("steady"), delay=0.1)
    with fake_model_server(slow) as server:
        text = server_spec(server, stream=True, replicates=3, turns=4)
        spec, db = write(tmp_path / "srv.toml", text), db_path
        proc = start_batch(spec, "--db", db)
        wait_for(lambda: len(server.requests) >= 6)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
        partial = stored_conversations(db)
        assert statuses(db).get("completed", 0) < 3
        resumed = batch(spec, "--db", db) if how == "rerun spec" else batch("--resume", "srv", "--db", db)
        assert resumed.exit_code == 0, resumed.output
        assert batch(spec, "--db", tmp_path / "clean.db").exit_code == 0
    final, clean = stored_conversations(db), stored_conversations(tmp_path / "clean.db")
    assert statuses(db) == {"completed": 3}
    for key, path in partial.items():
        assert final[key][: len(path)] == path  # what was stored before the stop is kept as it was
    # The server replies the same words each time, so compare the shape: same turns, same speakers.
    assert {k: [(s, t) for s, t, _ in p] for k, p in final.items()} == {
        k: [(s, t) for s, t, _ in p] for k, p in clean.items()
    }


@pytest.mark.parametrize("spec", sorted((ROOT / "runs").glob("*.toml")), ids=lambda p: p.name)
def test_example_specs_are_valid(spec: Path, tmp_path: Path) -> None:
    result = batch(spec, "--dry-run", "--json", "--db", tmp_path / "x.db")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dialogues"] > 0


@pytest.mark.model
def test_smoke_spec_runs_on_the_embedded_model(tmp_path: Path) -> None:
    db = tmp_path / "smoke.db"
    proc = start_batch(ROOT / "runs" / "smoke.toml", "--db", db, "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["dialogues"] == {"total": 4, "completed": 4}
    conversations = stored_conversations(db)
    assert set(conversations) == {("smoke", c, r) for c in ("clone-aware", "no-frame") for r in (1, 2)}
    for path in conversations.values():
        assert 2 <= len(path) <= 5
        assert all(content.strip() for _, turn_index, content in path if turn_index > 0)
    with raw_sql(db) as conn:
        models = {row[0] for row in conn.execute("SELECT DISTINCT model FROM node WHERE kind = 'turn'")}
    assert models == {"SmolLM2-135M-Instruct-Q4_1"}


@pytest.mark.anyio
async def test_progress_counts_and_eta_follow_the_events() -> None:
    agents = two_agents(ScriptedProvider())
    jobs = [
        DialogueJob("c1", PreparedDialogue(settings(f"D{i}", max_turns=4), agents, new_path(f"D{i}"), i))
        for i in (1, 2)
    ]
    progress = BatchProgress.for_jobs(jobs)
    entry = progress.conditions["c1"]
    assert (entry.total, entry.turns_left) == (2, 8)
    await progress(DialogueStarted("D1", "A", 0))
    await progress(DialogueStarted("D2", "A", 0))
    turn = jobs[0].prepared.path[0]
    await progress(NodeCompleted(replace(turn, kind="turn", turn_index=1)))
    assert (entry.running, entry.turns, entry.turns_left) == (2, 1, 7)
    # Side-channel nodes are not turns.
    await progress(NodeCompleted(replace(turn, kind="coordination", variant="number@before")))
    assert entry.turns == 1
    for index in range(2, 5):
        await progress(NodeCompleted(replace(turn, kind="turn", turn_index=index)))
    for index in range(1, 5):
        await progress(NodeCompleted(replace(turn, dialogue_id="D2", kind="turn", turn_index=index)))
    # Every turn taken, dialogues still running (closing questions): the ETA is unknown, not 0.
    assert entry.turns_left == 0 and progress.eta() is None
    await progress(DialogueEnded("D1", "completed", "stop_phrase", 1, turn.id))
    await progress(DialogueEnded("D2", "failed", "error", 0, "x", error="boom"))
    assert (entry.done, entry.failed, entry.running, entry.turns_left) == (1, 1, 0, 0)
    assert progress.eta() == 0.0
    assert [f.error for f in progress.failures] == ["boom"]
    assert "1/2 dialogues done, 0 running, 1 failed" in progress_line(progress, "exp")
