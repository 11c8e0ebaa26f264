"""What the engine knows about a conversation: nodes on a path from the root to a leaf."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from ulid import ULID

Speaker = Literal["A", "B", "researcher"]
AgentName = Literal["A", "B"]
NodeKind = Literal["opening", "turn", "error", "prediction", "report", "coordination", "recognition"]
DialogueStatus = Literal["pending", "running", "completed", "interrupted", "failed"]
#: ``stopped``: asked to stop gently (no new turn); ``cancelled``: stopped mid-turn;
#: ``converged``: a per-turn metric passed the spec's threshold for k turns in a row.
StopReason = Literal[
    "max_turns", "stop_phrase", "token_budget", "context_full", "converged", "stopped", "cancelled", "error"
]

#: Node kinds that are part of the conversation the agents see.
CONVERSATION_KINDS: frozenset[str] = frozenset({"opening", "turn"})


def new_id() -> str:
    """A ULID: unique, and sorts by creation time, so logs and trees read in order."""
    return str(ULID())


def utcnow() -> datetime:
    return datetime.now(UTC)


def addressed_to(node: NodeRecord, agent: AgentName) -> bool:
    """Whether ``agent`` sees ``node``: a researcher's turn addressed to one agent (``variant``
    ``A`` or ``B``) is seen by that agent only; every other conversation node by both."""
    return node.speaker != "researcher" or node.variant in (None, agent)


def other(agent: AgentName) -> AgentName:
    return "B" if agent == "A" else "A"


def turn_seed(dialogue_seed: int | None, turn_index: int, purpose: str = "turn") -> int | None:
    """A per-turn sampling seed derived from the dialogue's seed.

    Deriving it from the turn index (not from a running RNG) means a resumed or branched
    dialogue samples turn *t* exactly as an uninterrupted one would.
    """
    if dialogue_seed is None:
        return None
    digest = hashlib.blake2b(f"{dialogue_seed}:{turn_index}:{purpose}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class NodeRecord:
    """One message in the dialogue tree, as the engine produced it."""

    id: str
    dialogue_id: str
    parent_id: str | None
    speaker: Speaker
    kind: NodeKind
    turn_index: int
    content: str
    model: str | None = None
    params: dict[str, float | int] = field(default_factory=dict)
    prompt_tokens: int | None = None
    prompt_tokens_evaluated: int | None = None
    prompt_tokens_cached: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_ms: float | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    #: For a prediction: the turn it predicts (stored together with that turn); for a
    #: recognition answer: the turn shown to the agent.
    target_node_id: str | None = None
    #: What kind of side-channel node this is: for a prediction ``partner``, ``self`` or
    #: ``cross``; for a coordination answer ``TASK@before`` or ``TASK@after``; for an error
    #: in a side channel, the channel that failed; for a researcher's turn, the agent it is
    #: addressed to (``A`` or ``B``; ``None`` for both); for a recognition answer, the item's
    #: position in the order it was asked.
    variant: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    #: The model's private reasoning before this message: stored, never put in any view.
    reasoning: str | None = None
    reasoning_tokens: int | None = None
    prompt_tokens_cache_written: int | None = None
    cost_usd: float | None = None
