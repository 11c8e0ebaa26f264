"""Typed events the engine emits. Consumers (store recorder, CLI, TUI, batch progress) react
to these; the engine never calls them by name, so it stays free of SQL and Textual."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clonechat.engine.records import AgentName, DialogueStatus, NodeRecord, StopReason


@dataclass(frozen=True)
class DialogueStarted:
    dialogue_id: str
    first_speaker: AgentName
    #: Number of turns already on the path when the engine started (non-zero on resume).
    existing_turns: int


@dataclass(frozen=True)
class TurnStarted:
    dialogue_id: str
    node_id: str
    parent_id: str
    speaker: AgentName
    turn_index: int
    model: str


@dataclass(frozen=True)
class TokenDelta:
    dialogue_id: str
    node_id: str
    speaker: AgentName
    text: str


@dataclass(frozen=True)
class TurnRetrying:
    """The model call failed in a retryable way; text streamed so far for this turn is void
    and the turn starts again after ``wait`` seconds."""

    dialogue_id: str
    node_id: str
    speaker: AgentName
    attempt: int
    reason: str
    wait: float


@dataclass(frozen=True)
class NodeCompleted:
    """A node is final: an opening, a finished turn, a side-channel answer or an error record.

    ``side`` holds nodes stored in the same transaction as ``node``: the predictions of a turn,
    which are only kept together with the turn they predict (and are made again, with the same
    seeds, if the turn is lost to a crash)."""

    node: NodeRecord
    side: tuple[NodeRecord, ...] = ()


@dataclass(frozen=True)
class TurnFailed:
    dialogue_id: str
    node_id: str
    speaker: AgentName
    turn_index: int
    error: str


@dataclass(frozen=True)
class DialogueEnded:
    dialogue_id: str
    status: DialogueStatus
    reason: StopReason
    turns: int
    leaf_id: str
    error: str | None = None


Event = DialogueStarted | TurnStarted | TokenDelta | TurnRetrying | NodeCompleted | TurnFailed | DialogueEnded
EventSink = Callable[[Event], Awaitable[None]]


def fan_out(*sinks: EventSink) -> EventSink:
    """One sink that passes each event to every given sink, in order."""

    async def emit(event: Event) -> None:
        for sink in sinks:
            await sink(event)

    return emit
