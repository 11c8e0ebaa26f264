"""The report's sections on the newer measures (self-recognition, privileged self-knowledge,
interjections, convergence) on synthetic data with hand-checked answers, and once end to end
from a database a scripted batch wrote."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.analysis.convergence_section import convergence_results, convergence_tests
from clonechat.analysis.data import (
    ConditionInfo,
    ConditionMeasures,
    ConvergenceSetting,
    DialogueEnding,
    InterjectionPoint,
    PredictionScore,
    RecognitionAnswer,
    ReportData,
    ScheduledInterjection,
    SelfKnowledgeScore,
    TurnOverlap,
)
from clonechat.analysis.document import Bullets, Document, Paragraph, Section, Table
from clonechat.analysis.interjection_section import OVERLAP, SELF_KNOWLEDGE, interjection_results
from clonechat.analysis.load import load_report_data
from clonechat.analysis.recognition_section import recognition_results, recognition_tests
from clonechat.analysis.report import build_document, write_report
from clonechat.analysis.self_knowledge_section import self_knowledge_results, self_knowledge_tests
from clonechat.cli import app
from clonechat.read.connect import open_existing
from clonechat.read.experiments import require_experiment
from clonechat.read.transcripts import transcript_nodes
from clonechat.store import writes
from clonechat.store.database import Database

NEW_SECTIONS = ["Self-recognition", "Privileged self-knowledge", "Interjections", "Convergence"]
EMPTY = {
    "Self-recognition": "No agent was asked to recognise its own messages in this experiment",
    "Privileged self-knowledge": "Privileged self-knowledge was not measured in this experiment",
    "Interjections": "No researcher interjection was scheduled in this experiment",
    "Convergence": "No condition of this experiment has a convergence rule",
}
RULE = ConvergenceSetting("overlap_partner", 0.8, 3, "mark")


def condition(name: str, model_b: str = "m1", dialogues: int = 6) -> ConditionInfo:
    return ConditionInfo(name, "told-other-ai", "m1", model_b, dialogues=dialogues, completed=dialogues, turns=36)


def data_with(**fields: object) -> ReportData:
    """A report's data: conditions ``base`` (the control), ``clone`` and ``mixed`` (cross-model)
    unless given, and the rows given."""
    defaults: dict[str, object] = {
        "experiment": "measures",
        "created_at": datetime(2026, 1, 2, 3, 4),
        "spec_text": 'name = "measures"\ncontrol = "base"\n',
        "control": "base",
        "conditions": [condition("base"), condition("clone"), condition("mixed", "m2")],
    }
    return ReportData(**{**defaults, **fields})  # type: ignore[arg-type]


def section_of(document: Document, title: str) -> Section:
    return next(s for s in document.sections if s.title == title)


def sentences(section: Section) -> list[str]:
    return [item for block in section.blocks if isinstance(block, Bullets) for item in block.items]


def table_rows(section: Section) -> list[list[str]]:
    table = next(b for b in section.blocks if isinstance(b, Table))
    return [list(row) for row in table.rows]


# --- recognition -----------------------------------------------------------------------------


def recognition(
    name: str, *, correct_per_dialogue: list[int], items: int = 4, own: int = 2, model: str = "m1"
) -> list[RecognitionAnswer]:
    """One dialogue per entry; each agent is asked ``items`` turns, ``own`` of them its own, the
    first ``correct`` answers right (per dialogue, pooled over both agents)."""
    rows = []
    for d, correct in enumerate(correct_per_dialogue):
        for i in range(items):
            right = i < correct
            rows.append(RecognitionAnswer(name, f"{name}-{d}", "A", model, i < own, 1.0 if right else 0.0, "me"))
    return rows


def test_recognition_all_correct_is_one() -> None:
    data = data_with(recognition=recognition("clone", correct_per_dialogue=[4] * 6))
    results = recognition_results(data)
    (row,) = results.rows
    assert row.accuracy.mean == 1.0 and row.accuracy.n == 24 and row.accuracy.clusters == 6
    assert row.base == 0.5 and row.chance == 0.5
    assert row.vs_chance.mean == pytest.approx(0.5)
    assert row.claims_own == 0.5  # right on every own and every partner turn
    text = table_rows(section_of(build_document(data), "Self-recognition"))[0]
    assert text[:6] == ["clone", "1.000 [uninformative]", "24 (6)", "0.500", "0.500", "0.500 [uninformative]"]


def test_recognition_half_correct_is_within_noise() -> None:
    """Dialogues alternate 3 and 1 right of 4: accuracy 0.500, its difference from chance 0."""
    data = data_with(recognition=recognition("clone", correct_per_dialogue=[3, 1] * 3))
    (row,) = recognition_results(data).rows
    assert row.accuracy.mean == pytest.approx(0.5)
    assert row.vs_chance.mean == pytest.approx(0.0) and row.vs_chance.within_noise
    found = sentences(section_of(build_document(data), "Self-recognition"))
    assert any(
        s.startswith("clone, recognition accuracy: within noise: the difference from chance (0.500)") for s in found
    )


def test_recognition_base_rate_sets_chance() -> None:
    """Three of four turns shown are the agent's own: always saying "me" scores 0.75."""
    (row,) = recognition_results(data_with(recognition=recognition("clone", correct_per_dialogue=[3] * 6, own=3))).rows
    assert row.base == 0.75 and row.chance == 0.75
    assert row.vs_chance.mean == pytest.approx(0.0)


