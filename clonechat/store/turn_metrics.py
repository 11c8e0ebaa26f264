"""Per-turn conversation metrics, computed once when a turn is stored.

Attractor questions (do clone pairs converge, loop, drift into symbols and emoji?) need the
same handful of numbers for every turn. Computing them at write time, in the transaction that
stores the turn, means every turn has them, they never change (a turn and its ancestors are
immutable), and an analysis is one ``SELECT`` instead of re-tokenising a whole run.

The definitions (and the code that computes them) are in :mod:`clonechat.engine.metrics`;
here they are stored with each turn. Researcher turns (interjections) are not the agents'
vocabulary: they get no metrics and do not move the path state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from operator import attrgetter

from sqlalchemy import Connection, text

from clonechat.engine.metrics import METRICS_VERSION as METRICS_VERSION
from clonechat.engine.metrics import PathState, TurnMetrics
from clonechat.engine.metrics import words_of as words_of
from clonechat.engine.records import NodeRecord
from clonechat.read.paths import ancestors
from clonechat.store.dialect import insert_rows

#: Dialogues whose latest path state the writer keeps; a miss rebuilds it from the database.
CACHE_DIALOGUES = 4096


def state_after(conn: Connection, node_id: str | None) -> PathState:
    """The path state after ``node_id``, replayed from the database (a resume, a branch, or a
    dialogue the cache has let go)."""
    state = PathState()
    if node_id is None:
        return state
    path = reversed(ancestors(conn, node_id, columns=("kind", "speaker", "content")))
    for kind, speaker, content in path:
        if kind == "turn" and speaker != "researcher":
            state.advance("", "", speaker, content)
    return state


class MetricsTracker:
    """Computes metrics for turns as they are stored, keeping each dialogue's latest path state
    so a turn costs one tokenisation, not a replay of its whole conversation."""

    def __init__(self, capacity: int = CACHE_DIALOGUES) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, tuple[str, PathState]] = OrderedDict()
        #: How many states were replayed from the database (for tests and benchmarks).
        self.rebuilds = 0

    def metrics_for(self, conn: Connection, nodes: Sequence[NodeRecord]) -> list[TurnMetrics]:
        """Metrics of the turn nodes among ``nodes`` (in order; a parent before its child).
        ``conn`` must already see the nodes' ancestors."""
        out: list[TurnMetrics] = []
        for node in nodes:
            if node.kind != "turn":
                continue
            cached = self._states.get(node.dialogue_id)
            if node.speaker == "researcher":
                # Not the agents' words: the state passes through unchanged.
                if cached is not None and cached[0] == node.parent_id:
                    self._states[node.dialogue_id] = (node.id, cached[1])
                continue
            if cached is not None and cached[0] == node.parent_id:
                state = cached[1]
                self._states.move_to_end(node.dialogue_id)
            elif node.turn_index == 1:
                state = PathState()  # below the opening: nothing said yet
            else:
                state = state_after(conn, node.parent_id)
                self.rebuilds += 1
            out.append(state.advance(node.id, node.dialogue_id, node.speaker, node.content))
            self._states[node.dialogue_id] = (node.id, state)
            if len(self._states) > self.capacity:
                self._states.popitem(last=False)
        return out

    def forget(self, dialogue_id: str) -> None:
        """Drop a finished dialogue's state (it would be rebuilt if the dialogue continued)."""
        self._states.pop(dialogue_id, None)


_COLUMNS = [name for name in TurnMetrics.__dataclass_fields__]
_ROW = attrgetter(*_COLUMNS)


def insert_metrics(conn: Connection, rows: Sequence[TurnMetrics]) -> None:
    insert_rows(conn, "turn_metrics", _COLUMNS, [_ROW(r) for r in rows])


def backfill(conn: Connection) -> int:
    """Compute metrics for every stored turn that has none (a database from before metrics):
    each dialogue's tree is walked once from its root, a branch copying its parent's state."""
    rows = conn.execute(
        text(
            "SELECT n.id, n.dialogue_id, n.parent_id, n.speaker, n.kind, n.content FROM node n "
            "WHERE n.kind IN ('opening', 'turn') ORDER BY n.dialogue_id, n.rowid"
        )
    ).all()
    children: dict[str | None, list[tuple[str, str, str, str, str]]] = {}
    for node_id, dialogue_id, parent_id, speaker, kind, content in rows:
        children.setdefault(parent_id, []).append((node_id, dialogue_id, speaker, kind, content))
    done = {r[0] for r in conn.execute(text("SELECT node_id FROM turn_metrics"))}
    out: list[TurnMetrics] = []
    stack: list[tuple[str, PathState]] = []
    for root in children.get(None, []):
        stack.append((root[0], PathState()))
    while stack:
        node_id, state = stack.pop()
        kids = children.get(node_id, [])
        for i, (child_id, dialogue_id, speaker, kind, content) in enumerate(kids):
            # The last child may take the state over; the others need their own copy.
            child_state = state if i == len(kids) - 1 else state.copy()
            if kind == "turn" and speaker != "researcher":
                metrics = child_state.advance(child_id, dialogue_id, speaker, content)
                if child_id not in done:
                    out.append(metrics)
            stack.append((child_id, child_state))
    insert_metrics(conn, out)
    return len(out)
