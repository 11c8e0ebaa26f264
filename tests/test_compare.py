"""``clonechat report A --compare B``: two experiments side by side, measure by measure, with
the difference and its interval."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from clonechat.analysis.compare import compare_section
from clonechat.analysis.data import ConditionInfo, PredictionScore, ReportData
from clonechat.analysis.document import Bullets, Section, Table
from clonechat.cli import app

SPEC = """\
name = "{name}"
model_a = "scripted"
replicates = 6
max_turns = 4
seed = 3

[prediction]
self_predict = true

[coordination]
tasks = ["number", "colour"]
when = "after"
max_tokens = {coordination_tokens}

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "no-frame"
"""


def _cli(*args: str | Path, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == code, result.output
    return result.output


def _rows(text: str, heading: str) -> dict[tuple[str, str, str], list[str]]:
    """The table under ``heading`` (a Markdown section), keyed by its first three cells."""
    block = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[0] not in ("Scorer", "Task"):
            rows[(cells[0], cells[1], cells[2])] = cells
    return rows


def test_two_scripted_experiments_with_a_known_difference(tmp_path: Path) -> None:
    """Same spec and seeds, so every dialogue is the same; only B's coordination answers are cut
    to two words ("reply to"), which hold no number: B never matches on `number` (A always
    does) while `colour` is unaffected. So the known differences are exactly +1 and 0, and
    every prediction measure differs by exactly 0."""
    db = tmp_path / "runs.db"
    for name, tokens in (("alpha", 32), ("beta", 2)):
        spec = tmp_path / f"{name}.toml"
        spec.write_text(SPEC.format(name=name, coordination_tokens=tokens))
        _cli("batch", spec, "--db", db)
    out = _cli("report", "alpha", "--compare", "beta", "--db", db, "--out", tmp_path / "md")
    assert "report written:" in out and "report.md" in out
    text = (tmp_path / "md" / "report.md").read_text()
    assert "## Compared with beta" in text

    coordination = _rows(text, "### Coordination match rate")
    for condition in ("clone-aware", "no-frame"):
        number = coordination[("number", condition, "after")]
        assert number[3].startswith("1.000") and number[5].startswith("0.000"), number
        assert number[7] == "1.000 [uninformative]"  # all match vs none: every resample is +1
        assert coordination[("colour", condition, "after")][7].startswith("0.000")
    assert "clone-aware, after, number: the difference from `beta` is +1.000, but its interval cannot inform" in text

    prediction = _rows(text, "### Prediction accuracy")
    chrf = prediction[("chrf", "clone-aware", "partner")]
    assert chrf[3] == chrf[5]  # the same dialogues give the same accuracy
    low, high = map(float, re.findall(r"-?\d\.\d+", chrf[7])[1:3])
    assert chrf[7].startswith("0.000 [") and low < 0 < high
    assert "clone-aware, partner, chrf: within noise: the difference from `beta`" in text

    # The HTML report carries the same section.
    _cli("report", "alpha", "--compare", "beta", "--format", "html", "--db", db, "--out", tmp_path / "html")
    page = (tmp_path / "html" / "report.html").read_text()
    assert 'id="compared-with-beta"' in page and "1.000 [uninformative]" in page


def test_compare_refuses_bad_names(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    spec = tmp_path / "alpha.toml"
    spec.write_text(SPEC.format(name="alpha", coordination_tokens=32).replace("replicates = 6", "replicates = 1"))
    _cli("batch", spec, "--db", db)
    result = CliRunner().invoke(app, ["report", "alpha", "--compare", "nope", "--db", str(db), "--out", "x"])
    assert result.exit_code != 0 and "nope" in result.output and not Path("x").exists()
    result = CliRunner().invoke(app, ["report", "alpha", "--compare", "alpha", "--db", str(db)])
    assert result.exit_code == 2 and "own experiment" in result.output
    result = CliRunner().invoke(app, ["report", "alpha", "--format", "pdf", "--db", str(db)])
    assert result.exit_code == 2 and "unknown report format 'pdf'" in result.output


def _experiment(name: str, shift: float, seed: int) -> ReportData:
    rng = np.random.default_rng(seed)
    scores = [
        PredictionScore("clone-aware", f"{name}-{d}", t, "partner", "chrf", 0.4 + shift + float(rng.normal(0, 0.05)))
        for d in range(10)
        for t in range(1, 4)
    ]
    return ReportData(name, datetime(2026, 1, 1), "", None, [ConditionInfo("clone-aware", "t", "m", "m", 10, 10, 30)],
                      scores)  # fmt: skip


def test_a_planted_difference_is_measured_with_its_interval() -> None:
    a, b = _experiment("a", 0.2, 1), _experiment("b", 0.0, 2)
    section = compare_section(a, b)
    inner = next(s for s in section.blocks if isinstance(s, Section) and s.title == "Prediction accuracy")
    table = next(x for x in inner.blocks if isinstance(x, Table))
    (row,) = table.rows
    diff, low, high = map(float, re.findall(r"-?\d\.\d+", row[7]))
    assert abs(diff - 0.2) < 0.03 and low < 0.2 < high and low > 0
    findings = next(x for x in inner.blocks if isinstance(x, Bullets))
    assert findings.items[0].startswith("clone-aware, partner, chrf: 0.2") and "above `b`" in findings.items[0]
    coordination = next(s for s in section.blocks if isinstance(s, Section) and s.title == "Coordination match rate")
    assert "no measure of this kind in common" in str(coordination.blocks[0])
