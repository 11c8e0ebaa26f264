"""The embedded model keeps every agent view's KV state at any concurrency (real SmolLM2).

A view's KV cells move between llama contexts by copy, so a dialogue must generate exactly the
same text, evaluating exactly the same number of prompt tokens, whether it runs alone with a
context per view or among other dialogues sharing one context.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from clonechat.engine.dialogue import run_dialogue
from clonechat.measures import MeasureOptions, PredictionOptions
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams
from clonechat.providers.embedded import EmbeddedProvider, _Context, _View, find_smollm2_gguf
from clonechat.read.dialogues import resolve_dialogue
from clonechat.read.paths import dialogue_path
from clonechat.read.sides import side_nodes
from clonechat.registry import ProviderPool
from clonechat.session import DialogueRequest, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.models import Node
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer

pytestmark = [pytest.mark.anyio, pytest.mark.model]

MEASURED = MeasureOptions(prediction=PredictionOptions(self_predict=True))


def request_for(seed: int, turns: int = 4) -> DialogueRequest:
    # Sampled, so re-tokenizing a reply would often differ from the tokens the model generated.
    return DialogueRequest(
        max_turns=turns, max_tokens=32, seed=seed, temperature=0.9, first_speaker="A", measures=MEASURED
    )


async def run_all(db: Database, provider: EmbeddedProvider, seeds: Sequence[int]) -> dict[int, list[Node]]:
    """Run one dialogue per seed, all at once, on ``provider``; every node of each, by seed."""
    pool = ProviderPool()
    pool.add("local", provider)
    ids: dict[int, str] = {}
    try:
        async with open_writer(db) as writer:

            async def one(seed: int) -> None:
                prepared = await prepare_dialogue(writer, request_for(seed), pool)
                ids[seed] = prepared.dialogue_id
                outcome = await run_dialogue(prepared.settings, prepared.agents, prepared.path, Recorder(writer))
                assert outcome.status == "completed", outcome.error

            async with anyio.create_task_group() as tg:
                for seed in seeds:
                    tg.start_soon(one, seed)
    finally:
        await pool.aclose()
    out: dict[int, list[Node]] = {}
    for seed, dialogue_id in ids.items():
        dialogue = resolve_dialogue(db, dialogue_id)
        out[seed] = dialogue_path(db, dialogue) + side_nodes(db, dialogue_id)
    return out


def fingerprint(nodes: list[Node]) -> list[tuple[str, str | None, int, str, int | None, int | None]]:
    return sorted(
        (n.kind, n.variant, n.turn_index, n.content, n.prompt_tokens_evaluated, n.prompt_tokens_cached)
        for n in nodes
        if n.kind != "opening"
    )


async def test_a_dialogue_is_the_same_alone_or_among_many_sharing_one_context(tmp_path: Path) -> None:
    with Database.open(tmp_path / "alone.db") as db:
        alone = await run_all(db, EmbeddedProvider(max_contexts=4), [41])
    with Database.open(tmp_path / "crowd.db") as db:
        # Three dialogues x two views, with prediction and self-prediction, in one context:
        # every request hands the context to another view.
        crowd = await run_all(db, EmbeddedProvider(max_contexts=1), [41, 42, 43])
    assert fingerprint(crowd[41]) == fingerprint(alone[41])
    # And every request reuses its view's cache: what a request evaluates does not grow with the
    # dialogue. A turn evaluates only the chat markup (its self-prediction already read the
    # partner's message); a prediction, the instruction and what the view has not seen yet.
    evaluated = {(n.turn_index, n.kind, n.variant): n.prompt_tokens_evaluated or 0 for n in crowd[42]}
    last = max(t for t, _, _ in evaluated)
    for kind, variant in (("turn", None), ("prediction", "partner"), ("prediction", "self")):
        assert evaluated[(last, kind, variant)] <= 1.3 * evaluated[(2, kind, variant)] + 8, evaluated
    assert all(evaluated[(t, "turn", None)] <= 16 for t in range(2, last + 1)), evaluated


async def test_views_beyond_the_budget_are_dropped_and_re_evaluated() -> None:
    provider = EmbeddedProvider(max_contexts=1, n_ctx=1024, kv_budget_bytes=1)
    params = GenerationParams(temperature=0.0, max_tokens=8, seed=1)
    messages = [ChatMessage("user", "Name three colours of the rainbow.")]

    async def ignore(_text: str) -> None:
        return None

    try:
        first = await provider.generate(ChatRequest(messages, params, cache_key="x"), ignore)
        await provider.generate(ChatRequest(messages, params, cache_key="y"), ignore)
        again = await provider.generate(ChatRequest(messages, params, cache_key="x"), ignore)
    finally:
        await provider.aclose()
    # "x" lost its saved state to the one-byte budget: it starts from nothing, and says so.
    assert provider.views_dropped >= 1
    assert again.prompt_tokens_cached == 0
    assert again.text == first.text


async def test_capacity_note_names_the_views_that_do_not_fit() -> None:
    provider = EmbeddedProvider(kv_budget_bytes=100 * 1024**2)
    try:
        # SmolLM2-135M: 30 layers x 3 KV heads x 64 dims x (K and V) x 2 bytes = 23,040 bytes a token.
        assert provider.kv_bytes_per_token() == 23_040
        assert provider.capacity_note(4, 1000) is None
        note = provider.capacity_note(16, 2000)
        assert note is not None
        assert "16 agent views of up to 2,000 tokens" in note and "lower the concurrency" in note
    finally:
        await provider.aclose()


def test_prompt_keeps_the_exact_tokens_of_every_remembered_request() -> None:
    """A reply whose sampled tokens differ from how the tokenizer would split its text must not
    invalidate the KV cache, even when a prediction branched off the view in between."""
    context = _Context(find_smollm2_gguf(), 512, 2)
    try:
        tokenize = context.llm.tokenize
        text = "<|im_start|>assistant\nwhat a day"
        canonical = tokenize(text.encode(), add_bos=False, special=True)
        pieces = ["<|im_start|>assistant\n", "w", "hat", " a", " day"]
        sampled = [t for piece in pieces for t in tokenize(piece.encode(), add_bos=False, special=True)]
        assert sampled != canonical
        view = _View("A")
        view.remember(text, sampled)
        # A prediction branched off the turn: a newer text that the next turn does not extend.
        view.remember(text + "<|im_end|>\n<|im_start|>user\npredict<|im_end|>\n", [*sampled, 1, 2, 3])
        follow_up = text + "<|im_end|>\n<|im_start|>user\nok<|im_end|>\n"
        tokens = context._tokens_for(follow_up, view.histories)
        assert tokens[: len(sampled)] == sampled
        assert context.llm.detokenize(tokens, special=True).decode() == follow_up
        # A prompt that extends no remembered text is tokenized from scratch.
        assert context._tokens_for("<|im_start|>user\nhi", view.histories) == tokenize(
            b"<|im_start|>user\nhi", False, True
        )
    finally:
        context.llm.close()