def test_recognition_unreadable_counts_apart_and_control_and_cross() -> None:
    answers = recognition("base", correct_per_dialogue=[2] * 6)
    answers += recognition("clone", correct_per_dialogue=[4, 3] * 3)
    answers += recognition("mixed", correct_per_dialogue=[2] * 6, model="m2")
    answers.append(RecognitionAnswer("clone", "clone-0", "B", "m1", True, None, ""))  # named neither option
    answers.append(RecognitionAnswer("clone", "clone-0", "B", "m1", False, None, None))  # not scored yet
    data = data_with(recognition=answers)
    results = recognition_results(data)
    clone = next(r for r in results.rows if r.condition == "clone")
    assert (clone.asked, clone.unreadable, clone.unscored) == (26, 1, 1)
    assert clone.accuracy.mean == pytest.approx(21 / 24)
    assert clone.vs_control is not None and clone.vs_control.mean == pytest.approx(21 / 24 - 0.5)
    # Clone pairs (base and clone pooled: 33 of 48 right) minus cross-model pairs (12 of 24).
    assert results.cross is not None and results.cross.mean == pytest.approx(33 / 48 - 0.5)
    keys = {(t.key.condition, t.key.comparison) for t in recognition_tests(results)}
    assert keys == {
        ("base", "chance"),
        ("clone", "chance"),
        ("clone", "control"),
        ("mixed", "chance"),
        ("mixed", "control"),
        ("", "cross-model"),
    }
    section = section_of(build_document(data), "Self-recognition")
    assert any(isinstance(b, Section) and b.title == "By model, in cross-model conditions" for b in section.blocks)
    text = " ".join(b.text for b in section.blocks if isinstance(b, Paragraph))
    assert "1 answer is not scored yet" in text and "Panickssery" in text


# --- privileged self-knowledge ---------------------------------------------------------------


def knowledge(name: str, gap: float, *, with_c: bool = True) -> list[SelfKnowledgeScore]:
    """6 dialogues × 4 turns; a = −10 − t, b = a − (gap + 0.1·d), c = b − (1 + 0.2·(t mod 2)).
    So (a)−(b) averages gap + 0.25 and (b)−(c) averages 1.1."""
    rows = []
    for d in range(6):
        for t in range(1, 5):
            a = -10.0 - t
            b = a - (gap + 0.1 * d)
            c = b - (1.0 + 0.2 * (t % 2))
            speaker = "A" if t % 2 else "B"
            terms = [("a", a), ("b", b)] + ([("c", c)] if with_c else [])
            rows += [SelfKnowledgeScore(name, f"{name}-{d}", t, speaker, term, v) for term, v in terms]
    return rows


