"""The scores screen and its loaders, on a real experiment run with the deterministic scripted model.

One experiment (2 conditions × 2 replicates × 4 turns, partner and self predictions, one
coordination task) is run once through ``clonechat batch`` (which scores it); tests that need an
unscored experiment get a copy with the score rows deleted. Loader values are checked against
plain SQL averages, so the loaders are not tested against themselves.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Select, Static
from typer.testing import CliRunner

from clonechat.cli import app as cli_app
from clonechat.errors import NotFoundError
from clonechat.tui import scores_data
from clonechat.tui.screens import HasPaletteCommands
from clonechat.tui.screens.scores import ScoresScreen

pytestmark = pytest.mark.anyio

EXPERIMENT = "scores"
CONDITIONS = ("base", "aware")
VARIANTS = ("partner", "self")
REPLICATES = 2
TURNS = 4
SIZE = (120, 40)
SPEC = f"""\
name = "{EXPERIMENT}"
replicates = {REPLICATES}
max_turns = {TURNS}
seed = 5
model_a = "scripted"

[prediction]
self_predict = true

[coordination]
tasks = ["number"]

[[conditions]]
name = "base"
template = "no-frame"

[[conditions]]
name = "aware"
template = "clone-aware"
"""


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scores")
    spec, db = folder / "spec.toml", folder / "runs.db"
    spec.write_text(SPEC)
    result = CliRunner().invoke(cli_app, ["batch", str(spec), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


def copy_db(source: Path, target: Path) -> Path:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


@pytest.fixture
def unscored(built: Path, tmp_path: Path) -> Path:
    db = copy_db(built, tmp_path / "unscored.db")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM score")
        conn.commit()
    return db


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return list(conn.execute(sql, params).fetchall())


_AVG = """
SELECT avg(s.value), count(*) FROM score s JOIN node n ON n.id = s.node_id
JOIN dialogue d ON d.id = n.dialogue_id JOIN condition c ON c.id = d.condition_id
WHERE n.kind = 'prediction' AND s.scorer = ? AND c.name = ? AND n.variant = ? AND n.turn_index = ?
"""


def file_hash(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


# -- loaders ----------------------------------------------------------------------------------


def test_condition_accuracy_matches_sql(built: Path) -> None:
    before = file_hash(built)
    accuracy = scores_data.condition_accuracy(built, EXPERIMENT, "chrf")
    assert accuracy.scored and accuracy.predictions == len(CONDITIONS) * REPLICATES * TURNS * len(VARIANTS)
    assert accuracy.scorers[:2] == ("chrf", "token_f1")
    assert not any(name.endswith("~shuffled") for name in accuracy.scorers)
    assert sorted(accuracy.series) == sorted(CONDITIONS)
    for condition in CONDITIONS:
        assert sorted(accuracy.series[condition]) == sorted(VARIANTS)
        for variant in VARIANTS:
            points = accuracy.series[condition][variant]
            assert [p.turn_index for p in points] == list(range(1, TURNS + 1))
            assert all(p.n == REPLICATES for p in points)
        assert [p.turn_index for p in accuracy.baseline[condition]] == list(range(1, TURNS + 1))
    mean, n = query(built, _AVG, "chrf", "aware", "self", 2)[0]
    point = accuracy.series["aware"]["self"][1]
    assert point.n == n and point.mean == pytest.approx(mean)
    base_sql = _AVG.replace(" AND n.variant = ?", "")
    base_mean, base_n = query(built, base_sql, "chrf~shuffled", "aware", 3)[0]
    baseline = accuracy.baseline["aware"][2]
    assert (baseline.turn_index, baseline.n) == (3, base_n) and baseline.mean == pytest.approx(base_mean)
    assert file_hash(built) == before  # read-only: the file is untouched


def test_turn_accuracy_of_one_dialogue(built: Path) -> None:
    dialogue = str(query(built, "SELECT id FROM dialogue ORDER BY id LIMIT 1")[0][0])
    points = scores_data.turn_accuracy(built, dialogue, "token_f1")
    assert len(points) == TURNS * len(VARIANTS)
    assert [(p.turn_index, p.variant) for p in points[:2]] == [(1, "partner"), (1, "self")]
    sql = """SELECT s.value FROM score s JOIN node n ON n.id = s.node_id
             WHERE n.dialogue_id = ? AND n.turn_index = 3 AND n.variant = 'partner' AND s.scorer = ?"""
    assert points[4].value == pytest.approx(query(built, sql, dialogue, "token_f1")[0][0])
    assert points[4].baseline == pytest.approx(query(built, sql, dialogue, "token_f1~shuffled")[0][0])
    with pytest.raises(NotFoundError):
        scores_data.turn_accuracy(built, "no-such-dialogue")


def test_coordination_summary(built: Path) -> None:
    rows = scores_data.coordination_summary(built, EXPERIMENT)
    assert [(r.condition, r.task, r.phase) for r in rows] == [
        (c, "number", p) for c in CONDITIONS for p in ("before", "after")
    ]
    assert all(r.pairs == REPLICATES and 0.0 <= r.match_rate <= 1.0 for r in rows)
    assert all(r.chance is not None and 0.0 < r.chance <= 1.0 for r in rows)
    with pytest.raises(NotFoundError):
        scores_data.coordination_summary(built, "nope")


def test_unscored_experiment_is_reported_not_computed(unscored: Path) -> None:
    accuracy = scores_data.condition_accuracy(unscored, EXPERIMENT)
    assert not accuracy.scored and accuracy.predictions > 0 and accuracy.series == {}
    assert query(unscored, "SELECT count(*) FROM score") == [(0,)]


# -- the screen -------------------------------------------------------------------------------


class ScoresApp(App[None]):
    """A bare app that opens the scores screen, as the real app will."""

    def __init__(self, db: Path | str, dialogue_id: str | None = None) -> None:
        super().__init__()
        self.db, self.dialogue_id = db, dialogue_id

    def on_mount(self) -> None:
        self.push_screen(ScoresScreen(self.db, experiment=EXPERIMENT, dialogue_id=self.dialogue_id))


async def wait_for(pilot: Pilot[None], predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the TUI"
        await pilot.pause(0.02)


async def settle(pilot: Pilot[None]) -> ScoresScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ScoresScreen) and pilot.app.screen.settled)
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, ScoresScreen)
    return screen


async def test_screen_draws_one_line_per_condition_and_variant(built: Path) -> None:
    async with ScoresApp(built).run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        lines = [s for s in screen.plotted if not s.baseline]
        assert sorted(s.label for s in lines) == sorted(f"{c} · {v}" for c in CONDITIONS for v in VARIANTS)
        assert sorted(s.label for s in screen.plotted if s.baseline) == sorted(f"{c} · shuffled" for c in CONDITIONS)
        aware_self = next(s for s in lines if s.label == "aware · self")
        assert aware_self.turns == tuple(range(1, TURNS + 1))
        assert aware_self.values[1] == pytest.approx(query(built, _AVG, "chrf", "aware", "self", 2)[0][0])
        assert len(screen.plotted) == len(CONDITIONS) * len(VARIANTS) + len(CONDITIONS)
        # The rendered chart is plotext's figure of those lines: its title and legend are in it.
        rendered = screen.query_one("#accuracy").render()
        assert "chrf of predictions by turn" in str(rendered) and "aware · self" in str(rendered)
        table = screen.query_one("#coordination", DataTable)
        assert table.row_count == len(CONDITIONS) * 2
        assert [str(c) for c in table.get_row_at(0)[:4]] == ["base", "number", "before", str(REPLICATES)]
        assert screen.query_one("#scores-message").display is False


async def test_switching_scorer_reloads(built: Path) -> None:
    async with ScoresApp(built).run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        commands = {c.name: c for c in screen.palette_commands()}
        assert isinstance(screen, HasPaletteCommands)
        assert {"Scorer: chrf", "Scorer: token_f1", "Scorer: first_word", "Back"} <= set(commands)
        screen.query_one("#scorer", Select).value = "token_f1"
        await wait_for(pilot, lambda: screen.settled and screen.view is not None)
        assert screen.view is not None and screen.view.accuracy.scorer == "token_f1"
        line = next(s for s in screen.plotted if s.label == "base · partner")
        assert line.values[0] == pytest.approx(query(built, _AVG, "token_f1", "base", "partner", 1)[0][0])
        commands["Scorer: first_word"].callback()
        await pilot.pause()
        await wait_for(pilot, lambda: screen.settled)
        assert screen.view is not None and screen.view.accuracy.scorer == "first_word"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(pilot.app.screen, ScoresScreen)


async def test_one_dialogue(built: Path) -> None:
    dialogue = str(query(built, "SELECT id FROM dialogue ORDER BY id LIMIT 1")[0][0])
    async with ScoresApp(built, dialogue).run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        assert len([s for s in screen.plotted if not s.baseline]) == len(VARIANTS)
        assert screen.query_one("#coordination", DataTable).row_count == 2


async def test_unscored_experiment_says_so(unscored: Path) -> None:
    async with ScoresApp(unscored).run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        message = screen.query_one("#scores-message", Static)
        assert message.display is True
        assert "not scored yet" in str(message.render()) and f"clonechat score {EXPERIMENT}" in str(message.render())
        assert screen.query_one("#accuracy").display is False
        assert screen.plotted == []
        # Coordination needs no scores: the table is still there.
        assert screen.query_one("#coordination", DataTable).row_count == len(CONDITIONS) * 2


async def _settled(pilot: Pilot[None]) -> None:
    await settle(pilot)


def test_snapshot_scores_screen(built: Path, snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(ScoresApp(built), terminal_size=SIZE, run_before=_settled)


@pytest.fixture
def converging(tmp_path: Path) -> Path:
    """The experiment with a convergence rule the scripted pair meets: its overlap with the
    partner alternates 0.6 and 0.45, so 0.4 for 2 turns in a row is met at turn 3."""
    spec, db = tmp_path / "spec.toml", tmp_path / "runs.db"
    rule = '[convergence]\nmetric = "overlap_partner"\nthreshold = 0.4\nturns = 2\n\n'
    spec.write_text(SPEC.replace("[prediction]", rule + "[prediction]"))
    result = CliRunner().invoke(cli_app, ["batch", str(spec), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


async def test_measures_table_shows_the_newer_measures_as_the_report_does(built: Path, converging: Path) -> None:
    """The convergence shares in the screen's measures table, as the report computes them; the
    plain experiment has no such table."""
    db = converging
    assert query(db, "SELECT stop_reason, count(*) FROM dialogue GROUP BY 1") == [("converged", 4)]
    rows = scores_data.load_scores(db, EXPERIMENT).measures
    assert [(r.measure, r.condition, r.n) for r in rows] == [
        ("converged (share)", "base", "2 of 2"),
        ("converged (share)", "aware", "2 of 2"),
    ]
    async with ScoresApp(db).run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        table = screen.query_one("#measures", DataTable)
        assert table.display is True and table.row_count == 2
        assert [str(c) for c in table.get_row_at(0)] == ["converged (share)", "base", rows[0].value, "2 of 2", "–"]
        # The interval's note is text, not markup (as markup "[too few dialogues]" vanishes).
        assert rows[0].value == "1.000 [too few dialogues]"
        rendered = table.render_line(1).text
        assert "[too few dialogues]" in rendered, rendered
    async with ScoresApp(built).run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        assert screen.query_one("#measures", DataTable).display is False
