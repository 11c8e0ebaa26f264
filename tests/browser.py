"""A real headless Chromium for tests of the HTML report.

The browser is the distribution's Chromium (Debian's ``chromium`` package), driven through
Playwright's Python package with ``executable_path``: CI reaches package registries only, so
``playwright install`` (a browser build from a CDN) is never run. When Chromium is missing,
:func:`chromium_executable` installs it with apt, as the project's rule is that a test installs
the real components it needs rather than assuming them; it skips only where that cannot work.

:func:`open_page` opens a page and records what the page must not do: console errors and
warnings, uncaught exceptions, and every request beyond the file itself (which it also aborts, so
a report that would fetch a script or font from the web fails offline the same way it fails here).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page, Request, Route, WebSocket

#: Names Chromium goes by on PATH (Debian, Ubuntu's old package, Google's build).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
#: Held while apt runs: two pytest processes (the suite and a second session beside it) would
#: otherwise both start apt-get, and the second fails on dpkg's lock.
APT_LOCK = Path("/tmp/clonechat-apt.lock")
#: apt-get update plus the download and install of Chromium and its libraries (~100 MB).
APT_TIMEOUT = 600.0
#: Every wait in the page: generous, as a loaded CI machine can be slow to start a browser.
PAGE_TIMEOUT_MS = 60_000
#: Schemes a self-contained page may use without touching anything outside itself.
LOCAL_SCHEMES = ("data:", "blob:", "about:")


def find_chromium() -> str | None:
    """The first Chromium on PATH, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_executable() -> str:
    """Chromium's path, installing Debian's package first if it is missing.

    Skips the calling test (``pytest.skip``) only when installing is impossible: not root, no
    apt-get, or apt failing (its last line of stderr is in the reason)."""
    found = find_chromium()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and installing it needs root (apt-get install chromium)")
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and there is no apt-get to install it with")
    with APT_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        found = find_chromium()  # another process may have installed it while we waited
        if found is None:
            _apt_install_chromium()
            found = find_chromium()
    if found is None:
        pytest.skip(f"apt-get installed the chromium package, but none of {', '.join(CANDIDATES)} is on PATH")
    return found


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for dpkg's own lock too: something outside pytest (unattended-upgrades) may hold it.
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"`{' '.join(command)}` did not finish in {APT_TIMEOUT:.0f} s")


def _has_candidate(package: str) -> bool:
    """Whether apt's package lists know ``package`` (before any ``apt-get update`` they may not)."""
    result = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate":
            return value.strip() not in ("", "(none)")
    return False


def _apt_install_chromium() -> None:
    """``apt-get install chromium``; ``apt-get update`` first only if the lists lack it, and once
    more on a failed install (stale lists name package versions the mirror no longer has)."""
    updated = False
    if not _has_candidate("chromium"):
        _require(_apt("update"), "apt-get update")
        updated = True
    install = ("install", "-y", "--no-install-recommends", "chromium")
    result = _apt(*install)
    if result.returncode != 0 and not updated:
        _require(_apt("update"), "apt-get update")
        result = _apt(*install)
    _require(result, "apt-get install chromium")


def _require(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {result.returncode}, nothing on stderr"
        pytest.skip(f"Chromium is not installed and `{what}` failed: {last}")


@dataclass
class PageRecords:
    """What a page did that a self-contained report must not do (each list empty on a good page)."""

    #: ``"error: text (url:line)"`` and ``"warning: …"`` console messages.
    console: list[str] = field(default_factory=list)
    #: Uncaught exceptions in the page's scripts.
    page_errors: list[str] = field(default_factory=list)
    #: Every request the page attempted other than the file itself and data:/blob:/about: URLs.
    requests: list[str] = field(default_factory=list)
    #: The requests the route aborted (the same URLs, unless one escaped the route).
    blocked: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything above, one line each, for an assertion message."""
        return [
            *self.console,
            *(f"page error: {e}" for e in self.page_errors),
            *(f"request: {url}" for url in self.requests),
        ]


@contextmanager
def open_page(
    executable: str, html: Path, *, width: int = 1280, height: int = 900
) -> Iterator[tuple[Page, PageRecords]]:
    """``html`` loaded in a fresh headless Chromium, with its :class:`PageRecords`.

    Every request other than ``html``'s own ``file://`` URL (and data:/blob:/about:) is aborted
    and recorded: a report that needs the network is broken for a reader offline. A browser per
    call: starting one costs well under a second, and nothing (cookies, cache, Playwright's event
    loop) carries over into other tests."""
    from playwright.sync_api import expect, sync_playwright

    # ``expect`` has its own default (5 s), apart from the context's: give its waits the same.
    expect.set_options(timeout=PAGE_TIMEOUT_MS)

    own_url = html.resolve().as_uri()
    records = PageRecords()

    def allowed(url: str) -> bool:
        return url.split("#", 1)[0] == own_url or url.startswith(LOCAL_SCHEMES)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            where = message.location
            records.console.append(
                f"{message.type}: {message.text} ({where.get('url', '?')}:{where.get('lineNumber', '?')})"
            )

    def on_request(request: Request) -> None:
        if not allowed(request.url):
            records.requests.append(request.url)

    def on_websocket(socket: WebSocket) -> None:
        records.requests.append(socket.url)  # routes do not see WebSockets

    def route(route: Route) -> None:
        if allowed(route.request.url):
            route.continue_()
        else:
            records.blocked.append(route.request.url)
            route.abort("blockedbyclient")

    # As root Chromium refuses to start without --no-sandbox; /dev/shm is small in containers.
    args = ["--disable-dev-shm-usage", "--disable-background-networking"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=args, timeout=PAGE_TIMEOUT_MS
        )
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            context.route("**/*", route)
            context.on("request", on_request)
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: records.page_errors.append(f"{error.name}: {error.message}"))
            page.on("websocket", on_websocket)
            page.goto(own_url, wait_until="load")
            yield page, records
        finally:
            browser.close()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which the format puts first."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
