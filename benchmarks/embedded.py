"""Benchmark the embedded model inside clonechat against raw llama-cpp-python.

(a) Generation throughput. A clonechat dialogue runs on the embedded SmolLM2; right after each
    turn, a raw llama-cpp-python loop (its own llama context per agent, as clonechat keeps)
    is given the very same prompt and generates the same number of tokens with the same
    sampling settings. Interleaving turn by turn means both sides see the same machine load
    (this 2-core VM is noisy). Each side is timed from request to last token, prompt
    evaluation included. Target: clonechat tok/s / raw tok/s >= 0.95.
(b) KV-cache reuse: prompt tokens evaluated at turn 3 and turn 20 of one dialogue.
    Target: turn 20 costs <= 1.3x turn 3 (not the whole history again).

Run: python3 -m uv run python benchmarks/embedded.py [--quick]
``--quick`` (seconds, in the test suite) runs one short round and a 4-turn dialogue and enforces
no target: it checks that both parts run and print their figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

import anyio

from clonechat.engine.dialogue import Agent, DialogueSettings, opening_node, run_dialogue
from clonechat.engine.records import NodeRecord
from clonechat.prompts import PromptLibrary
from clonechat.providers.base import ChatRequest, Completion, DeltaCallback, GenerationParams, RetryNotice
from clonechat.providers.embedded import EMBEDDED_DEFAULTS, EmbeddedProvider, _Context, find_smollm2_gguf

OPENING = "The conversation begins now. Your partner will read what you write next."


def system_prompt(turns: int) -> str:
    values = {"model_name": "SmolLM2-135M-Instruct", "stop_phrase": "^C^C", "max_turns": turns}
    return PromptLibrary().get("conditions", "clone-aware").render(values).text


def raw_generate(ctx: _Context, request: ChatRequest, want: int) -> float:
    """The baseline: tokenize the prompt and pull ``want`` tokens from llama.cpp, nothing else."""
    p = request.params
    started = time.perf_counter()
    tokens = ctx.prompt_tokens(request)
    ctx.llm.set_seed(p.seed or 0)
    produced = 0
    for _ in ctx.llm.generate(tokens, temp=p.temperature, top_p=p.top_p or 1.0, repeat_penalty=p.repeat_penalty or 1.0):
        produced += 1
        if produced >= want:
            break
    return time.perf_counter() - started


@dataclass
class InterleavedRaw:
    """Wraps the clonechat provider; after each turn replays it on a bare llama context."""

    inner: EmbeddedProvider
    model_name: str = "bench"
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # tokens, clonechat s, raw s
    raw: dict[str, _Context] = field(default_factory=dict)

    async def generate(
        self, request: ChatRequest, on_delta: DeltaCallback, on_retry: RetryNotice | None = None
    ) -> Completion:
        started = time.perf_counter()
        completion = await self.inner.generate(request, on_delta, on_retry)
        ours = time.perf_counter() - started
        want = completion.completion_tokens or 0
        # Both sides load their llama context on an agent's first turn, inside the timing.
        raw_started = time.perf_counter()
        ctx = self.raw.get(request.cache_key)
        if ctx is None:
            ctx = self.raw[request.cache_key] = await self.inner._on_llama_thread(
                lambda _cancelled: _Context(find_smollm2_gguf(), 8192, os.cpu_count() or 1)
            )
        load = time.perf_counter() - raw_started
        # The provider's own llama thread, as clonechat's calls, so both sides share one OpenMP
        # thread team instead of two teams spinning against each other.
        raw = load + await self.inner._on_llama_thread(lambda _cancelled: raw_generate(ctx, request, want))
        if want:
            self.samples.append((want, ours, raw))
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()
        for ctx in self.raw.values():
            ctx.llm.close()


async def dialogue(provider: object, turns: int, max_tokens: int, seed: int) -> list[NodeRecord]:
    params = GenerationParams(**{**EMBEDDED_DEFAULTS.as_dict(), "max_tokens": max_tokens})
    agents = (
        Agent("A", provider, system_prompt(turns), params),  # type: ignore[arg-type]
        Agent("B", provider, system_prompt(turns), params),  # type: ignore[arg-type]
    )
    settings = DialogueSettings("bench", max_turns=turns, seed=seed, stop_phrase=None)

    async def ignore(_event: object) -> None:
        return None

    outcome = await run_dialogue(settings, agents, [opening_node("bench", OPENING)], ignore)
    assert outcome.status == "completed", outcome
    return outcome.path


def throughput(rounds: int = 3, turns: int = 8, max_tokens: int = 128) -> float:
    print("(a) generation throughput: clonechat vs raw llama-cpp-python, interleaved turn by turn")
    print("round  turns  tokens  clonechat s  raw s  clonechat tok/s  raw tok/s  ratio")
    # Warm-up: the first llama context in a process pays one-off costs (backend init, page
    # faults on the weights) that would otherwise land on whichever side loads first.
    _Context(find_smollm2_gguf(), 8192, os.cpu_count() or 1).llm.close()
    ratios = []
    for r in range(rounds):
        bench = InterleavedRaw(EmbeddedProvider())

        async def go(bench: InterleavedRaw = bench, seed: int = 100 + r) -> None:
            try:
                await dialogue(bench, turns, max_tokens, seed)
            finally:
                await bench.aclose()

        anyio.run(go)
        tokens = sum(s[0] for s in bench.samples)
        ours = sum(s[1] for s in bench.samples)
        raw = sum(s[2] for s in bench.samples)
        ratio = (tokens / ours) / (tokens / raw)
        ratios.append(ratio)
        print(
            f"{r + 1:>5}  {len(bench.samples):>5}  {tokens:>6}  {ours:>11.2f}  {raw:>5.2f}  "
            f"{tokens / ours:>15.1f}  {tokens / raw:>9.1f}  {ratio:>5.3f}"
        )
    median = statistics.median(ratios)
    print(f"median ratio {median:.3f} (target >= 0.95): {'PASS' if median >= 0.95 else 'FAIL'}")
    return median


def cache_reuse(turns: int = 20, max_tokens: int = 64) -> float:
    """Prompt tokens evaluated at turn 3 and at the last turn of one ``turns``-turn dialogue."""

    async def go() -> list[NodeRecord]:
        provider = EmbeddedProvider()
        try:
            return await dialogue(provider, turns, max_tokens, 7)
        finally:
            await provider.aclose()

    path = anyio.run(go)
    by_turn = {n.turn_index: n for n in path if n.kind == "turn"}
    print(
        f"\n(b) prompt tokens per turn with per-agent KV cache reuse ({turns}-turn dialogue, "
        f"{max_tokens} tokens/turn max)"
    )
    print("turn  prompt tokens  evaluated  cached")
    for t in (3, turns):
        n = by_turn[t]
        print(f"{t:>4}  {n.prompt_tokens:>13}  {n.prompt_tokens_evaluated:>9}  {n.prompt_tokens_cached:>6}")
    t3, last = by_turn[3], by_turn[turns]
    assert t3.prompt_tokens_evaluated and last.prompt_tokens_evaluated and last.prompt_tokens
    ratio = last.prompt_tokens_evaluated / t3.prompt_tokens_evaluated
    print(
        f"turn {turns} / turn 3 evaluated = {ratio:.2f} (target <= 1.3): {'PASS' if ratio <= 1.3 else 'FAIL'}; "
        f"without the cache turn {turns} would evaluate {last.prompt_tokens} tokens "
        f"({last.prompt_tokens / t3.prompt_tokens_evaluated:.1f}x turn 3)"
    )
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="seconds-long sizes; no targets enforced")
    if parser.parse_args().quick:
        throughput(rounds=1, turns=2, max_tokens=12)
        cache_reuse(turns=4, max_tokens=12)
        print("(--quick: both parts ran; timing targets are not enforced at this size)")
    else:
        throughput()
        cache_reuse()
