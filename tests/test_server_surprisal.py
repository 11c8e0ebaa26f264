"""Surprisal from servers that return prompt log-probabilities (``prompt_logprobs`` model option).

A real ``llama_cpp.server`` serving the embedded SmolLM2 GGUF on 127.0.0.1 must give, token by
token, the in-process scorer's numbers for the same messages and text; vLLM and SGLang (which
need a GPU) are loopback servers answering with hand-made bodies in their documented formats
(tests/servers/prompt_logprobs.py), and the requests clonechat sends them are checked exactly.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from clonechat.analysis.load import experiment_id
from clonechat.cli import app
from clonechat.errors import ConfigError, ProviderError
from clonechat.providers.base import ChatMessage
from clonechat.providers.embedded import EmbeddedProvider, find_smollm2_gguf
from clonechat.providers.http import Endpoint
from clonechat.providers.logprobs import ContinuationLogprob, LogprobSource
from clonechat.providers.retry import RetryPolicy
from clonechat.providers.server_logprobs import ScoringOpenAICompatibleProvider, server_root
from clonechat.registry import ModelSpec, ProviderPool
from clonechat.scoring.model_scorers import PredictorContexts
from clonechat.scoring.targets import load_targets
from clonechat.store.database import Database
from tests.servers.fake_model import FakeModelServer, Reply, fake_model_server
from tests.servers.prompt_logprobs import (
    DECOY,
    sglang_generate,
    sglang_tokenize,
    vllm_completion,
    vllm_tokenize,
)
from tests.test_model_servers import llama_server  # noqa: F401  (the real server, started per module)

pytestmark = pytest.mark.anyio

MESSAGES = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Why is the sky blue?"),
]
MESSAGES_JSON = [{"role": m.role, "content": m.content} for m in MESSAGES]


def scoring(url: str, form: str, **kw: object) -> ScoringOpenAICompatibleProvider:
    return ScoringOpenAICompatibleProvider(
        model_name="srv",
        model_id="m",
        endpoint=Endpoint(url),
        prompt_logprobs=form,
        retry=RetryPolicy(budget=0),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with fake_model_server() as s:
        yield s


# -- vLLM and SGLang on loopback servers ------------------------------------------------------

PROMPT = [1, 10, 11, 12, 13, 2]  # what /tokenize answers for MESSAGES
TEXT = [30, 31, 32]  # ... and for the continuation on its own
IDS = PROMPT + TEXT
#: log p(IDS[i + 1] | IDS[: i + 1]); the last three are the continuation's.
LOGPROBS = [-2.5, -0.25, -3.0, -0.75, -1.5, -0.125, -4.0625, -0.5]
EXPECTED = math.fsum(LOGPROBS[-3:])


def test_server_root_is_the_base_url_without_v1() -> None:
    assert server_root("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"
    assert server_root("http://gw/vllm/v1/") == "http://gw/vllm"
    assert server_root("http://127.0.0.1:30000") == "http://127.0.0.1:30000"


async def test_vllm_tokenizes_chat_and_text_then_reads_prompt_logprobs(server: FakeModelServer) -> None:
    server.script = [
        Reply(body=vllm_tokenize(PROMPT)),
        Reply(body=vllm_tokenize(TEXT)),
        Reply(body=vllm_completion(IDS, LOGPROBS)),
    ]
    provider = scoring(server.url + "/v1", "vllm")
    try:
        source: LogprobSource = provider
        result = await source.continuation_logprob(MESSAGES, "Blue light scatters.")
    finally:
        await provider.aclose()
    assert result == ContinuationLogprob(total=EXPECTED, tokens=3)
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/tokenize"),
        ("POST", "/tokenize"),
        ("POST", "/v1/completions"),
    ]
    assert [r.json() for r in server.requests] == [
        {"model": "m", "messages": MESSAGES_JSON, "add_generation_prompt": True},
        {"model": "m", "prompt": "Blue light scatters.", "add_special_tokens": False},
        {"model": "m", "prompt": IDS, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 1},
    ]
    # The hand-made body has a decoy as top-1 where the token is not the likeliest (as vLLM).
    assert set(vllm_completion(IDS, LOGPROBS)["choices"][0]["prompt_logprobs"][7]) == {str(DECOY), "31"}


@pytest.mark.parametrize("skip_first", [False, True], ids=["from-start", "older-sglang"])
async def test_sglang_tokenizes_then_reads_input_token_logprobs(server: FakeModelServer, skip_first: bool) -> None:
    start = len(PROMPT) - 1
    server.script = [
        Reply(body=sglang_tokenize(PROMPT)),
        Reply(body=sglang_tokenize(TEXT)),
        Reply(body=sglang_generate(IDS, LOGPROBS, start, skip_first=skip_first)),
    ]
    provider = scoring(server.url + "/v1", "sglang")
    try:
        result = await provider.continuation_logprob(MESSAGES, "Blue light scatters.")
    finally:
        await provider.aclose()
    assert result == ContinuationLogprob(total=EXPECTED, tokens=3)
    assert [r.path for r in server.requests] == ["/tokenize", "/tokenize", "/generate"]
    assert [r.json() for r in server.requests] == [
        {"model": "m", "messages": MESSAGES_JSON},
        {"model": "m", "prompt": "Blue light scatters.", "add_special_tokens": False},
        {
            "input_ids": IDS,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": start,
        },
    ]


async def score_error(server: FakeModelServer, form: str, continuation: str = "Blue light scatters.") -> str:
    provider = scoring(server.url + "/v1", form)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.continuation_logprob(MESSAGES, continuation)
    finally:
        await provider.aclose()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"model 'srv' at {server.url}/v1: ")
    return message


async def test_input_longer_than_the_window_is_refused_before_scoring(server: FakeModelServer) -> None:
    server.script = [Reply(body=vllm_tokenize(PROMPT, max_model_len=9)), Reply(body=vllm_tokenize(TEXT, 9))]
    message = await score_error(server, "vllm")
    assert "the prompt (6 tokens) plus the message (3 tokens) do not fit the context window of 9 tokens" in message
    assert len(server.requests) == 2  # nothing was sent to be scored


async def test_server_errors_and_unexpected_bodies_are_one_line(server: FakeModelServer) -> None:
    too_long = {"error": {"message": "This model's maximum context length is 8 tokens.", "type": "BadRequestError"}}
    server.script = [Reply(body=vllm_tokenize(PROMPT)), Reply(body=vllm_tokenize(TEXT)), Reply(400, too_long)]
    assert "POST /v1/completions: HTTP 400: This model's maximum context length is 8 tokens." in await score_error(
        server, "vllm"
    )

    server.script = [Reply(404, {"detail": "Not Found"})]
    assert "POST /tokenize: HTTP 404" in await score_error(server, "sglang")

    body = vllm_completion(IDS, LOGPROBS)
    del body["choices"][0]["prompt_logprobs"]
    server.script = [Reply(body=vllm_tokenize(PROMPT)), Reply(body=vllm_tokenize(TEXT)), Reply(body=body)]
    assert "without prompt_logprobs for the 9 tokens sent" in await score_error(server, "vllm")

    server.script = [Reply(body=vllm_tokenize(PROMPT)), Reply(body=vllm_tokenize(TEXT)), Reply(body=b"<html>")]
    assert "POST /v1/completions answered with a body that is not JSON" in await score_error(server, "vllm")

    wrong = sglang_generate([*PROMPT, 30, 31, 99], LOGPROBS, len(PROMPT) - 1)
    server.script = [Reply(body=sglang_tokenize(PROMPT)), Reply(body=sglang_tokenize(TEXT)), Reply(body=wrong)]
    assert "input_token_logprobs do not match the tokens sent (expected token 32)" in await score_error(
        server, "sglang"
    )


async def test_empty_message_scores_nothing_without_a_request(server: FakeModelServer) -> None:
    provider = scoring(server.url + "/v1", "vllm")
    try:
        assert await provider.continuation_logprob(MESSAGES, "") == ContinuationLogprob(0.0, 0)
    finally:
        await provider.aclose()
    assert server.requests == []


def test_options_are_checked_when_the_provider_is_built() -> None:
    with pytest.raises(ConfigError, match='prompt_logprobs = "llama-cpp" needs chat_template'):
        scoring("http://127.0.0.1:9/v1", "llama-cpp")
    with pytest.raises(ConfigError, match="chat_template is only used with"):
        scoring("http://127.0.0.1:9/v1", "vllm", chat_template="x.gguf")
    spec = ModelSpec(
        "srv", "openai-compatible", "srv", base_url="http://127.0.0.1:9/v1", model_id="m", prompt_logprobs="sglang"
    )
    provider = ProviderPool()._build(spec)
    assert isinstance(provider, ScoringOpenAICompatibleProvider) and provider.prompt_logprobs == "sglang"


# -- llama-cpp-python's server, for real ------------------------------------------------------

CASES = [
    # The model's own style of answer.
    (MESSAGES, "The sky looks blue because air scatters blue light more than red light."),
    # Several turns: every message starts with <|im_start|>, SmolLM2's BOS token, which the
    # server leaves out of its echo; and text of several bytes per character.
    (
        [
            *MESSAGES,
            ChatMessage("assistant", "Because of Rayleigh scattering."),
            ChatMessage("user", "Et en français ?"),
            ChatMessage("assistant", "La lumière bleue est diffusée."),
            ChatMessage("user", "Thanks!"),
        ],
        "De rien — naïve café façade 😀 ½.",
    ),
    # No system message: the template adds its own.
    ([ChatMessage("user", "Say yes.")], "Yes."),
]


@asynccontextmanager
async def both_scorers(url: str) -> AsyncIterator[tuple[EmbeddedProvider, ScoringOpenAICompatibleProvider]]:
    embedded = EmbeddedProvider(n_ctx=2048)
    served = ScoringOpenAICompatibleProvider(
        model_name="srv",
        model_id="smollm2",
        endpoint=Endpoint(url),
        prompt_logprobs="llama-cpp",
        chat_template=str(find_smollm2_gguf()),
        retry=RetryPolicy(budget=0),
    )
    try:
        yield embedded, served
    finally:
        await served.aclose()
        await embedded.aclose()


async def embedded_token_logprobs(
    provider: EmbeddedProvider, messages: list[ChatMessage], continuation: str
) -> list[float]:
    await provider.continuation_logprob(messages, continuation)  # creates the scoring context
    scorer = provider._scorer
    assert scorer is not None
    prompt, text = scorer.scoring_tokens(messages, continuation)
    return scorer.token_logprobs(prompt + text, len(prompt))


#: Per-token agreement required with the in-process scorer. Both evaluate the same tokens with
#: the same llama.cpp build and weights; they differ only in batch layout and in float32 (the
#: server's numpy log-softmax) vs float64 (ours) arithmetic.
TOLERANCE = 1e-3


@pytest.mark.model
async def test_per_token_logprobs_equal_the_in_process_scorer(llama_server: str) -> None:  # noqa: F811
    worst = 0.0
    async with both_scorers(llama_server) as (embedded, served):
        for messages, continuation in CASES:
            ours = await embedded_token_logprobs(embedded, messages, continuation)
            theirs = await served.continuation_token_logprobs(messages, continuation)
            assert len(theirs) == len(ours) > 0
            assert theirs == pytest.approx(ours, abs=TOLERANCE)
            worst = max(worst, *(abs(a - b) for a, b in zip(ours, theirs, strict=True)))
            total = await served.continuation_logprob(messages, continuation)
            assert total.tokens == len(ours)
            assert total.total == pytest.approx(math.fsum(ours), abs=TOLERANCE * len(ours))
    print(f"largest per-token difference from the in-process scorer: {worst:.3g}")


@pytest.mark.model
async def test_what_the_server_cannot_score_is_refused(llama_server: str) -> None:  # noqa: F811
    async with both_scorers(llama_server) as (_, served):
        with pytest.raises(ProviderError, match="contains special-token markup"):
            await served.continuation_logprob(MESSAGES, "Sure.<|im_end|>\n<|im_start|>user\nHi")
        with pytest.raises(ProviderError, match=r"POST /v1/completions: HTTP 400: .*context"):
            await served.continuation_logprob(MESSAGES, "lorem ipsum dolor " * 1500)
        # A vocabulary whose BOS the prompt does not start with: llama-cpp-python 0.3.x would
        # echo misaligned values, so nothing is asked of it.
        gguf = served._load_gguf()
        gguf.bos = 49_151
        with pytest.raises(ProviderError, match="does not start with the BOS token"):
            await served.continuation_logprob(MESSAGES, "Yes.")
        gguf.bos = 1
        assert (await served.continuation_logprob(MESSAGES, "Yes.")).tokens == 2


# -- the CLI: an experiment predicted by a llama_cpp.server model, scored for surprisal --------

SPEC = """\
name = "served"
replicates = 1
max_turns = 2
seed = 5
concurrency = 1
model_a = "srv"
prediction = true

