"""The transcript widget stays fast and small however long the dialogue: it loads only what is on screen."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection
from textual.app import App, ComposeResult

from clonechat.engine.records import NodeRecord
from clonechat.errors import NotFoundError
from clonechat.read.paths import path_to
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.tui.transcript_source import WALK_AHEAD, ListSource, SqlitePathSource
from clonechat.tui.widgets.transcript import TranscriptView
from tests.tui_helpers import DIALOGUE, make_node

pytestmark = pytest.mark.anyio

TURNS = 10_000


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio only."""
    return "asyncio"


def chain(count: int) -> list[NodeRecord]:
    nodes: list[NodeRecord] = []
    for i in range(count):
        nodes.append(make_node(i, nodes[-1].id if nodes else None))
    return nodes


def _fill(conn: Connection) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    sql = conn.exec_driver_sql
    sql("INSERT INTO experiment (id, name, created_at) VALUES ('E', 'adhoc', ?)", (now,))
    sql(
        "INSERT INTO condition (id, experiment_id, name, template, model_a, model_b, settings, created_at) "
        "VALUES ('C', 'E', 'c', 't', 'm', 'm', '{}', ?)",
        (now,),
    )
    sql("INSERT INTO prompt_template (hash, kind, name, source, created_at) VALUES ('T', 'k', 'n', 's', ?)", (now,))
    sql("INSERT INTO prompt (hash, template_hash, text, variables, created_at) VALUES ('P', 'T', 'p', '{}', ?)", (now,))
    sql(
        "INSERT INTO dialogue (id, condition_id, replicate, status, first_speaker, max_turns, model_a, model_b, "
        "system_prompt_a, system_prompt_b, opening_prompt, settings, created_at, updated_at) "
        "VALUES (?, 'C', 0, 'completed', 'A', ?, 'm', 'm', 'P', 'P', 'P', '{}', ?, ?)",
        (DIALOGUE, TURNS, now, now),
    )
    nodes = chain(TURNS + 1)
    # A side node off the path must not appear in the transcript.
    side = NodeRecord(
        id="S" * 26, dialogue_id=DIALOGUE, parent_id=nodes[5].id, speaker="A", kind="report", turn_index=6, content="x"
    )
    writes.insert_nodes(conn, [*nodes, side])
    sql("UPDATE dialogue SET head_node_id = ? WHERE id = ?", (nodes[-1].id, DIALOGUE))


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("transcript") / "big.db"
    database = Database.open(path)
    database.write(_fill)
    yield database
    database.close()


class CountingSource:
    """A read-only source wrapper that records every page request."""

    def __init__(self, inner: SqlitePathSource | ListSource) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.inner)

    def page(self, start: int, stop: int) -> list[NodeRecord]:
        self.calls.append((start, stop))
        return self.inner.page(start, stop)


class Host(App[None]):
    def __init__(self, source: SqlitePathSource | ListSource | CountingSource) -> None:
        super().__init__()
        self.source = source
        self.selected: list[tuple[int, str]] = []

    def compose(self) -> ComposeResult:
        yield TranscriptView(self.source)

    def on_transcript_view_node_selected(self, message: TranscriptView.NodeSelected) -> None:
        self.selected.append((message.index, message.node.id))


def screen_text(view: TranscriptView) -> str:
    return "\n".join(view.render_line(y).text for y in range(view.scrollable_content_region.height))


def test_sqlite_source_pages_and_bounds(big_db: Database) -> None:
    source = SqlitePathSource(big_db, DIALOGUE, page_size=10, max_pages=3)
    assert len(source) == TURNS + 1
    assert source.rows_loaded == 0
    assert [n.turn_index for n in source.page(8, 13)] == [8, 9, 10, 11, 12]
    assert source.rows_loaded == 20
    source.page(8, 13)
    assert source.rows_loaded == 20  # both pages came from the LRU
    for start in range(0, 200, 10):
        source.page(start, start + 10)
    assert source.cached_nodes <= 30
    assert source.page(TURNS - 1, TURNS + 5)[-1].turn_index == TURNS
    branch = SqlitePathSource(big_db, DIALOGUE, leaf_id=f"N{3:025d}")
    assert [n.content.split(":")[0] for n in branch.page(0, 10)] == [f"message {i}" for i in range(4)]


