"""The one interface every model backend implements, and the types it speaks.

A provider turns a list of chat messages into one completion, calling ``on_delta`` with each
piece of text as it is generated. Keeping the interface to a single coroutine with a callback
(instead of an async generator) lets providers run blocking work in threads or own task groups
without leaking cancel scopes across ``yield``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "stop_sequence", "context_full"]
DeltaCallback = Callable[[str], Coroutine[object, object, None]]
#: Called before a retry with (attempt number that failed, reason, seconds until the next
#: attempt). Text streamed by the failed attempt is void: the next attempt starts from scratch.
RetryNotice = Callable[[int, str, float], Coroutine[object, object, None]]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters. ``None`` means "the provider's default"."""

    temperature: float = 0.8
    max_tokens: int = 200
    top_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None

    def as_dict(self) -> dict[str, float | int]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ChatRequest:
    messages: Sequence[ChatMessage]
    params: GenerationParams
    stop: Sequence[str] = ()
    #: Identifies whose conversation this is (e.g. dialogue + agent), so a provider that keeps
    #: per-conversation state (a KV cache) can find it again on the next turn.
    cache_key: str = ""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    model: str
    #: The stop sequence that ended generation (not included in ``text``), if any.
    stop_sequence: str | None = None
    prompt_tokens: int | None = None
    #: Prompt tokens the model had to evaluate this time, and those it reused from a cache.
    prompt_tokens_evaluated: int | None = None
    prompt_tokens_cached: int | None = None
    #: Prompt tokens written to a prompt cache this time (Anthropic's cache_creation_input_tokens).
    prompt_tokens_cache_written: int | None = None
    #: Tokens generated, reasoning included.
    completion_tokens: int | None = None
    #: The model's private reasoning before its answer (never part of ``text``, never shown to
    #: another agent), and the tokens it took where the server says.
    reasoning: str | None = None
    reasoning_tokens: int | None = None
    #: What the call cost in US dollars, where the model's prices are known.
    cost_usd: float | None = None
    #: Seconds from the request to the first text, and to the end.
    time_to_first_token: float | None = None
    latency: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderLoad:
    """How busy one backend is right now: requests being served and waiting for a slot.

    A batch's "dialogues running" says nothing about the model: with more dialogues in flight
    than an endpoint's connections (or than the embedded model's one slot), the rest queue."""

    #: The endpoint's base URL, or the embedded model's name.
    label: str
    in_flight: int
    queued: int
    #: Requests it serves at once (the current limit: it shrinks under rate limiting).
    limit: int


class Provider(Protocol):
    """A model backend."""

    #: Short display name of the model (stored on every node it writes).
    model_name: str

    async def generate(
        self, request: ChatRequest, on_delta: DeltaCallback, on_retry: RetryNotice | None = None
    ) -> Completion:
        """Generate one assistant message. Raises ``ProviderError`` on failure (after retries,
        for providers that retry)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and caches."""
        ...
