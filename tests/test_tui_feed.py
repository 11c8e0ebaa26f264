"""``clonechat.tui.feed``: a read-only feed sees another process's commits quickly, once, cheaply."""

from __future__ import annotations

import hashlib
import sqlite3
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from clonechat.engine.records import NodeRecord, new_id, utcnow
from clonechat.read.feed import NODES_FILTERED_SQL, NODES_SQL
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.tui.feed import DatabaseFeed, FeedUpdate

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]

#: ``clonechat batch`` in a subprocess, with the scripted model slowed to 50 ms a turn (so the
#: batch commits a stream of turns over a couple of seconds) and a line printed after every
#: commit: the wall time just after it, and the ids of the nodes it made visible, in rowid order.
DRIVER = """
import sys, time
import anyio
from clonechat.cli import main
from clonechat.providers.scripted import ScriptedProvider
from clonechat.store.writer import StoreWriter

_generate = ScriptedProvider.generate
_commit = StoreWriter._commit
_last = [0]

async def slow_generate(self, *args, **kwargs):
    await anyio.sleep(0.05)
    return await _generate(self, *args, **kwargs)

def commit(self, jobs):
    _commit(self, jobs)
    now = time.time()
    with self.db.reader_engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT rowid, id FROM node WHERE rowid > ? ORDER BY rowid", (_last[0],)).all()
    if rows:
        _last[0] = rows[-1][0]
        print("COMMIT", repr(now), *(r[1] for r in rows), flush=True)

ScriptedProvider.generate = slow_generate
StoreWriter._commit = commit
sys.argv = ["clonechat", "batch", *sys.argv[1:]]
main()
"""

SPEC = """\
name = "live"
replicates = 2
max_turns = 24
seed = 3
concurrency = 2
model_a = "scripted"

[[conditions]]
template = "clone-aware"
"""


def seed_dialogue(db_path: Path, dialogue_id: str = "D1") -> None:
    """A minimal valid experiment, condition, prompts and one pending dialogue, written raw."""
    now = "2024-01-01 00:00:00.000000"
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("INSERT OR IGNORE INTO experiment (id, name, created_at) VALUES ('E1', 'e', ?)", (now,))
        conn.execute(
            "INSERT OR IGNORE INTO condition (id, experiment_id, name, template, model_a, model_b, settings, "
            "created_at) VALUES ('C1', 'E1', 'c', 't', 'm', 'm', '{}', ?)",
            (now,),
        )
        conn.execute(
            "INSERT OR IGNORE INTO prompt_template (hash, kind, name, source, created_at) "
            "VALUES ('T', 'system', 't', 's', ?)",
            (now,),
        )
        conn.execute(
            "INSERT OR IGNORE INTO prompt (hash, template_hash, text, variables, created_at) "
            "VALUES ('P', 'T', 'p', '{}', ?)",
            (now,),
        )
        conn.execute(
            "INSERT INTO dialogue (id, condition_id, replicate, status, first_speaker, max_turns, model_a, model_b, "
            "system_prompt_a, system_prompt_b, opening_prompt, settings, created_at, updated_at) "
            "VALUES (?, 'C1', ?, 'pending', 'A', 10, 'm', 'm', 'P', 'P', 'P', '{}', ?, ?)",
            (dialogue_id, int(hashlib.md5(dialogue_id.encode()).hexdigest()[:6], 16), now, now),
        )


def node(dialogue_id: str = "D1", turn_index: int = 1, parent_id: str | None = None, **kw: object) -> NodeRecord:
    values: dict[str, object] = {
        "id": new_id(),
        "dialogue_id": dialogue_id,
        "parent_id": parent_id,
        "speaker": "A" if turn_index % 2 else "B",
        "kind": "turn" if turn_index else "opening",
        "turn_index": turn_index,
        "content": f"turn {turn_index}",
    }
    values.update(kw)
    return NodeRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def seeded(db: Database) -> Database:
    seed_dialogue(db.path)
    return db


def add_nodes(db: Database, *nodes: NodeRecord) -> None:
    db.write(lambda conn: writes.insert_nodes_and_heads(conn, list(nodes)))