def test_self_knowledge_known_differences() -> None:
    data = data_with(
        self_knowledge=knowledge("base", 0.0, with_c=False) + knowledge("clone", 2.0) + knowledge("mixed", 1.0),
        measures={"clone": ConditionMeasures(self_knowledge=True)},
    )
    results = self_knowledge_results(data)
    base, clone, mixed = results.rows
    assert clone.a.mean == pytest.approx(-12.5)
    assert clone.a_b.mean == pytest.approx(2.25) and clone.a_b.n == 24 and clone.a_b.clusters == 6
    assert clone.b_c.mean == pytest.approx(1.1) and mixed.a_b.mean == pytest.approx(1.25)
    assert base.a_b.mean == pytest.approx(0.25) and base.c.mean is None and base.b_c.mean is None
    assert clone.vs_control is not None and clone.vs_control.mean == pytest.approx(2.0)
    assert results.cross_a_b is not None
    # Clone pairs (base and clone: 0.25 and 2.25) minus the cross-model pair (1.25).
    assert results.cross_a_b.mean == pytest.approx(1.25 - 1.25)
    keys = [(t.key.name, t.key.condition, t.key.comparison) for t in self_knowledge_tests(results)]
    assert ("b-c", "base", "zero") not in keys  # no (c) to compare
    assert ("a-b", "clone", "control") in keys and ("b-c", "", "cross-model") in keys
    found = sentences(section_of(build_document(data), "Privileged self-knowledge"))
    line = next(s for s in found if s.startswith("clone, (a) own context: "))
    assert line.startswith("clone, (a) own context: 2.250 above (b) the partner's view [") and "BH-adjusted" in line


def test_self_knowledge_on_but_not_scored() -> None:
    data = data_with(measures={"clone": ConditionMeasures(self_knowledge=True)})
    section = section_of(build_document(data), "Privileged self-knowledge")
    (block,) = section.blocks
    assert isinstance(block, Paragraph)
    assert block.text == (
        "Self-knowledge is on in `clone` but not scored: run `clonechat score measures --scorer self_knowledge` "
        "(needs a model that can score given text: docs/surprisal.md)."
    )


# --- interjections ---------------------------------------------------------------------------


def talk(name: str, before: float, after: float, *, interject: bool) -> dict[str, list[object]]:
    """6 dialogues of 6 agent turns; an interjection at turn index 3 when ``interject`` (the
    agent turns are then 1, 2, 4, 5, 6, 7), else turns 1..6 with none. Overlap is ``before`` (+
    0.01·d) on turns before index 3 and ``after`` (+ 0.02·d) from it on; partner chrf is 0.3 before
    and 0.5 + 0.01·d after. A stray overlap row *at* the interjection's index is 9.0: the
    interjection's own turn belongs to neither side."""
    points, overlaps, predictions = [], [], []
    for d in range(6):
        dialogue = f"{name}-{d}"
        turns = [1, 2, 4, 5, 6, 7] if interject else [1, 2, 3, 4, 5, 6]
        if interject:
            points.append(InterjectionPoint(name, dialogue, 3, "B"))
            points.append(InterjectionPoint(name, dialogue, 6, None))  # a later one: the first counts
            overlaps.append(TurnOverlap(name, dialogue, 3, "researcher", 9.0))
        for t in turns:
            value = before + 0.01 * d if t < 3 else after + 0.02 * d
            overlaps.append(TurnOverlap(name, dialogue, t, "A" if t % 2 else "B", value))
            chrf = 0.3 if t < 3 else 0.5 + 0.01 * d
            predictions.append(PredictionScore(name, dialogue, t, "partner", "chrf", chrf, 0.2))
    return {"interjections": points, "overlaps": overlaps, "predictions": predictions}


def merged(*parts: dict[str, list[object]]) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for part in parts:
        for key, rows in part.items():
            out.setdefault(key, []).extend(rows)
    return out


