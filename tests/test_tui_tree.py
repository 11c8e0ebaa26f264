"""Tree work on the dialogue screen (scripted model, real SQLite): the DialogueTree itself,
moving between sibling branches, parent and child with keys, bookmarks, forking an edited
message and continuing from it with other parameters, and comparing two branches."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.widgets import Input, Static, TextArea

from clonechat.branching import fork_with_edit
from clonechat.errors import NotFoundError
from clonechat.read.dialogues import prompt_text, resolve_dialogue
from clonechat.session import DialogueRequest
from clonechat.store.database import Database
from clonechat.tui.live import LiveDialogue, UiEvent
from clonechat.tui.screens.compare import CompareScreen
from clonechat.tui.screens.dialogue import DialogueScreen
from clonechat.tui.screens.fork import ForkScreen
from clonechat.tui.tree import DialogueTree, StoredTree, TreeNode
from clonechat.tui.widgets.transcript import TranscriptView
from tests.tui_helpers import Host

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


def request(turns: int) -> DialogueRequest:
    return DialogueRequest(model_a="scripted", max_turns=turns, seed=5)


async def ignore(_event: UiEvent) -> None:
    pass


async def branched(db: Database) -> tuple[str, list[str], list[str]]:
    """A 3-turn dialogue, then turn 2 edited and continued: the original path and the fork's."""
    live = LiveDialogue(db, ignore)
    await live.start(request(3))
    assert live.dialogue_id is not None
    original = ids_of(db, live.dialogue_id)
    fork = await fork_with_edit(db, original[2], "an edited second turn")
    await LiveDialogue(db, ignore).resume(live.dialogue_id, leaf_id=fork.id)
    return live.dialogue_id, original, ids_of(db, live.dialogue_id)


def ids_of(db: Database, dialogue_id: str, leaf: str | None = None) -> list[str]:
    from clonechat.tui.transcript_source import SqlitePathSource

    return SqlitePathSource(db, dialogue_id, leaf_id=leaf).ids


def path_ids(view: TranscriptView) -> list[str]:
    return [view.node_at(i).id for i in range(view.node_count)]


def status(screen: DialogueScreen) -> str:
    return str(screen.query_one("#status", Static).render())


def test_dialogue_tree_on_a_hand_built_tree() -> None:
    t0 = datetime(2024, 1, 1)

    def n(id: str, parent: str | None, turn: int, minute: int) -> TreeNode:
        return TreeNode(id, parent, "A" if turn % 2 else "B", turn, t0 + timedelta(minutes=minute))

    #   r ─ a1 ─ b1
    #     └ a2 ─ c1
    #          └ c2   (c2 newest)
    tree = DialogueTree([n("r", None, 0, 0), n("a2", "r", 1, 2), n("a1", "r", 1, 1), n("b1", "a1", 2, 3)])
    tree.add(n("c2", "a2", 2, 9))
    tree.add(n("c1", "a2", 2, 5))
    assert tree.parent("a1") == "r" and tree.parent("r") is None
    assert tree.children("r") == ["a1", "a2"]  # oldest first, whatever the insertion order
    assert tree.children("a2") == ["c1", "c2"]
    assert tree.siblings("a2") == ["a1", "a2"] and tree.siblings("r") == ["r"]
    assert tree.next_sibling("a1") == "a2" and tree.next_sibling("a2") is None
    assert tree.prev_sibling("a2") == "a1" and tree.prev_sibling("a1") is None
    assert tree.sibling_position("c2") == (2, 2)
    assert tree.leaf_of("a1") == "b1" and tree.leaf_of("a2") == "c2" and tree.leaf_of("r") == "c2"
    assert tree.branch_count == 3
    assert tree.path_to("c1") == ["r", "a2", "c1"]


async def test_tree_loads_from_the_database(db: Database) -> None:
    dialogue_id, original, forked = await branched(db)
    tree = DialogueTree.load(db, dialogue_id)
    assert len(tree) == 6  # opening, 3 turns, the edited turn 2 and its turn 3
    assert tree.siblings(original[2]) == [original[2], forked[2]]
    assert tree.leaf_of(original[1]) == forked[-1]
    assert tree.branch_count == 2
    assert tree.path_to(forked[-1]) == forked


async def test_stored_tree_answers_like_the_loaded_one_and_sees_added_nodes(db: Database) -> None:
    dialogue_id, original, forked = await branched(db)
    loaded = DialogueTree.load(db, dialogue_id)
    stored = StoredTree(db, dialogue_id)
    for node_id in {*original, *forked}:
        assert node_id in stored
        assert stored.parent(node_id) == loaded.parent(node_id)
        assert stored.children(node_id) == loaded.children(node_id)
        assert stored.siblings(node_id) == loaded.siblings(node_id)
        assert stored.sibling_position(node_id) == loaded.sibling_position(node_id)
        assert stored.leaf_of(node_id) == loaded.leaf_of(node_id)
        assert stored.turn_index(node_id) == loaded.turn_index(node_id) == loaded.path_to(node_id).index(node_id)
    assert "nope" not in stored and stored.children(None) == [original[0]]
    with pytest.raises(NotFoundError):
        stored.parent("nope")
    # A turn reported complete but not committed yet is a child, and the newest leaf, at once.
    later = datetime.now(UTC) + timedelta(seconds=5)
    stored.add(TreeNode("UNCOMMITTED", forked[-1], "B", 4, later))
    assert stored.children(forked[-1]) == ["UNCOMMITTED"]
    assert stored.leaf_of(original[1]) == "UNCOMMITTED" and stored.turn_index("UNCOMMITTED") == 4


