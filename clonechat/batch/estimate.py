"""What a spec will cost before it runs: dialogues, model calls and tokens, for ``--dry-run``.

Figures are upper bounds: every dialogue is assumed to run all its turns and every turn to use
its whole ``max_tokens`` (a stop phrase or shorter replies only make it cheaper); with extended
thinking, the later prompts carry each earlier message at ``max_tokens`` less the thinking
budget, since thinking is never sent back. Prompt text
is counted at about four characters per token, which is close for English and needs no
tokenizer. A provider with a KV cache (the embedded model, vLLM, llama.cpp) evaluates far
fewer input tokens than it is sent.

**Cost**, where both models have ``[models.NAME.prices]``: the same upper-bound tokens at those
prices, each model paying for the half of the turns it speaks (and the side-channel calls
priced at the two models' mean). Twice: without prompt caching, every prompt token at
``input``; and with it, as Anthropic's breakpoints (the system prompt and the last message)
bill a dialogue: each turn reads from the cache the prompt of that agent's previous turn
(``cached_input``) and writes the rest, the two messages since then (``cache_write``). For an
OpenAI-compatible model, caching counts only where ``cached_input`` is priced (OpenAI caches
prompt prefixes by itself, writes free). Side channels are priced without caching: an upper
bound. Prompts shorter than the provider's minimum cacheable length (1,024 tokens for most
Claude models) are not cached at all, so short dialogues save less than this says.
"""

from __future__ import annotations

from dataclasses import dataclass

from clonechat.batch.spec import LoadedSpec, PlannedCondition
from clonechat.providers.pricing import PER_TOKENS, Prices
from clonechat.registry import ModelSpec

CHARS_PER_TOKEN = 4
#: Chat-template tokens around each message (role markers, separators).
MESSAGE_OVERHEAD = 8


@dataclass(frozen=True)
class ConditionEstimate:
    condition: str
    template: str
    model_a: str
    model_b: str
    dialogues: int
    max_turns: int
    max_tokens: int
    model_calls: int
    output_tokens: int
    input_tokens: int
    #: US dollars at most, without and with prompt caching (None: a model has no prices).
    cost_usd: float | None = None
    cost_usd_cached: float | None = None


def text_tokens(text: str) -> int:
    """A rough token count of a message: ~4 characters a token, plus its chat markup."""
    return len(text) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD


def estimate_condition(condition: PlannedCondition) -> ConditionEstimate:
    plan = condition.blueprint
    turns = condition.max_turns
    max_tokens = max(plan.params_a.max_tokens, plan.params_b.max_tokens)
    # With extended thinking, max_tokens counts the thinking too, which never enters a history.
    message_tokens = max(
        params.max_tokens - (spec.thinking_budget or 0)
        for spec, params in ((plan.spec_a, plan.params_a), (plan.spec_b, plan.params_b))
    )
    fixed = (text_tokens(plan.system_a.text) + text_tokens(plan.system_b.text)) // 2 + text_tokens(plan.opening.text)
    # Turn t sees the system prompt, the opening and the t-1 earlier turns.
    per_message = message_tokens + MESSAGE_OVERHEAD
    per_dialogue_input = turns * fixed + per_message * turns * (turns - 1) // 2
    # Each prediction is a request as long as a turn's, and may be as long as the turn it predicts.
    m = plan.request.measures
    per_turn = 1
    if m.prediction is not None:
        per_turn += 1 + int(m.prediction.self_predict) + int(m.prediction.cross_model is not None)
    side_calls, side_output, side_input = 0, 0, 0
    if m.coordination is not None:
        asked = 2 * len(m.coordination.tasks) * (2 if m.coordination.when == "both" else 1)
        side_calls += asked
        side_output += asked * m.coordination.max_tokens
        side_input += asked * (fixed + per_message * turns // 2)
    if m.report_back is not None:
        side_calls += 2
        side_output += 2 * m.report_back.max_tokens
        side_input += 2 * (fixed + per_message * turns)
    if m.recognition is not None:
        # Each agent is asked about up to `items` messages, one request each.
        asked = 2 * min(m.recognition.items, turns)
        side_calls += asked
        side_output += asked * m.recognition.max_tokens
        context = per_message * turns if m.recognition.context == "dialogue" else 0
        side_input += asked * (fixed + context + per_message)
    output_tokens = condition.replicates * (turns * max_tokens * per_turn + side_output)
    input_tokens = condition.replicates * (per_dialogue_input * per_turn + side_input)
    cost, cached_cost = None, None
    prices = [plan.spec_a.prices, plan.spec_b.prices]
    if all(price is not None for price in prices):
        both = [price for price in prices if price is not None]
        mean_in = sum(price.input for price in both) / 2
        mean_out = sum(price.output for price in both) / 2
        turn_input = condition.replicates * per_dialogue_input
        turn_output = condition.replicates * turns * max_tokens
        side_cost = ((input_tokens - turn_input) * mean_in + (output_tokens - turn_output) * mean_out) / PER_TOKENS
        cost = (turn_input * mean_in + turn_output * mean_out) / PER_TOKENS + side_cost
        cached = sum(
            _cached_turns_cost(spec, price, fixed, per_message, turns) / 2
            for spec, price in zip((plan.spec_a, plan.spec_b), both, strict=True)
        )
        cached_cost = condition.replicates * cached + turn_output * mean_out / PER_TOKENS + side_cost
    return ConditionEstimate(
        condition=condition.name,
        template=plan.request.condition,
        model_a=plan.spec_a.name,
        model_b=plan.spec_b.name,
        dialogues=condition.replicates,
        max_turns=turns,
        max_tokens=max_tokens,
        model_calls=condition.replicates * (turns * per_turn + side_calls),
        output_tokens=output_tokens,
        input_tokens=input_tokens,
        cost_usd=cost,
        cost_usd_cached=cached_cost,
    )


def caches_prompts(spec: ModelSpec, prices: Prices) -> bool:
    """Whether ``spec``'s prompt prefixes are billed at a cache rate."""
    if spec.provider == "anthropic":
        return spec.prompt_caching
    return spec.provider == "openai-compatible" and prices.cached_input is not None


def _cached_turns_cost(spec: ModelSpec, prices: Prices, fixed: int, per_message: int, turns: int) -> float:
    """One dialogue's input cost of all ``turns`` had every one been this model's, with prompt
    caching: turn t's prompt is ``fixed + (t-1) * per_message``; the agent's previous turn
    (t-2) wrote its prompt to the cache, so that much is read and the rest written."""
    if not caches_prompts(spec, prices):
        return sum(fixed + (t - 1) * per_message for t in range(1, turns + 1)) * prices.input / PER_TOKENS
    read_rate = prices.input if prices.cached_input is None else prices.cached_input
    write_rate = prices.input if prices.cache_write is None else prices.cache_write
    dollars = 0.0
    for t in range(1, turns + 1):
        prompt = fixed + (t - 1) * per_message
        cached = fixed + (t - 3) * per_message if t > 2 else 0
        dollars += cached * read_rate + (prompt - cached) * write_rate
    return dollars / PER_TOKENS


def estimate(loaded: LoadedSpec) -> list[ConditionEstimate]:
    return [estimate_condition(condition) for condition in loaded.conditions]
