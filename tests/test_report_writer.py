"""The report writer on synthetic data with known answers: a strong effect is reported above
chance, no effect is reported within noise, coordination rates match a hand count, plots are real
PNGs linked from the Markdown, and empty sections say so."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from clonechat.analysis.data import ConditionInfo, CoordinationPair, PredictionScore, ReportBack, ReportData
from clonechat.analysis.report import EXCERPT_CHARS, write_report

HEADINGS = [
    "# Clonechat report: synthetic",
    "## How to read this",
    "## Conditions",
    "## Prediction accuracy",
    "## Coordination",
    "## Reports back",
    "## Appendix: experiment spec",
]
SPEC = 'name = "synthetic"\ncontrol = "blind"\n\n[[conditions]]\nname = "strong"\n'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def condition(name: str, model_b: str = "smollm2") -> ConditionInfo:
    return ConditionInfo(name, f"{name}.md", "smollm2", model_b, dialogues=10, completed=10, turns=60)


def predictions(name: str, rng: np.random.Generator, value: float, baseline: float) -> list[PredictionScore]:
    """10 dialogues × 6 turns of partner and self predictions for chrf and token_f1, values around
    ``value`` and baselines around ``baseline`` (sd 0.05)."""
    rows = []
    for d in range(10):
        for turn in range(1, 7):
            for variant in ("partner", "self"):
                for scorer in ("chrf", "token_f1"):
                    v, b = rng.normal(value, 0.05), rng.normal(baseline, 0.05)
                    rows.append(PredictionScore(name, f"{name}-dialogue-{d:02d}", turn, variant, scorer, v, b))
    return rows


def coordination(name: str) -> list[CoordinationPair]:
    """10 dialogues: 6 pairs both say "7", 4 pairs say "3" (A) and "42" (B)."""
    pairs = [("7", "7")] * 6 + [("3", "42")] * 4
    return [
        CoordinationPair(name, f"{name}-dialogue-{d:02d}", "number", "after", a, b) for d, (a, b) in enumerate(pairs)
    ]


def full_data() -> ReportData:
    rng = np.random.default_rng(2024)
    long_text = "I noticed my partner was a copy of me. " * 30
    reports = [ReportBack("strong", f"strong-dialogue-{d:02d}", "A", "smollm2", long_text) for d in range(5)]
    reports.append(ReportBack("strong", "strong-dialogue-00", "B", "smollm2", "Short | note.\n\nSecond line."))
    return ReportData(
        experiment="synthetic",
        created_at=datetime(2025, 1, 2, 3, 4),
        spec_text=SPEC,
        control="blind",
        conditions=[condition("blind"), condition("strong"), condition("noise"), condition("mixed", "qwen")],
        predictions=predictions("blind", rng, 0.3, 0.3)
        + predictions("strong", rng, 0.8, 0.2)
        + predictions("noise", rng, 0.4, 0.4),
        coordination=coordination("strong")
        + [CoordinationPair("mixed", f"m{d}", "number", "after", "7", "7" if d < 2 else "9") for d in range(10)],
        reports=reports,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report")
    path = write_report(full_data(), out)
    return path, path.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n") + len(heading)
    following = re.search(rf"^{level} ", text[start:], flags=re.MULTILINE)
    return text[start : start + following.start()] if following else text[start:]


def test_every_section_present_and_filled(report: tuple[Path, str]) -> None:
    path, text = report
    assert path.name == "report.md"
    for heading in HEADINGS:
        assert heading in text
        if heading.startswith("## "):
            assert len(section(text, heading).strip()) > 40, heading
    assert "2025-01-02" in text
    assert "| mixed | mixed.md | smollm2 | qwen | **cross-model** |" in text
    assert "| blind (control) |" in text
    assert "### Scorer: chrf" in text and "### Scorer: token_f1" in text


def test_strong_effect_above_chance_and_control(report: tuple[Path, str]) -> None:
    _, text = report
    line = next(x for x in text.splitlines() if x.startswith("- strong, partner, chrf: ") and "chance" in x)
    match = re.fullmatch(
        r"- strong, partner, chrf: (0\.\d+) above chance \[(0\.\d+), (0\.\d+)\] "
        r"\(exploratory; BH-adjusted p [=<] 0\.\d+, raw p [=<] 0\.\d+\)\.",
        line,
    )
    assert match, line
    assert 0.55 < float(match[1]) < 0.65 and float(match[2]) > 0.5
    assert re.search(r"- strong, partner, chrf: 0\.\d+ above the control `blind`", text)


def test_no_effect_within_noise(report: tuple[Path, str]) -> None:
    _, text = report
    for variant in ("partner", "self"):
        assert f"- noise, {variant}, chrf: within noise: the difference from chance, " in text
    assert "- blind, partner, chrf: within noise" in text
    assert "strong, chrf, partner vs self (paired by turn): within noise" in text
    # the control is not compared with itself
    assert "blind, partner, chrf: within noise: the difference from the control" not in text


def test_coordination_known_rates(report: tuple[Path, str]) -> None:
    """Match 6/10; pooled answers 12x"7", 4x"3", 4x"42" → chance 0.36 + 0.04 + 0.04 = 0.44;
    strangers: 30 of 90 ordered pairs of different dialogues → 0.333."""
    _, text = report
    row = next(x for x in text.splitlines() if x.startswith("| strong | number | after |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith("0.600 [")
    assert cells[4] == "10 (10)"
    assert cells[5] == "0.440"
    assert cells[6].startswith("0.160 [")
    assert cells[7] == "0.333"
    assert "| mixed (cross-model) | number | after | 0.200 [" in text
    assert "number, after, clone pairs vs cross-model pairs:" in text


def test_plots_are_pngs_linked_from_report(report: tuple[Path, str]) -> None:
    path, text = report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(links) == {
        "prediction_by_turn_chrf.png",
        "prediction_by_turn_token_f1.png",
        "coordination.png",
        # A forest plot of each section's differences (every scorer here has intervals).
        "forest_chrf.png",
        "forest_token_f1.png",
        "forest_coordination.png",
    }
    for link in links:
        assert (path.parent / link).read_bytes()[:8] == PNG_MAGIC


def test_report_backs_truncated_and_quoted(report: tuple[Path, str]) -> None:
    _, text = report
    reports = section(text, "## Reports back")
    assert "#### Agent A (3 of 5)" in reports
    assert reports.count("> **`strong-d`** · smollm2") == 4  # 3 from A, 1 from B
    quoted = [x for x in reports.splitlines() if x.startswith("> I noticed")]
    assert len(quoted) == 3
    assert all(len(x) <= EXCERPT_CHARS + 4 and x.endswith("…") for x in quoted)
    assert "> Short | note.\n>\n> Second line." in reports
    assert "No reports back from this condition." in section(reports, "### blind")


def test_appendix_holds_spec(report: tuple[Path, str]) -> None:
    _, text = report
    assert f"```toml\n{SPEC.rstrip()}\n```" in section(text, "## Appendix: experiment spec")


def test_empty_sections_say_so(tmp_path: Path) -> None:
    data = ReportData("empty", datetime(2025, 1, 1), "", None, [condition("only")])
    text = write_report(data, tmp_path / "out").read_text(encoding="utf-8")
    for heading in HEADINGS[2:]:
        assert heading.replace("synthetic", "empty") in text
    assert "No predictions were made in this experiment (prediction was off in every condition)." in text
    assert "No coordination questions were asked in this experiment." in text
    assert "No agent wrote a report back in this experiment." in text
    assert "The spec text was not recorded." in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_single_dialogue_has_no_interval(tmp_path: Path) -> None:
    preds = [PredictionScore("one", "d1", t, "partner", "bleu", 0.5, 0.4) for t in range(1, 4)]
    data = ReportData("tiny", datetime(2025, 1, 1), "x = 1", None, [condition("one")], predictions=preds)
    path = write_report(data, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "- one, partner, bleu: too few dialogues to tell (n=1 dialogue; at least 5 needed" in text
    assert "0.500 [too few dialogues]" in text
    assert (tmp_path / "prediction_by_turn_bleu.png").read_bytes()[:8] == PNG_MAGIC


def test_few_dialogues_are_too_few_to_tell(tmp_path: Path) -> None:
    """A large, perfectly consistent effect over 3 dialogues is not reported as above chance (nor
    within noise): with fewer than MIN_CLUSTERS_FOR_CI dialogues the report says it cannot tell,
    and the table keeps the mean but shows no interval."""
    preds = [
        PredictionScore(name, f"{name}-d{d}", t, variant, "chrf", value, 0.1)
        for name, value in (("few", 0.9), ("base", 0.2))
        for d in range(3)
        for t in range(1, 5)
        for variant in ("partner", "self")
    ]
    coord = [CoordinationPair("few", f"few-d{d}", "number", "after", "7", "7") for d in range(3)]
    data = ReportData(
        "few",
        datetime(2025, 1, 1),
        "x = 1",
        "base",
        [condition("base"), condition("few")],
        predictions=preds,
        coordination=coord,
    )
    text = write_report(data, tmp_path).read_text(encoding="utf-8")
    numeric = section(text, "## Prediction accuracy") + section(text, "## Coordination")
    findings = [x for x in numeric.splitlines() if x.startswith("- ")]
    assert len(findings) == 9  # vs chance ×4, vs control ×2, partner vs self ×2, coordination vs chance
    for line in findings:
        assert "above" not in line and "below" not in line and "within noise" not in line, line
        assert "too few dialogues to tell" in line, line
    assert (
        "- few, partner, chrf: too few dialogues to tell (n=3 dialogues; at least 5 needed for an interval); "
        "the difference from chance is +0.800." in findings
    )
    assert any(
        x.startswith("- few, partner, chrf: too few dialogues to tell (the smaller group has n=3 dialogues")
        and "the control `base`" in x
        for x in findings
    )
    row = next(x for x in text.splitlines() if x.startswith("| few | partner |"))
    assert "| 0.900 [too few dialogues] | 12 (3) | 0.100 [too few dialogues] | 0.800 [too few dialogues] |" in row
    assert "| few | number | after | 1.000 [too few dialogues] | 3 (3) |" in text


def test_scorer_order_and_surprisal_note(tmp_path: Path) -> None:
    """chrf, token_f1, surprisal, judge, then the rest alphabetically; surprisal says what its
    numbers mean right under its table."""
    scorers = ("zeta", "judge", "asks_question", "surprisal", "token_f1", "chrf", "exact")
    preds = [
        PredictionScore("one", f"d{d}", 1, "partner", scorer, -1.5 if scorer == "surprisal" else 0.5, 0.4)
        for scorer in scorers
        for d in range(6)
    ]
    data = ReportData("order", datetime(2025, 1, 1), "x = 1", None, [condition("one")], predictions=preds)
    text = write_report(data, tmp_path).read_text(encoding="utf-8")
    found = re.findall(r"^### Scorer: (\S+)$", text, flags=re.MULTILINE)
    assert found == ["chrf", "token_f1", "surprisal", "judge", "asks_question", "exact", "zeta"]
    block = section(text, "### Scorer: surprisal")
    table_end = block.index("\n\nFindings:")
    note = block[: table_end + 1].strip().splitlines()[-1]
    assert note.startswith("Surprisal values are the predictor's mean log-probability per token")
    assert "nats" in note and "less surprising" in note and "another dialogue" in note
    assert "log-probability" not in section(text, "### Scorer: chrf")
