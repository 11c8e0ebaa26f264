"""``clonechat.tui.feed``: a read-only feed sees other connections' commits quickly, once, cheaply.

The tests decorated ``@on_both_backends`` run on an SQLite file and on PostgreSQL (where the feed
is woken by ``NOTIFY`` and keeps a cursor per dialogue). On PostgreSQL a notification reaches the
feed a moment *after* the writer's commit returns, so these tests never expect the very next
``poll`` to see a commit: they wait for the condition (:func:`collect`) with a generous deadline.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest

from clonechat.engine.records import NodeRecord, new_id, utcnow
from clonechat.errors import StoreError
from clonechat.location import DbLocation, ServerDatabase
from clonechat.read.feed import (
    NODES_FILTERED_SQL,
    NODES_SQL,
    SERVER_ALL_CURSORS_SQL,
    SERVER_CURSORS_SQL,
    SERVER_DIALOGUES_SQL,
    SERVER_NODES_SQL,
)
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.store.notify import CHANNEL, EVERYTHING, MAX_PAYLOAD_BYTES, parse_payload, payloads
from clonechat.tui.feed import DatabaseFeed, FeedUpdate
from tests.conftest import on_both_backends
from tests.helpers import raw_sql

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
#: How long a test waits for something that normally takes milliseconds (a busy 2-core machine).
DEADLINE_S = 30.0

#: ``clonechat batch`` in a subprocess, with the scripted model slowed to 50 ms a turn (so the
#: batch commits a stream of turns over a couple of seconds) and a line printed after every
#: commit: the wall time just after it, and the ids of the nodes it made visible, in rowid order.
#: (One writer process: on either backend its commits are serial, so rowid order is commit order.)
DRIVER = """
import sys, time
import anyio
from sqlalchemy import text
from clonechat.cli import main
from clonechat.providers.scripted import ScriptedProvider
from clonechat.store.writer import StoreWriter

_generate = ScriptedProvider.generate
_commit = StoreWriter._commit
_last = [0]
_NEW = text("SELECT rowid, id FROM node WHERE rowid > :last ORDER BY rowid")

async def slow_generate(self, *args, **kwargs):
    await anyio.sleep(0.05)
    return await _generate(self, *args, **kwargs)

def commit(self, jobs):
    _commit(self, jobs)
    now = time.time()
    with self.db.reader_engine.connect() as conn:
        rows = conn.execute(_NEW, {"last": _last[0]}).all()
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

_SEED = [
    "INSERT INTO experiment (id, name, created_at) VALUES ('E1', 'e', '{now}') ON CONFLICT DO NOTHING",
    "INSERT INTO condition (id, experiment_id, name, template, model_a, model_b, settings, created_at) "
    "VALUES ('C1', 'E1', 'c', 't', 'm', 'm', '{{}}', '{now}') ON CONFLICT DO NOTHING",
    "INSERT INTO prompt_template (hash, kind, name, source, created_at) "
    "VALUES ('T', 'system', 't', 's', '{now}') ON CONFLICT DO NOTHING",
    "INSERT INTO prompt (hash, template_hash, text, variables, created_at) "
    "VALUES ('P', 'T', 'p', '{{}}', '{now}') ON CONFLICT DO NOTHING",
]


