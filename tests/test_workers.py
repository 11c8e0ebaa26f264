"""Many batch workers on one experiment in a real PostgreSQL database: one plan, leases,
SIGKILL and SIGSTOP of workers at random moments, fencing, and the lease history as proof.

Each worker is a real ``clonechat batch`` process (``tests.crash.driver``: the scripted model
takes 30-80 ms a turn, and some commits pause inside their open transaction, so kills land
there too). The reference is an uninterrupted single-worker run of the same spec on SQLite.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.cli import app
from clonechat.location import db_location
from clonechat.read.connect import schema_state_of
from tests.helpers import raw_sql, statuses, stored_conversations

ROOT = Path(__file__).resolve().parent.parent
LEASE = 2.0

SPEC = """\
name = "fleet"
replicates = 10
max_turns = 10
seed = 5
concurrency = 2
model_a = "scripted"

[params]
max_tokens = 40

[prediction]

[coordination]
tasks = ["number"]
when = "both"

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "told-other-ai"

[[conditions]]
template = "no-frame"
"""
DIALOGUES = 30


class Worker:
    """One ``clonechat batch`` process and its output, read on a thread."""

    def __init__(
        self,
        spec: Path,
        db: str,
        *extra: str,
        lease: float = LEASE,
        launcher: Callable[..., list[str]] = lambda *command: list(command),
    ) -> None:
        """``launcher`` wraps the command (``ip netns exec NS ...`` for a worker on another host)."""
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "tests.crash.driver", str(spec), "--db", db, "--lease", str(lease)]
        self.proc = subprocess.Popen(
            launcher(*command, "--progress-interval", "0.5", *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def child_pid(self) -> int:
        """The worker's pid (``ip netns exec`` execs the command, so it is the process's own)."""
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def working(self) -> bool:
        """Whether the worker has reported progress (it is past start-up and claiming work)."""
        return any("dialogues done" in line for line in self.lines)

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


def wait_for(condition: Callable[[], bool], timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fleet_db(pg_url: str) -> str:
    return pg_url


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same spec run once, uninterrupted, by one worker on SQLite."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "fleet.toml").write_text(SPEC)
    db = folder / "clean.db"
    result = CliRunner().invoke(app, ["batch", str(folder / "fleet.toml"), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


def turn_count(db: str) -> int:
    if schema_state_of(db_location(db)) in (None, (0, False)):
        return 0  # killed before the first worker's migration committed
    with raw_sql(db) as conn:
        return int(conn.execute("SELECT count(*) FROM node WHERE kind = 'turn'").scalar_one())


def check_consistent(db: str) -> None:
    """Nothing duplicated or orphaned: one turn per (dialogue, turn index), one side answer per
    channel and agent, one prediction per turn, and every turn on its dialogue's conversation."""
    with raw_sql(db) as conn:
        duplicates = conn.execute(
            "SELECT dialogue_id, turn_index, count(*) FROM node WHERE kind = 'turn' "
            "GROUP BY dialogue_id, turn_index HAVING count(*) > 1"
        ).fetchall()
        assert duplicates == []
        sides = conn.execute(
            "SELECT dialogue_id, kind, variant, speaker, count(*) FROM node WHERE kind = 'coordination' "
            "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1"
        ).fetchall()
        assert sides == []
        predictions = conn.execute(
            "SELECT p.target_node_id, count(*) FROM node p WHERE p.kind = 'prediction' GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        assert predictions == []
        turns = int(conn.execute("SELECT count(*) FROM node WHERE kind = 'turn'").scalar_one())
    assert turns == sum(len(path) - 1 for path in stored_conversations(db).values())


def mid_dialogue_lease(db: str, turns: int = 1) -> tuple[str, int] | None:
    """A dialogue some worker holds a live lease on with at least ``turns`` turns stored, and
    the lease's epoch; None if there is none."""
    if schema_state_of(db_location(db)) in (None, (0, False)):
        return None  # no worker has created the tables yet
    with raw_sql(db) as conn:
        row = conn.execute(
            "SELECT l.dialogue_id, l.epoch FROM lease l JOIN dialogue d ON d.id = l.dialogue_id "
            "WHERE d.status = 'running' AND l.expires_at > (now() AT TIME ZONE 'utc') "
            "AND (SELECT count(*) FROM node n WHERE n.dialogue_id = l.dialogue_id AND n.kind = 'turn') >= :turns",
            {"turns": turns},
        ).first()
    return None if row is None else (str(row[0]), int(row[1]))


def check_lease_history(db: str) -> dict[str, int]:
    """No dialogue ever had two writers: its grants are numbered 1..k, one worker each, and
    each starts only after the one before it ended (released, or expired unrenewed)."""
    with raw_sql(db) as conn:
        rows = conn.execute(
            "SELECT dialogue_id, epoch, worker_id, granted_at, replaced_expires_at, released_at "
            "FROM lease_grant ORDER BY dialogue_id, epoch"
        ).fetchall()
        current = dict(conn.execute("SELECT dialogue_id, epoch FROM lease").fetchall())
    grants: dict[str, list[tuple[int, str, object, object, object]]] = {}
    for dialogue_id, epoch, worker, granted, replaced, released in rows:
        grants.setdefault(dialogue_id, []).append((epoch, worker, granted, replaced, released))
    for dialogue_id, history in grants.items():
        assert [g[0] for g in history] == list(range(1, len(history) + 1)), dialogue_id
        assert current[dialogue_id] == len(history)
        for before, after in itertools.pairwise(history):
            _, _, granted_before, _, released_before = before
            _, _, granted_after, replaced_after, _ = after
            assert replaced_after is not None, f"{dialogue_id}: grant {after[0]} replaced no lease"
            assert granted_after >= replaced_after, f"{dialogue_id}: grant {after[0]} started before the last ended"
            assert replaced_after >= granted_before
            if released_before is not None:
                assert replaced_after <= granted_after
    return {d: len(h) for d, h in grants.items()}


def test_two_workers_started_in_the_same_second_store_one_plan(spec: Path, fleet_db: str, reference: Path) -> None:
    workers = [Worker(spec, fleet_db) for _ in range(2)]
    for worker in workers:
        assert worker.wait() == 0, worker.output
    with raw_sql(fleet_db) as conn:
        assert conn.execute("SELECT count(*) FROM experiment").scalar_one() == 1
        assert conn.execute("SELECT count(*) FROM dialogue").scalar_one() == DIALOGUES
        assert conn.execute("SELECT count(*) FROM node WHERE kind = 'opening'").scalar_one() == DIALOGUES
        by_worker = dict(conn.execute("SELECT worker_id, count(*) FROM lease_grant GROUP BY worker_id").fetchall())
    assert statuses(fleet_db) == {"completed": DIALOGUES}
    assert len(by_worker) == 2, "both workers took part"
    check_consistent(fleet_db)
    check_lease_history(fleet_db)
    assert stored_conversations(fleet_db) == stored_conversations(reference)


def test_a_changed_spec_seen_by_a_second_worker_is_refused(spec: Path, fleet_db: str, tmp_path: Path) -> None:
    changed = tmp_path / "changed.toml"
    changed.write_text(SPEC.replace("max_turns = 10", "max_turns = 9"))
    first, second = Worker(spec, fleet_db), Worker(changed, fleet_db)
    codes = sorted([first.wait(), second.wait()])
    outputs = first.output + second.output
    assert codes == [0, 2], outputs
    assert "differs from the spec experiment 'fleet' was started with (changed: max_turns)" in outputs
    assert statuses(fleet_db) == {"completed": DIALOGUES}


def test_sigkill_of_random_workers_loses_nothing_and_ends_like_one_uninterrupted_worker(
    spec: Path, fleet_db: str, reference: Path
) -> None:
    rng = random.Random(20261202)
    fleet = [Worker(spec, fleet_db) for _ in range(3)]
    kills = 0
    progress: list[int] = []
    # First one kill that is sure to strand a dialogue mid-way (on a busy machine random kills
    # may all land on workers still starting up): once some worker holds a live lease on a
    # dialogue with turns stored, kill every worker, so its holder is among them.
    wait_for(lambda: mid_dialogue_lease(fleet_db) is not None, timeout=300, what="a worker to be mid-dialogue")
    for index, worker in enumerate(fleet):
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGKILL)
            worker.wait(60)
            kills += 1
        fleet[index] = Worker(spec, fleet_db)
    progress.append(turn_count(fleet_db))
    deadline = time.monotonic() + 600
    while kills < 20:
        assert time.monotonic() < deadline, "too slow to land 20 kills"
        time.sleep(rng.uniform(0.2, 0.9))
        if all(w.proc.poll() is not None for w in fleet):
            break
        # Kill only workers past their start-up (they have reported progress), or on a busy
        # machine every kill lands before any work is done and the kills test nothing.
        working = [i for i, w in enumerate(fleet) if w.proc.poll() is not None or w.working]
        if not working:
            continue
        index = rng.choice(working)
        victim = fleet[index]
        if victim.proc.poll() is None:
            victim.proc.send_signal(signal.SIGKILL)
            victim.wait(60)
            kills += 1
            progress.append(turn_count(fleet_db))
        elif victim.proc.returncode != 0:
            raise AssertionError(victim.output)
        fleet[index] = Worker(spec, fleet_db)
    assert kills >= 20, f"only {kills} kills landed before the experiment finished: make it longer"
    assert progress == sorted(progress), "a kill must never lose committed turns"
    print(f"{kills} kills; turns stored after each: {progress}")
    for worker in fleet:
        assert worker.wait() == 0, worker.output
    assert statuses(fleet_db) == {"completed": DIALOGUES}
    check_consistent(fleet_db)
    grants = check_lease_history(fleet_db)
    print(f"grants per dialogue: max {max(grants.values())}, taken over {sum(n > 1 for n in grants.values())} times")
    assert any(n > 1 for n in grants.values()), "no dialogue was ever taken over: the kills tested nothing"
    assert stored_conversations(fleet_db) == stored_conversations(reference)


