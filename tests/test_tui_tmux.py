"""The real ``clonechat tui`` in a real terminal (tmux), watching a batch another process runs:
the browser lists the dialogue, Enter opens it, and its later turns appear on screen as they
are committed; ``q`` quits."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TMUX = shutil.which("tmux")

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")

TURNS = 150  # about 16 s of batch (two 30-80 ms model calls a turn): the app opens well before it ends
SPEC = f"""\
name = "tmuxed"
replicates = 1
max_turns = {TURNS}
seed = 3
model_a = "scripted"

[prediction]

[[conditions]]
name = "cnd1"
template = "clone-aware"
"""


def stored(db: Path, sql: str) -> list[tuple[object, ...]]:
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet, or the schema is still being written


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


class Tmux:
    """One private tmux server (its own socket), one session of a fixed size."""

    def __init__(self) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-L", f"clonechat-test-{os.getpid()}", "-f", os.devnull]

    def __call__(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10, check=False)
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "main")

    def kill(self) -> None:
        socket = self("display-message", "-p", "#{socket_path}").strip()
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10, check=False)
        if socket:
            Path(socket).unlink(missing_ok=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.kill()


def test_the_real_app_in_tmux_shows_turns_a_batch_commits(tmp_path: Path, tmux: Tmux) -> None:
    spec, db = tmp_path / "tmuxed.toml", tmp_path / "r.db"
    spec.write_text(SPEC)
    batch = subprocess.Popen(
        [sys.executable, "-m", "tests.crash.driver", str(spec), "--db", str(db)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: bool(stored(db, "SELECT id FROM dialogue")), 30, 0.05), "no plan stored"
        command = f"env TERM=xterm-256color {sys.executable} -m clonechat tui --db {db}"
        tmux("new-session", "-d", "-s", "main", "-x", "120", "-y", "40", "-c", str(ROOT), command)
        tmux("set-option", "-t", "main", "remain-on-exit", "on")

        assert wait_until(lambda: " cnd1 " in tmux.screen(), 30), tmux.screen()
        tmux("send-keys", "-t", "main", "Enter")
        assert wait_until(lambda: "turn " in tmux.screen() or "opening" in tmux.screen(), 20), tmux.screen()
        turns_at_open = len(stored(db, "SELECT id FROM node WHERE kind = 'turn'"))
        # Follow the end even if more turns than fit on the screen landed before it opened.
        tmux("send-keys", "-t", "main", "End")

        last = f"turn {TURNS} "
        assert wait_until(lambda: last in tmux.screen(), 60), tmux.screen()
        assert turns_at_open < TURNS, "the batch finished before the dialogue opened: nothing was watched"

        tmux("send-keys", "-t", "main", "q")
        assert wait_until(lambda: tmux("display-message", "-p", "-t", "main", "#{pane_dead}").strip() == "1", 10), (
            tmux.screen()
        )
        ended = tmux("display-message", "-p", "-t", "main", "#{pane_dead_status}:#{pane_dead_signal}").strip()
        assert ended in ("0:", "0:0"), (ended, tmux.screen())
    finally:
        batch.kill()
        batch.wait(timeout=10)