def seed_dialogue(location: DbLocation, *dialogue_ids: str) -> None:
    """A minimal valid experiment, condition, prompts and pending dialogues, written raw (behind
    the store's back: no notification, as if they were there before the feed opened)."""
    now = "2024-01-01 00:00:00.000000"
    with raw_sql(location) as conn:
        for statement in _SEED:
            conn.execute(statement.format(now=now))
        for dialogue_id in dialogue_ids or ("D1",):
            conn.execute(
                "INSERT INTO dialogue (id, condition_id, replicate, status, first_speaker, max_turns, model_a, "
                "model_b, system_prompt_a, system_prompt_b, opening_prompt, settings, created_at, updated_at) "
                f"VALUES (:id, 'C1', :replicate, 'pending', 'A', 10, 'm', 'm', 'P', 'P', 'P', '{{}}', '{now}', "
                f"'{now}')",
                {"id": dialogue_id, "replicate": int(hashlib.md5(dialogue_id.encode()).hexdigest()[:6], 16)},
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


def collect(
    feed: DatabaseFeed, done: Callable[[list[FeedUpdate]], bool], within: float = DEADLINE_S
) -> list[FeedUpdate]:
    """Poll ``feed`` (waiting on it between polls) until ``done(updates so far)``; fail if that
    takes longer than ``within`` seconds."""
    updates: list[FeedUpdate] = []
    deadline = time.monotonic() + within
    while not done(updates):
        update = feed.poll()
        if update is not None:
            updates.append(update)
            continue
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"gave up after {within} s; got {updates}"
        feed.wait(remaining)
    return updates


def next_update(feed: DatabaseFeed) -> FeedUpdate:
    return collect(feed, bool)[0]


def ids_of(updates: list[FeedUpdate]) -> list[str]:
    return [n.id for u in updates for n in u.nodes]


def trace(feed: DatabaseFeed) -> list[str]:
    """Every statement the feed's reading connection runs from now on, as it runs it."""
    statements: list[str] = []
    conn = feed.connection
    if isinstance(conn, sqlite3.Connection):
        conn.set_trace_callback(statements.append)
        return statements

    class Tracing(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            statements.append(str(query))
            return super().execute(query, params, **kwargs)

        def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            params_seq = list(params_seq)
            statements.extend(str(query) for _ in params_seq)
            super().executemany(query, params_seq, **kwargs)

    conn.cursor_factory = Tracing
    return statements


# -- what both backends do the same -------------------------------------------------------------


@on_both_backends
async def test_turns_from_another_process_arrive_once_in_commit_order_within_half_a_second(
    db_path: DbLocation, tmp_path: Path
) -> None:
    spec = tmp_path / "live.toml"
    spec.write_text(SPEC)
    Database.open(db_path).close()
    seen = Arrivals()

    with DatabaseFeed(db_path, from_start=True) as feed:
        command = [sys.executable, "-c", DRIVER, str(spec), "--db", str(db_path)]
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(seen.consume, feed)
                result = await anyio.run_process(command, cwd=ROOT, check=False)
                seen.expect(len(_committed(db_path)) if result.returncode == 0 else 0)
                with anyio.fail_after(DEADLINE_S):  # the last commit's poll
                    await seen.done.wait()
                tg.cancel_scope.cancel()
    order, arrived, updates = seen.order, seen.arrived, seen.updates

    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    committed = _committed(db_path)
    with raw_sql(db_path) as conn:
        heads = {str(d): str(h) for d, h in conn.execute("SELECT id, head_node_id FROM dialogue")}
    assert len(committed) > 40
    assert sorted(order) == sorted(committed) and len(set(order)) == len(order)  # every node, once
    assert _by_dialogue(db_path, order) == _by_dialogue(db_path, committed)  # commit order, per dialogue
    if isinstance(db_path, Path):
        assert order == committed  # SQLite: commit order overall

    commit_time: dict[str, float] = {}
    for line in out.splitlines():
        if line.startswith("COMMIT "):
            _, stamp, *ids = line.split()
            commit_time.update(dict.fromkeys(ids, float(stamp)))
    assert len(commit_time) >= 0.9 * len(committed)
    latencies = sorted(arrived[i] - t for i, t in commit_time.items())
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"\nfeed latency ({'PostgreSQL' if feed.on_server else 'SQLite'}) over {len(latencies)} nodes: "
        f"median {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )
    assert p95 < 0.5
    assert latencies[0] > -0.05  # nothing arrives before its commit (same clock, small slack)

    last = {c.id: c for u in updates for c in u.dialogues}
    assert {d: (c.status, c.head_node_id) for d, c in last.items()} == {d: ("completed", h) for d, h in heads.items()}
    seen = [(c.id, c.status) for u in updates for c in u.dialogues]
    assert all((d, "running") in seen for d in heads)


class Arrivals:
    """What a :meth:`DatabaseFeed.watch` loop (the TUI's way) delivered, and when; ``done`` is
    set once the expected number of nodes has arrived."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.updates: list[FeedUpdate] = []
        self.order: list[str] = []
        self.arrived: dict[str, float] = {}
        self.done = anyio.Event()
        self._expected: int | None = None

    async def consume(self, feed: DatabaseFeed) -> None:
        async for update in feed.watch(interval=self.interval):
            now = time.time()
            self.updates.append(update)
            for n in update.nodes:
                self.order.append(n.id)
                self.arrived.setdefault(n.id, now)
            self._check()

    def expect(self, count: int) -> None:
        self._expected = count
        self._check()

    def _check(self) -> None:
        if self._expected is not None and len(self.order) >= self._expected:
            self.done.set()


def _committed(location: DbLocation) -> list[str]:
    with raw_sql(location) as conn:
        return [str(row[0]) for row in conn.execute("SELECT id FROM node ORDER BY rowid")]


def _by_dialogue(location: DbLocation, ids: list[str]) -> dict[str, list[str]]:
    with raw_sql(location) as conn:
        owner = {str(i): str(d) for i, d in conn.execute("SELECT id, dialogue_id FROM node")}
    grouped: dict[str, list[str]] = {}
    for i in ids:
        grouped.setdefault(owner[i], []).append(i)
    return grouped


WRITERS = 4
TURNS = 15


@on_both_backends
@pytest.mark.parametrize("interval", [0.1, 0.0], ids=["tui-interval", "no-coalescing"])
async def test_concurrent_writers_each_node_once_in_per_dialogue_commit_order(db: Database, interval: float) -> None:
    """Several writers (threads, each with its own connections, as separate batch workers would
    be) commit turns to their own dialogues at once; on PostgreSQL their rowids interleave and
    commit out of rowid order. The feed reports each node once, in commit order per dialogue.
    With ``interval=0`` the PostgreSQL feed polls on every notification: the latency printed
    is then the bare commit -> notification -> read time; with the TUI's 0.1 s, bursts are
    read at most ten times a second."""
    dialogues = [f"W{i}" for i in range(WRITERS)]
    seed_dialogue(db.path, *dialogues)
    written: dict[str, list[str]] = {d: [] for d in dialogues}
    began: dict[str, float] = {}
    committed_at: dict[str, float] = {}
    start = threading.Barrier(WRITERS)
    seen = Arrivals(interval)
    seen.expect(WRITERS * TURNS)

    def write(dialogue_id: str) -> None:
        mine = Database.open(db.path)
        try:
            start.wait(DEADLINE_S)
            parent = None
            for turn in range(TURNS):
                new = node(dialogue_id, turn, parent)
                began[new.id] = time.time()
                add_nodes(mine, new)
                committed_at[new.id] = time.time()
                written[dialogue_id].append(new.id)
                parent = new.id
        finally:
            mine.close()

    with DatabaseFeed(db.path) as feed:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(seen.consume, feed)
                async with anyio.create_task_group() as writers:
                    for dialogue_id in dialogues:
                        writers.start_soon(anyio.to_thread.run_sync, write, dialogue_id)
                with anyio.fail_after(DEADLINE_S):
                    await seen.done.wait()
                tg.cancel_scope.cancel()
    order, arrived = seen.order, seen.arrived

    every = [i for d in dialogues for i in written[d]]
    assert sorted(order) == sorted(every) and len(set(order)) == len(order)  # each once
    assert _by_dialogue(db.path, order) == written  # per-dialogue commit order
    assert all(arrived[i] > began[i] for i in every)  # nothing arrives before its transaction began
    latencies = sorted(arrived[i] - committed_at[i] for i in every)
    print(
        f"\nfeed latency ({'PostgreSQL' if feed.on_server else 'SQLite'}, interval {interval} s), "
        f"{WRITERS} concurrent writers, "
        f"{len(latencies)} turns: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )


@on_both_backends
def test_idle_poll_touches_no_table(seeded: Database) -> None:
    """SQLite: an idle poll is one ``PRAGMA data_version``. PostgreSQL: no statement at all (a
    non-blocking read of the listening socket)."""
    add_nodes(seeded, node(turn_index=0))
    with DatabaseFeed(seeded.path) as feed:
        statements = trace(feed)
        idle = [] if feed.on_server else ["PRAGMA data_version"]
        assert [feed.poll() for _ in range(50)] == [None] * 50
        assert statements == idle * 50

        add_nodes(seeded, opening := node(turn_index=0))
        statements.clear()
        assert ids_of(collect(feed, bool)) == [opening.id]
        assert any("FROM node" in s or "JOIN node" in s for s in statements)
        if feed.on_server:  # the notified dialogue's row and its nodes past its cursor, nothing else
            assert [s for s in statements if s not in idle] == [SERVER_DIALOGUES_SQL, SERVER_NODES_SQL]
        statements.clear()
        assert feed.poll() is None
        assert statements == idle


@on_both_backends
def test_a_feed_opened_late_reports_only_what_comes_after(seeded: Database) -> None:
    add_nodes(seeded, old := node(turn_index=0))
    with DatabaseFeed(seeded.path) as late, DatabaseFeed(seeded.path, from_start=True) as early:
        first = early.poll()
        assert first is not None and [n.id for n in first.nodes] == [old.id]
        assert [(c.id, c.previous_status) for c in first.dialogues] == [("D1", None)]
        assert late.poll() is None
        add_nodes(seeded, new := node(turn_index=1, parent_id=old.id))
        for feed in (late, early):
            assert [n.id for n in next_update(feed).nodes] == [new.id]


@on_both_backends
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
        assert next_update(feed).nodes == [written]


@on_both_backends
def test_dialogue_status_and_head_changes_are_reported_once(seeded: Database) -> None:
    seed_dialogue(seeded.path, "D2")
    with DatabaseFeed(seeded.path) as feed:
        seeded.write(lambda conn: writes.update_dialogue(conn, "D1", status="running"))
        update = next_update(feed)
        assert update.nodes == []
        assert [(c.id, c.previous_status, c.status) for c in update.dialogues] == [("D1", "pending", "running")]
        assert feed.poll() is None

        add_nodes(seeded, opening := node(turn_index=0))
        update = next_update(feed)
        assert [(c.id, c.head_node_id) for c in update.dialogues] == [("D1", opening.id)]

        seeded.write(lambda conn: writes.update_dialogue(conn, "D1", status="completed", stop_reason="max_turns"))
        seeded.write(lambda conn: writes.update_dialogue(conn, "D2", status="failed", error="boom"))
        updates = collect(feed, lambda got: len([c for u in got for c in u.dialogues]) >= 2)
        assert [(c.id, c.status, c.stop_reason, c.error) for u in updates for c in u.dialogues] == [
            ("D1", "completed", "max_turns", None),
            ("D2", "failed", None, "boom"),
        ]
        # A write that changes nothing the feed reports (a score, say) is not an update.
        seeded.write(lambda conn: conn.exec_driver_sql("UPDATE experiment SET spec = 'x'"))
        assert feed.poll() is None


@on_both_backends
def test_node_filter_reports_only_watched_dialogues(seeded: Database) -> None:
    seed_dialogue(seeded.path, "D2")
    with DatabaseFeed(seeded.path, node_filter=["D2"]) as feed:
        add_nodes(seeded, node("D1", 0), theirs := node("D2", 0))
        assert [n.id for n in next_update(feed).nodes] == [theirs.id]
        feed.set_node_filter(None)
        add_nodes(seeded, mine := node("D1", 1))
        assert ids_of(collect(feed, lambda got: bool(ids_of(got)))) == [mine.id]


@on_both_backends
def test_a_rolled_back_write_reports_nothing(seeded: Database) -> None:
    """A write that rolls back is never reported; on PostgreSQL its notification is never sent
    (it was queued in the transaction that rolled back), so the feed does not even look."""
    seed_dialogue(seeded.path, "D2")

    class AbortError(Exception):
        pass

    with DatabaseFeed(seeded.path) as feed:
        statements = trace(feed)
        lost = node("D1", 0)

        def doomed(conn: Any) -> None:
            writes.insert_nodes_and_heads(conn, [lost])
            writes.update_dialogue(conn, "D1", status="running")
            raise AbortError

        with pytest.raises(AbortError):
            seeded.write(doomed)
        add_nodes(seeded, marker := node("D2", 0))  # commits after the rollback
        updates = collect(feed, lambda got: marker.id in ids_of(got))
        assert ids_of(updates) == [marker.id]
        assert [c.id for u in updates for c in u.dialogues] == ["D2"]
        assert feed.poll() is None
        if feed.on_server:  # only D2's notification arrived: D1 was never read
            assert statements == [SERVER_DIALOGUES_SQL, SERVER_NODES_SQL]
    with raw_sql(seeded.path) as conn:
        assert conn.execute("SELECT count(*) FROM node WHERE id = :id", {"id": lost.id}).scalar() == 0


@on_both_backends
def test_one_transaction_touching_many_dialogues_reports_every_one(seeded: Database) -> None:
    """A batch commit can hold turns of hundreds of dialogues: on PostgreSQL their ids do not fit
    one notification (8000 bytes), so they are split; every node still arrives."""
    many = [f"M{i:029d}" for i in range(400)]  # 30 characters each: about 13 kB of ids
    assert len(payloads(many)) > 1
    seed_dialogue(seeded.path, *many)
    with DatabaseFeed(seeded.path) as feed:
        batch = [node(d, 0) for d in many]
        add_nodes(seeded, *batch)
        updates = collect(feed, lambda got: len(ids_of(got)) >= len(batch))
        assert sorted(ids_of(updates)) == sorted(n.id for n in batch)
        assert feed.poll() is None


# -- PostgreSQL: notifications, per-dialogue cursors --------------------------------------------


@pytest.fixture
def server_db(pg_url: str) -> Iterator[Database]:
    database = Database.open(pg_url)
    seed_dialogue(database.path, "D1", "D2")
    yield database
    database.close()


@pytest.mark.parametrize("node_filter", [None, ["D1", "D2"]])
def test_on_postgresql_a_lower_rowid_committed_after_a_higher_one_is_reported(
    server_db: Database, node_filter: list[str] | None
) -> None:
    """The case a single cursor on ``node`` gets wrong: D1's turn takes its rowid first but
    commits last, after D2's turn with a larger rowid was already reported."""
    with DatabaseFeed(server_db.path, node_filter=node_filter) as feed:
        early, late = node("D1", 0), node("D2", 0)
        with server_db.writer_engine.connect() as first, server_db.writer_engine.connect() as second:
            slow = first.begin()
            writes.insert_nodes_and_heads(first, [early])  # rowid handed out, not committed
            with second.begin():
                writes.insert_nodes_and_heads(second, [late])
            assert ids_of(collect(feed, lambda got: bool(ids_of(got)))) == [late.id]
            slow.commit()
        assert ids_of(collect(feed, lambda got: bool(ids_of(got)))) == [early.id]
        assert feed.poll() is None
    with raw_sql(server_db.path) as conn:
        rowids = dict(conn.execute("SELECT id, rowid FROM node").all())
    assert rowids[early.id] < rowids[late.id]  # the interleaving really happened


def test_on_postgresql_a_notification_without_a_change_reports_nothing(server_db: Database) -> None:
    """A notification is only a hint: one for a dialogue with nothing new (sent by hand, or left
    from a commit the feed already read), the 'everything' marker, or a stranger's payload on
    the channel makes the feed look and find nothing; it never reports a node twice."""
    add_nodes(server_db, old := node("D1", 0))
    with DatabaseFeed(server_db.path) as feed:
        statements = trace(feed)
        for payload in ['["D1"]', EVERYTHING, "not json"]:
            with raw_sql(server_db.path) as conn:
                conn.execute("SELECT pg_notify(:channel, :payload)", {"channel": CHANNEL, "payload": payload})
            assert feed.wait(DEADLINE_S)
            assert feed.poll() is None
        # It did look each time: D1 for its own notification; D1 and D2 for the other two.
        assert statements.count(SERVER_NODES_SQL) == 1 + 2 + 2
        add_nodes(server_db, new := node("D1", 1, old.id))
        assert ids_of(collect(feed, lambda got: bool(ids_of(got)))) == [new.id]


def test_notification_payloads_stay_under_the_server_limit() -> None:
    ids = [new_id() for _ in range(2000)]
    found = payloads([*ids, *ids[:10]])
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES < 8000 for p in found)
    assert sorted(i for p in found for i in json.loads(p)) == sorted(ids)
    assert payloads([]) == []
    assert parse_payload(found[0]) == set(json.loads(found[0]))
    assert parse_payload(EVERYTHING) is None and parse_payload("[1]") is None and parse_payload("{") is None


@pytest.fixture
def big_server(server_db: Database) -> Database:
    """100,000 nodes over 100 dialogues written at once (so each dialogue's rows are spread over
    the whole table, as a batch leaves them), 300 characters each, inserted raw in one
    statement; and the statistics the planner decides with (what autovacuum would gather)."""
    ids = [f"B{i:03d}" for i in range(100)]
    seed_dialogue(server_db.path, *ids)
    with raw_sql(server_db.path) as conn:
        conn.execute(
            "INSERT INTO node (id, dialogue_id, speaker, kind, turn_index, content, params, created_at) "
            "SELECT 'N' || i, 'B' || lpad((i % 100)::text, 3, '0'), 'A', 'turn', i / 100, repeat('lorem ', 50), "
            "'{}', now() FROM generate_series(1, 100000) AS i"
        )
    assert isinstance(server_db.path, ServerDatabase)
    with psycopg.connect(server_db.path.libpq_url, autocommit=True) as conn:
        conn.execute("ANALYZE node")
        conn.execute("ANALYZE dialogue")
    return server_db


def test_on_postgresql_the_feed_reads_node_by_index_never_by_a_scan(big_server: Database) -> None:
    """Every statement the PostgreSQL feed runs reaches ``node`` through an index (``rowid`` or
    ``dialogue_id``), as planned against a 100,000-node table: a poll costs the notified
    dialogues' new nodes, never the table."""
    with DatabaseFeed(big_server.path, node_filter=["B007"]) as feed:
        conn = feed.connection
        assert isinstance(conn, psycopg.Connection)
        newest = feed.cursors["B007"]
        assert newest > 99_000
        ids = ["B007", "B042", "B099"]
        statements = [
            (SERVER_NODES_SQL, ("B007", newest)),  # the dialogue the TUI follows: past its newest node
            (SERVER_NODES_SQL, ("B042", 50_000)),  # a dialogue read from half-way back
            (SERVER_NODES_SQL, ("B099", 0)),  # a whole dialogue (a feed opened from the start)
            (SERVER_CURSORS_SQL, (ids,)),
            (SERVER_ALL_CURSORS_SQL, None),
            (SERVER_DIALOGUES_SQL, (ids,)),
        ]
        for sql, params in statements:
            with conn.transaction():
                plan = "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN {sql}", params))
            assert "Seq Scan on node" not in plan, plan
            if re.search(r"\b(FROM|JOIN) node\b", sql):
                assert "ix_node_dialogue_id" in plan or "node_rowid_key" in plan, plan
            print(f"\n{sql[-60:]} {params}:\n{plan}")
        # And what a poll really runs: the notified dialogue's row, then its nodes.
        traced = trace(feed)
        add_nodes(big_server, new := node("B007", 100_001))
        assert ids_of(collect(feed, lambda got: bool(ids_of(got)))) == [new.id]
        assert traced == [SERVER_DIALOGUES_SQL, SERVER_NODES_SQL]


