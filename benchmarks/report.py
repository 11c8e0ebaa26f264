"""Writing up a large experiment: the HTML report against the Markdown one, at 1,000 dialogues.

A researcher runs ``clonechat report EXPERIMENT --format html`` on what a batch produced; this
runs exactly that (subprocesses, as a user does) on an experiment of 2 conditions x 500
replicates x 4 turns with partner prediction, self-prediction, a coordination task after the
dialogue and a report-back, made with the scripted model (the model's speed is not what is
measured here). The baseline is ``clonechat report EXPERIMENT`` (Markdown and PNG plots) on the
same database in the same run: the HTML report adds every transcript and inline SVG plots, and
its cost is the ratio of the two. Figures:

- seconds for each format (median of the repeats) and the ratio html / markdown;
- the HTML file's size in MB and per dialogue (it embeds every transcript as data);
- with Chromium present (Debian's, as the browser test installs it): the time from opening the
  file to its ``load`` event, and to the first transcript drawn after a click (the page draws
  a transcript only when it is opened, so loading must not grow with the transcripts' number
  the way drawing them all would).

Run: python3 -m uv run python benchmarks/report.py [--quick]
``--quick`` (seconds, in the test suite) uses 2 x 5 dialogues and one repeat and enforces no
target: it checks that both reports are written and the figures printed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
name = "bench-report"
replicates = {replicates}
max_turns = 4
seed = 20261202
concurrency = 32
model_a = "scripted"

[prediction]
self_predict = true

[coordination]
tasks = ["number"]
when = "after"

[report_back]

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "no-frame"
"""


def clonechat(*args: str | Path) -> float:
    """Run ``clonechat ARGS`` as a user does; its wall time in seconds (a failure stops the run)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clonechat", *map(str, args)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"clonechat {' '.join(map(str, args))} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def in_browser(page: Path) -> tuple[float, float] | None:
    """Seconds to the page's load event and to the first transcript drawn after a click; None
    without Chromium or playwright."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if browser is None:
        return None
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-dev-shm-usage"])
        tab = chromium.new_page()
        started = time.perf_counter()
        tab.goto(page.as_uri(), wait_until="load", timeout=300_000)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        tab.locator("details.transcript > summary").first.click()
        tab.wait_for_selector("details.transcript .turn", timeout=300_000)
        opened = time.perf_counter() - started
        chromium.close()
    return loaded, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, no targets")
    args = parser.parse_args()
    replicates, repeats = (5, 1) if args.quick else (500, 3)
    with tempfile.TemporaryDirectory(prefix="clonechat-bench-report-") as tmp:
        work = Path(tmp)
        spec, db = work / "spec.toml", work / "runs.db"
        spec.write_text(SPEC.format(replicates=replicates))
        batch_s = clonechat("batch", spec, "--db", db)
        dialogues = 2 * replicates
        print(f"experiment: {dialogues} dialogues x 4 turns, predictions (partner, self), coordination, reports back")
        print(f"batch (scripted model) {batch_s:.1f} s")
        clonechat("score", "bench-report", "--db", db, "--scorer", "chrf")  # warm: scoring is not what is timed
        times: dict[str, list[float]] = {"markdown": [], "html": []}
        for _ in range(repeats):
            for fmt in ("markdown", "html"):  # interleaved, so machine noise hits both alike
                times[fmt].append(clonechat("report", "bench-report", "--db", db, "--format", fmt, "--out", work / fmt))
        md, html = statistics.median(times["markdown"]), statistics.median(times["html"])
        page = work / "html" / "report.html"
        size = page.stat().st_size
        print("format    median s  runs")
        for fmt, runs in times.items():
            print(f"{fmt:<9} {statistics.median(runs):>8.2f}  {' '.join(f'{t:.2f}' for t in runs)}")
        print(f"html / markdown time ratio: {html / md:.2f}")
        print(f"html size: {size / 1e6:.2f} MB ({size / dialogues / 1e3:.1f} kB per dialogue)")
        browser = in_browser(page)
        if browser is None:
            print("in Chromium: not measured (no chromium or playwright here)")
        else:
            loaded, opened = browser
            drawn = f"first transcript drawn {opened * 1000:.0f} ms after the click"
            print(f"in Chromium: load event {loaded:.2f} s; {drawn}")


if __name__ == "__main__":
    main()
