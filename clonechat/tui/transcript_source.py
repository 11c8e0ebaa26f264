"""Where the transcript widget gets its nodes: a path through a dialogue tree, read by the page.

A dialogue can run to tens of thousands of turns, and the TUI must open it instantly, so the
widget never asks for "all nodes". It asks a :class:`TranscriptSource` how many nodes the path
has and for one slice (a page) at a time. This module deliberately imports nothing from Textual:
the data side is testable and usable without a terminal.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, runtime_checkable

from clonechat.engine.records import CONVERSATION_KINDS, NodeRecord
from clonechat.errors import NotFoundError
from clonechat.read.connect import Readable, connection
from clonechat.read.dialogues import get_dialogue
from clonechat.read.paths import ancestors, node_record, nodes_by_id

#: Nodes per page the SQLite source loads at once (one lookup by id, far below SQLite's
#: bound-parameter limit).
DEFAULT_PAGE_SIZE = 64
#: Pages the SQLite source keeps; with the default page size about 1,000 nodes stay in memory.
DEFAULT_MAX_PAGES = 16


class TranscriptSource(Protocol):
    """The nodes of one conversation path, indexed from 0 (the opening)."""

    def __len__(self) -> int:
        """How many conversation nodes the path has (must be cheap: no node text is loaded)."""
        ...

    def page(self, start: int, stop: int) -> list[NodeRecord]:
        """The nodes ``start`` (inclusive) to ``stop`` (exclusive), clamped to the path."""
        ...


@runtime_checkable
class AppendableSource(TranscriptSource, Protocol):
    """A source a live dialogue can extend as turns complete."""

    def append(self, node: NodeRecord) -> None:
        """Add ``node`` at the end of the path."""
        ...


class ListSource:
    """Nodes held in memory: for tests, and for a live dialogue that started in this session."""

    def __init__(self, nodes: list[NodeRecord] | None = None) -> None:
        self._nodes: list[NodeRecord] = list(nodes or [])

    def __len__(self) -> int:
        return len(self._nodes)

    def page(self, start: int, stop: int) -> list[NodeRecord]:
        return self._nodes[max(0, start) : max(0, stop)]

    def append(self, node: NodeRecord) -> None:
        self._nodes.append(node)


#: Ancestors read per walk beyond what a page needs, so scrolling up walks in few queries.
WALK_AHEAD = 512


class SqlitePathSource:
    """A path from a dialogue's opening to a leaf, read lazily from the run database.

    Opening a path costs the same for 10 nodes as for 100,000: its length is the leaf's
    ``turn_index`` + 1 (a conversation node's turn index is its depth: the engine numbers turns
    along the path, and a fork copies the index of the message it edits), so nothing is walked
    up front. The path's node *ids* are found from the leaf upwards only as far as a page asks
    (the read layer's bounded walk, :func:`clonechat.read.paths.ancestors`, over the id, kind
    and turn-index columns, ``WALK_AHEAD`` further each time), and kept (short strings: cheap
    even for 100,000). Node rows, whose text is the expensive part, are read one page at a time
    (:func:`clonechat.read.paths.nodes_by_id`) and kept in a small LRU of pages so scrolling back
    and forth does not re-query; at most ``max_pages * page_size`` records are held.

    It reads through ``db.reader_engine`` (a :class:`~clonechat.read.connect.Reader`, or the
    writer's ``Database``: its own short-lived connection per query, safe while a batch's writer
    commits in WAL mode), so the TUI can watch a database another process is writing.
    """

    def __init__(
        self,
        db: Readable,
        dialogue_id: str,
        leaf_id: str | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        if page_size < 1 or max_pages < 1:
            raise ValueError("page_size and max_pages must be positive")
        self._db = db
        self.dialogue_id = dialogue_id
        self.page_size = page_size
        self.max_pages = max_pages
        self._pages: OrderedDict[int, list[NodeRecord]] = OrderedDict()
        #: Appended nodes the database may not have yet (the writer commits a moment after the
        #: engine reports a node); dropped as soon as a page read finds them stored.
        self._pending: dict[str, NodeRecord] = {}
        #: Rows read from SQLite so far, and ids found by walking up the path (diagnostics).
        self.rows_loaded = 0
        self.ids_walked = 0
        #: The path's ids by index; ``None`` above ``_known_from`` until a walk reaches them.
        self._ids: list[str | None] = self._open(leaf_id)
        self._known_from = len(self._ids) - 1 if self._ids else 0

    def _open(self, leaf_id: str | None) -> list[str | None]:
        if leaf_id is None:
            dialogue = get_dialogue(self._db, self.dialogue_id)
            if dialogue is None:
                raise NotFoundError(f"no dialogue with id {self.dialogue_id!r} in {self._db.path}")
            leaf_id = dialogue.head_node_id
            if leaf_id is None:
                return []
        leaf = nodes_by_id(self._db, [leaf_id]).get(leaf_id)
        if leaf is None or leaf.kind not in CONVERSATION_KINDS:
            raise NotFoundError(f"no conversation node with id {leaf_id!r} in {self._db.path}")
        ids: list[str | None] = [None] * (leaf.turn_index + 1)
        ids[-1] = leaf.id
        return ids

    def _walk_to(self, index: int) -> None:
        """Make sure the ids from ``index`` to the leaf are known, walking up from the highest
        unknown one (and ``WALK_AHEAD`` beyond, so the next page up is usually known)."""
        if index >= self._known_from:
            return
        target = max(0, min(index, self._known_from - WALK_AHEAD))
        start = self._ids[self._known_from]
        assert start is not None  # the leaf, or where the last walk stopped
        with connection(self._db) as conn:
            rows = ancestors(conn, start, self._known_from - target + 1, columns=("id", "kind", "turn_index"))
        for depth, (node_id, kind, turn_index) in enumerate(rows):
            expected = self._known_from - depth
            if kind not in CONVERSATION_KINDS or turn_index != expected:
                raise NotFoundError(
                    f"node {node_id} ({kind}, turn {turn_index}) breaks the path of dialogue {self.dialogue_id} "
                    f"at position {expected} in {self._db.path}"
                )
            self._ids[expected] = str(node_id)
        self.ids_walked += len(rows)
        if len(rows) != self._known_from - target + 1:
            raise NotFoundError(
                f"the path of dialogue {self.dialogue_id} is cut above turn {self._known_from - len(rows) + 1}"
            )
        self._known_from = target

    @property
    def leaf_id(self) -> str | None:
        """The last node of the path (known without walking)."""
        return self._ids[-1] if self._ids else None

    def id_at(self, index: int) -> str:
        """The id of the node at ``index``, walking up from the leaf only as far as that."""
        if not 0 <= index < len(self._ids):
            raise IndexError(f"node {index} is not on this path of {len(self._ids)} nodes")
        self._walk_to(index)
        node_id = self._ids[index]
        assert node_id is not None  # _walk_to filled it
        return node_id

    @property
    def ids(self) -> list[str]:
        """The path's node ids, opening first (a copy; walks the whole path once)."""
        self._walk_to(0)
        return [i for i in self._ids if i is not None]

    @property
    def cached_nodes(self) -> int:
        """How many node records are held in memory right now (bounded by the LRU)."""
        return sum(len(p) for p in self._pages.values()) + len(self._pending)

    def __len__(self) -> int:
        return len(self._ids)

    def page(self, start: int, stop: int) -> list[NodeRecord]:
        start, stop = max(0, start), min(stop, len(self._ids))
        if start >= stop:
            return []
        self._walk_to(start - start % self.page_size)
        size = self.page_size
        out: list[NodeRecord] = []
        for number in range(start // size, (stop - 1) // size + 1):
            records = self._load_page(number)
            first = number * size
            out.extend(records[max(start, first) - first : min(stop, first + size) - first])
        return out

    def append(self, node: NodeRecord) -> None:
        """Extend the path with a node that just completed (it need not be committed yet)."""
        index = len(self._ids)
        self._ids.append(node.id)
        cached = self._pages.get(index // self.page_size)
        if cached is not None and len(cached) == index % self.page_size:
            cached.append(node)
        else:
            self._pending[node.id] = node

    def _load_page(self, number: int) -> list[NodeRecord]:
        cached = self._pages.get(number)
        size = self.page_size
        self._walk_to(number * size)
        ids = [i for i in self._ids[number * size : (number + 1) * size] if i is not None]
        if cached is not None and len(cached) == len(ids):
            self._pages.move_to_end(number)
            return cached
        found = {node_id: node_record(n) for node_id, n in nodes_by_id(self._db, ids).items()}
        self.rows_loaded += len(found)
        records: list[NodeRecord] = []
        for node_id in ids:
            record = found.get(node_id)
            if record is not None:
                self._pending.pop(node_id, None)
            else:
                record = self._pending.get(node_id)
                if record is None:
                    raise NotFoundError(f"node {node_id} vanished from {self._db.path}")
            records.append(record)
        self._pages[number] = records
        self._pages.move_to_end(number)
        while len(self._pages) > self.max_pages:
            self._pages.popitem(last=False)
        return records