async def test_turns_from_another_process_arrive_once_in_commit_order_within_half_a_second(tmp_path: Path) -> None:
    db_path, spec = tmp_path / "live.db", tmp_path / "live.toml"
    spec.write_text(SPEC)
    Database.open(db_path).close()
    arrived: dict[str, float] = {}
    order: list[str] = []
    updates: list[FeedUpdate] = []

    with DatabaseFeed(db_path, from_start=True) as feed:

        async def consume() -> None:
            async for update in feed.watch(interval=0.1):
                now = time.time()
                updates.append(update)
                for n in update.nodes:
                    order.append(n.id)
                    arrived.setdefault(n.id, now)

        command = [sys.executable, "-c", DRIVER, str(spec), "--db", str(db_path)]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                result = await anyio.run_process(command, cwd=ROOT, check=False)
                await anyio.sleep(0.5)  # the last commit's poll
                tg.cancel_scope.cancel()

    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    with closing(sqlite3.connect(db_path)) as conn:
        committed = [row[0] for row in conn.execute("SELECT id FROM node ORDER BY rowid")]
        heads = dict(conn.execute("SELECT id, head_node_id FROM dialogue").fetchall())
    assert len(committed) > 40
    assert order == committed  # every committed node, once, in commit order

    commit_time: dict[str, float] = {}
    for line in out.splitlines():
        if line.startswith("COMMIT "):
            _, stamp, *ids = line.split()
            commit_time.update(dict.fromkeys(ids, float(stamp)))
    assert len(commit_time) >= 0.9 * len(committed)
    latencies = sorted(arrived[i] - t for i, t in commit_time.items())
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"\nfeed latency over {len(latencies)} nodes: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    assert p95 < 0.5
    assert latencies[0] > -0.05  # nothing arrives before its commit (same clock, small slack)

    last = {c.id: c for u in updates for c in u.dialogues}
    assert {d: (c.status, c.head_node_id) for d, c in last.items()} == {d: ("completed", h) for d, h in heads.items()}
    seen = [(c.id, c.status) for u in updates for c in u.dialogues]
    assert all((d, "running") in seen for d in heads)


def test_idle_poll_is_one_pragma_and_never_touches_the_node_table(seeded: Database) -> None:
    add_nodes(seeded, node(turn_index=0))
    with DatabaseFeed(seeded.path) as feed:
        statements: list[str] = []
        feed.connection.set_trace_callback(statements.append)
        assert [feed.poll() for _ in range(50)] == [None] * 50
        assert statements == ["PRAGMA data_version"] * 50

        add_nodes(seeded, opening := node(turn_index=0))
        statements.clear()
        update = feed.poll()
        assert update is not None and [n.id for n in update.nodes] == [opening.id]
        assert any("FROM node" in s for s in statements)
        statements.clear()
        assert feed.poll() is None
        assert statements == ["PRAGMA data_version"]


def test_a_feed_opened_late_reports_only_what_comes_after(seeded: Database) -> None:
    add_nodes(seeded, old := node(turn_index=0))
    with DatabaseFeed(seeded.path) as late, DatabaseFeed(seeded.path, from_start=True) as early:
        first = early.poll()
        assert first is not None and [n.id for n in first.nodes] == [old.id]
        assert [(c.id, c.previous_status) for c in first.dialogues] == [("D1", None)]
        assert late.poll() is None
        add_nodes(seeded, new := node(turn_index=1, parent_id=old.id))
        for feed in (late, early):
            update = feed.poll()
            assert update is not None and [n.id for n in update.nodes] == [new.id]


def test_nodes_read_back_exactly_as_written(seeded: Database) -> None:
    written = node(
        turn_index=0,
        model="m",
        params={"temperature": 0.7, "seed": 3},
        prompt_tokens=12,
        latency_ms=1.5,
        finish_reason="stop",
        variant="v",
        created_at=utcnow(),
    )
    with DatabaseFeed(seeded.path) as feed:
        add_nodes(seeded, written)
        update = feed.poll()
    assert update is not None and update.nodes == [written]