def test_interjection_split_after_minus_before() -> None:
    """clone: overlap before 0.2 + 0.01·d, after 0.6 + 0.02·d → change 0.4 + 0.01·d, mean 0.425.
    The control has no interjection and drifts from 0.3 + 0.01·d to 0.35 + 0.02·d: change
    0.05 + 0.01·d, mean 0.075, so the difference in change is 0.35. chrf changes by 0.2 + 0.01·d: mean 0.225."""
    rows = merged(
        talk("clone", 0.2, 0.6, interject=True),
        talk("base", 0.3, 0.35, interject=False),
        talk("mixed", 0.2, 0.2, interject=True),
    )
    data = data_with(**rows, measures={"clone": ConditionMeasures(interjections=(ScheduledInterjection(3, "B"),))})
    results = interjection_results(data)
    by = {(r.condition, r.measure): r for r in results.rows}
    assert {c for c, _ in by} == {"clone", "mixed"}  # the control is split only to be compared with
    overlap = by[("clone", OVERLAP)]
    assert overlap.before.mean == pytest.approx(0.225)
    assert overlap.after.mean == pytest.approx(0.65)
    assert overlap.change.mean == pytest.approx(0.425) and overlap.change.clusters == 6
    assert overlap.vs_control is not None and overlap.vs_control.mean == pytest.approx(0.35)
    assert overlap.where == "turn 3, to B"
    assert by[("clone", "chrf (partner prediction)")].change.mean == pytest.approx(0.225)
    (cross_measures,) = [m for m, _ in results.cross if m == OVERLAP]
    assert cross_measures == OVERLAP
    found = sentences(section_of(build_document(data), "Interjections"))
    line = next(s for s in found if s.startswith("clone, overlap_partner, after the interjection: "))
    assert line.startswith("clone, overlap_partner, after the interjection: 0.425 above before it [")


def test_interjection_self_knowledge_difference() -> None:
    """(a)−(b) is 1 before the interjection and 3 (+0.1·d) after: change 2.25 on average."""
    rows = []
    for d in range(6):
        for t in (1, 2, 4, 5):
            gap = 1.0 if t < 3 else 3.0 + 0.1 * d
            rows += [
                SelfKnowledgeScore("clone", f"clone-{d}", t, "A", "a", -5.0),
                SelfKnowledgeScore("clone", f"clone-{d}", t, "A", "b", -5.0 - gap),
            ]
    points = [InterjectionPoint("clone", f"clone-{d}", 3, None) for d in range(6)]
    results = interjection_results(data_with(self_knowledge=rows, interjections=points, control=None))
    (row,) = results.rows
    assert row.measure == SELF_KNOWLEDGE and row.where == "turn 3, to both"
    assert row.change.mean == pytest.approx(2.25) and row.vs_control is None


def test_interjection_needs_turns_on_both_sides() -> None:
    """A dialogue whose interjection came after its last measured turn does not count."""
    points = [InterjectionPoint("clone", "clone-0", 9, "A")]
    overlaps = [TurnOverlap("clone", "clone-0", t, "A", 0.5) for t in (1, 2, 3)]
    section = section_of(build_document(data_with(interjections=points, overlaps=overlaps)), "Interjections")
    (block,) = section.blocks
    assert isinstance(block, Paragraph) and "no per-turn measure on both sides" in block.text


# --- convergence -----------------------------------------------------------------------------


def endings(name: str, converged_at: list[int | None], *, stop: bool = False) -> list[DialogueEnding]:
    out = []
    for d, at in enumerate(converged_at):
        reason = "converged" if stop and at is not None else "max_turns"
        out.append(DialogueEnding(f"{name}-{d}", name, reason, at, "completed", 10))
    return out


