"""The TUI on a huge dialogue and on a dialogue another process is writing.

(a) Time to first paint, 100,000-node dialogue against a 10-node one, measured in the same run
    (the databases are built with direct ``executemany`` inserts into the real schema: one
    dialogue whose path is the opening plus N-1 turns).
    - dialogue screen: from just before ``app.run_test`` (app start) until ``TranscriptView``
      has painted a line of a node (``render_line`` is wrapped to record the first line drawn
      from a laid-out node). Target: median 100k / median 10 <= 2.
    - browser: from app start (``ClonechatApp``) until the browser is ``settled`` with its row
      in the table.
    Each runs ``--repeats`` times (default 5), sizes interleaved, after one unmeasured warm-up.
    - memory: current RSS (VmRSS) sampled after each of ``--jumps`` jumps from the top to the
      bottom of the 100k transcript; growth over the RSS right after opening, and the growth in
      the second half of the scroll (flat memory: about zero).
(b) Commit-to-screen latency: a subprocess (this file with ``--writer``) commits one turn node
    every ~200 ms through ``Database.write`` + ``writes.insert_nodes_and_heads`` and prints
    ``time.time()`` right after each commit. The app shows that dialogue in ``DialogueScreen``
    (following its end); ``render_line`` records when each node id is first painted. Latency =
    paint time - commit time, p50/p95/max. Target <= 0.5 s. Baseline: the feed's poll interval
    (``WATCH_INTERVAL``), the latency floor of polling.

Correctness is checked on the way, at any size: every screen paints, the transcript lays out at
most 512 nodes while it scrolls, and every turn the writer commits is shown; a failure raises.

``--quick`` runs the same code and prints the same figures and verdicts at a few seconds' size
(the test suite runs it: tests/test_benchmarks.py). Its timings and memory figures mean nothing
at that size, so a missed target (first-paint ratio, flat memory, latency) does not make it exit
non-zero; a crash or a failed correctness check still does.

Run: python3 -m uv run python benchmarks/tui.py [--repeats N] [--turns N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection
from textual.strip import Strip
from textual.widgets import DataTable

from clonechat.engine.records import NodeRecord
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.tui.app import ClonechatApp
from clonechat.tui.screens.browser import BrowserScreen
from clonechat.tui.screens.dialogue import WATCH_INTERVAL, DialogueScreen
from clonechat.tui.widgets.transcript import TranscriptView

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the TUI tests' helpers
from tests.tui_helpers import DIALOGUE, Host, make_node

SIZE = (120, 40)
TIMEOUT = 60.0
#: Sizes of the full benchmark and of ``--quick`` (same code paths, a few seconds).
FULL: dict[str, float] = {"nodes": 100_000, "repeats": 5, "jumps": 100, "turns": 30, "interval": 0.2}
QUICK: dict[str, float] = {"nodes": 2_000, "repeats": 2, "jumps": 10, "turns": 5, "interval": 0.1}


# -- databases -------------------------------------------------------------------------------


def build_db(path: Path, nodes: int) -> None:
    """One dialogue whose path has ``nodes`` nodes, inserted with ``executemany``."""

    def fill(conn: Connection) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        sql = conn.exec_driver_sql
        sql("INSERT INTO experiment (id, name, created_at) VALUES ('E', 'bench', ?)", (now,))
        sql(
            "INSERT INTO condition (id, experiment_id, name, template, model_a, model_b, settings, created_at) "
            "VALUES ('C', 'E', 'huge', 't', 'm', 'm', '{}', ?)",
            (now,),
        )
        sql(
            "INSERT INTO prompt_template (hash, kind, name, source, created_at) VALUES ('T', 'k', 'n', 's', ?)",
            (now,),
        )
        sql(
            "INSERT INTO prompt (hash, template_hash, text, variables, created_at) VALUES ('P', 'T', 'p', '{}', ?)",
            (now,),
        )
        sql(
            "INSERT INTO dialogue (id, condition_id, replicate, status, first_speaker, max_turns, model_a, model_b, "
            "system_prompt_a, system_prompt_b, opening_prompt, settings, created_at, updated_at) "
            "VALUES (?, 'C', 0, 'running', 'A', ?, 'm', 'm', 'P', 'P', 'P', '{}', ?, ?)",
            (DIALOGUE, nodes * 2, now, now),
        )
        chain: list[NodeRecord] = []
        for i in range(nodes):
            chain.append(make_node(i, chain[-1].id if chain else None))
        for start in range(0, nodes, 10_000):
            writes.insert_nodes(conn, chain[start : start + 10_000])
        sql("UPDATE dialogue SET head_node_id = ? WHERE id = ?", (chain[-1].id, DIALOGUE))

    db = Database.open(path)
    try:
        db.write(fill)
    finally:
        db.close()


# -- paint hook ------------------------------------------------------------------------------

#: Node id -> time.time() of the first line painted from that node (TranscriptView.render_line).
PAINTED: dict[str, float] = {}
_render_line: Callable[[TranscriptView, int], Strip] = TranscriptView.render_line


def recording_render_line(self: TranscriptView, y: int) -> Strip:
    strip = _render_line(self, y)
    if self._width:
        offsets = self._offset_list()
        line = round(self.scroll_y) + y
        if line < offsets[-1]:
            laid = self._laid.get(bisect_right(offsets, line) - 1)
            if laid is not None and laid.node.id not in PAINTED:
                PAINTED[laid.node.id] = time.time()
    return strip


TranscriptView.render_line = recording_render_line  # type: ignore[method-assign]


async def until(check: Callable[[], bool], within: float = TIMEOUT, interval: float = 0.001) -> bool:
    """Poll ``check`` on the app's event loop (the app runs meanwhile) until true or ``within`` s pass."""
    deadline = time.monotonic() + within
    while not check() and time.monotonic() < deadline:  # noqa: ASYNC110 (polling is the measurement)
        await asyncio.sleep(interval)
    return check()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- (a) first paint and memory --------------------------------------------------------------


