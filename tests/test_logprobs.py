"""Scoring given text with the real embedded SmolLM2 model (the SURPRISAL scorer's source)."""

from __future__ import annotations

import math
import random
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from llama_cpp import Llama

from clonechat.errors import ProviderError
from clonechat.providers import llama_runtime
from clonechat.providers.base import ChatMessage, ChatRequest, Completion, GenerationParams
from clonechat.providers.embedded import EmbeddedProvider, find_smollm2_gguf
from clonechat.providers.logprobs import ContinuationLogprob, LogprobSource

pytestmark = [pytest.mark.anyio, pytest.mark.model]

MESSAGES = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Why is the sky blue?"),
]


@asynccontextmanager
async def embedded(n_ctx: int = 1024, max_contexts: int = 4) -> AsyncIterator[EmbeddedProvider]:
    provider = EmbeddedProvider(n_ctx=n_ctx, max_contexts=max_contexts)
    try:
        yield provider
    finally:
        await provider.aclose()


async def generate(provider: EmbeddedProvider, messages: list[ChatMessage], max_tokens: int = 40) -> Completion:
    async def ignore(text: str) -> None:
        pass

    request = ChatRequest(messages, GenerationParams(temperature=0.0, max_tokens=max_tokens, seed=1), cache_key="A")
    return await provider.generate(request, ignore)


def test_mean_and_surprisal_in_bits() -> None:
    value = ContinuationLogprob(total=-6 * math.log(2), tokens=3)
    assert value.mean == pytest.approx(-2 * math.log(2))
    assert value.surprisal_bits_per_token == pytest.approx(2.0)
    assert ContinuationLogprob(0.0, 0).mean == 0.0
    assert ContinuationLogprob(0.0, 0).surprisal_bits_per_token == 0.0


async def test_matches_llama_cpp_python_echo_logprobs() -> None:
    continuation = "The sky looks blue because air scatters blue light more than red light."
    async with embedded() as provider:
        source: LogprobSource = provider
        # Score another continuation of the same prompt first: the second call reuses the
        # prompt's KV cache and logits, and must still give the numbers of a fresh evaluation.
        await source.continuation_logprob(MESSAGES, "Because of Rayleigh scattering.")
        ours = await source.continuation_logprob(MESSAGES, continuation)
        scorer = provider._scorer
        assert scorer is not None
        prompt_text = scorer.render_messages(MESSAGES)
        assert prompt_text.endswith("<|im_start|>assistant\n")
        prompt, text = scorer.scoring_tokens(MESSAGES, continuation)
        per_token = scorer.token_logprobs(prompt + text, len(prompt))

    llama_runtime.apply()
    llm = Llama(model_path=str(find_smollm2_gguf()), n_ctx=1024, logits_all=True, verbose=False)
    try:
        # Tokenizing prompt and continuation together gives the same tokens as separately, so
        # both sides score the same token sequence.
        assert llm.tokenize((prompt_text + continuation).encode(), add_bos=False, special=True) == prompt + text
        result = llm.create_completion(prompt_text + continuation, max_tokens=1, echo=True, logprobs=1, temperature=0)
    finally:
        llm.close()
    logprobs = result["choices"][0]["logprobs"]  # type: ignore[index]
    # One entry per prompt token (the leading <|im_start|>, which is SmolLM2's BOS, and every
    # later one are skipped), then the one generated token.
    n = len(text)
    assert "".join(logprobs["tokens"][-n - 1 : -1]) == continuation
    theirs = logprobs["token_logprobs"][-n - 1 : -1]
    assert ours.tokens == n
    assert per_token == pytest.approx(theirs, abs=1e-3)
    assert ours.total == pytest.approx(sum(theirs), abs=1e-3)
    assert ours.total < 0


async def test_greedy_reply_is_likelier_than_shuffled_or_random_text() -> None:
    async with embedded() as provider:
        reply = (await generate(provider, MESSAGES)).text
        words = reply.split()
        assert len(words) >= 8
        rng = random.Random(3)
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        noise = "".join(rng.choice(string.ascii_letters + string.digits + string.punctuation) for _ in range(100))
        greedy = await provider.continuation_logprob(MESSAGES, reply)
        mixed = await provider.continuation_logprob(MESSAGES, " ".join(shuffled))
        random_chars = await provider.continuation_logprob(MESSAGES, noise)
    assert greedy.tokens > 0
    assert greedy.mean > mixed.mean + 1.0
    assert greedy.mean > random_chars.mean + 1.0
    assert greedy.surprisal_bits_per_token < mixed.surprisal_bits_per_token


async def test_empty_continuation_scores_nothing() -> None:
    async with embedded() as provider:
        value = await provider.continuation_logprob(MESSAGES, "")
    assert value == ContinuationLogprob(total=0.0, tokens=0)
    assert value.mean == 0.0


async def test_input_longer_than_the_context_is_an_error() -> None:
    async with embedded(n_ctx=256) as provider:
        with pytest.raises(ProviderError, match=r"do not fit the context window of 256 tokens"):
            await provider.continuation_logprob(MESSAGES, "lorem ipsum dolor " * 100)
        # The provider still works afterwards.
        assert (await provider.continuation_logprob(MESSAGES, "Light scatters.")).tokens > 0


async def test_scoring_leaves_the_generation_cache_alone() -> None:
    async with embedded(max_contexts=1) as provider:
        messages = list(MESSAGES)
        first = await generate(provider, messages, max_tokens=24)
        await provider.continuation_logprob(messages, "Something else entirely, scored in between.")
        messages += [ChatMessage("assistant", first.text), ChatMessage("user", "And at sunset?")]
        second = await generate(provider, messages, max_tokens=8)
    assert first.prompt_tokens is not None
    assert second.prompt_tokens_cached is not None and second.prompt_tokens_evaluated is not None
    # The first prompt and the reply come from the cache; only the new message is evaluated.
    assert second.prompt_tokens_cached >= first.prompt_tokens
    assert second.prompt_tokens_evaluated <= 16