def test_convergence_share_and_turn() -> None:
    """2 of 4 converge, at agent turns 3 and 5: share 0.500, mean and median turn 4."""
    rows = endings("clone", [3, None, 5, None])
    rows.append(DialogueEnding("clone-failed", "clone", "error", None, "failed", 2))  # left out
    data = data_with(endings=rows, measures={"clone": ConditionMeasures(convergence=RULE)})
    results = convergence_results(data)
    (row,) = results.rows
    assert row.share.mean == 0.5 and (row.converged, row.dialogues, row.left_out) == (2, 4, 1)
    assert row.turn.mean == 4.0 and row.median_turn == 4.0
    assert "no convergence rule" in results.control_note
    section = section_of(build_document(data), "Convergence")
    assert table_rows(section)[0][:6] == [
        "clone",
        "overlap_partner ≥ 0.80 for 3 turns (mark)",
        "0.500 [too few dialogues]",
        "2 of 4",
        "4.000 [too few dialogues]",
        "4",
    ]
    assert (
        "clone: 2 of 4 dialogues converged (0.500 [too few dialogues]), at agent turn 4.0 on average (median 4)."
        in (sentences(section))
    )


def test_convergence_vs_control_and_cross() -> None:
    """Same rule everywhere (stop in one, mark in the others): base 1 of 6, clone 4 of 6 (two
    stopped by the rule), mixed 2 of 6."""
    rows = endings("base", [2, None, None, None, None, None])
    rows += endings("clone", [3, 4, 3, None, 6, None], stop=True)
    rows += endings("mixed", [5, None, 4, None, None, None])
    stop = ConvergenceSetting(RULE.metric, RULE.threshold, RULE.turns, "stop")
    measures = {
        "base": ConditionMeasures(convergence=RULE),
        "clone": ConditionMeasures(convergence=stop),
        "mixed": ConditionMeasures(convergence=RULE),
    }
    results = convergence_results(data_with(endings=rows, measures=measures))
    base, clone, mixed = results.rows
    assert clone.stopped == 4 and clone.share.mean == pytest.approx(4 / 6)
    assert clone.vs_control is not None and clone.vs_control.mean == pytest.approx(3 / 6)
    assert base.vs_control is None and mixed.share.mean == pytest.approx(2 / 6)
    ((rule, est),) = results.cross
    assert rule == RULE and est.mean == pytest.approx(5 / 12 - 2 / 6)
    keys = [(t.key.condition, t.key.comparison) for t in convergence_tests(results)]
    assert keys == [("clone", "control"), ("mixed", "control"), ("", "cross-model")]


# --- the whole document ----------------------------------------------------------------------


def test_tests_section_lists_them() -> None:
    """Every new comparison goes through the single judge() call: it shows in Statistical tests."""
    document = build_document(data_with(recognition=recognition("clone", correct_per_dialogue=[3, 1] * 3)))
    tests = section_of(document, "Statistical tests")
    labels = [row[0] for row in table_rows(tests)]
    assert "clone, recognition accuracy vs chance (0.500)" in labels


def test_sections_in_order_and_empty_say_so() -> None:
    document = build_document(data_with())
    titles = [s.title for s in document.sections]
    start = titles.index("Reports back")
    assert titles[start : start + 6] == ["Reports back", *NEW_SECTIONS, "Statistical tests"]
    for title, text in EMPTY.items():
        (block,) = section_of(document, title).blocks
        assert isinstance(block, Paragraph) and block.text.startswith(text), title


SPEC = """\
name = "measures"
replicates = 5
max_turns = 6
seed = 3
model_a = "scripted"
control = "quiet"

[prediction]

[recognition]
items = 4

[self_knowledge]

[convergence]
metric = "overlap_partner"
threshold = 0.4
turns = 2
action = "mark"

[[interjections]]
at = 3
template = "reveal-clone"
to = "B"

[[conditions]]
name = "quiet"
template = "told-other-ai"
interjections = []

[[conditions]]
name = "clone"
template = "told-other-ai"

[[conditions]]
name = "cross"
template = "told-other-ai"
model_b = "scripted2"

[models.scripted2]
provider = "scripted"
"""