def test_dialogue_status_and_head_changes_are_reported_once(seeded: Database) -> None:
    seed_dialogue(seeded.path, "D2")
    with DatabaseFeed(seeded.path) as feed:
        seeded.write(lambda conn: writes.update_dialogue(conn, "D1", status="running"))
        update = feed.poll()
        assert update is not None and update.nodes == []
        assert [(c.id, c.previous_status, c.status) for c in update.dialogues] == [("D1", "pending", "running")]
        assert feed.poll() is None

        add_nodes(seeded, opening := node(turn_index=0))
        update = feed.poll()
        assert update is not None and [(c.id, c.head_node_id) for c in update.dialogues] == [("D1", opening.id)]

        seeded.write(lambda conn: writes.update_dialogue(conn, "D1", status="completed", stop_reason="max_turns"))
        seeded.write(lambda conn: writes.update_dialogue(conn, "D2", status="failed", error="boom"))
        update = feed.poll()
        assert update is not None
        assert [(c.id, c.status, c.stop_reason, c.error) for c in update.dialogues] == [
            ("D1", "completed", "max_turns", None),
            ("D2", "failed", None, "boom"),
        ]
        # A write that changes nothing the feed reports (a score, say) is not an update.
        seeded.write(lambda conn: conn.exec_driver_sql("UPDATE experiment SET spec = 'x'"))
        assert feed.poll() is None


def test_node_filter_reports_only_watched_dialogues(seeded: Database) -> None:
    seed_dialogue(seeded.path, "D2")
    with DatabaseFeed(seeded.path, node_filter=["D2"]) as feed:
        add_nodes(seeded, node("D1", 0), theirs := node("D2", 0))
        update = feed.poll()
        assert update is not None and [n.id for n in update.nodes] == [theirs.id]
        feed.set_node_filter(None)
        add_nodes(seeded, mine := node("D1", 1))
        update = feed.poll()
        assert update is not None and [n.id for n in update.nodes] == [mine.id]


@pytest.fixture
def big(seeded: Database) -> Database:
    """100,000 nodes in one dialogue, inserted raw in one transaction (about a second)."""
    template = node(turn_index=1, created_at=utcnow())
    columns = [
        "id", "dialogue_id", "parent_id", "speaker", "kind", "turn_index", "content", "params", "created_at",
    ]  # fmt: skip
    stamp = template.created_at.strftime("%Y-%m-%d %H:%M:%S.%f")
    rows = ((f"N{i:08d}", "D1", None, "A", "turn", i, "x" * 200, "{}", stamp) for i in range(100_000))
    with closing(sqlite3.connect(seeded.path)) as conn, conn:
        conn.executemany(f"INSERT INTO node ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    return seeded


def test_a_poll_costs_the_new_rows_not_the_table(big: Database) -> None:
    with DatabaseFeed(big.path, node_filter=None) as feed:
        conn = feed.connection
        for sql, args in ((NODES_SQL, (1, 2)), (NODES_FILTERED_SQL, (1, 2, '["D1"]'))):
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            assert "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in plan, plan
            assert "ix_node" not in plan and "SCAN node" not in plan, plan

        timings = []
        steps: list[int] = []

        def count_step() -> int:
            steps.append(1)
            return 0  # go on

        for i in range(5):
            add_nodes(big, new := node(turn_index=100_000 + i))
            feed.set_node_filter(None if i % 2 else ["D1"])
            steps.clear()
            # SQLite's progress handler is called every N virtual-machine steps: a proxy for work.
            conn.set_progress_handler(count_step, 1)
            started = time.perf_counter()
            update = feed.poll()
            timings.append(time.perf_counter() - started)
            conn.set_progress_handler(None, 0)
            assert update is not None and [n.id for n in update.nodes] == [new.id]
            assert len(steps) < 1_000, len(steps)  # a scan of 100,000 rows takes hundreds of thousands
    print(f"\npoll of 1 new node in a 100,000-node table: median {statistics.median(timings) * 1000:.2f} ms")
    assert statistics.median(timings) < 0.005


def test_the_feed_is_read_only_and_leaves_the_file_unchanged(seeded: Database) -> None:
    add_nodes(seeded, node(turn_index=0))
    seeded.close()  # checkpoints the WAL into the main file
    before = seeded.path.read_bytes()
    with DatabaseFeed(seeded.path, from_start=True) as feed:
        assert feed.poll() is not None
        for _ in range(20):
            feed.poll()
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
            feed.connection.execute("UPDATE dialogue SET status = 'failed'")
        with pytest.raises(sqlite3.OperationalError):
            feed.connection.execute("CREATE TABLE sneaky (x)")
    assert seeded.path.read_bytes() == before
    with closing(sqlite3.connect(seeded.path)) as conn:
        assert conn.execute("SELECT status FROM dialogue").fetchone() == ("pending",)


def test_a_missing_file_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DatabaseFeed(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()