def test_on_postgresql_the_feed_cannot_write(server_db: Database) -> None:
    with DatabaseFeed(server_db.path, from_start=True) as feed:
        conn = feed.connection
        assert isinstance(conn, psycopg.Connection)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("UPDATE dialogue SET status = 'failed'")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), conn.transaction():
            conn.execute("CREATE TABLE sneaky (x int)")
        assert feed.poll() is not None
    with raw_sql(server_db.path) as raw:
        assert raw.execute("SELECT DISTINCT status FROM dialogue").all() == [("pending",)]


def test_on_postgresql_a_database_without_clonechat_tables_is_an_error(pg_url: str) -> None:
    with pytest.raises(StoreError, match="no clonechat tables"):
        DatabaseFeed(ServerDatabase(pg_url))


# -- SQLite files -------------------------------------------------------------------------------


@pytest.fixture
def file_db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "feed.db")
    seed_dialogue(database.path)
    yield database
    database.close()


@pytest.fixture
def big(file_db: Database) -> Database:
    """100,000 nodes in one dialogue, inserted raw in one transaction (about a second)."""
    template = node(turn_index=1, created_at=utcnow())
    columns = [
        "id", "dialogue_id", "parent_id", "speaker", "kind", "turn_index", "content", "params", "created_at",
    ]  # fmt: skip
    stamp = template.created_at.strftime("%Y-%m-%d %H:%M:%S.%f")
    rows = ((f"N{i:08d}", "D1", None, "A", "turn", i, "x" * 200, "{}", stamp) for i in range(100_000))
    assert isinstance(file_db.path, Path)
    with closing(sqlite3.connect(file_db.path)) as conn, conn:
        conn.executemany(f"INSERT INTO node ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    return file_db


def test_a_poll_costs_the_new_rows_not_the_table(big: Database) -> None:
    with DatabaseFeed(big.path, node_filter=None) as feed:
        conn = feed.connection
        assert isinstance(conn, sqlite3.Connection)
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


def test_the_feed_is_read_only_and_leaves_the_file_unchanged(file_db: Database) -> None:
    add_nodes(file_db, node(turn_index=0))
    file_db.close()  # checkpoints the WAL into the main file
    assert isinstance(file_db.path, Path)
    before = file_db.path.read_bytes()
    with DatabaseFeed(file_db.path, from_start=True) as feed:
        assert feed.poll() is not None
        for _ in range(20):
            feed.poll()
        conn = feed.connection
        assert isinstance(conn, sqlite3.Connection)
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
            conn.execute("UPDATE dialogue SET status = 'failed'")
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("CREATE TABLE sneaky (x)")
    assert file_db.path.read_bytes() == before
    with closing(sqlite3.connect(file_db.path)) as raw:
        assert raw.execute("SELECT status FROM dialogue").fetchone() == ("pending",)


def test_a_missing_file_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DatabaseFeed(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()