async def dialogue_first_paint(db: Path) -> float:
    PAINTED.clear()
    started = time.time()
    app = Host(DialogueScreen(db, dialogue_id=DIALOGUE))
    async with app.run_test(size=SIZE):
        if not await until(lambda: bool(PAINTED)):
            raise RuntimeError("the transcript never painted")
        return min(PAINTED.values()) - started


async def browser_first_paint(db: Path) -> float:
    started = time.perf_counter()
    app = ClonechatApp(db)

    def shown() -> bool:
        screen = app.screen
        return (
            isinstance(screen, BrowserScreen)
            and screen.settled
            and screen.query_one("#dialogues", DataTable).row_count > 0
        )

    async with app.run_test(size=SIZE):
        if not await until(shown):
            raise RuntimeError("the browser never settled")
        return time.perf_counter() - started


async def scroll_memory(db: Path, jumps: int) -> tuple[float, float, float, float]:
    """RSS after opening, peak growth over the whole scroll, growth in its second half, and
    ru_maxrss growth (MB)."""
    app = Host(DialogueScreen(db, dialogue_id=DIALOGUE))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        view = app.screen.query_one(TranscriptView)
        await pilot.pause()
        start = rss_mb()
        max_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        samples: list[float] = []
        for step in range(jumps + 1):
            view.scroll_to(y=view.max_scroll_y * step // jumps, animate=False)
            await pilot.pause()
            samples.append(rss_mb())
        assert view.rendered_nodes <= 512
        half = samples[len(samples) // 2]
        max_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return start, max(samples) - start, max(samples[len(samples) // 2 :]) - half, max_end - max_start


# -- (b) commit-to-screen latency ------------------------------------------------------------


def writer(db_path: Path, turns: int, interval: float) -> None:
    """Another process: commit one turn every ``interval`` s, printing ``id commit-time``."""
    db = Database.open(db_path)
    try:
        with db.session() as session:
            head = session.connection().exec_driver_sql(
                "SELECT head_node_id, (SELECT max(turn_index) FROM node WHERE dialogue_id = ?) FROM dialogue "
                "WHERE id = ?",
                (DIALOGUE, DIALOGUE),
            )
            parent, last = head.one()
        for i in range(last + 1, last + 1 + turns):
            node = make_node(i, parent, prefix="W")
            db.write(lambda conn, node=node: writes.insert_nodes_and_heads(conn, [node]))  # type: ignore[misc]
            print(node.id, repr(time.time()), flush=True)
            parent = node.id
            time.sleep(interval)
    finally:
        db.close()


async def commit_latency(db: Path, turns: int, interval: float) -> list[float]:
    PAINTED.clear()
    app = Host(DialogueScreen(db, dialogue_id=DIALOGUE))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        view = app.screen.query_one(TranscriptView)
        view.action_scroll_end()
        await pilot.pause()
        assert view.following
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *("--writer", str(db), "--turns", str(turns), "--interval", str(interval)),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            commits = {node_id: float(at) for node_id, at in (line.split() for line in out.decode().splitlines())}
            await until(lambda: all(i in PAINTED for i in commits), 5, 0.01)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        ids = [view.node_at(i).id for i in range(view.node_count)]
        missing = [i for i in commits if i not in PAINTED or i not in ids]
        if missing or len(commits) != turns:
            raise RuntimeError(f"{len(missing)} of {len(commits)} committed turns never showed")
        return [PAINTED[i] - at for i, at in commits.items()]


# -- report ----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> bool:
    ok = True
    load = os.getloadavg()[0]
    print(f"TUI benchmark, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small.db", Path(tmp) / "big.db"
        t = time.perf_counter()
        build_db(small, 10)
        build_db(big, args.nodes)
        print(f"built databases of 10 and {args.nodes:,} nodes in {time.perf_counter() - t:.1f} s")

        await dialogue_first_paint(small)  # warm-up: imports, CSS, first screen
        await browser_first_paint(small)
        dialogue: dict[str, list[float]] = {"10": [], "big": []}
        browser: dict[str, list[float]] = {"10": [], "big": []}
        for _ in range(args.repeats):
            for key, db in (("10", small), ("big", big)):
                dialogue[key].append(await dialogue_first_paint(db))
                browser[key].append(await browser_first_paint(db))

        print(f"\n(a) time to first paint, {SIZE[0]}x{SIZE[1]}, {args.repeats} runs each (ms)")
        print(f"{'screen':<10} {'nodes':>8}  {'median':>7}  {'min':>7}  {'max':>7}  runs")
        for name, found in (("dialogue", dialogue), ("browser", browser)):
            for key, nodes in (("10", 10), ("big", args.nodes)):
                runs = found[key]
                print(
                    f"{name:<10} {nodes:>8,}  {statistics.median(runs) * 1000:7.1f}  {min(runs) * 1000:7.1f}  "
                    f"{max(runs) * 1000:7.1f}  {' '.join(f'{r * 1000:.0f}' for r in runs)}"
                )
        for name, found in (("dialogue", dialogue), ("browser", browser)):
            ratio = statistics.median(found["big"]) / statistics.median(found["10"])
            verdict = "PASS" if ratio <= 2 else "FAIL"
            ok &= ratio <= 2
            print(f"{name} first paint ratio {args.nodes:,} / 10 nodes = {ratio:.2f} (target <= 2): {verdict}")

        start, growth, second_half, maxrss = await scroll_memory(big, args.jumps)
        flat = growth <= max(20.0, 0.1 * start)
        ok &= flat
        print(
            f"scroll memory: {args.jumps} jumps top to bottom of {args.nodes:,} nodes; "
            f"RSS {start:.0f} MB after opening, "
            f"peak growth {growth:+.1f} MB (ratio {(start + growth) / start:.3f}), second half {second_half:+.1f} MB, "
            f"ru_maxrss {maxrss:+.1f} MB: {'PASS (flat)' if flat else 'FAIL'}"
        )

        latencies = await commit_latency(small, args.turns, args.interval)
        p50, p95, worst = pct(latencies, 0.5), pct(latencies, 0.95), max(latencies)
        ok &= p95 <= 0.5
        print(
            f"\n(b) commit in another process -> turn painted: {len(latencies)} turns, one every "
            f"{args.interval * 1000:.0f} ms (ms)"
        )
        print(f"{'p50':>7}  {'p95':>7}  {'max':>7}  {'min':>7}  {'poll':>7}  {'p95/poll':>8}")
        print(
            f"{p50 * 1000:7.1f}  {p95 * 1000:7.1f}  {worst * 1000:7.1f}  {min(latencies) * 1000:7.1f}  "
            f"{WATCH_INTERVAL * 1000:7.1f}  {p95 / WATCH_INTERVAL:8.2f}"
        )
        print(
            f"latency p95 {p95 * 1000:.0f} ms, max {worst * 1000:.0f} ms (target <= 500 ms): "
            f"{'PASS' if p95 <= 0.5 and worst <= 0.5 else 'FAIL'}"
        )
        ok &= worst <= 0.5
    print(f"all: {'PASS' if ok else 'FAIL'}")
    if args.quick:
        # Reaching this line is the correctness verdict: every such check above raises.
        print(
            "correctness (every screen painted, at most 512 nodes laid out, every committed turn shown): PASS; "
            "--quick enforces only this, not the timing or memory targets"
        )
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every target is met, 1 when one is missed or a check fails or it crashes; "
        "with --quick, 0 unless it crashes or a correctness check fails.",
    )

    def size(name: str, kind: Callable[[str], float], text: str) -> None:
        parser.add_argument(
            f"--{name}", type=kind, default=None, help=f"{text} (default {FULL[name]:g}; --quick {QUICK[name]:g})"
        )

    size("nodes", int, "nodes on the huge dialogue's path")
    size("repeats", int, "first-paint runs of each screen and size")
    size("jumps", int, "scroll jumps from top to bottom")
    size("turns", int, "turns the writer process commits")
    size("interval", float, "seconds between the writer's commits")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the same code paths, figures and verdicts at a few seconds' size (the test suite runs this); sizes "
        "not given take their --quick default. Exit status 0 unless it crashes or a correctness check fails (a "
        "screen never paints, more than 512 nodes laid out, a committed turn never shown): a missed target "
        "(first-paint ratio, flat memory, latency) is printed as FAIL but does not count at this size",
    )
    parser.add_argument("--writer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.writer is not None:
        writer(args.writer, args.turns, args.interval)
        return 0
    ok = asyncio.run(main(args))
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(run())