def _score_like_a_model(db_path: Path) -> None:
    """The scripted model's answers name neither option and it cannot score given text, so the
    scores a real model would give are stored as it would store them: every recognition answer
    claims "me" (right exactly on the agent's own turns), and each turn's log-probabilities have
    (a)−(b) = 2 + turn index mod 3."""
    with open_existing(db_path) as reader:
        eid = require_experiment(reader, "measures").id
        nodes = transcript_nodes(reader, eid)
    speakers = {n.id: n.speaker for n in nodes}
    rows = []
    for n in nodes:
        if n.kind == "recognition" and n.target_node_id is not None:
            right = speakers[n.target_node_id] == n.speaker
            detail = {"answer": "me", "claim": "self", "truth": "self" if right else "partner"}
            rows.append(writes.NewScore(n.id, "recognition", "2", 1.0 if right else 0.0, detail))
        elif n.kind == "turn" and n.speaker != "researcher":
            rows.append(writes.NewScore(n.id, "logprob_own", "1", -10.0, {}))
            rows.append(writes.NewScore(n.id, "logprob_partner_view", "1", -12.0 - n.turn_index % 3, {}))
    with Database.open(db_path, create=False) as db:
        db.write(lambda conn: writes.insert_scores(conn, rows))


def test_report_from_a_scripted_batch(tmp_path: Path) -> None:
    spec, db = tmp_path / "spec.toml", tmp_path / "runs.db"
    spec.write_text(SPEC)
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(db)])
    assert result.exit_code == 0, result.output

    with open_existing(db) as reader:
        unscored = load_report_data(reader, "measures")
    assert {p.condition for p in unscored.interjections} == {"clone", "cross"}
    assert {p.turn_index for p in unscored.interjections} == {3}
    assert all(e.converged_at is not None for e in unscored.endings)  # overlap 0.6, 0.45, ...: met at turn 3
    assert unscored.recognition and all(r.correct is None for r in unscored.recognition)
    knowledge = section_of(build_document(unscored), "Privileged self-knowledge")
    assert "not scored: run `clonechat score measures --scorer self_knowledge`" in knowledge.blocks[0].text  # type: ignore[union-attr]

    _score_like_a_model(db)
    with open_existing(db) as reader:
        data = load_report_data(reader, "measures")
    document = build_document(data)
    for title in NEW_SECTIONS:
        section = section_of(document, title)
        assert not section.blocks[0].text.startswith(EMPTY[title]), title  # type: ignore[union-attr]
        assert any(isinstance(b, Table) for b in section.blocks), title
    recognition_rows = table_rows(section_of(document, "Self-recognition"))
    assert [r[0] for r in recognition_rows] == ["quiet", "clone", "cross (cross-model)"]
    assert all(r[1].startswith("0.500") and r[3] == "0.500" and r[6] == "1.000" for r in recognition_rows)
    knowledge_rows = table_rows(section_of(document, "Privileged self-knowledge"))
    assert all(r[1] == "-10.000 [uninformative]" for r in knowledge_rows)
    measures = {r[2] for r in table_rows(section_of(document, "Interjections"))}
    assert measures == {"chrf (partner prediction)", "token_f1 (partner prediction)", SELF_KNOWLEDGE, OVERLAP}
    convergence_rows = table_rows(section_of(document, "Convergence"))
    assert [r[3] for r in convergence_rows] == ["5 of 5"] * 3
    # Every section's comparisons went through the one judge() call: Statistical tests lists them.
    labels = " | ".join(row[0] for row in table_rows(section_of(document, "Statistical tests")))
    for label in ("recognition accuracy vs chance", "(a) own context vs (b)", "after the interjection vs before it"):
        assert label in labels
    assert "share converged vs the control `quiet`" in labels

    path = write_report(data, tmp_path / "report")
    text = path.read_text(encoding="utf-8")
    positions = [text.index(f"## {title}\n") for title in ["Reports back", *NEW_SECTIONS, "Statistical tests"]]
    assert positions == sorted(positions)