def test_a_paused_worker_that_lost_its_lease_writes_nothing_more(spec: Path, fleet_db: str, reference: Path) -> None:
    paused = Worker(spec, fleet_db, "--concurrency", "1")

    def held() -> tuple[str, int] | None:
        return mid_dialogue_lease(fleet_db, turns=2)

    try:
        wait_for(lambda: held() is not None, what="the worker to be mid-dialogue")
        found = held()
        assert found is not None
        dialogue_id, epoch = found
        paused.proc.send_signal(signal.SIGSTOP)
        taker = Worker(spec, fleet_db)

        def taken_over() -> bool:
            with raw_sql(fleet_db) as conn:
                return (
                    int(conn.execute("SELECT epoch FROM lease WHERE dialogue_id = :d", {"d": dialogue_id}).scalar_one())
                    > epoch
                )

        wait_for(taken_over, what="another worker to take the paused worker's dialogue")
        assert taker.wait() == 0, taker.output
        with raw_sql(fleet_db) as conn:
            before = conn.execute("SELECT id FROM node WHERE dialogue_id = :d ORDER BY id", {"d": dialogue_id}).all()
            total = conn.execute("SELECT count(*) FROM node").scalar_one()
        paused.proc.send_signal(signal.SIGCONT)
        assert paused.wait() in (0, 1), paused.output
    finally:
        if paused.proc.poll() is None:
            paused.proc.send_signal(signal.SIGCONT)
            paused.proc.kill()
    assert f"lost the lease on dialogue {dialogue_id}" in paused.output
    with raw_sql(fleet_db) as conn:
        after = conn.execute("SELECT id FROM node WHERE dialogue_id = :d ORDER BY id", {"d": dialogue_id}).all()
        assert conn.execute("SELECT count(*) FROM node").scalar_one() == total
    assert after == before, "the paused worker wrote into a dialogue another worker had taken"
    assert statuses(fleet_db) == {"completed": DIALOGUES}
    check_consistent(fleet_db)
    check_lease_history(fleet_db)
    assert stored_conversations(fleet_db) == stored_conversations(reference)