[params]
max_tokens = 12

[[conditions]]
template = "clone-aware"
"""


def cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.model
def test_score_command_scores_predictions_made_on_a_llama_cpp_server(
    tmp_path: Path,
    llama_server: str,  # noqa: F811
) -> None:
    models, spec, db = tmp_path / "models.toml", tmp_path / "served.toml", tmp_path / "runs.db"
    models.write_text(
        f'[models.srv]\nprovider = "openai-compatible"\nbase_url = "{llama_server}"\nmodel = "smollm2"\n'
        f'prompt_logprobs = "llama-cpp"\nchat_template = "{find_smollm2_gguf()}"\nretry_budget = 0\n'
    )
    spec.write_text(SPEC)
    cli("batch", spec, "--db", db, "--models-file", models)
    output = cli("score", "served", "--scorer", "surprisal", "--db", db, "--models-file", models)
    assert "not available" not in output
    with closing(sqlite3.connect(db)) as conn:
        (predictions,) = conn.execute("SELECT count(*) FROM node WHERE kind = 'prediction'").fetchone()
        rows = conn.execute("SELECT node_id, value, detail FROM score WHERE scorer = 'surprisal'").fetchall()
    assert predictions == 2 and len(rows) == 2
    assert "surprisal: " in output and "new score rows for 2 predictions" in output
    assert all(value < 0 for _, value, _ in rows)

    # The stored value is what the in-process scorer gives for the same context and message.
    with Database.open(db, create=False) as database:
        eid = experiment_id(database, "served")
        target = load_targets(database, eid)[0]
        messages = PredictorContexts(database, eid).messages(target)
    value, detail = next((value, json.loads(detail)) for node, value, detail in rows if node == target.prediction_id)

    async def in_process() -> ContinuationLogprob:
        embedded = EmbeddedProvider(n_ctx=2048)
        try:
            return await embedded.continuation_logprob(messages, target.actual)
        finally:
            await embedded.aclose()

    expected = anyio.run(in_process)
    assert detail["tokens"] == expected.tokens > 0
    assert value == pytest.approx(expected.mean, abs=TOLERANCE)
