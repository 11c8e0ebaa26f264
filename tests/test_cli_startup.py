"""The command line starts without loading what the command typed does not use (issue 14).

``clonechat --help`` once took 1.4 s (4.4 s without bytecode) because importing the CLI pulled
in SQLAlchemy, SQLModel, the session, the engine and the embedded provider. Each case here runs
the real typer app in a fresh interpreter, as the console script does, and reads
``sys.modules`` when it is done: a heavy import put back at module level in any CLI module
shows up as a failure naming the module (``benchmarks/startup.py`` times the same thing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Runs the app as ``clonechat ARGS...`` would and writes its exit code and every module it
#: imported to the file named by the first argument (stdout is the command's own output).
WRAPPER = """\
import json, sys
out = sys.argv[1]
sys.argv = ["clonechat", *sys.argv[2:]]
from clonechat.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

#: What no command that does not run a dialogue, a model or the TUI may load.
HEAVY = (
    "sqlalchemy",
    "sqlmodel",
    "clonechat.session",
    "clonechat.store.models",
    "llama_cpp",
    "textual",
    "matplotlib",
    "numpy",
    "pandas",
)
#: Also never needed to print help or to run a query: the engine, the models, the async stack.
NOT_FOR_QUERIES = (
    *HEAVY,
    "anyio",
    "httpx",
    "clonechat.engine.dialogue",
    "clonechat.measures",
    "clonechat.registry",
    "clonechat.providers",
    "clonechat.store.writes",
    "clonechat.store.database",
    "clonechat.store.migrations",
    "clonechat.tui",
    "clonechat.batch",
    "clonechat.analysis",
    "clonechat.scoring",
)
#: Help needs none of the store, the read layer or the query layer either.
NOT_FOR_HELP = (
    *NOT_FOR_QUERIES,
    "clonechat.store",
    "clonechat.read",
    "clonechat.engine",
    "clonechat.query",
    "sqlite3",
)

COMMANDS = ("run", "batch", "score", "report", "models", "ls", "show", "tui", "query", "search", "keywords", "export")


def run_app(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], int, set[str]]:
    """The app run in a fresh interpreter: its output, its exit code, and what it imported."""
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert out.exists(), done.stderr
    report = json.loads(out.read_text())
    return done, int(report["code"]), set(report["modules"])


def assert_not_loaded(modules: set[str], names: Iterable[str]) -> None:
    """None of ``names`` (a package counts with its submodules) was imported; else say which."""
    found = sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))
    if found:
        pytest.fail(f"imported, and should not be: {', '.join(found)}", pytrace=False)


@pytest.fixture(scope="module")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run database with one scripted dialogue, made by the CLI itself."""
    db = tmp_path_factory.mktemp("startup") / "r.db"
    done = subprocess.run(
        [sys.executable, "-m", "clonechat", "run", "--model", "scripted", "--turns", "1", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return db


def test_help_lists_every_command_and_loads_nothing_heavy(tmp_path: Path) -> None:
    done, code, modules = run_app("--help", tmp_path=tmp_path)
    assert code == 0, done.stderr
    for command in COMMANDS:
        assert f" {command} " in done.stdout, (command, done.stdout)
    assert_not_loaded(modules, NOT_FOR_HELP)


@pytest.mark.parametrize("command", ["query", "run", "ls", "show", "batch", "search", "export"])
def test_command_help_loads_nothing_heavy(command: str, tmp_path: Path) -> None:
    done, code, modules = run_app(command, "--help", tmp_path=tmp_path)
    assert code == 0, done.stderr
    assert "--db" in done.stdout
    assert_not_loaded(modules, NOT_FOR_HELP)


def test_a_query_loads_neither_sqlmodel_nor_the_engine(run_db: Path, tmp_path: Path) -> None:
    done, code, modules = run_app("query", "select 1 AS one", "--db", str(run_db), "--format", "csv", tmp_path=tmp_path)
    assert code == 0, done.stderr
    assert done.stdout.split() == ["one", "1"]
    assert "clonechat.read.console" in modules
    assert_not_loaded(modules, NOT_FOR_QUERIES)


def test_ls_reads_through_the_read_layer_and_never_opens_the_writer(run_db: Path, tmp_path: Path) -> None:
    done, code, modules = run_app("ls", "--db", str(run_db), tmp_path=tmp_path)
    assert code == 0, done.stderr
    assert "adhoc" in done.stdout
    assert "clonechat.read.dialogues" in modules
    # ls only reads: nothing of the writer is loaded.
    writing = ("clonechat.store.writes", "clonechat.store.writer")
    assert_not_loaded(modules, [*(m for m in NOT_FOR_QUERIES if m != "sqlalchemy"), *writing])


def test_the_installed_console_script_answers_help() -> None:
    script = Path(sys.executable).parent / "clonechat"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    done = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert all(f" {command} " in done.stdout for command in COMMANDS), done.stdout