def test_sqlite_source_opens_without_walking_and_walks_only_as_far_as_asked(big_db: Database) -> None:
    source = SqlitePathSource(big_db, DIALOGUE, page_size=10)
    assert len(source) == TURNS + 1 and source.leaf_id == f"N{TURNS:025d}"
    assert source.ids_walked == 0  # the length is the leaf's turn index + 1
    assert [n.turn_index for n in source.page(TURNS - 4, TURNS + 1)] == list(range(TURNS - 4, TURNS + 1))
    assert source.ids_walked <= 10 + WALK_AHEAD + 1  # the last page, and a little beyond
    # The whole path is exactly the one a recursive walk from the leaf gives.
    assert source.ids == [n.id for n in path_to(big_db, f"N{TURNS:025d}")]
    assert source.ids_walked == TURNS + 1 + 1  # each id once (the leaf is the walks' start twice)


def test_sqlite_source_refuses_a_leaf_that_is_not_a_conversation_node(big_db: Database) -> None:
    with pytest.raises(NotFoundError, match="no conversation node"):
        SqlitePathSource(big_db, DIALOGUE, leaf_id="S" * 26)


async def test_opens_at_the_end_reading_only_the_last_page(big_db: Database) -> None:
    inner = SqlitePathSource(big_db, DIALOGUE)
    source = CountingSource(inner)

    class AtEnd(Host):
        def on_mount(self) -> None:
            self.query_one(TranscriptView).set_source(source, at_end=True)

    app = AtEnd(ListSource())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        view = app.query_one(TranscriptView)
        assert view.following and view.node_count == TURNS + 1
        assert all(start >= TURNS + 1 - 64 for start, _ in source.calls), source.calls
        assert inner.ids_walked <= 2 * 64 + WALK_AHEAD
        assert f"message {TURNS}:" in screen_text(view)


def test_sqlite_source_append_before_commit(big_db: Database) -> None:
    source = SqlitePathSource(big_db, DIALOGUE, page_size=10, max_pages=2)
    extra = make_node(TURNS + 1, f"N{TURNS:025d}", content="not stored yet")
    source.append(extra)
    assert len(source) == TURNS + 2
    assert source.page(TURNS + 1, TURNS + 2) == [extra]


