"""Small shared helpers for tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from clonechat.engine.dialogue import Agent, DialogueSettings, opening_node
from clonechat.engine.events import Event
from clonechat.engine.records import NodeRecord
from clonechat.providers.base import GenerationParams, Provider


class EventLog:
    """An event sink that keeps everything it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def two_agents(provider_a: Provider, provider_b: Provider | None = None, **params: float | int) -> tuple[Agent, Agent]:
    p = GenerationParams(**params)  # type: ignore[arg-type]
    return (
        Agent("A", provider_a, "system A", p),
        Agent("B", provider_b or provider_a, "system B", p),
    )


def new_path(dialogue_id: str = "D1", opening: str = "Begin.") -> list[NodeRecord]:
    return [opening_node(dialogue_id, opening)]


def settings(dialogue_id: str = "D1", **kw: object) -> DialogueSettings:
    values: dict[str, object] = {"max_turns": 4, "seed": 7}
    values.update(kw)
    return DialogueSettings(dialogue_id=dialogue_id, **values)  # type: ignore[arg-type]


def stored_conversations(db_path: Any) -> dict[tuple[str, str, int], list[tuple[str, int, str]]]:
    """Every dialogue's current conversation, read with plain SQL (either backend): (experiment, condition,
    replicate) -> [(speaker, turn_index, content), ...] from the opening to the head."""
    query = """
        WITH RECURSIVE path(dialogue_id, node_id, depth) AS (
            SELECT id, head_node_id, 0 FROM dialogue
            UNION ALL
            SELECT path.dialogue_id, node.parent_id, path.depth + 1
            FROM path JOIN node ON node.id = path.node_id
            WHERE node.parent_id IS NOT NULL
        )
        SELECT e.name, c.name, d.replicate, n.speaker, n.turn_index, n.content
        FROM path
        JOIN node n ON n.id = path.node_id
        JOIN dialogue d ON d.id = path.dialogue_id
        JOIN condition c ON c.id = d.condition_id
        JOIN experiment e ON e.id = c.experiment_id
        ORDER BY e.name, c.name, d.replicate, path.depth DESC
    """
    out: dict[tuple[str, str, int], list[tuple[str, int, str]]] = {}
    with raw_sql(db_path) as conn:
        for experiment, condition, replicate, speaker, turn_index, content in conn.execute(query):
            out.setdefault((experiment, condition, replicate), []).append((speaker, turn_index, content))
    return out


def statuses(db_path: Any) -> dict[str, int]:
    with raw_sql(db_path) as conn:
        return {str(s): int(n) for s, n in conn.execute("SELECT status, count(*) FROM dialogue GROUP BY status")}


class RawSql:
    """A plain SQL connection to a run database on either backend, for tests that look at (or
    tamper with) rows behind the store's back: ``execute`` takes SQL text with ``:name``
    parameters and returns SQLAlchemy rows (which compare equal to tuples)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        from sqlalchemy import text

        return self._conn.execute(text(sql), params or {})


@contextmanager
def raw_sql(location: Any) -> Iterator[RawSql]:
    """:class:`RawSql` on ``location`` (a path or a server database); commits on exit."""
    from sqlalchemy import create_engine

    from clonechat.location import ServerDatabase, db_location

    where = db_location(location)
    url = where.sqlalchemy_url if isinstance(where, ServerDatabase) else f"sqlite:///{where}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            yield RawSql(conn)
    finally:
        engine.dispose()


#: A small experiment with every measure on (two conditions, a control), made with the scripted
#: model: what `db copy` and `share`/`import` are tested on.
PILOT = "pilot"
PILOT_SPEC = f"""\
name = "{PILOT}"
replicates = 2
max_turns = 4
seed = 11
concurrency = 4
model_a = "scripted"
control = "base"

[prediction]
self_predict = true

[coordination]
tasks = ["number", "pair"]

[report_back]

[[conditions]]
name = "base"
template = "no-frame"

[[conditions]]
name = "aware"
template = "clone-aware"
"""
