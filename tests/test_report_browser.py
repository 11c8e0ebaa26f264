"""The HTML report in a real headless Chromium (Debian's, through Playwright; see tests/browser.py).

A small experiment is run through the real ``clonechat batch`` with the scripted model and
written up with ``clonechat report --format html``; the page must then load with no console
error or warning, no uncaught exception and no request beyond its own file (a report is read
offline, mailed, archived: anything it fetches is missing there), render to a real screenshot,
and build a transcript only when it is first opened. A second test feeds the harness a page that
does each forbidden thing, so a clean result above means the harness looked, not that it is blind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from typer.testing import CliRunner, Result

from clonechat.cli import app
from tests.browser import open_page, png_size
from tests.test_scoring import DIALOGUES, EXPERIMENT, SPEC

pytestmark = pytest.mark.browser

#: A full-page screenshot of a report with tables, plots and transcripts is far above this; a
#: blank or unstyled page of a few lines is below it.
MIN_SCREENSHOT_BYTES = 10_000
MIN_SCREENSHOT_WIDTH = 800


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [*map(str, args)])


@pytest.fixture(scope="module")
def html_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML report of test_scoring's experiment (2 conditions × 3 replicates × 4 turns, with
    predictions, coordination and reports back), run once for the module."""
    folder = tmp_path_factory.mktemp("browser-report")
    spec, db, out = folder / f"{EXPERIMENT}.toml", folder / "runs.db", folder / "report"
    spec.write_text(SPEC)
    batch = cli("batch", spec, "--db", db, "--json")
    assert batch.exit_code == 0, batch.output
    assert json.loads(batch.stdout)["dialogues"]["completed"] == DIALOGUES
    report = cli("report", EXPERIMENT, "--format", "html", "--out", out, "--db", db)
    assert report.exit_code == 0, report.output
    pages = sorted(out.glob("*.html"))
    assert len(pages) == 1, pages
    return pages[0]


def screenshot(page: Page, path: Path) -> tuple[int, int]:
    """A full-page PNG at ``path``; its (width, height), after checking it is not trivially small."""
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    width, height = png_size(data)
    assert len(data) > MIN_SCREENSHOT_BYTES, (len(data), path)
    assert width >= MIN_SCREENSHOT_WIDTH, (width, path)
    return width, height


def test_report_is_clean_in_chromium_and_renders_transcripts_on_demand(
    chromium: str, html_report: Path, tmp_path: Path
) -> None:
    with open_page(chromium, html_report) as (page, records):
        sections = page.locator("body section[id]")
        expect(sections.first).to_be_attached()
        for i in range(sections.count()):
            expect(sections.nth(i).locator("h2").first).not_to_be_empty()
        screenshot(page, tmp_path / "report.png")

        transcripts = page.locator("details.transcript")
        assert transcripts.count() >= 2, "the experiment has 6 dialogues: the report should list them"
        first, second = transcripts.nth(0), transcripts.nth(1)
        for details in (first, second):
            expect(details.locator(".transcript-body > *")).to_have_count(0)

        first.locator("summary").first.click()
        expect(first).to_have_js_property("open", True)
        spoken = first.locator(".transcript-body .turn").filter(has_text=re.compile(r"\S"))
        expect(spoken.first).to_be_visible()
        for speaker in ("A", "B"):
            expect(first.locator(f'.transcript-body .turn[data-speaker="{speaker}"]').first).to_be_attached()
        expect(first.locator(".transcript-body .prediction").first).to_be_attached()  # the spec predicts

        # Lazily rendered: the transcript nobody opened is still an empty shell.
        expect(second).to_have_js_property("open", False)
        expect(second.locator(".transcript-body > *")).to_have_count(0)
        screenshot(page, tmp_path / "report-open.png")
    assert records.problems() == [], "\n".join(records.problems())


BAD_PAGE = """\
<!doctype html>
<html><head><meta charset="utf-8"><title>bad</title>
<link rel="stylesheet" href="https://cdn.example.com/style.css">
</head><body>
<h1>A page that reaches out</h1>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="inline, allowed">
<img src="https://images.example.com/plot.png" alt="remote">
<iframe src="sibling.html"></iframe>
<script>
console.error("deliberate console error");
console.warn("deliberate warning");
console.log("a log line is fine");
fetch("https://api.example.com/track").catch(function () { document.body.dataset.fetched = "1"; });
</script>
<script>throw new Error("deliberate uncaught error");</script>
</body></html>
"""


def test_the_harness_catches_console_errors_page_errors_and_requests(chromium: str, tmp_path: Path) -> None:
    """Each forbidden thing is recorded (and each request aborted); a data: URL is not."""
    html = tmp_path / "bad.html"
    html.write_text(BAD_PAGE, encoding="utf-8")
    (tmp_path / "sibling.html").write_text("<p>another file</p>", encoding="utf-8")
    with open_page(chromium, html) as (page, records):
        page.wait_for_selector("body[data-fetched='1']", state="attached")  # the fetch was aborted
        expect(page.locator("h1")).to_have_text("A page that reaches out")
    remote = [
        "https://cdn.example.com/style.css",
        "https://images.example.com/plot.png",
        (tmp_path / "sibling.html").resolve().as_uri(),
        "https://api.example.com/track",
    ]
    assert sorted(records.requests) == sorted(remote)
    assert sorted(records.blocked) == sorted(remote)
    assert any(line.startswith("error: deliberate console error") for line in records.console), records.console
    assert any(line.startswith("warning: deliberate warning") for line in records.console), records.console
    assert not any("a log line is fine" in line for line in records.console)
    assert records.page_errors == ["Error: deliberate uncaught error"]