async def test_keys_move_between_branches_parent_and_child_and_bookmarks(db: Database, db_path: Path) -> None:
    dialogue_id, original, forked = await branched(db)
    screen = DialogueScreen(db_path, dialogue_id=dialogue_id)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        view = screen.query_one(TranscriptView)
        view.focus()
        assert path_ids(view) == forked  # the head is the fork's branch
        view.select_node(2)
        await pilot.pause()
        assert "branch 2/2" in status(screen)
        await pilot.press("left_square_bracket")
        await pilot.pause()
        assert path_ids(view) == original and view.cursor == 2
        assert "branch 1/2" in status(screen)
        await pilot.press("b")
        await pilot.pause()
        assert "★ 1 bookmark" in status(screen) and "★ bookmarked" in status(screen)
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert path_ids(view) == forked and view.cursor == 2
        await pilot.press("left")
        await pilot.pause()
        assert view.cursor == 1 and path_ids(view) == forked
        await pilot.press("h")
        await pilot.pause()
        assert view.cursor == 0
        await pilot.press("right", "l")
        await pilot.pause()
        assert view.cursor == 2 and path_ids(view) == forked
        await pilot.press("apostrophe")  # the bookmark is on the other branch
        await pilot.pause()
        assert path_ids(view) == original and view.cursor == 2
        await pilot.press("b")
        await pilot.pause()
        assert "bookmark" not in status(screen)
        names = {c.name for c in screen.palette_commands()}
        assert {"Next branch", "Previous branch", "Parent", "Fork with an edit...", "Compare branches"} <= names


async def test_fork_edits_and_continues_with_new_params(db: Database, db_path: Path) -> None:
    live = LiveDialogue(db, ignore)
    await live.start(request(4))
    assert live.dialogue_id is not None
    original = ids_of(db, live.dialogue_id)
    screen = DialogueScreen(db_path, dialogue_id=live.dialogue_id)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        view = screen.query_one(TranscriptView)
        view.focus()
        view.select_node(2)
        await pilot.pause()
        await pilot.press("f")
        await pilot.pause()
        fork_screen = app.screen
        assert isinstance(fork_screen, ForkScreen)
        area = fork_screen.query_one("#fork-text", TextArea)
        assert area.text == view.node_at(2).content
        area.text = "Edited by the researcher."
        system_a = fork_screen.query_one("#fork-system-a", TextArea)
        stored = resolve_dialogue(db, live.dialogue_id).system_prompt_a
        assert system_a.text == prompt_text(db, stored)  # prefilled with what A ran with
        system_a.text = "You are A, now told to be brief."
        fork_screen.query_one("#fork-temperature", Input).value = "1.3"
        fork_screen.query_one("#fork-max-tokens", Input).value = "77"
        await pilot.press("ctrl+s")
        # The stored dialogue's feed worker runs until the screen closes: wait for the run's end.
        deadline = time.monotonic() + 20

        def done() -> bool:
            edited = view.node_count == 5 and view.node_at(2).content == "Edited by the researcher."
            return edited and "forked" not in status(screen)

        while not done() and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause()
        assert app.screen is screen
        shown = path_ids(view)
        assert shown[:2] == original[:2] and shown[2] != original[2] and len(shown) == 5
        assert view.node_at(2).content == "Edited by the researcher."
        assert "branch 2/2" in status(screen) or view.cursor != 2
    assert ids_of(db, live.dialogue_id, original[-1]) == original  # the original branch is intact
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            "SELECT id, parent_id, model, turn_index, json_extract(params, '$.temperature'),"
            " json_extract(params, '$.max_tokens') FROM node WHERE kind = 'turn' AND id IN (?, ?, ?)",
            shown[2:],
        ).fetchall()
        overrides = conn.execute(
            "SELECT p.text, json_extract(n.params, '$.system_prompt_b') FROM node n"
            " JOIN prompt p ON p.hash = json_extract(n.params, '$.system_prompt_a') WHERE n.id = ?",
            (shown[2],),
        ).fetchone()
    assert overrides == ("You are A, now told to be brief.", None)  # only the prompt that changed
    by_id = {r[0]: r for r in rows}
    edited = by_id[shown[2]]
    assert edited[1] == original[1] and edited[2] == "researcher-edit"  # a sibling of the original
    for node_id in shown[3:]:
        assert by_id[node_id][4] == 1.3 and by_id[node_id][5] == 77
    assert by_id[shown[-1]][3] == 4  # continued to max_turns


async def test_compare_shows_both_branches_from_their_divergence(db: Database, db_path: Path) -> None:
    dialogue_id, original, forked = await branched(db)
    screen = DialogueScreen(db_path, dialogue_id=dialogue_id)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        view = screen.query_one(TranscriptView)
        view.focus()
        view.select_node(2)
        await pilot.press("v")
        await pilot.pause()
        assert "compare" in status(screen)
        await pilot.press("left_square_bracket", "v")
        await pilot.pause()
        compare = app.screen
        assert isinstance(compare, CompareScreen)
        assert compare.divergence == 2
        left = compare.query_one("#compare-left", TranscriptView)
        right = compare.query_one("#compare-right", TranscriptView)
        assert path_ids(left) == forked and path_ids(right) == original
        assert left.cursor == 2 and right.cursor == 2
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
