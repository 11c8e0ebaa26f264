"""clonechat against a bare httpx client over loopback HTTP, on two servers.

Both parts run K concurrent clone dialogues through clonechat (engine, OpenAI-compatible
provider, retries, limits, SQLite store: the researcher's real job), recording every request
payload it sends; a bare httpx client (one ``httpx.AsyncClient``, reused) then replays exactly
that request sequence, K dialogues at a time, each dialogue's requests in order, reading the
SSE streams to their end. Rounds alternate which side goes first; verdicts use the median
throughput ratio (bare time / clonechat time: both sides do the same requests). Target:
clonechat's throughput >= 0.95 of the bare client's.

fast   A keep-alive server in another process (``python -m tests.servers.keepalive``: HTTP/1.1
       as uvicorn speaks it, chunked SSE, the zero-length chunk after ``data: [DONE]``) that
       answers every request at once with 8 content chunks, a usage chunk and [DONE], and counts
       the TCP connections it accepts. K = 50 and 200 dialogues x 6 turns, endpoint
       ``max_connections = K``. With the server instant, this measures what clonechat costs per
       request over a bare client, and whether connections are reused across turns. Targets:
       connections opened by clonechat <= max_connections; throughput >= 0.95 x bare httpx.
       Most of either side's CPU goes to httpcore's pool bookkeeping, which scans every
       connection of a pool (an ``is_readable`` check, a ``getpeername`` call, each) several
       times per request: the bare client's single pool of K pays K per scan, clonechat's pools
       of <= 32 (``CONNECTIONS_PER_CLIENT``) pay at most 32, so at K = 200 clonechat is faster.
llama  ``python -m llama_cpp.server`` (started via ``clonechat.providers.llama_server``)
       serving the embedded SmolLM2 (``--interrupt_requests False``), K = 1, 4 and 8 dialogues
       x 4 turns x <= 32 tokens, temperature 0 so the server does the same work for both.
       Target: throughput >= 0.95 x bare httpx.

``--quick`` runs the fast part at a few seconds' size (K = 4, 2 turns, 2 rounds) and prints the
same figures; its timings mean nothing, so only a crash or a wrong answer fails it.
``--profile`` adds a cProfile of one clonechat run of the fast part at the largest K.

Run: python3 -m uv run python benchmarks/server.py [--part fast|llama|all] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import httpx

from clonechat.engine.dialogue import run_dialogue
from clonechat.providers.base import ChatRequest
from clonechat.providers.embedded import find_smollm2_gguf
from clonechat.providers.llama_server import command as llama_server_command
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.registry import ModelSpec, ProviderPool, Registry, set_default_registry
from clonechat.session import DialogueRequest, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer

ROOT = Path(__file__).resolve().parent.parent
TURNS = 4
MAX_TOKENS = 32
FAST_KS = (50, 200)
FAST_TURNS = 6
FAST_ROUNDS = 3
#: Lines with "content" in a fast-server stream: the role chunk and the 8 content chunks.
FAST_CHUNKS = 9
TARGET = 0.95


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


async def clonechat_run(
    url: str, k: int, db_path: Path, turns: int = TURNS
) -> tuple[float, dict[str, list[dict[str, Any]]]]:
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
                    model_a="srv", max_turns=turns, max_tokens=MAX_TOKENS, temperature=0.0, seed=seed
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
    # Keep-alive for all K connections (httpx keeps 20 by default): the bare client reuses
    # connections as well as it can, or the comparison would favour clonechat.
    limits = httpx.Limits(max_connections=k, max_keepalive_connections=k)
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
    # llama_cpp.server through clonechat's launcher (llama_runtime: no AMX crash).
    command = llama_server_command("--model", str(find_smollm2_gguf()))
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


def llama_part(rounds: int = 2) -> bool:
    proc, url = start_server()
    try:
        # Warm-up: the first requests pay one-off costs on the server.
        anyio.run(clonechat_run, url, 1, Path(tempfile.mkdtemp()) / "warm.db")
        print(f"(llama) K concurrent dialogues x {TURNS} turns x <= {MAX_TOKENS} tokens, llama_cpp.server on loopback")
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
            verdicts.append(median >= TARGET)
            print(f"K={k}: median ratio {median:.3f} (target >= {TARGET}): {'PASS' if median >= TARGET else 'FAIL'}")
        print("(llama) all K:", "PASS" if all(verdicts) else "FAIL")
        return all(verdicts)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- the fast part: an instant keep-alive server that counts connections ---------------------


class FastServer:
    """``tests/servers/keepalive.py`` in its own process, so serving never shares the event loop
    (or the GIL) of the side being measured. It exits when its stdin closes."""

    def __init__(self) -> None:
        command = [sys.executable, "-m", "tests.servers.keepalive", "--max-seconds", "3600"]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "PORT":
            self.close()
            raise SystemExit(f"the keep-alive server did not start (said {line!r})")
        self.root = f"http://127.0.0.1:{line[1]}"
        self.url = self.root + "/v1"

    def stats(self) -> dict[str, int]:
        """The server's counters; its own connection is not counted as model traffic."""
        counters: dict[str, int] = httpx.get(self.root + "/_stats", timeout=30).json()
        return counters

    def close(self) -> None:
        stdin: IO[bytes] | None = self.proc.stdin
        if stdin is not None:
            stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Side:
    seconds: float
    connections: int
    requests: int


