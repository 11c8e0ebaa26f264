"""Dialogues through the HTTP providers: a real llama.cpp server and the fault server, all on
127.0.0.1, stored in real SQLite files."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clonechat.engine.dialogue import run_dialogue
from clonechat.providers.embedded import find_smollm2_gguf
from clonechat.providers.llama_server import command as llama_server_command
from clonechat.read.dialogues import dialogue_summaries, resolve_dialogue
from clonechat.read.paths import dialogue_path
from clonechat.registry import ModelSpec, ProviderPool, Registry, set_default_registry
from clonechat.session import DialogueRequest, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer
from tests.servers.fake_model import Reply, Stream, fake_model_server, openai_events

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` serving the embedded SmolLM2 on loopback (started through
    clonechat's launcher, which only applies the AMX workaround of ``llama_runtime``)."""
    port = free_port()
    command = llama_server_command("--model", str(find_smollm2_gguf()))
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--model_alias", "smollm2"]
    command += ["--interrupt_requests", "False"]  # queue concurrent requests instead of cutting them
    # Its log goes to a file: llama.cpp is chatty, and a full pipe would block the server.
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def server_spec(name: str, url: str, **kw: object) -> ModelSpec:
    values: dict[str, object] = {
        "name": name,
        "provider": "openai-compatible",
        "display_name": "SmolLM2-135M-Instruct",
        "base_url": url,
        "model_id": "smollm2",
    }
    values.update(kw)
    return ModelSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def use_models() -> Iterator[Registry]:
    registry = Registry()
    set_default_registry(registry)
    yield registry
    set_default_registry(Registry())


async def run_and_store(db: Database, request: DialogueRequest) -> str:
    pool = ProviderPool()
    try:
        async with open_writer(db) as writer:
            prepared = await prepare_dialogue(writer, request, pool)
            await run_dialogue(prepared.settings, prepared.agents, prepared.path, Recorder(writer))
    finally:
        await pool.aclose()
    return prepared.dialogue_id


@pytest.mark.model
@pytest.mark.parametrize("stream", [True, False])
async def test_clone_dialogue_on_a_real_llama_cpp_server(
    db: Database, llama_server: str, use_models: Registry, stream: bool
) -> None:
    use_models.models["srv"] = server_spec("srv", llama_server, stream=stream)
    dialogue_id = await run_and_store(db, DialogueRequest(model_a="srv", max_turns=4, max_tokens=24, seed=3))
    dialogue = resolve_dialogue(db, dialogue_id)
    assert dialogue.status == "completed", dialogue.error
    turns = [n for n in dialogue_path(db, dialogue) if n.kind == "turn"]
    assert [n.speaker for n in turns] == ["A", "B", "A", "B"]
    for node in turns:
        assert node.model == "srv"
        assert node.content.strip()
        assert 0 < (node.completion_tokens or 0) <= 24
        assert node.finish_reason in ("stop", "length")
        assert node.latency_ms


@pytest.mark.model
async def test_a_on_embedded_model_b_on_server(db: Database, llama_server: str, use_models: Registry) -> None:
    use_models.models["srv"] = server_spec("srv", llama_server)
    request = DialogueRequest(model_a="local", model_b="srv", max_turns=4, max_tokens=20, seed=1, first_speaker="A")
    dialogue = resolve_dialogue(db, await run_and_store(db, request))
    assert dialogue.status == "completed"
    assert (dialogue.model_a, dialogue.model_b) == ("local", "srv")
    turns = [n for n in dialogue_path(db, dialogue) if n.kind == "turn"]
    assert [n.model for n in turns] == ["SmolLM2-135M-Instruct-Q4_1", "srv"] * 2
    [summary] = dialogue_summaries(db)
    assert summary.condition == "clone-aware:local+srv"


async def test_requests_only_grow_by_appending(db: Database, use_models: Registry) -> None:
    """Byte-identical prefixes from turn to turn, so server prefix caches reuse them."""
    with fake_model_server(Stream(openai_events(["same ", "reply"]))) as server:
        use_models.models["fake"] = server_spec("fake", server.url + "/v1")
        await run_and_store(db, DialogueRequest(model_a="fake", max_turns=6, first_speaker="A", seed=1))
        bodies = [r.json() for r in server.requests]
    for agent_requests in (bodies[0::2], bodies[1::2]):
        for earlier, later in itertools.pairwise(agent_requests):
            before = json.dumps(earlier["messages"])[:-1]
            assert json.dumps(later["messages"]).startswith(before)
            assert earlier["messages"][0] == later["messages"][0]


async def test_cut_stream_is_never_stored_and_persistent_errors_become_error_nodes(
    db: Database, use_models: Registry
) -> None:
    with fake_model_server(Stream(openai_events(["whole ", "turn"]))) as server:
        use_models.models["fake"] = ModelSpec(
            **{**server_spec("fake", server.url + "/v1").__dict__, "retry_budget": 1.0}
        )
        server.script = [
            Stream(openai_events(["PARTIAL ", "text", " lost"]), cut_after=2),  # turn 1, attempt 1
            Stream(openai_events(["whole ", "turn"])),  # turn 1, attempt 2
            Stream(openai_events(["second"])),  # turn 2
        ] + [Stream(["data: {broken\n\n"])] * 200  # turn 3 never succeeds
        dialogue_id = await run_and_store(db, DialogueRequest(model_a="fake", max_turns=5, seed=1))
    dialogue = resolve_dialogue(db, dialogue_id)
    assert dialogue.status == "failed"
    assert dialogue.error is not None
    assert "malformed JSON" in dialogue.error
    path = dialogue_path(db, dialogue)
    assert [n.content for n in path if n.kind == "turn"] == ["whole turn", "second"]
    with db.session() as session:
        rows = session.connection().exec_driver_sql("SELECT kind, error, content, turn_index FROM node").fetchall()
    assert not any("PARTIAL" in row[2] for row in rows)
    errors = [row for row in rows if row[0] == "error"]
    assert len(errors) == 1
    assert "malformed JSON" in errors[0][1]
    assert errors[0][3] == 3


def test_api_key_never_reaches_disk_or_output(tmp_path: Path) -> None:
    sentinel = "sk-SENTINEL-0123456789abcdef"
    with fake_model_server(Stream(openai_events(["fine"]))) as server:
        models = tmp_path / "models.toml"
        models.write_text(
            f'[models.keyed]\nprovider = "openai-compatible"\nbase_url = "{server.url}/v1"\n'
            'model = "m"\napi_key_env = "CLONECHAT_TEST_KEY"\nretry_budget = 0.5\n'
        )
        env = {**os.environ, "CLONECHAT_TEST_KEY": sentinel, "NO_COLOR": "1"}
        db = tmp_path / "runs" / "k.db"
        args = [sys.executable, "-m", "clonechat", "run", "--model", "keyed", "--models-file", str(models)]
        args += ["--turns", "2", "--db", str(db)]
        ok = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
        # The server echoes the key back in an error body, as some do.
        server.default = Reply(401, {"error": {"message": f"Incorrect API key provided: {sentinel}"}})
        bad = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
        sent = [r.headers.get("authorization") for r in server.requests]
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 1
    assert "HTTP 401" in bad.stdout + bad.stderr
    assert f"Bearer {sentinel}" in sent  # the key was really used
    outputs = ok.stdout + ok.stderr + bad.stdout + bad.stderr
    assert sentinel not in outputs
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != models:
            assert sentinel.encode() not in path.read_bytes(), path
