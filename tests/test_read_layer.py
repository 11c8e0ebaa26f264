"""The read layer's definitions hold everywhere they are shown.

A forked dialogue has more turn nodes than turns in its current conversation. ``clonechat ls``,
the TUI browser, the ``v_dialogue`` view and the report must all give the same number: the
head's turn index (``clonechat.read.dialogues``). Built with the real writer, the scripted model
and a real fork; read back through the CLI as a subprocess, the TUI with Pilot, raw SQL and
the report's own loader. Every test runs on an SQLite file and on a PostgreSQL database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from textual.widgets import DataTable
from typer.testing import CliRunner

from clonechat.analysis.load import load_report_data
from clonechat.branching import fork_with_edit
from clonechat.cli.app import app as cli_app
from clonechat.location import DbLocation
from clonechat.read.connect import open_reader, snapshot
from clonechat.read.dialogues import dialogue_summaries, resolve_dialogue
from clonechat.read.export_rows import experiment_tables
from clonechat.read.sides import anchor, group_by_anchor
from clonechat.read.tree import children, newest_leaf, roots, tree_nodes, tree_place
from clonechat.session import DialogueRequest
from clonechat.store.database import Database
from clonechat.tui.live import LiveDialogue, UiEvent
from tests.conftest import on_both_backends
from tests.helpers import raw_sql
from tests.test_tui_browser import SIZE, RecordingApp, settle

pytestmark = [pytest.mark.anyio, on_both_backends]


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio only."""
    return "asyncio"


async def _ignore(_event: UiEvent) -> None:
    pass


async def forked_dialogue(db: Database) -> str:
    """Six turns, then a fork of turn 2 continued to the end: the head is the fork's turn 6
    (6 turns in the current conversation) while 6 + 5 = 11 turn nodes are stored."""
    live = LiveDialogue(db, _ignore)
    outcome = await live.start(DialogueRequest(model_a="scripted", max_turns=6, seed=3))
    assert live.dialogue_id is not None
    second = list(outcome.path)[2]
    edit = await fork_with_edit(db, second.id, "An edited second turn.")
    resumed = await LiveDialogue(db, _ignore).resume(live.dialogue_id, leaf_id=edit.id)
    assert [n.turn_index for n in resumed.path] == [0, 1, 2, 3, 4, 5, 6]
    return live.dialogue_id


def sql_rows(db_path: DbLocation, sql: str, **params: object) -> list[tuple[object, ...]]:
    """``sql`` (``:name`` parameters) answered by plain SQL, not by the read layer."""
    with raw_sql(db_path) as conn:
        return [tuple(row) for row in conn.execute(sql, params)]


