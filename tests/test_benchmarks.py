"""Every benchmark runs here in its seconds-long ``--quick`` mode, so an interface change that
breaks one fails the suite instead of rotting unseen.

This checks that each benchmark completes (exit status 0: no crash, no failed correctness check;
``--quick`` does not enforce timing targets) and prints its figures. It asserts that the figure
lines are there, never their values. Deselect with ``-k "not test_benchmark_quick"``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300


@dataclass(frozen=True)
class Quick:
    #: Text that the benchmark's figure lines contain (headers and labels, not values).
    markers: tuple[str, ...]
    #: pytest marks: ``pytest.mark.model`` for a benchmark that loads the real embedded model.
    marks: tuple[pytest.MarkDecorator, ...] = ()


BENCHMARKS: dict[str, Quick] = {
    "batch": Quick(
        (
            "(a) scripted model:",
            "round  turns  run s  turns/s  ceiling rows/s  ratio  p50 ms  p99 ms  max ms  cpu s  GC s  GC max ms",
            "turns persisted/s       median",
            "overhead per turn       p50",
            "peak RSS",
            "lost/duplicated turns",
            "(a): ",
            "(a) correctness (",
            "all in flight at once",
            "event-loop lag          p50",
            "worst beats",
            "turns completed",
            "requests in flight      max",
            "(b): ",
            "(b) correctness (",
            "all parts: ",
            "all parts correctness: ",
        )
    ),
    "embedded": Quick(
        (
            "(a) generation throughput: clonechat vs raw llama-cpp-python",
            "median ratio",
            "(b) prompt tokens per turn with per-agent KV cache reuse",
            "evaluated =",
        ),
        marks=(pytest.mark.model,),
    ),
    "experiment": Quick(
        (
            "conc  dialogues  nodes  tokens  depth  batch s  raw s  batch tok/s  raw tok/s  ratio",
            "prompt tokens evaluated per turn (turn + its predictions, mean):",
            "generated tokens/s",
            "x raw gen (target >= 0.9)",
            "all: ",
        ),
        marks=(pytest.mark.model,),
    ),
    "report": Quick(
        (
            "experiment: ",
            "format    median s  runs",
            "html / markdown time ratio: ",
            "html size: ",
            "in Chromium: ",
        )
    ),
    "server": Quick(
        (
            "(fast) K concurrent dialogues",
            "conns clonechat  conns bare",
            "connections opened by clonechat at most",
            "median ratio",
        )
    ),
    "startup": Quick(
        (
            "clonechat --help",
            "import typer",
            "clonechat --help / python -c 'import typer' =",
        )
    ),
    "store_writes": Quick(
        (
            "nodes a transaction",
            "round  turns  before us/turn  after us/turn  metrics us  index us  ratio after/before",
            "median: a stored turn costs",
        )
    ),
    "workers": Quick(
        (
            "workers benchmark: model replies after",
            "(a) one worker, PostgreSQL vs SQLite:",
            "round  sqlite turns/s  postgresql turns/s  ratio",
            "(a): median ratio PostgreSQL/SQLite",
            "(b) workers on one PostgreSQL experiment:",
            "round  workers  turns/s  ratio vs 1  target",
            "(b): worst ratio per worker",
            "(c) SIGKILL -> dialogues resumed elsewhere:",
            "all: ",
        )
    ),
    "tui": Quick(
        (
            "TUI benchmark,",
            "built databases of",
            "(a) time to first paint",
            "dialogue first paint ratio",
            "browser first paint ratio",
            "scroll memory:",
            "(b) commit in another process -> turn painted:",
            "latency p95",
            "all: ",
            "correctness (",
        )
    ),
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=quick.marks, id=name) for name, quick in BENCHMARKS.items()])
def test_benchmark_quick(name: str) -> None:
    result = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"benchmarks/{name}.py --quick exited {result.returncode}:\n{output}"
    missing = [marker for marker in BENCHMARKS[name].markers if marker not in result.stdout]
    assert not missing, f"benchmarks/{name}.py --quick printed no {missing}:\n{output}"
