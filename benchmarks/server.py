"""clonechat against a bare httpx client, both talking to llama_cpp.server on loopback.

For K = 1, 4 and 8 concurrent dialogues: clonechat runs K clone dialogues (engine, provider,
retries, limits, SQLite store) against ``python -m llama_cpp.server`` serving the embedded
SmolLM2; every request payload it sends is recorded. A bare httpx client then replays exactly
that request sequence, K dialogues at a time, each dialogue's requests in order, reading the
SSE streams. Temperature 0 and fixed seeds make the server do the same work for both. Rounds
alternate which side goes first. Target: clonechat's throughput >= 0.95 of the bare client's.

Run: python3 -m uv run python benchmarks/server.py
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import httpx

from clonechat.engine.dialogue import run_dialogue
from clonechat.providers.base import ChatRequest
from clonechat.providers.embedded import find_smollm2_gguf
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.registry import ModelSpec, ProviderPool, Registry, set_default_registry
from clonechat.session import DialogueRequest, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer

TURNS = 4
MAX_TOKENS = 32


class RecordingPool(ProviderPool):
    """Records every payload clonechat sends, per dialogue, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.payloads: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def _build(self, spec: ModelSpec) -> Any:
        provider = super()._build(spec)
        assert isinstance(provider, OpenAICompatibleProvider)
        original = provider.payload
        payloads = self.payloads

        def payload(request: ChatRequest, stream: bool) -> dict[str, Any]:
            body = original(request, stream)
            payloads[request.cache_key.split(":")[0]].append(body)
            return body

        provider.payload = payload  # type: ignore[method-assign]
        return provider


async def clonechat_run(url: str, k: int, db_path: Path) -> tuple[float, dict[str, list[dict[str, Any]]]]:
    registry = Registry()
    registry.models["srv"] = ModelSpec(
        "srv", "openai-compatible", "SmolLM2-135M-Instruct", base_url=url, model_id="smollm2", max_connections=k
    )
    set_default_registry(registry)
    pool = RecordingPool()
    db = Database.open(db_path)
    started = time.perf_counter()
    try:
        async with open_writer(db) as writer:

            async def one(seed: int) -> None:
                request = DialogueRequest(
                    model_a="srv", max_turns=TURNS, max_tokens=MAX_TOKENS, temperature=0.0, seed=seed
                )
                prepared = await prepare_dialogue(writer, request, pool)
                outcome = await run_dialogue(prepared.settings, prepared.agents, prepared.path, Recorder(writer))
                assert outcome.status == "completed", outcome.error

            async with anyio.create_task_group() as tg:
                for seed in range(k):
                    tg.start_soon(one, seed)
        elapsed = time.perf_counter() - started
    finally:
        await pool.aclose()
        db.close()
    return elapsed, dict(pool.payloads)


async def bare_run(url: str, k: int, payloads: dict[str, list[dict[str, Any]]]) -> tuple[float, int]:
    chunks = 0
    limits = httpx.Limits(max_connections=k)
    async with httpx.AsyncClient(base_url=url + "/", timeout=60, limits=limits) as client:

        async def dialogue(sequence: list[dict[str, Any]]) -> None:
            nonlocal chunks
            for body in sequence:
                async with client.stream("POST", "chat/completions", json=body) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if line.startswith("data: ") and '"content"' in line:
                            chunks += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for sequence in payloads.values():
                tg.start_soon(dialogue, sequence)
        return time.perf_counter() - started, chunks


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(tempfile.gettempdir()) / "clonechat-bench-server.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(find_smollm2_gguf())]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--model_alias", "smollm2"]
    # By default a new request interrupts the one being generated; queue them instead.
    command += ["--interrupt_requests", "False"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def main(rounds: int = 2) -> None:
    proc, url = start_server()
    try:
        # Warm-up: the first requests pay one-off costs on the server.
        anyio.run(clonechat_run, url, 1, Path(tempfile.mkdtemp()) / "warm.db")
        print(f"K concurrent dialogues x {TURNS} turns x <= {MAX_TOKENS} tokens, llama_cpp.server on loopback")
        print("K  round  requests  tokens  clonechat s  bare s  clonechat tok/s  bare tok/s  ratio")
        verdicts = []
        for k in (1, 4, 8):
            ratios = []
            for r in range(rounds):
                db_path = Path(tempfile.mkdtemp()) / "bench.db"
                if r % 2 == 0:
                    ours, payloads = anyio.run(clonechat_run, url, k, db_path)
                    bare, tokens = anyio.run(bare_run, url, k, payloads)
                else:  # bare first: replay the payloads recorded in the previous round
                    bare, tokens = anyio.run(bare_run, url, k, payloads)
                    ours, payloads = anyio.run(clonechat_run, url, k, db_path)
                requests = sum(len(v) for v in payloads.values())
                ratio = bare / ours  # same work on both sides: throughput ratio = time ratio
                ratios.append(ratio)
                print(
                    f"{k}  {r + 1:>5}  {requests:>8}  {tokens:>6}  {ours:>11.2f}  {bare:>6.2f}  "
                    f"{tokens / ours:>15.1f}  {tokens / bare:>10.1f}  {ratio:>5.3f}"
                )
            median = statistics.median(ratios)
            verdicts.append(median >= 0.95)
            print(f"K={k}: median ratio {median:.3f} (target >= 0.95): {'PASS' if median >= 0.95 else 'FAIL'}")
        print("all K:", "PASS" if all(verdicts) else "FAIL")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