def measured(server: FastServer, run: Any, *args: Any) -> tuple[Side, Any]:
    """Run one side; return its time and the connections and requests the server saw."""
    before = server.stats()
    seconds, result = anyio.run(run, *args)
    after = server.stats()
    side = Side(seconds, after["connections"] - before["connections"], after["requests"] - before["requests"])
    return side, result


def fast_part(ks: Sequence[int], turns: int, rounds: int, profile: bool) -> tuple[bool, bool]:
    """Return (targets met, answers correct)."""
    server = FastServer()
    workdir = Path(tempfile.mkdtemp(prefix="clonechat-bench-fast-"))
    try:
        # Warm-up: imports, first connections, SQLite's first file.
        _, payloads = anyio.run(clonechat_run, server.url, 2, workdir / "warm.db", 2)
        anyio.run(bare_run, server.url, 2, payloads)
        print(
            f"(fast) K concurrent dialogues x {turns} turns, instant keep-alive server on loopback, max_connections = K"
        )
        print("K    round  first      requests  conns clonechat  conns bare  clonechat s  bare s  ratio")
        verdicts: list[bool] = []
        correct = True
        for k in ks:
            ratios: list[float] = []
            most = 0
            for r in range(rounds):
                db_path = workdir / f"k{k}-r{r}.db"
                if r % 2 == 0:
                    ours, payloads = measured(server, clonechat_run, server.url, k, db_path, turns)
                    bare, chunks = measured(server, bare_run, server.url, k, payloads)
                else:  # bare first: replay the payloads recorded in the previous round
                    bare, chunks = measured(server, bare_run, server.url, k, payloads)
                    ours, payloads = measured(server, clonechat_run, server.url, k, db_path, turns)
                requests = sum(len(v) for v in payloads.values())
                if not (requests == ours.requests == bare.requests == k * turns and chunks == FAST_CHUNKS * requests):
                    correct = False
                    print(
                        f"  wrong: {requests} payloads, server saw {ours.requests} / {bare.requests}, {chunks} chunks"
                    )
                ratio = bare.seconds / ours.seconds
                ratios.append(ratio)
                most = max(most, ours.connections)
                first = "clonechat" if r % 2 == 0 else "bare"
                print(
                    f"{k:<4} {r + 1:>5}  {first:<9}  {requests:>8}  {ours.connections:>15}  {bare.connections:>10}  "
                    f"{ours.seconds:>11.2f}  {bare.seconds:>6.2f}  {ratio:>5.3f}"
                )
            median = statistics.median(ratios)
            connections_ok = most <= k
            throughput_ok = median >= TARGET
            verdicts += [connections_ok, throughput_ok]
            print(
                f"K={k}: connections opened by clonechat at most {most} (target <= {k}): "
                f"{'PASS' if connections_ok else 'FAIL'}; median ratio {median:.3f} (target >= {TARGET}): "
                f"{'PASS' if throughput_ok else 'FAIL'}"
            )
        if profile:
            k = max(ks)
            profiler = cProfile.Profile()
            profiler.enable()
            anyio.run(clonechat_run, server.url, k, workdir / "profile.db", turns)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
            print(f"(fast) cProfile of one clonechat run at K={k}, by own time:")
            print(out.getvalue())
        print("(fast) all K:", "PASS" if all(verdicts) else "FAIL")
        return all(verdicts), correct
    finally:
        server.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", choices=("fast", "llama", "all"), default="all")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the fast part at a few seconds' size; timing targets are printed, not enforced",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one clonechat run of the fast part")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per K (default: fast 3, llama 2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        _, correct = fast_part((4,), 2, args.rounds or 2, args.profile)
        print("(quick: timings mean nothing; only the answers are checked)")
        return 0 if correct else 1
    verdicts = []
    if args.part in ("fast", "all"):
        met, correct = fast_part(FAST_KS, FAST_TURNS, args.rounds or FAST_ROUNDS, args.profile)
        verdicts += [met, correct]
    if args.part in ("llama", "all"):
        verdicts.append(llama_part(args.rounds or 2))
    print("all parts:", "PASS" if all(verdicts) else "FAIL")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
