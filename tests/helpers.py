"""Small shared helpers for tests."""

from __future__ import annotations

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