async def test_opens_10k_turns_fast_loading_only_the_visible_page(big_db: Database) -> None:
    started = time.perf_counter()
    inner = SqlitePathSource(big_db, DIALOGUE)
    source = CountingSource(inner)
    app = Host(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        elapsed = time.perf_counter() - started
        view = app.query_one(TranscriptView)
        assert elapsed < 2.0
        assert view.node_count == TURNS + 1
        assert source.calls == [(0, 32)]  # one widget page: the screen shows about five turns
        assert inner.rows_loaded == inner.page_size  # one SQLite page, not 10,001 rows
        # (c) the top of the screen is the opening, by the researcher, then its text.
        assert view.render_line(0).text.lstrip().startswith("researcher  opening")
        assert "message 0:" in view.render_line(1).text
        assert "message 1:" in screen_text(view)


async def test_scrolling_loads_on_demand_with_bounded_memory(big_db: Database) -> None:
    inner = SqlitePathSource(big_db, DIALOGUE)
    source = CountingSource(inner)
    app = Host(source)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(TranscriptView)
        await pilot.pause()
        view.focus()
        await pilot.press("end")
        await pilot.pause()
        assert f"message {TURNS}:" in screen_text(view)
        assert round(view.scroll_y) == view.max_scroll_y
        assert any(start >= TURNS - 32 for start, _ in source.calls)
        loaded_at_end = inner.rows_loaded
        assert loaded_at_end <= 4 * 64
        for step in range(1, 40):
            view.scroll_to(y=view.max_scroll_y * step // 40, animate=False)
            await pilot.pause()
        assert inner.cached_nodes <= inner.max_pages * inner.page_size
        assert view.rendered_nodes <= 512
        await pilot.press("home")
        await pilot.pause()
        assert view.render_line(0).text.lstrip().startswith("researcher  opening")
        assert "message 0:" in view.render_line(1).text


async def test_wrapping_follows_the_width() -> None:
    long = "word " * 60
    nodes = [make_node(0, None, content=long), make_node(1, "N" + "0" * 25, content="short")]
    app = Host(ListSource(nodes))
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(TranscriptView)
        await pilot.pause()
        wide = view.node_line(1)
        assert all(len(view.render_line(y).text.rstrip()) <= 100 for y in range(wide))
        await pilot.resize_terminal(40, 24)
        await pilot.pause()
        narrow = view.node_line(1)
        assert narrow > wide
        assert all(len(view.render_line(y).text.rstrip()) <= 40 for y in range(narrow))
        assert "short" in screen_text(view) or narrow >= 24


async def test_append_follows_only_at_the_bottom() -> None:
    source = ListSource(chain(40))
    app = Host(source)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(TranscriptView)
        await pilot.pause()
        view.action_scroll_end()
        await pilot.pause()
        assert view.following
        view.append_node(make_node(40, f"N{39:025d}", content="the newest turn"))
        await pilot.pause()
        assert round(view.scroll_y) == view.max_scroll_y
        assert "the newest turn" in screen_text(view)
        view.set_streaming_text("B", "tokens arriving")
        await pilot.pause()
        assert "tokens arriving" in screen_text(view)
        view.action_scroll_home()
        await pilot.pause()
        view.append_node(make_node(41, f"N{40:025d}", content="unseen turn"))
        await pilot.pause()
        assert round(view.scroll_y) == 0
        assert "unseen turn" not in screen_text(view)
        assert "tokens arriving" not in screen_text(view)  # the completed turn replaced it
        assert view.node_count == len(source) == 42


async def test_cursor_keys_select_nodes() -> None:
    app = Host(ListSource(chain(60)))
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(TranscriptView)
        view.focus()
        await pilot.pause()
        await pilot.press("down")
        await pilot.press("j", "j")
        await pilot.press("k")
        await pilot.pause()
        assert view.cursor == 1
        assert [index for index, _ in app.selected] == [0, 1, 2, 1]
        assert app.selected[-1][1] == f"N{1:025d}"
        assert view.render_line(view.node_line(1) - round(view.scroll_y)).text.startswith("▌")
        for _ in range(30):
            await pilot.press("j")
        await pilot.pause()
        assert view.cursor == 31
        top = round(view.scroll_y)
        assert top <= view.node_line(31) < top + view.scrollable_content_region.height


async def test_up_with_nothing_selected_starts_from_the_bottom_of_the_screen() -> None:
    app = Host(ListSource(chain(60)))
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(TranscriptView)
        view.focus()
        view.action_scroll_end()
        await pilot.pause()
        await pilot.press("up")
        await pilot.pause()
        assert view.cursor == 59


async def test_a_click_selects_the_node_under_the_pointer() -> None:
    app = Host(ListSource(chain(60)))
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(TranscriptView)
        await pilot.pause()
        second = view.node_line(1)  # the header line of node 1
        await pilot.click(TranscriptView, offset=(5, second + 1))
        await pilot.pause()
        assert view.cursor == 1 and app.selected[-1] == (1, view.node_at(1).id)
        assert view.has_focus
        await pilot.click(TranscriptView, offset=(5, view.node_line(3)))
        await pilot.pause()
        assert view.cursor == 3


def test_divergence_walks_only_up_to_where_the_paths_part(big_db: Database) -> None:
    from clonechat.tui.screens.compare import divergence

    longer = SqlitePathSource(big_db, DIALOGUE)
    prefix = SqlitePathSource(big_db, DIALOGUE, leaf_id=f"N{TURNS - 10:025d}")
    assert divergence(longer, prefix) == divergence(prefix, longer) == TURNS - 9
    assert longer.ids_walked + prefix.ids_walked <= 2 * (WALK_AHEAD + 1)  # not two 10,000-id walks


def test_the_widget_imports_neither_the_cli_nor_what_the_cli_brings() -> None:
    """The transcript's metadata line comes from ``clonechat.rendering``, not the CLI (which
    drags in typer, the session and the embedded provider); checked in a fresh interpreter,
    so the whole import chain counts, not just the widget's own import lines."""
    probe = (
        "import sys, clonechat.tui.widgets.transcript\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('typer', 'llama_cpp')"
        " or m.startswith(('clonechat.cli', 'clonechat.session', 'clonechat.providers'))]\n"
        "print(','.join(sorted(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