def ls_listing(db_path: DbLocation) -> str:
    """``clonechat ls`` as a user runs it (a subprocess), its table as printed."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "clonechat", "ls", "--db", str(db_path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=True).stdout


async def test_ls_browser_view_and_report_agree_on_a_forked_dialogues_turns(db: Database, db_path: DbLocation) -> None:
    dialogue_id = await forked_dialogue(db)
    db.close()
    turn_nodes = "SELECT count(*) FROM node WHERE dialogue_id = :d AND kind = 'turn'"
    assert sql_rows(db_path, turn_nodes, d=dialogue_id) == [(11,)]

    (view_turns,) = sql_rows(db_path, "SELECT turns FROM v_dialogue WHERE dialogue_id = :d", d=dialogue_id)[0]

    listing = await anyio.to_thread.run_sync(ls_listing, db_path)
    header = next(line for line in listing.splitlines() if " turns " in line)
    row = next(line for line in listing.splitlines() if dialogue_id in line)
    ls_turns = int(row[header.index(" turns ") :].split()[0])

    app = RecordingApp(db_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await settle(pilot)
        table = screen.query_one("#dialogues", DataTable)
        browser_turns = int(str(table.get_row_at(0)[5]))

    with open_reader(db_path) as reader:
        assert reader is not None
        (condition,) = load_report_data(reader, "adhoc").conditions
    report_turns = condition.turns

    assert (view_turns, ls_turns, browser_turns, report_turns) == (6, 6, 6, 6)


def test_a_prediction_sits_with_the_turn_it_predicts_and_other_side_answers_with_their_parent() -> None:
    assert anchor("prediction", "P", "T") == "T"
    assert anchor("coordination", "P", None) == "P"
    assert anchor("report", "P", "T") == "P"

    class Side:
        def __init__(self, kind: str, parent_id: str, target_node_id: str | None) -> None:
            self.kind, self.parent_id, self.target_node_id = kind, parent_id, target_node_id

    first, second, third = Side("prediction", "1", "2"), Side("report", "2", None), Side("prediction", "1", "2")
    assert group_by_anchor([first, second, third]) == {"2": [first, second, third]}


def test_an_export_holds_only_the_prompts_its_own_experiment_refers_to(tmp_path: Path, db_path: DbLocation) -> None:
    """Another experiment's prediction prompts (hashes in its dialogues' settings) stay out."""
    plain = (
        'name = "plain"\nreplicates = 1\nmax_turns = 2\nmodel_a = "scripted"\n[[conditions]]\ntemplate = "no-frame"\n'
    )
    predicting = plain.replace('"plain"', '"predicting"') + "[prediction]\nself_predict = true\n"
    for name, spec in (("plain", plain), ("predicting", predicting)):
        (tmp_path / f"{name}.toml").write_text(spec)
        result = CliRunner().invoke(cli_app, ["batch", str(tmp_path / f"{name}.toml"), "--db", str(db_path)])
        assert result.exit_code == 0, result.output
    with open_reader(db_path) as reader:
        assert reader is not None
        plain_prompts = experiment_tables(reader, "plain")["prompt"]
        predicting_prompts = experiment_tables(reader, "predicting")["prompt"]
    columns, rows = plain_prompts
    exported = {row[columns.index("hash")] for row in rows}
    referenced = {
        str(h)
        for (h,) in sql_rows(
            db_path,
            "SELECT system_prompt_a FROM dialogue UNION SELECT system_prompt_b FROM dialogue "
            "UNION SELECT opening_prompt FROM dialogue",
        )
    }
    prediction_only = {row[0] for row in predicting_prompts[1]} - referenced
    assert prediction_only, "the predicting experiment stores prediction prompts of its own"
    assert not exported & prediction_only
    assert exported <= referenced


async def test_a_snapshot_reads_one_moment_while_another_process_writes(db: Database, db_path: DbLocation) -> None:
    """Every read function given a snapshot sees the database as at its first read, so a report
    written during a batch never mixes moments; outside it, the newest data."""
    await forked_dialogue(db)
    with open_reader(db_path) as reader:
        assert reader is not None
        with snapshot(reader) as moment:
            before = dialogue_summaries(moment, limit=None)
            assert len(before) == 1
            # The writer commits a second dialogue while the snapshot is open.
            await forked_dialogue(db)
            assert dialogue_summaries(moment, limit=None) == before
            assert len(load_report_data(moment, "adhoc").conditions) == 1
            (condition,) = load_report_data(moment, "adhoc").conditions
            assert condition.dialogues == 1
        assert len(dialogue_summaries(reader, limit=None)) == 2
        (condition,) = load_report_data(reader, "adhoc").conditions
        assert condition.dialogues == 2


async def test_the_tree_and_the_text_filter_read_alike_on_both_backends(db: Database) -> None:
    """The tree's walks (the newest leaf is one recursive query, typed the same on PostgreSQL)
    and the browser's text filter (case-insensitive on both, ``%`` and ``_`` literal)."""
    dialogue_id = await forked_dialogue(db)
    dialogue = resolve_dialogue(db, dialogue_id)
    assert dialogue.head_node_id is not None
    (root,) = roots(db, dialogue_id)
    assert newest_leaf(db, root.id) == dialogue.head_node_id
    assert len(tree_nodes(db, dialogue_id)) == 1 + 11
    place = tree_place(db, dialogue_id, dialogue.head_node_id)
    assert place is not None and place.turn_index == 6
    assert all(child.created_at.tzinfo is not None for child in children(db, root.id))
    assert [d.id for d in dialogue_summaries(db, text="AN EDITED second")] == [dialogue_id]
    assert dialogue_summaries(db, text="edited%turn") == []