def test_workers_lists_live_workers(spec: Path, fleet_db: str) -> None:
    worker = Worker(spec, fleet_db, "--concurrency", "1")
    try:
        wait_for(lambda: "s ago" in CliRunner().invoke(app, ["workers", "--db", fleet_db]).output, what="a listing")
        listing = CliRunner().invoke(app, ["workers", "fleet", "--db", fleet_db])
        assert listing.exit_code == 0, listing.output
        assert "fleet" in listing.output and "s ago" in listing.output and "1/1: " in listing.output
    finally:
        assert worker.wait() == 0, worker.output
    done = CliRunner().invoke(app, ["workers", "--db", fleet_db])
    assert done.exit_code == 0 and "no live workers" in done.output


def test_a_worker_shows_the_whole_experiments_progress(spec: Path, fleet_db: str) -> None:
    # A 4 s lease: heartbeats every 1.3 s race the releases of dialogues that end every few
    # tenths of a second, and a released lease must never be reported as a lost one.
    workers = [Worker(spec, fleet_db, lease=4) for _ in range(2)]
    for worker in workers:
        assert worker.wait() == 0, worker.output
    outputs = [worker.output for worker in workers]
    assert not any("lost the lease" in output for output in outputs), outputs
    # Each shows the experiment's totals beside its own counts; the last to finish sees it all done.
    assert all("experiment: " in output and " workers" in output for output in outputs), outputs
    assert any(f"experiment: {DIALOGUES}/{DIALOGUES} done, 0 failed" in output for output in outputs), outputs
