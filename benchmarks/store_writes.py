"""What the query layer costs on the write path (issue 7).

Every agent turn now gets its ``turn_metrics`` row and its full-text index entry in the
transaction that stores it. This measures ``writes.insert_nodes`` as the store's writer calls it
(the writer's metrics tracker, one transaction per 40 nodes, dialogues interleaved as in a
batch) against the baseline of the same node rows inserted with a bare ``executemany`` into a
copy of the node table and its indexes, in the same run, and splits the difference into the
metrics (Python, holding the GIL: it competes with the event loop) and the index (SQLite,
releasing it).

It has no target: it prints the cost per turn and the ratio. Every round checks that each turn
got its metrics row (and none without analysis) and that the full-text index passes FTS5's
integrity check; a failed check or a crash exits non-zero.

``--quick`` runs the same code and prints the same figures at a few seconds' size (the test
suite runs it: tests/test_benchmarks.py); its timings mean nothing, and its exit status is 0
unless it crashes or a check fails.

Run: python3 -m uv run python benchmarks/store_writes.py [--dialogues 1000] [--turns 20] [--quick]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from sqlalchemy import Connection

from clonechat.engine.records import NodeRecord, new_id
from clonechat.store import turn_metrics, writes
from clonechat.store.database import Database
from clonechat.store.writes import NewDialogue

BATCH = 40
#: Mostly plain words, with the odd emoji an attractor state brings (a tenth of turns have one).
WORDS = "I am here with you my clone we are the same model talking to itself what do you predict".split()  # noqa: SIM905
EMOJI = ["🌀", "✨", "∞"]
#: Sizes of the full benchmark and of ``--quick`` (same code paths, a few seconds).
FULL = {"dialogues": 1000, "turns": 20, "rounds": 3}
QUICK = {"dialogues": 100, "turns": 6, "rounds": 2}


def reply(rng: random.Random) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + rng.choice([".", "?", "!", "..."])
    return text + (" " + rng.choice(EMOJI) if rng.random() < 0.1 else "")


def plan(db: Database, dialogues: int, turns: int, seed: int) -> list[NodeRecord]:
    """The dialogues stored as a batch would store them (with their openings), and their turns
    in batch order: turn 1 of every dialogue, then turn 2, ..."""
    rng = random.Random(seed)

    def setup(conn: Connection) -> list[str]:
        experiment = writes.ensure_experiment(conn, "bench")
        conn.exec_driver_sql(
            "INSERT INTO prompt_template (hash, kind, name, source, created_at) VALUES ('t', 'x', 'x', 'x', '2026')"
        )
        conn.exec_driver_sql(
            "INSERT INTO prompt (hash, template_hash, text, variables, created_at) VALUES ('p', 't', 'x', '{}', '2026')"
        )
        condition = writes.ensure_condition(conn, experiment, "c", "clone-aware", "m", "m", {})
        ids = []
        for replicate in range(1, dialogues + 1):
            dialogue_id = new_id()
            writes.create_dialogue(
                conn,
                NewDialogue(dialogue_id, condition, replicate, 1, "A", turns, None, None, "m", "m", "p", "p", "p", {}),
            )
            ids.append(dialogue_id)
        return ids

    ids = db.write(setup)
    openings = [NodeRecord(new_id(), d, None, "researcher", "opening", 0, "Begin.") for d in ids]
    db.write(lambda conn: writes.insert_nodes(conn, openings))
    last = {n.dialogue_id: n.id for n in openings}
    nodes = []
    for turn in range(1, turns + 1):
        for dialogue_id in ids:
            node = NodeRecord(
                new_id(), dialogue_id, last[dialogue_id], "A" if turn % 2 else "B", "turn", turn, reply(rng)
            )
            last[dialogue_id] = node.id
            nodes.append(node)
    return nodes


def store(db: Database, nodes: list[NodeRecord], *, analysis: bool) -> tuple[float, float, float]:
    """Seconds for insert_nodes as the writer calls it, and of those the metrics' and the
    index's. Without ``analysis`` both are switched off: the write path before this issue."""
    tracker = turn_metrics.MetricsTracker()
    spent = {"metrics": 0.0, "index": 0.0}
    metrics_for, index = tracker.metrics_for, writes.index_new_nodes

    def timed_metrics(conn: Connection, nodes: Sequence[NodeRecord]) -> list[turn_metrics.TurnMetrics]:
        started = time.perf_counter()
        try:
            return metrics_for(conn, nodes) if analysis else []
        finally:
            spent["metrics"] += time.perf_counter() - started

    def timed_index(conn: Connection) -> None:
        started = time.perf_counter()
        try:
            if analysis:
                index(conn)
        finally:
            spent["index"] += time.perf_counter() - started

    tracker.metrics_for = timed_metrics  # type: ignore[method-assign]
    writes.index_new_nodes = timed_index
    try:
        started = time.perf_counter()
        for i in range(0, len(nodes), BATCH):
            chunk = nodes[i : i + BATCH]
            db.write(lambda conn, chunk=chunk: writes.insert_nodes(conn, chunk, tracker))  # type: ignore[misc]
        total = time.perf_counter() - started
    finally:
        writes.index_new_nodes = index
    return total, spent["metrics"], spent["index"]


def one(path: Path, dialogues: int, turns: int, seed: int, *, analysis: bool) -> tuple[int, float, float, float]:
    with Database.open(path) as db:
        nodes = plan(db, dialogues, turns, seed)
        total, metrics, index = store(db, nodes, analysis=analysis)
    with closing(sqlite3.connect(path)) as conn:
        stored = conn.execute("SELECT count(*) FROM turn_metrics").fetchone()[0]
        if analysis:
            conn.execute("INSERT INTO node_fts (node_fts, rank) VALUES ('integrity-check', 1)")
    assert stored == (len(nodes) if analysis else 0), stored
    return len(nodes), total, metrics, index


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in FULL:
        parser.add_argument(f"--{name}", type=int, default=None, help=f"(default {FULL[name]}; --quick {QUICK[name]})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the same code paths and figures at a few seconds' size (the test suite runs this); sizes not "
        "given take their --quick default. There is no timing target; exit status 0 unless it crashes or a "
        "check fails (a turn without its metrics row, the full-text index's integrity check)",
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"{args.dialogues} dialogues x {args.turns} turns, {BATCH} nodes a transaction, {args.rounds} rounds")
    print("round  turns  before us/turn  after us/turn  metrics us  index us  ratio after/before")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(1, args.rounds + 1):
            n, before, _, _ = one(Path(tmp) / f"b{number}.db", args.dialogues, args.turns, number, analysis=False)
            _, after, metrics, index = one(
                Path(tmp) / f"a{number}.db", args.dialogues, args.turns, number, analysis=True
            )
            row = [1e6 * x / n for x in (before, after, metrics, index)]
            rows.append(row)
            print(
                f"{number:>5}  {n:>5}  {row[0]:>14.1f}  {row[1]:>13.1f}  {row[2]:>10.1f}  {row[3]:>8.1f}  "
                f"{after / before:>19.2f}"
            )
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(
        f"median: a stored turn costs {med[1]:.1f} us with metrics and index against {med[0]:.1f} us without "
        f"(+{med[2]:.1f} us metrics, +{med[3]:.1f} us index): ratio {med[1] / med[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
