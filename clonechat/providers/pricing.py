"""What a model call cost, from the usage the server reported and the prices in ``models.toml``.

Prices are US dollars per million tokens, as every provider lists them. The prompt is billed in
three parts: tokens read from a prompt cache (``cached_input``), tokens written to one
(``cache_write``, Anthropic's ``cache_creation_input_tokens``) and the rest (``input``). Output
is billed at ``output``; where a provider bills reasoning apart, ``reasoning`` prices the
reasoning tokens, which every API counts inside the output tokens, so they are moved from one
rate to the other, never billed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens. A missing ``cached_input`` or ``cache_write`` is billed
    as ``input``; a missing ``reasoning`` as ``output``."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, as the server reported them. ``prompt`` counts every prompt token,
    cached and written ones included; ``output`` counts reasoning tokens too."""

    prompt: int = 0
    cached: int = 0
    cache_written: int = 0
    output: int = 0
    reasoning: int = 0


def cost_usd(prices: Prices, usage: Usage) -> float:
    """The call's cost in US dollars."""
    cached = min(usage.cached, usage.prompt)
    written = min(usage.cache_written, usage.prompt - cached)
    fresh = usage.prompt - cached - written
    reasoning = min(usage.reasoning, usage.output)
    dollars_per_million = (
        fresh * prices.input
        + cached * (prices.input if prices.cached_input is None else prices.cached_input)
        + written * (prices.input if prices.cache_write is None else prices.cache_write)
        + (usage.output - reasoning) * prices.output
        + reasoning * (prices.output if prices.reasoning is None else prices.reasoning)
    )
    return dollars_per_million / PER_TOKENS
