"""The real ``clonechat tui`` in a real terminal (tmux), watching a batch another process runs:
the browser lists the dialogue, Enter opens it, and its later turns appear on screen as they
are committed; ``q`` quits.

Every step waits for a condition, with a deadline several times what it takes on an idle
machine, so the test holds with both cores busy:

- the batch is held (a gate file) after its first turns until the dialogue is open on screen,
  so a slow start of the app can never let the batch finish before anything is watched;
- the app's exit status after ``q`` is written to a file by the shell that started it, and the
  test waits for that file. It used to read tmux's ``#{pane_dead_status}`` once ``#{pane_dead}``
  was 1; but tmux marks a pane dead when its terminal closes, before it has reaped the process,
  and under load tmux 3.3a sometimes does not reap it at all (the app stays a zombie child of
  the tmux server, and the status stays empty, until another SIGCHLD reaches the server): the
  test read ``:`` however long it waited;
- ``remain-on-exit`` is set in the same tmux command that starts the app, so the pane (and what
  it printed) survives even an app that dies at once.
"""

from __future__ import annotations

import os
import shlex
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

TURNS = 150  # about 16 s of batch once the gate opens (two 30-80 ms model calls a turn)
#: Model calls the batch makes before it waits for the gate: its first few turns are stored
#: before the dialogue is opened, the rest land while it is on screen.
HOLD_AFTER = 20
#: Deadlines (seconds) for each wait; an idle machine needs a fraction of each. Their sum stays
#: under pytest's timeout (600 s), so a miss fails with the screen shown rather than a timeout.
PLAN_STORED, BROWSER_SHOWN, DIALOGUE_SHOWN, LAST_TURN_SHOWN, APP_EXITED = 60, 90, 60, 180, 60
#: Each tmux command; under load the tmux server itself can be slow to answer.
TMUX_COMMAND_TIMEOUT = 60
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

#: The crash test's batch driver (its scripted model sleeps 30-80 ms a call), with one more
#: hook: after HOLD_AFTER model calls, each call waits while the gate file exists.
#: Usage: python -c DRIVER GATE HOLD_AFTER [clonechat batch arguments...]
DRIVER = """\
import sys
from pathlib import Path

import anyio

import tests.crash.driver as driver
from clonechat.providers.scripted import ScriptedProvider

gate, hold_after = Path(sys.argv[1]), int(sys.argv[2])
slow_generate = ScriptedProvider.generate
calls = 0


async def gated_generate(self, *args, **kwargs):
    global calls
    calls += 1
    if calls > hold_after:
        while gate.exists():
            await anyio.sleep(0.02)
    return await slow_generate(self, *args, **kwargs)


ScriptedProvider.generate = gated_generate
sys.argv = ["clonechat", "batch", *sys.argv[3:]]
driver.main()
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
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=TMUX_COMMAND_TIMEOUT, check=False
        )
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "main")

    def kill(self) -> None:
        socket = self("display-message", "-p", "#{socket_path}").strip()
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=TMUX_COMMAND_TIMEOUT, check=False)
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
    spec, db, gate, status = tmp_path / "tmuxed.toml", tmp_path / "r.db", tmp_path / "gate", tmp_path / "status"
    spec.write_text(SPEC)
    gate.touch()
    batch = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(gate), str(HOLD_AFTER), str(spec), "--db", str(db)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: bool(stored(db, "SELECT id FROM dialogue")), PLAN_STORED, 0.05), "no plan stored"
        app = shlex.join(["env", "TERM=xterm-256color", sys.executable, "-m", "clonechat", "tui", "--db", str(db)])
        # The shell waits for the app and writes its exit status, renamed into place whole.
        partial = shlex.quote(f"{status}.partial")
        command = shlex.join(["sh", "-c", f"{app}; echo $? > {partial} && mv {partial} {shlex.quote(str(status))}"])
        # One tmux command: remain-on-exit is on before the server could see the pane end, so its
        # last screen stays readable for the messages below.
        tmux(
            *("new-session", "-d", "-s", "main", "-x", "120", "-y", "40", "-c", str(ROOT), command),
            *(";", "set-option", "-t", "main", "remain-on-exit", "on"),
        )

        assert wait_until(lambda: " cnd1 " in tmux.screen(), BROWSER_SHOWN), tmux.screen()
        tmux("send-keys", "-t", "main", "Enter")
        assert wait_until(lambda: "turn " in tmux.screen() or "opening" in tmux.screen(), DIALOGUE_SHOWN), tmux.screen()
        turns_at_open = len(stored(db, "SELECT id FROM node WHERE kind = 'turn'"))
        # Follow the end even if more turns than fit on the screen landed before it opened.
        tmux("send-keys", "-t", "main", "End")
        gate.unlink()  # the rest of the batch lands while the dialogue is on screen

        last = f"turn {TURNS} "
        assert wait_until(lambda: last in tmux.screen(), LAST_TURN_SHOWN), tmux.screen()
        assert turns_at_open < TURNS, "the batch finished before the dialogue opened: nothing was watched"

        tmux("send-keys", "-t", "main", "q")
        assert wait_until(status.exists, APP_EXITED), ("the app did not exit after q", tmux.screen())
        assert status.read_text().strip() == "0", (status.read_text(), tmux.screen())
    finally:
        gate.unlink(missing_ok=True)
        batch.kill()
        batch.wait(timeout=TMUX_COMMAND_TIMEOUT)
