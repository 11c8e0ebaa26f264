"""A dialogue transcript that opens a 10,000-turn conversation as fast as a 10-turn one.

``TranscriptView`` is a Line API widget (:class:`~textual.scroll_view.ScrollView`): Textual asks
it for one line at a time (``render_line``) and only for the lines on screen, so nothing is
composed or rendered for turns that are off screen.

Laziness: the layout is one small integer per node (its height in lines), not its text. Heights
start as an estimate (``ESTIMATED_HEIGHT``), and when a page of nodes is first needed on screen it
is loaded from the :class:`~clonechat.tui.transcript_source.TranscriptSource`, wrapped, and its
exact heights replace the estimates ("virtual heights refined on load"). Line offsets are prefix
sums of those heights, rebuilt (O(n) integers, about a millisecond for 100k nodes) only when a
height changes. When a refinement above the viewport moves lines, the scroll position is shifted
so the node at the top stays put (or, when the user is at the bottom, it stays at the bottom).
Wrapped lines are kept for a bounded number of nodes (an LRU), so memory does not grow with the
transcript; after a resize, heights are re-estimated from each node's remembered character and
line-break counts and re-measured as pages come back on screen.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from itertools import accumulate
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Click, Resize
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from clonechat.engine.records import NodeRecord
from clonechat.rendering import node_metadata, reasoning_heading
from clonechat.tui.transcript_source import AppendableSource, TranscriptSource

#: Nodes loaded and laid out together (one ``source.page`` call).
PAGE_SIZE = 32
#: Nodes whose wrapped lines are kept; more than fit on any screen, few enough to stay small.
MAX_RENDERED_NODES = 512
#: Height assumed for a node not laid out yet: header, two lines of text, metadata, blank.
ESTIMATED_HEIGHT = 5
#: Cells left of every line: the selection marker and a space.
GUTTER = 2

_SPEAKER_CLASS = {"A": "transcript--speaker-a", "B": "transcript--speaker-b", "researcher": "transcript--speaker-r"}


@dataclass
class _Laid:
    """One node as it is drawn at the current width."""

    node: NodeRecord
    strips: list[Strip]


class TranscriptView(ScrollView, can_focus=True):
    """A scrolling transcript of one conversation path, with a selectable node cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Previous turn", show=False),
        Binding("down,j", "cursor_down", "Next turn", show=False),
        Binding("home,g", "scroll_home", "First turn", show=False),
        Binding("end,G", "scroll_end", "Last turn", show=False),
        # Not in the footer (full already): every collapsed trace says "t to open" itself.
        Binding("t", "toggle_reasoning", "Open/close reasoning", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "transcript--speaker-a",
        "transcript--speaker-b",
        "transcript--speaker-r",
        "transcript--label",
        "transcript--meta",
        "transcript--cursor",
        "transcript--streaming",
        "transcript--reasoning",
    }

    DEFAULT_CSS = """
    TranscriptView {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-gutter: stable;
    }
    TranscriptView > .transcript--speaker-a { color: ansi_cyan; text-style: bold; }
    TranscriptView > .transcript--speaker-b { color: ansi_magenta; text-style: bold; }
    TranscriptView > .transcript--speaker-r { color: ansi_yellow; text-style: bold; }
    TranscriptView > .transcript--label { text-style: dim; }
    TranscriptView > .transcript--meta { text-style: dim; }
    TranscriptView > .transcript--cursor { color: $accent; text-style: bold; }
    TranscriptView > .transcript--streaming { text-style: italic; }
    TranscriptView > .transcript--reasoning { color: ansi_magenta; text-style: dim italic; }
    """

    class NodeSelected(Message):
        """The cursor moved to a node (the tree and fork views follow it)."""

        def __init__(self, transcript: TranscriptView, index: int, node: NodeRecord) -> None:
            super().__init__()
            self.transcript = transcript
            self.index = index
            self.node = node

        @property
        def control(self) -> TranscriptView:
            return self.transcript

    def __init__(
        self,
        source: TranscriptSource,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._source: TranscriptSource = source
        self._width = 0
        self._heights = array("i")
        #: Per node, once seen: characters and line breaks of its text, and its non-text lines
        #: (header, metadata, blank), so a resize can re-estimate its height without loading it.
        self._chars = array("i")
        self._breaks = array("i")
        self._extra = array("i")
        self._offsets: list[int] = [0]
        self._offsets_dirty = True
        self._laid: OrderedDict[int, _Laid] = OrderedDict()
        self._cursor: int | None = None
        self._stream: tuple[str, str] | None = None
        self._stream_strips: list[Strip] = []
        self._syncing = False
        #: Set by ``set_source(at_end=True)`` before the first resize: open at the end then.
        self._open_at_end = False
        #: Nodes whose private reasoning is shown (collapsed to one line by default).
        self._reasoning_open: set[str] = set()
        self._reset_heights()

    # -- public API ---------------------------------------------------------------------------

    @property
    def source(self) -> TranscriptSource:
        return self._source

    def set_source(self, source: TranscriptSource, *, at_end: bool = False) -> None:
        """Show another path (another dialogue or branch): forget the layout, go to the top, or
        with ``at_end`` to the end (following), touching only the last page: a long stored
        path opens as fast as a short one, since nothing above the view is read."""
        self._source = source
        self._laid.clear()
        self._cursor = None
        self._stream = None
        self._stream_strips = []
        self._reset_heights()
        self._update_virtual_size()
        self._jump(0)
        self._open_at_end = at_end and not self._width  # not sized yet: on the first resize
        if at_end and self._width:
            self._scroll_to_end()
        else:
            self._sync_layout()
        self.refresh()

    @property
    def node_count(self) -> int:
        return len(self._heights)

    @property
    def rendered_nodes(self) -> int:
        """Nodes whose wrapped text is held right now (bounded by ``MAX_RENDERED_NODES``)."""
        return len(self._laid)

    @property
    def cursor(self) -> int | None:
        """The selected node's index on the path, or ``None`` before anything is selected."""
        return self._cursor

    @cursor.setter
    def cursor(self, index: int | None) -> None:
        self.select_node(index)

    @property
    def following(self) -> bool:
        """At the bottom: new turns and streamed text keep the view scrolled to the end."""
        return round(self.scroll_y) >= self.max_scroll_y

    def node_at(self, index: int) -> NodeRecord:
        """The node at ``index``, from the layout if it is drawn, else from the source (without
        laying it out: before the first resize there is no width to wrap at)."""
        laid = self._laid.get(index)
        if laid is not None:
            return laid.node
        if not 0 <= index < len(self._heights):
            raise IndexError(f"node {index} is not on this path of {len(self._heights)} nodes")
        return self._source.page(index, index + 1)[0]

    def node_line(self, index: int) -> int:
        """The virtual line where node ``index``'s header is drawn (exact once it is laid out)."""
        return self._offset_list()[index]

    def append_node(self, node: NodeRecord) -> None:
        """Add a completed turn at the end (and drop the streamed text it replaces)."""
        follow = self.following
        if isinstance(self._source, AppendableSource):
            self._source.append(node)
        elif len(self._source) == len(self._heights):
            # A read-only source must already hold the node (its owner appended it).
            raise TypeError(f"{type(self._source).__name__} cannot be appended to")
        index = len(self._heights)
        self._heights.append(ESTIMATED_HEIGHT)
        self._chars.append(-1)
        self._breaks.append(0)
        self._extra.append(0)
        self._offsets_dirty = True
        self._stream = None
        self._stream_strips = []
        if self._width:
            self._store(index, node)
        self._update_virtual_size()
        if follow:
            self._scroll_to_end()
        self.refresh()

    def set_streaming_text(self, speaker: str | None, text: str = "") -> None:
        """Show the turn being generated (``speaker``'s tokens so far) below the last node;
        ``None`` clears it."""
        follow = self.following
        self._stream = None if speaker is None else (speaker, text)
        self._stream_strips = self._layout_stream()
        self._update_virtual_size()
        if follow:
            self._scroll_to_end()
        self.refresh()

    def select_node(self, index: int | None, *, scroll: bool = True) -> None:
        """Move the cursor to node ``index`` (clamped), bring it into view, post NodeSelected."""
        if index is None or not len(self._heights):
            self._cursor = None
            self.refresh()
            return
        index = max(0, min(index, len(self._heights) - 1))
        laid = self._get_laid(index)
        self._cursor = index
        if scroll:
            self._scroll_node_into_view(index)
        self.refresh()
        self.post_message(self.NodeSelected(self, index, laid.node))

    # -- actions ------------------------------------------------------------------------------

    def action_cursor_up(self) -> None:
        """Up starts from the bottom of the screen (where a reader following the end is)."""
        if self._cursor is None:
            visible = self._visible_range()
            self.select_node(visible[-1] if visible else None)
        else:
            self.select_node(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.select_node(self._first_visible() if self._cursor is None else self._cursor + 1)

    def action_toggle_reasoning(self) -> None:
        """Open or close the selected node's private reasoning (``t``); with nothing selected
        yet, the first message on screen that has one (and select it)."""
        if self._cursor is None:
            shown = (i for i in self._visible_range() if self.node_at(i).reasoning is not None)
            first = next(shown, None)
            if first is None:
                self.notify("no message on screen has a reasoning trace", timeout=3)
                return
            self.select_node(first)
        assert self._cursor is not None
        node = self.node_at(self._cursor)
        if node.reasoning is None:
            self.notify("this message has no reasoning trace", timeout=3)
            return
        self._reasoning_open ^= {node.id}
        if self._width:
            self._store(self._cursor, node)
            self._update_virtual_size()
            self._scroll_node_into_view(self._cursor)
        self.refresh()

    def action_scroll_home(self) -> None:
        """Jump (no animation: an animated scroll across 10k turns would load every page on the way)."""
        self._jump(0)

    def action_scroll_end(self) -> None:
        self._scroll_to_end()

    # -- Textual hooks ------------------------------------------------------------------------

    def on_resize(self, event: Resize) -> None:
        width = max(1, self.scrollable_content_region.width - GUTTER)
        if width != self._width:
            self._relayout(width)
        if self._open_at_end:
            self._open_at_end = False
            self._scroll_to_end()
        else:
            self._sync_layout()

    def on_click(self, event: Click) -> None:
        """A click selects the node under the pointer (mouse support, like the cursor keys)."""
        line = round(self.scroll_y) + event.y
        offsets = self._offset_list()
        if 0 <= line < offsets[-1]:
            self.focus()
            self.select_node(bisect_right(offsets, line) - 1, scroll=False)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._sync_layout()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        line = round(self.scroll_y) + y
        offsets = self._offset_list()
        total = offsets[-1]
        base = self.rich_style
        if not self._width:
            # Painted before the first Resize: nothing is laid out yet (and wrapping at a
            # guessed width would only be thrown away).
            strip = Strip.blank(0)
        elif line < total:
            index = bisect_right(offsets, line) - 1
            laid = self._get_laid(index)
            row = line - offsets[index]
            body = laid.strips[row] if row < len(laid.strips) else Strip.blank(0)
            selected = index == self._cursor
            marker = "▌ " if selected else "  "
            style = self.get_component_rich_style("transcript--cursor", partial=True) if selected else Style()
            strip = Strip.join([Strip([Segment(marker, style)], GUTTER), body])
        elif line - total < len(self._stream_strips):
            strip = Strip.join([Strip.blank(GUTTER), self._stream_strips[line - total]])
        else:
            strip = Strip.blank(0)
        return strip.crop_extend(0, width, base).apply_style(base)

    # -- layout -------------------------------------------------------------------------------

    def _reset_heights(self) -> None:
        n = len(self._source)
        self._heights = array("i", [ESTIMATED_HEIGHT]) * n
        self._chars = array("i", [-1]) * n
        self._breaks = array("i", [0]) * n
        self._extra = array("i", [0]) * n
        self._offsets_dirty = True

    def _offset_list(self) -> list[int]:
        if self._offsets_dirty:
            self._offsets = [0, *accumulate(self._heights)]
            self._offsets_dirty = False
        return self._offsets

    def _update_virtual_size(self) -> None:
        total = self._offset_list()[-1] + len(self._stream_strips)
        self.virtual_size = Size(self.scrollable_content_region.width, total)

    def _relayout(self, width: int) -> None:
        """A new width: forget wrapped lines and re-estimate every height seen before."""
        anchor, delta = self._anchor()
        follow = self.following and round(self.scroll_y) > 0
        self._width = width
        self._laid.clear()
        for i, chars in enumerate(self._chars):
            if chars >= 0:
                self._heights[i] = self._extra[i] + self._breaks[i] + 1 + chars // width
        self._offsets_dirty = True
        self._stream_strips = self._layout_stream()
        self._update_virtual_size()
        self._restore(anchor, delta, follow=follow)

    def _anchor(self) -> tuple[int, int]:
        """The node at the top of the view and how far into it the view starts."""
        top = round(self.scroll_y)
        offsets = self._offset_list()
        if not len(self._heights) or top >= offsets[-1]:
            return -1, top
        index = bisect_right(offsets, top) - 1
        return index, top - offsets[index]

    def _restore(self, anchor: int, delta: int, *, follow: bool) -> None:
        if follow:
            y = self.max_scroll_y
        elif anchor < 0:
            y = delta
        else:
            y = self._offset_list()[anchor] + min(delta, max(0, self._heights[anchor] - 1))
        if round(self.scroll_y) != y:
            self._jump(y)

    def _visible_range(self) -> range:
        n = len(self._heights)
        if not n:
            return range(0)
        offsets = self._offset_list()
        top = round(self.scroll_y)
        bottom = top + max(1, self.scrollable_content_region.height)
        first = min(n - 1, bisect_right(offsets, top) - 1)
        last = min(n - 1, bisect_right(offsets, bottom - 1) - 1)
        return range(first, last + 1)

    def _first_visible(self) -> int:
        visible = self._visible_range()
        return visible.start if visible else 0

    def _sync_layout(self) -> None:
        """Load and measure the pages on screen, keeping the view anchored while heights settle.

        A few rounds at most: measuring can reveal that other nodes are on screen after all.
        """
        if self._syncing or not self._width:
            return
        self._syncing = True
        try:
            for _ in range(4):
                missing = sorted({i // PAGE_SIZE for i in self._visible_range() if i not in self._laid})
                if not missing:
                    break
                follow = self.following and round(self.scroll_y) > 0
                anchor, delta = self._anchor()
                for number in missing:
                    self._load_page(number)
                self._update_virtual_size()
                self._restore(anchor, delta, follow=follow)
        finally:
            self._syncing = False
        self.refresh()

    def _jump(self, y: int) -> None:
        """Scroll without animation, even before Textual has decided a scrollbar is needed
        (the virtual size may have grown a moment ago)."""
        self.scroll_to(y=y, animate=False, force=True, immediate=True)

    def _scroll_to_end(self) -> None:
        self._jump(self.max_scroll_y)
        # Measuring the last pages can make the transcript longer: go to the new end.
        self._sync_layout()
        if round(self.scroll_y) < self.max_scroll_y:
            self._jump(self.max_scroll_y)

    def _scroll_node_into_view(self, index: int) -> None:
        offsets = self._offset_list()
        top, bottom = offsets[index], offsets[index + 1]
        view_top = round(self.scroll_y)
        height = max(1, self.scrollable_content_region.height)
        if top < view_top:
            self._jump(top)
        elif bottom > view_top + height:
            self._jump(min(top, bottom - height))

    def _get_laid(self, index: int) -> _Laid:
        laid = self._laid.get(index)
        if laid is None:
            self._load_page(index // PAGE_SIZE)
            laid = self._laid[index]
            if self._offsets_dirty and not self._syncing:
                # Loaded outside a sync (e.g. while painting): let the layout settle next.
                self.call_later(self._after_late_load)
        else:
            self._laid.move_to_end(index)
        return laid

    def _after_late_load(self) -> None:
        self._update_virtual_size()
        self._sync_layout()

    def _load_page(self, number: int) -> None:
        start = number * PAGE_SIZE
        for i, node in enumerate(self._source.page(start, min(start + PAGE_SIZE, len(self._heights))), start):
            self._store(i, node)

    def _store(self, index: int, node: NodeRecord) -> None:
        strips, extra = self._layout_node(node, max(1, self._width))
        self._laid[index] = _Laid(node, strips)
        self._laid.move_to_end(index)
        while len(self._laid) > MAX_RENDERED_NODES:
            self._laid.popitem(last=False)
        self._chars[index] = len(node.content)
        self._breaks[index] = node.content.count("\n")
        self._extra[index] = extra
        if self._heights[index] != len(strips):
            self._heights[index] = len(strips)
            self._offsets_dirty = True

    def _layout_node(self, node: NodeRecord, width: int) -> tuple[list[Strip], int]:
        """Header, wrapped text, metadata and a blank line; and how many lines are not text."""
        speaker = self.get_component_rich_style(_SPEAKER_CLASS.get(node.speaker, "transcript--label"), partial=True)
        dim = self.get_component_rich_style("transcript--label", partial=True)
        label = "opening" if node.kind == "opening" else f"turn {node.turn_index}"
        # A scheduled interjection is seen by its addressee only: say so where it is read.
        who = f"{node.speaker} → {node.variant} only" if node.speaker == "researcher" and node.variant else node.speaker
        header = Text.assemble((who, speaker), (f"  {label} · {node.id}", dim))
        strips = self._wrap(header, width, truncate=True)
        thought = 0
        if node.reasoning is not None:
            style = self.get_component_rich_style("transcript--reasoning", partial=True)
            opened = node.id in self._reasoning_open
            # The key first: the heading is cut to one line, and its end is what a narrow pane loses.
            heading = f"{'▾' if opened else '▸ t to open ·'} {reasoning_heading(node)}"
            lines = self._wrap(Text(heading, style=style), width, truncate=True)
            if opened:
                lines += self._wrap(Text(node.reasoning or "(empty)", style=style), width)
            strips += lines
            thought = len(lines)
        strips += self._wrap(Text(node.content), width)
        meta = node_metadata(node)
        if meta:
            style = self.get_component_rich_style("transcript--meta", partial=True)
            strips += self._wrap(Text(meta, style=style), width, truncate=True)
        strips.append(Strip.blank(0))
        return strips, 2 + thought + (1 if meta else 0)

    def _layout_stream(self) -> list[Strip]:
        if self._stream is None or not self._width:
            return []
        speaker, body = self._stream
        style = self.get_component_rich_style(_SPEAKER_CLASS.get(speaker, "transcript--label"), partial=True)
        dim = self.get_component_rich_style("transcript--label", partial=True)
        header = Text.assemble((speaker, style), ("  …", dim))
        streaming = self.get_component_rich_style("transcript--streaming", partial=True)
        return self._wrap(header, self._width, truncate=True) + self._wrap(Text(body, style=streaming), self._width)

    def _wrap(self, text: Text, width: int, *, truncate: bool = False) -> list[Strip]:
        """Lines of ``text`` at ``width`` cells: word-wrapped (long words folded), or one line
        cut with an ellipsis for headers and metadata."""
        console = self.app.console
        if truncate:
            text.truncate(width, overflow="ellipsis")
            lines = [text]
        else:
            lines = list(text.wrap(console, width, overflow="fold"))
        return [Strip(line.render(console), line.cell_len) for line in lines]
