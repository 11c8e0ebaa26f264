"""How long the ``clonechat`` command takes to answer (issue 14).

A command line that takes seconds before it does anything is one nobody wants to type. This
times the installed console script, ``clonechat --help``, against the floor any typer program
pays, ``python -c "import typer"``, in the same run and on the same interpreter, interleaved
(one of each, then again) so that a busy moment on the shared machine hits both; the figure is
the median of each. Target: ``clonechat --help`` at most 3 x the baseline, both with
``PYTHONDONTWRITEBYTECODE=1`` (as this project's machines run: nothing of the project's own is
ever cached, so its modules are compiled on every start) and without it (the first run then
writes the project's ``.pyc`` files; it is shown apart, and the median is of every run).

``clonechat ls`` and ``clonechat query 'select 1'`` on a small database are timed against the
same baseline as information (no target), and ``python -c pass`` as the interpreter's floor.

Before each mode the project's own ``__pycache__`` folders (``clonechat/`` only, never
site-packages) are removed, so the ``PYTHONDONTWRITEBYTECODE=1`` figures are not helped by a
cache some earlier run left; they are removed again at the end, leaving the tree as this
project's machines normally have it. Every command's exit status and output are checked; a
failed check exits non-zero, as does a missed target in a full run.

``--quick`` runs the same code with 2 repetitions and prints the same figures in a few seconds;
its timings mean nothing and it asserts none.

Run: flock /tmp/clonechat-heavy.lock python3 -m uv run --no-sync python benchmarks/startup.py [--repeat 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 3.0
FULL_REPEAT = 10
QUICK_REPEAT = 2


@dataclass(frozen=True)
class Command:
    """One thing to time: its label, its argv, and a check of what it printed."""

    label: str
    argv: list[str]
    check: Callable[[str], bool]


def venv_bin() -> Path:
    """The virtualenv's ``bin`` folder: the one running this script, else the project's."""
    here = Path(sys.executable).parent
    return here if (here / "clonechat").exists() else ROOT / ".venv" / "bin"


def environment(dont_write: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if dont_write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The console script, not this process's sys.path, decides what is imported.
    env.pop("PYTHONPATH", None)
    return env


def clear_project_bytecode() -> int:
    """Remove the project's own ``__pycache__`` folders; how many there were."""
    found = [p for p in (ROOT / "clonechat").rglob("__pycache__") if p.is_dir()]
    for folder in found:
        shutil.rmtree(folder, ignore_errors=True)
    return len(found)


def timed(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> tuple[float, str]:
    """Wall time of one run, and its stdout; a failure is a benchmark error, not a figure."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return elapsed, done.stdout


def make_db(bin_dir: Path, folder: Path) -> Path:
    """A small real run database (one scripted dialogue), made outside the timings."""
    db = folder / "startup.db"
    argv = [str(bin_dir / "clonechat"), "run", "--model", "scripted", "--turns", "2", "--db", str(db)]
    timed(argv, environment(dont_write=True), folder)
    return db


def measure(
    commands: Sequence[Command], repeat: int, env: Mapping[str, str], cwd: Path
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Every command ``repeat`` times, interleaved. Returns the times after each command's first
    run and the first run's time apart (the one that may write bytecode)."""
    times: dict[str, list[float]] = {c.label: [] for c in commands}
    first: dict[str, float] = {}
    for rep in range(repeat):
        for command in commands:
            elapsed, out = timed(command.argv, env, cwd)
            if not command.check(out):
                raise SystemExit(f"{command.label}: unexpected output:\n{out}")
            if rep == 0:
                first[command.label] = elapsed
            times[command.label].append(elapsed)
    return times, first


def report(mode: str, commands: Sequence[Command], times: dict[str, list[float]], first: dict[str, float]) -> bool:
    """Print the medians and ratios of one mode; whether ``--help`` met the target."""
    baseline = statistics.median(times["import typer"])
    print(f"\n{mode}")
    print(f"{'command':<34} {'median ms':>10} {'first ms':>9} {'min ms':>8} {'x typer':>8}")
    for command in commands:
        values = times[command.label]
        median = statistics.median(values)
        print(
            f"{command.label:<34} {median * 1000:>10.1f} {first[command.label] * 1000:>9.1f} "
            f"{min(values) * 1000:>8.1f} {median / baseline:>8.2f}"
        )
    ratio = statistics.median(times["clonechat --help"]) / baseline
    passed = ratio <= TARGET_RATIO
    print(
        f"clonechat --help / python -c 'import typer' = {ratio:.2f} "
        f"(target <= {TARGET_RATIO:.0f}): {'PASS' if passed else 'FAIL'}"
    )
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=FULL_REPEAT, help="runs of each command per mode")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEAT} runs each; no target is checked")
    args = parser.parse_args(argv)
    repeat = QUICK_REPEAT if args.quick else args.repeat

    bin_dir = venv_bin()
    python, clonechat = str(bin_dir / "python"), str(bin_dir / "clonechat")
    with tempfile.TemporaryDirectory(prefix="clonechat-startup-") as tmp:
        folder = Path(tmp)
        db = make_db(bin_dir, folder)
        commands = [
            Command("python -c pass", [python, "-c", "pass"], lambda out: out == ""),
            Command("import typer", [python, "-c", "import typer"], lambda out: out == ""),
            Command("clonechat --help", [clonechat, "--help"], lambda out: " query " in out and " run " in out),
            Command("clonechat ls", [clonechat, "ls", "--db", str(db)], lambda out: "adhoc" in out),
            Command(
                "clonechat query 'select 1'",
                [clonechat, "query", "select 1 AS one", "--db", str(db)],
                lambda out: out.split()[:2] == ["one", "1"],
            ),
        ]
        print(f"{repeat} runs of each command per mode, interleaved; {bin_dir}", flush=True)
        verdicts: list[bool] = []
        try:
            for mode, dont_write in (
                ("PYTHONDONTWRITEBYTECODE=1 (the project's modules compiled on every start)", True),
                ("PYTHONDONTWRITEBYTECODE unset (the first run writes the project's .pyc files)", False),
            ):
                clear_project_bytecode()
                times, first = measure(commands, repeat, environment(dont_write), folder)
                verdicts.append(report(mode, commands, times, first))
        finally:
            clear_project_bytecode()
    if args.quick:
        print("\n--quick: figures only, no target checked")
        return 0
    passed = all(verdicts)
    print(
        f"\ntarget: clonechat --help <= {TARGET_RATIO:.0f} x python -c 'import typer' in the same run, "
        f"with and without PYTHONDONTWRITEBYTECODE=1: {'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
