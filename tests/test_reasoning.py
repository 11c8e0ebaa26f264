"""Reasoning models end to end: every documented wire format of a reasoning trace (see
``tests/servers/reasoning_streams.py`` for the formats and their sources), streamed and not,
keeps the trace apart from the message; the trace is stored exactly and never reaches any later
request (the partner's, a predictor's, a coordination question's, a report's, the judge's);
Anthropic requests carry their cache breakpoints where documented and the stored cache tokens
and cost come from the usage the server sent; thinking options reach the wire and bad ones are
refused before any request; ``clonechat run`` / ``show`` / ``export`` / ``search`` and the TUI
show the trace as private.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from clonechat.cli import app
from clonechat.providers.anthropic import REDACTED_THINKING, AnthropicProvider
from clonechat.providers.base import ChatMessage, ChatRequest, Completion, GenerationParams
from clonechat.providers.http import Endpoint, HttpProvider, StreamState
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.providers.retry import RetryPolicy
from clonechat.providers.stops import StopSequenceFilter
from clonechat.providers.think_tags import ThinkTagSplitter, split_think_tags
from tests.servers.fake_model import Behaviour, FakeModelServer, Recorded, Reply, Stream, fake_model_server
from tests.servers.reasoning_streams import (
    REDACTED_DATA,
    SIGNATURE,
    AnthropicUsage,
    Thinking,
    anthropic_thinking_body,
    anthropic_thinking_events,
    deepseek_body,
    deepseek_events,
    inline_body,
    inline_events,
    openai_usage,
    openrouter_body,
    openrouter_events,
    think_content,
)

FAST = RetryPolicy(budget=5.0, initial_backoff=0.05, max_backoff=0.2)
STOP = "^C^C"
BUDGET = 1024
#: A trace in several pieces, with unicode, newlines and the stop phrase (which must not stop it).
REASONING = ["Let me think.\n", "Zuerst: ä ö ü — ", "中文推理 ✓\n\n", f"a stop {STOP} inside the reasoning", " …done."]
ANSWER = ["Hel", "lo, wör", "ld 🌍\n", "second line"]
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture(scope="module")
def loopback() -> Iterator[FakeModelServer]:
    """One server for the module's provider tests (stopping a server costs its poll interval)."""
    with fake_model_server() as server:
        yield server


@pytest.fixture
def server(loopback: FakeModelServer) -> FakeModelServer:
    """The shared server with no script and no recorded requests."""
    loopback.script.clear()
    loopback.requests.clear()
    return loopback


def request(max_tokens: int = 2000, stop: tuple[str, ...] = (STOP,), **params: Any) -> ChatRequest:
    messages = [ChatMessage("system", "be brief"), ChatMessage("user", "hi")]
    return ChatRequest(messages, GenerationParams(max_tokens=max_tokens, **params), stop=stop)


async def complete(provider: HttpProvider, req: ChatRequest | None = None) -> tuple[Completion, list[str]]:
    deltas: list[str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    try:
        completion = await provider.generate(req or request(), on_delta)
    finally:
        await provider.aclose()
    return completion, deltas


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- every format, streamed and not -----------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str
    #: The stream and the body a server sends for (reasoning pieces, answer pieces).
    events: Callable[[list[str], list[str]], list[str]]
    body: Callable[[list[str], list[str]], dict[str, Any]]
    #: The trace the Completion must carry, from the reasoning pieces.
    trace: Callable[[list[str]], str]
    reasoning_tokens: int | None = None
    anthropic: bool = False
    think_tags: bool = False

    def provider(self, server: FakeModelServer, *, stream: bool) -> HttpProvider:
        if self.anthropic:
            return AnthropicProvider(
                model_name="claude",
                model_id="c",
                endpoint=Endpoint(server.url),
                stream=stream,
                retry=FAST,
                thinking_budget=BUDGET,
            )
        return OpenAICompatibleProvider(
            model_name="reasoner",
            model_id="m",
            endpoint=Endpoint(server.url + "/v1"),
            stream=stream,
            retry=FAST,
            think_tags=self.think_tags,
        )

    def behaviour(self, reasoning: list[str], answer: list[str], *, stream: bool) -> Behaviour:
        return Stream(self.events(reasoning, answer)) if stream else Reply(body=self.body(reasoning, answer))


def _blocks(reasoning: list[str]) -> list[list[str] | None]:
    """Two thinking blocks with a redacted one between them."""
    return [reasoning[:2], None, reasoning[2:]]


FORMATS = [
    Format(
        "reasoning_content",
        lambda r, a: deepseek_events(r, a, usage=openai_usage(40, 90, reasoning=42)),
        lambda r, a: deepseek_body("".join(r), "".join(a), usage=openai_usage(40, 90, reasoning=42)),
        "".join,
        reasoning_tokens=42,
    ),
    Format(
        "reasoning",
        lambda r, a: openrouter_events(r, a, usage=openai_usage(40, 90, reasoning=43)),
        lambda r, a: openrouter_body("".join(r), "".join(a), usage=openai_usage(40, 90, reasoning=43)),
        "".join,
        reasoning_tokens=43,
    ),
    Format(
        "think_tags",
        lambda r, a: inline_events(chunks(think_content("".join(r), "".join(a)), 3), usage=openai_usage(40, 90)),
        lambda r, a: inline_body(think_content("".join(r), "".join(a))),
        # Exactly what is between the tags (the model's newlines after <think> and before </think>).
        lambda r: "\n" + "".join(r) + "\n",
        think_tags=True,
    ),
    Format(
        "anthropic",
        lambda r, a: anthropic_thinking_events(Thinking(_blocks(r), a)),
        lambda r, a: anthropic_thinking_body(Thinking(_blocks(r), a)),
        # Blocks are joined by a blank line; a redacted block is recorded as its marker.
        lambda r: "".join(r[:2]) + f"\n\n{REDACTED_THINKING}\n\n" + "".join(r[2:]),
        anthropic=True,
    ),
]
STREAMED = pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
EACH_FORMAT = pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])


@pytest.mark.anyio
@EACH_FORMAT
@STREAMED
async def test_the_trace_is_kept_apart_from_the_answer(server: FakeModelServer, fmt: Format, stream: bool) -> None:
    server.script = [fmt.behaviour(REASONING, ANSWER, stream=stream)]
    completion, deltas = await complete(fmt.provider(server, stream=stream))
    assert completion.text == "".join(ANSWER)
    assert completion.reasoning == fmt.trace(REASONING)
    assert completion.reasoning_tokens == fmt.reasoning_tokens
    # The stop phrase inside the reasoning did not stop anything.
    assert (completion.finish_reason, completion.stop_sequence) == ("stop", None)
    # Only the answer is streamed to the screen: the trace never passes through on_delta.
    assert "".join(deltas) == completion.text
    assert not any(word in "".join(deltas) for word in ("Zuerst", "推理", "think", "redacted"))


@pytest.mark.anyio
@EACH_FORMAT
@STREAMED
async def test_a_stop_phrase_in_the_answer_stops_it(server: FakeModelServer, fmt: Format, stream: bool) -> None:
    answer = ["bye ", "^C", "^C and", " more"]
    server.script = [fmt.behaviour(REASONING, answer, stream=stream)]
    completion, deltas = await complete(fmt.provider(server, stream=stream))
    assert completion.text == "bye " == "".join(deltas)
    assert (completion.finish_reason, completion.stop_sequence) == ("stop_sequence", STOP)
    assert completion.reasoning == fmt.trace(REASONING)


@pytest.mark.anyio
async def test_a_reasoning_only_reply_is_an_empty_message_with_a_trace(
    server: FakeModelServer,
) -> None:
    """A model that spends its whole budget thinking (``finish_reason: length``): no answer, and
    the trace kept; an inline block never closed is all reasoning."""
    events = deepseek_events(["only ", "thinking"], [], usage=openai_usage(5, 64, reasoning=64), finish="length")
    server.script = [Stream(events)]
    completion, _ = await complete(FORMATS[0].provider(server, stream=True))
    assert (completion.text, completion.reasoning, completion.finish_reason) == ("", "only thinking", "length")
    server.script = [Stream(inline_events(["<think>cut ", "off mid-"], finish="length"))]
    completion, _ = await complete(FORMATS[2].provider(server, stream=True))
    assert (completion.text, completion.reasoning) == ("", "cut off mid-")


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_one_delta_may_end_the_reasoning_and_begin_the_answer(server: FakeModelServer, field: str) -> None:
    events = deepseek_events(["first ", "second"], ["rest"])
    both = json.loads(events[2].removeprefix("data: "))
    both["choices"][0]["delta"] = {field: "second", "content": "The "}
    events[2] = f"data: {json.dumps(both)}\n\n"
    server.script = [Stream(events)]
    completion, deltas = await complete(FORMATS[0].provider(server, stream=True))
    assert (completion.text, completion.reasoning, "".join(deltas)) == ("The rest", "first second", "The rest")


# -- <think> split across chunks ------------------------------------------------------------

#: Pieces that make tags, near-tags and whitespace likely.
TAG_ALPHABET = st.sampled_from(["<", ">", "/", "t", "h", "i", "n", "k", " ", "\n", "x", "é", "<think>", "</think>"])


def cut(text: str, points: list[int]) -> list[str]:
    bounds = sorted({p % (len(text) + 1) for p in points})
    edges = [0, *bounds, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges)]


def split_in_pieces(pieces: list[str]) -> tuple[str | None, str]:
    splitter = ThinkTagSplitter()
    reasoning = answer = ""
    for piece in pieces:
        r, a = splitter.feed(piece)
        reasoning, answer = reasoning + r, answer + a
    r, a = splitter.flush()
    return (reasoning + r if splitter.thought else None), answer + a


@settings(max_examples=400, deadline=None)
@given(text=st.lists(TAG_ALPHABET, max_size=30).map("".join), points=st.lists(st.integers(0, 400), max_size=8))
def test_any_chunking_splits_like_the_whole_message(text: str, points: list[int]) -> None:
    assert split_in_pieces(cut(text, points)) == split_think_tags(text)


@settings(max_examples=300, deadline=None)
@given(
    lead=st.sampled_from(["", " ", "\n", " \n "]),
    reasoning=st.lists(TAG_ALPHABET, max_size=20).map("".join).filter(lambda r: "</think>" not in r),
    answer=st.lists(TAG_ALPHABET, max_size=12).map("".join),
    opening=st.booleans(),
    points=st.lists(st.integers(0, 400), max_size=8),
)
def test_a_think_block_is_split_off_however_it_is_chunked(
    lead: str, reasoning: str, answer: str, opening: bool, points: list[int]
) -> None:
    if not opening:  # DeepSeek-R1's template: "<think>" was in the prompt, only "</think>" is sent
        reasoning = reasoning.replace("<think>", "")
        lead = ""
    text = lead + ("<think>" if opening else "") + reasoning + "</think>\n\n" + answer
    assert split_in_pieces(cut(text, points)) == (reasoning, answer.lstrip())


async def _through_stream_state(pieces: list[str]) -> tuple[str, str, str | None]:
    shown: list[str] = []

    async def on_delta(text: str) -> None:
        shown.append(text)

    state = StreamState(time.perf_counter(), StopSequenceFilter((STOP,)), on_delta, think_tags=ThinkTagSplitter())
    for piece in pieces:
        if not await state.add(piece):
            break
    await state.flush()
    assert "".join(shown) == "".join(state.text)
    return "".join(state.text), "".join(state.reasoning), state.stops.matched


@pytest.mark.anyio
@pytest.mark.parametrize("opening", [True, False], ids=["open-and-close", "close-only"])
async def test_every_pair_of_cut_points_through_the_stream_state(opening: bool) -> None:
    """The tags (and the stop phrases, one in the trace and one in the answer) cut at every pair
    of positions: the answer, the trace and the stop are always the same."""
    trace, answer = f"r1 ✓ {STOP}\nr2", f"answer ü {STOP} never shown"
    content = think_content(trace, answer, opening_tag=opening)
    expected = ("answer ü ", ("\n" if opening else "") + trace + "\n", STOP)
    for i in range(len(content) + 1):
        for j in range(i, len(content) + 1):
            pieces = [content[:i], content[i:j], content[j:]]
            assert await _through_stream_state(pieces) == expected, pieces


@pytest.mark.anyio
@pytest.mark.parametrize("opening", [True, False], ids=["open-and-close", "close-only"])
async def test_a_character_per_chunk_from_a_server(server: FakeModelServer, opening: bool) -> None:
    content = think_content("ein Gedanke\nzwei", "the answer", opening_tag=opening)
    server.script = [Stream(inline_events(list(content)))]
    completion, deltas = await complete(FORMATS[2].provider(server, stream=True))
    assert completion.text == "the answer" == "".join(deltas)
    assert completion.reasoning == ("\n" if opening else "") + "ein Gedanke\nzwei\n"


# -- thinking and reasoning options on the wire ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("max_tokens", "sent"),
    [(4096, 4096), (BUDGET + 1, BUDGET + 1), (BUDGET, 2 * BUDGET), (32, BUDGET + 32)],
    ids=["above", "just-above", "equal", "side-channel"],
)
async def test_thinking_is_sent_without_sampling_and_with_room_to_answer(
    server: FakeModelServer, max_tokens: int, sent: int
) -> None:
    server.script = [Stream(anthropic_thinking_events(Thinking([["hm"]], ["ok"])))]
    await complete(FORMATS[3].provider(server, stream=True), request(max_tokens, temperature=0.7, top_p=0.9))
    body = server.requests[0].json()
    assert body["thinking"] == {"type": "enabled", "budget_tokens": BUDGET}
    assert body["max_tokens"] == sent
    assert "temperature" not in body and "top_p" not in body


@pytest.mark.anyio
@pytest.mark.parametrize("effort", ["high", None])
async def test_reasoning_effort_is_sent_when_set(server: FakeModelServer, effort: str | None) -> None:
    server.script = [Stream(deepseek_events(["r"], ["a"]))]
    provider = OpenAICompatibleProvider(
        model_name="o", model_id="m", endpoint=Endpoint(server.url + "/v1"), retry=FAST, reasoning_effort=effort
    )
    await complete(provider)
    body = server.requests[0].json()
    assert body.get("reasoning_effort") == effort and ("reasoning_effort" in body) == (effort is not None)


# -- blinding, end to end ---------------------------------------------------------------------

MARKER = re.compile(r"SECRET-[a-z]+-\d{3}")
#: What the reveal condition tells the speaker before showing it its partner's prediction.
REVEAL_NOTE = "your partner was asked to predict it"


@dataclass
class Scripted:
    """A loopback server whose i-th reply has the answer ``answer-{tag}-{i}`` and a trace with
    the unique marker ``SECRET-{tag}-{i}``."""

    tag: str
    server: FakeModelServer
    #: The answer of each reply, and the trace the node it becomes must store.
    traces: dict[str, str]
    reasoning_tokens: dict[str, int]


def trace_pieces(tag: str, i: int) -> list[str]:
    return [f"SECRET-{tag}-{i:03d} weighs it:\n", "erstens — ✓ 推理\n\n", f"zweitens {STOP} no stop"]


def scripted(stack: ExitStack, tag: str, kind: str, count: int = 120) -> Scripted:
    server = stack.enter_context(fake_model_server())
    traces: dict[str, str] = {}
    tokens: dict[str, int] = {}
    for i in range(count):
        pieces, answer = trace_pieces(tag, i), f"answer-{tag}-{i:03d}"
        if kind == "reasoning_content":
            tokens[answer] = 500 + i
            usage = openai_usage(100 + i, 600 + i, reasoning=500 + i)
            server.script.append(Stream(deepseek_events(pieces, ["answer-", f"{tag}-{i:03d}"], usage=usage)))
            traces[answer] = "".join(pieces)
        elif kind == "anthropic":
            reply = Thinking([pieces[:1], None, pieces[1:]], [answer[:4], answer[4:]])
            server.script.append(Stream(anthropic_thinking_events(reply)))
            traces[answer] = pieces[0] + f"\n\n{REDACTED_THINKING}\n\n" + "".join(pieces[1:])
        elif kind == "think_tags":
            server.script.append(Reply(body=inline_body(think_content("".join(pieces), answer))))
            traces[answer] = "\n" + "".join(pieces) + "\n"
        else:  # the judge: OpenRouter's whole message, a rating as the answer
            server.script.append(Reply(body=openrouter_body("".join(pieces), "Rating: 7/10")))
    return Scripted(tag, server, traces, tokens)


def blinding_spec(oa: Scripted, an: Scripted, tt: Scripted) -> str:
    return f"""\
name = "blinding"
replicates = 1
max_turns = 4
seed = 3
concurrency = 1
model_a = "oa"
model_b = "an"

[params]
max_tokens = 2000

[prediction]
self_predict = true
cross_model = "tt"

[coordination]
tasks = ["number"]

[report_back]

[[conditions]]
name = "blind"
template = "clone-aware"

[[conditions]]
name = "revealed"
template = "clone-aware"
prediction = {{ self_predict = true, cross_model = "tt", reveal = true }}

[models.oa]
provider = "openai-compatible"
base_url = "{oa.server.url}/v1"
model = "deepseek-reasoner"

[models.an]
provider = "anthropic"
base_url = "{an.server.url}"
model = "claude-sonnet-4-5"
thinking = {{ budget_tokens = {BUDGET} }}

[models.tt]
provider = "openai-compatible"
base_url = "{tt.server.url}/v1"
model = "qwen3"
stream = false
think_tags = true
"""


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [*map(str, args)], env={"COLUMNS": "200", "NO_COLOR": "1"})


def rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def leaks(requests: list[Recorded]) -> list[str]:
    """Anything of a trace found in a request body (markers, the redacted block, signatures)."""
    found: list[str] = []
    for r in requests:
        body = json.dumps(r.json(), ensure_ascii=False)  # as text, whatever escaping the client chose
        found += MARKER.findall(body)
        found += [s for s in (REDACTED_THINKING, REDACTED_DATA, SIGNATURE, "推理", "erstens") if s in body]
    return found


def test_no_trace_reaches_any_later_request_and_every_trace_is_stored(tmp_path: Path) -> None:
    with ExitStack() as stack:
        oa, an, tt = (
            scripted(stack, t, k) for t, k in (("oa", "reasoning_content"), ("an", "anthropic"), ("tt", "think_tags"))
        )
        judge = scripted(stack, "judge", "judge", count=200)
        spec, db = tmp_path / "blinding.toml", tmp_path / "r.db"
        spec.write_text(blinding_spec(oa, an, tt))
        ran = cli("batch", spec, "--db", db)
        assert ran.exit_code == 0, ran.output
        models = tmp_path / "judge.toml"
        models.write_text(
            f'[models.judge]\nprovider = "openai-compatible"\nbase_url = "{judge.server.url}/v1"\nmodel = "j"\n'
            "stream = false\n"
        )
        scored = cli("score", "blinding", "--scorer", "judge", "--judge", "judge", "--models-file", models, "--db", db)
        assert scored.exit_code == 0, scored.output
        agents = [*oa.server.requests, *an.server.requests, *tt.server.requests]
        judged = list(judge.server.requests)

    assert leaks(agents) == [], "a trace reached a model"
    assert judged and leaks(judged) == [], "a trace reached the judge"
    # Every reply became exactly one node, which stores its trace exactly and only the answer as its message.
    nodes = rows(db, "SELECT kind, variant, content, reasoning, reasoning_tokens FROM node WHERE kind != 'opening'")
    assert len(nodes) == len(agents)
    traces = {**oa.traces, **an.traces, **tt.traces}
    for kind, variant, content, reasoning, reasoning_tokens in nodes:
        assert content in traces, (kind, variant, content)
        assert reasoning == traces[content], (kind, variant, content)
        assert reasoning_tokens == oa.reasoning_tokens.get(content)
    kinds = {(kind, variant) for kind, variant, *_ in nodes}
    assert {("turn", None), ("prediction", "partner"), ("prediction", "self"), ("prediction", "cross")} <= kinds
    assert {("coordination", "number@before"), ("coordination", "number@after"), ("report", None)} <= kinds
    assert {content.split("-")[1] for _, _, content, _, _ in nodes} == {"oa", "an", "tt"}
    # The reveal condition did show the speaker its partner's prediction: that channel was open too.
    revealed = rows(
        db,
        "SELECT n.content FROM node n JOIN dialogue d ON d.id = n.dialogue_id "
        "JOIN condition c ON c.id = d.condition_id "
        "WHERE c.name = 'revealed' AND n.kind = 'prediction' AND n.variant = 'partner'",
    )
    bodies = [json.dumps(r.json(), ensure_ascii=False) for r in agents]
    assert len(revealed) == 4
    assert all(any(REVEAL_NOTE in b and content in b for b in bodies) for (content,) in revealed)


# -- Anthropic prompt caching ------------------------------------------------------------------

PRICES = {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}


def usage_of(i: int, *, cached: bool) -> AnthropicUsage:
    if not cached:
        return AnthropicUsage(input_tokens=1500 + i, output_tokens=30 + i)
    return AnthropicUsage(
        input_tokens=10 + i,
        cache_creation_input_tokens=200 + 7 * i,
        cache_read_input_tokens=1000 * i,
        output_tokens=30 + i,
    )


def caching_server(
    stack: ExitStack, tag: str, *, stream: bool, cached: bool
) -> tuple[FakeModelServer, dict[str, AnthropicUsage]]:
    server = stack.enter_context(fake_model_server())
    usages: dict[str, AnthropicUsage] = {}
    for i in range(60):
        answer = f"answer-{tag}-{i:03d}"
        reply = Thinking([[f"thinking {i}"]], [answer], usage=usage_of(i, cached=cached))
        usages[answer] = reply.usage
        if stream:  # half the streams repeat the whole usage, cumulative, in message_delta
            server.script.append(Stream(anthropic_thinking_events(reply, full_delta_usage=i % 2 == 1)))
        else:
            server.script.append(Reply(body=anthropic_thinking_body(reply)))
    return server, usages


def caching_spec(streamed: str, whole: str, uncached: str) -> str:
    prices = "".join(f"{k} = {v}\n" for k, v in PRICES.items())
    models = ""
    for name, url, extra in (
        ("streamed", streamed, ""),
        ("whole", whole, "stream = false\n"),
        ("uncached", uncached, "prompt_caching = false\n"),
    ):
        models += (
            f'\n[models.{name}]\nprovider = "anthropic"\nbase_url = "{url}"\nmodel = "claude-sonnet-4-5"\n'
            f"thinking = {{ budget_tokens = {BUDGET} }}\n{extra}\n[models.{name}.prices]\n{prices}"
        )
    conditions = "".join(
        f'\n[[conditions]]\nname = "{n}"\ntemplate = "clone-aware"\nmodel_a = "{n}"\n'
        for n in ("streamed", "whole", "uncached")
    )
    return f"""\
name = "caching"
replicates = 1
max_turns = 4
seed = 5
concurrency = 1
model_a = "streamed"

[params]
max_tokens = 2000

[prediction]
self_predict = true

[coordination]
tasks = ["number"]

[report_back]
{conditions}{models}"""


def breakpoints(value: object) -> int:
    if isinstance(value, dict):
        return int("cache_control" in value) + sum(breakpoints(v) for v in value.values())
    if isinstance(value, list):
        return sum(breakpoints(v) for v in value)
    return 0


def assert_breakpoints(body: dict[str, Any], *, caching: bool) -> None:
    messages = body["messages"]
    if not caching:
        assert breakpoints(body) == 0 and isinstance(body["system"], str)
        assert all(isinstance(m["content"], str) for m in messages)
        return
    assert breakpoints(body) == 2 <= 4
    [system] = body["system"]
    assert system["type"] == "text" and system["cache_control"] == EPHEMERAL
    *earlier, last = messages
    assert last["content"][-1]["cache_control"] == EPHEMERAL and last["content"][-1]["type"] == "text"
    assert all(isinstance(m["content"], str) for m in earlier)


def test_cache_breakpoints_usage_and_cost_of_a_thinking_dialogue(tmp_path: Path) -> None:
    with ExitStack() as stack:
        streamed, streamed_usage = caching_server(stack, "streamed", stream=True, cached=True)
        whole, whole_usage = caching_server(stack, "whole", stream=False, cached=True)
        uncached, uncached_usage = caching_server(stack, "uncached", stream=True, cached=False)
        spec, db = tmp_path / "caching.toml", tmp_path / "r.db"
        spec.write_text(caching_spec(streamed.url, whole.url, uncached.url))
        ran = cli("batch", spec, "--db", db)
        assert ran.exit_code == 0, ran.output
        sent = {
            "streamed": [r.json() for r in streamed.requests],
            "whole": [r.json() for r in whole.requests],
            "uncached": [r.json() for r in uncached.requests],
        }

    for name, bodies in sent.items():
        # 4 turns, 4 + 4 predictions, 2 x 2 coordination answers, 2 reports: the history grows.
        assert len(bodies) == 18 and max(len(b["messages"]) for b in bodies) >= 4, name
        for body in bodies:
            assert_breakpoints(body, caching=name != "uncached")
            assert body["thinking"] == {"type": "enabled", "budget_tokens": BUDGET}
            assert "temperature" not in body
            assert body["stream"] is (name != "whole")
        # Turns and predictions ask 2000; the short side channels get the budget on top of their own.
        assert {b["max_tokens"] for b in bodies} == {2000, BUDGET + 32, BUDGET + 300}, name

    usages = {**streamed_usage, **whole_usage, **uncached_usage}
    nodes = rows(
        db,
        "SELECT content, prompt_tokens, prompt_tokens_cached, prompt_tokens_cache_written, prompt_tokens_evaluated, "
        "completion_tokens, cost_usd, reasoning FROM node WHERE kind != 'opening'",
    )
    assert len(nodes) == 3 * 18
    for content, prompt, cached, written, evaluated, output, cost, reasoning in nodes:
        u = usages[content]
        read, created = u.cache_read_input_tokens, u.cache_creation_input_tokens
        assert (prompt, cached, written) == (u.input_tokens + read + created, read, created), content
        assert (evaluated, output) == (u.input_tokens + created, u.output_tokens), content
        by_hand = (
            u.input_tokens * PRICES["input"]
            + read * PRICES["cached_input"]
            + created * PRICES["cache_write"]
            + u.output_tokens * PRICES["output"]
        ) / 1_000_000
        assert cost == pytest.approx(by_hand, rel=1e-12), content
        assert reasoning == f"thinking {int(content[-3:])}"


@pytest.mark.anyio
async def test_usage_sent_only_in_message_delta_is_recorded(
    server: FakeModelServer,
) -> None:
    """A server may send the cache tokens only once the message ends (cumulative usage in
    ``message_delta``, none in ``message_start``): they are recorded all the same."""
    usage = AnthropicUsage(input_tokens=7, cache_creation_input_tokens=11, cache_read_input_tokens=13, output_tokens=17)
    events = anthropic_thinking_events(Thinking([["x"]], ["y"], usage=usage), full_delta_usage=True)
    start = json.loads(events[0].split("data: ", 1)[1])
    start["message"]["usage"] = {"input_tokens": 7, "output_tokens": 1}
    events[0] = f"event: message_start\ndata: {json.dumps(start)}\n\n"
    server.script = [Stream(events)]
    completion, _ = await complete(FORMATS[3].provider(server, stream=True))
    assert (completion.prompt_tokens, completion.prompt_tokens_cached, completion.prompt_tokens_cache_written) == (
        31,
        13,
        11,
    )
    assert completion.completion_tokens == 17


@pytest.mark.anyio
@pytest.mark.parametrize(
    "delta_usage",
    [
        {"input_tokens": 7, "cache_creation_input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 17},
        {"input_tokens": 7, "output_tokens": 17},
    ],
    ids=["null-cache-counts", "no-cache-counts"],
)
async def test_cache_counts_a_later_event_leaves_out_are_kept(
    server: FakeModelServer, delta_usage: dict[str, int | None]
) -> None:
    """``message_delta``'s cache counts are nullable in the API's schema (and some compatible
    servers leave them out): the counts ``message_start`` sent stand, and are not reset to 0."""
    usage = AnthropicUsage(input_tokens=7, cache_creation_input_tokens=11, cache_read_input_tokens=13, output_tokens=17)
    events = anthropic_thinking_events(Thinking([["x"]], ["y"], usage=usage))
    assert events[-2].startswith("event: message_delta\n")
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": delta_usage}
    events[-2] = f"event: message_delta\ndata: {json.dumps(delta)}\n\n"
    server.script = [Stream(events)]
    completion, _ = await complete(FORMATS[3].provider(server, stream=True))
    assert (completion.prompt_tokens, completion.prompt_tokens_cached, completion.prompt_tokens_cache_written) == (
        31,
        13,
        11,
    )
    assert completion.completion_tokens == 17


# -- bad thinking configuration: one line, before any request ----------------------------------


def anthropic_model(url: str, *, thinking: str = f"{{ budget_tokens = {BUDGET} }}", extra: str = "") -> str:
    return f'[models.an]\nprovider = "anthropic"\nbase_url = "{url}"\nmodel = "c"\nthinking = {thinking}\n{extra}'


BAD_MODELS = [
    (
        "budget-below-1024",
        {"thinking": "{ budget_tokens = 512 }"},
        5,
        "thinking.budget_tokens must be at least 1024 (got 512)",
    ),
    (
        "budget-not-below-max-tokens",
        {"extra": "\n[models.an.defaults]\nmax_tokens = 1024\n"},
        1,
        "thinking.budget_tokens (1024) must be below defaults.max_tokens (1024)",
    ),
    (
        "temperature-with-thinking",
        {"extra": "\n[models.an.defaults]\ntemperature = 0.7\n"},
        1,
        "defaults.temperature must be 1 with thinking (got 0.7)",
    ),
]


def one_error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(("case", "parts", "line", "message"), BAD_MODELS, ids=[b[0] for b in BAD_MODELS])
def test_a_bad_thinking_model_in_a_models_file_is_refused(
    server: FakeModelServer, tmp_path: Path, case: str, parts: dict[str, str], line: int, message: str
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(anthropic_model(server.url, **parts))
    refused = cli("run", "--model", "an", "--models-file", models, "--turns", "1", "--db", tmp_path / "r.db")
    assert server.requests == []
    assert one_error_line(refused).startswith(f"error: {models}:{line}: models.an: "), refused.stderr
    assert message in refused.stderr
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "0.7"], "model 'an': temperature must be 1 with thinking (got 0.7)"),
        (["--max-tokens", "1000"], "model 'an': thinking.budget_tokens (1024) must be below max_tokens (1000)"),
    ],
    ids=["temperature", "max-tokens"],
)
def test_run_flags_that_break_the_thinking_rules_are_refused(
    server: FakeModelServer, tmp_path: Path, flags: list[str], message: str
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(anthropic_model(server.url))
    refused = cli("run", "--model", "an", "--models-file", models, *flags, "--db", tmp_path / "r.db")
    assert server.requests == []
    assert one_error_line(refused).startswith(f"error: {message}"), refused.stderr


BAD_SPECS = [
    ("temperature", "params = { temperature = 0.7 }", "temperature must be 1 with thinking (got 0.7)"),
    ("max-tokens", "params = { max_tokens = 1000 }", "thinking.budget_tokens (1024) must be below max_tokens (1000)"),
]


@pytest.mark.parametrize(("case", "params", "message"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_condition_params_that_break_the_thinking_rules_are_refused(
    server: FakeModelServer, tmp_path: Path, case: str, params: str, message: str, dry_run: bool
) -> None:
    spec = tmp_path / "bad.toml"
    text = (
        'name = "bad"\nmax_turns = 2\nmodel_a = "an"\n\n[[conditions]]\nname = "fine"\ntemplate = "clone-aware"\n\n'
        f'[[conditions]]\nname = "broken"\ntemplate = "clone-aware"\n{params}\n\n' + anthropic_model(server.url)
    )
    spec.write_text(text)
    db = tmp_path / "r.db"
    refused = cli("batch", spec, *(["--dry-run"] if dry_run else []), "--db", db)
    assert server.requests == []
    line = text.splitlines().index(params) + 1
    assert one_error_line(refused).startswith(f"error: {spec}:{line}: conditions[2].params: "), refused.stderr
    assert f"model 'an': {message}" in refused.stderr
    assert not db.exists()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_spec_model_with_a_budget_below_1024_is_refused(
    server: FakeModelServer, tmp_path: Path, dry_run: bool
) -> None:
    spec = tmp_path / "bad.toml"
    model = anthropic_model(server.url, thinking="{ budget_tokens = 512 }")
    spec.write_text(f'name = "bad"\nmodel_a = "an"\n\n[[conditions]]\ntemplate = "clone-aware"\n\n{model}')
    refused = cli("batch", spec, *(["--dry-run"] if dry_run else []), "--db", tmp_path / "r.db")
    assert server.requests == []
    assert one_error_line(refused).startswith(f"error: {spec}:11: models.an"), refused.stderr
    assert "thinking.budget_tokens must be at least 1024 (got 512)" in refused.stderr


# -- clonechat run, show, export, search; the TUI ----------------------------------------------


@dataclass(frozen=True)
class ReasoningRun:
    db: Path
    stdout: str
    bodies: list[dict[str, Any]]
    #: The trace of each turn, in turn order.
    traces: list[str]


@pytest.fixture(scope="module")
def reasoning_run(tmp_path_factory: pytest.TempPathFactory) -> ReasoningRun:
    """``clonechat run`` of three turns against a DeepSeek-style (``reasoning_content``) server."""
    tmp = tmp_path_factory.mktemp("run")
    traces = [f"SECRET-run-{i:03d}: the quokka\nweighs it — ✓\n\nthen answers" for i in range(3)]
    with fake_model_server() as server:
        for i, trace in enumerate(traces):
            pieces = [trace[:12], trace[12:30], trace[30:]]
            usage = openai_usage(50 + i, 80 + i, reasoning=60 + i)
            server.script.append(Stream(deepseek_events(pieces, [f"Plain answer {i}."], usage=usage)))
        models = tmp / "models.toml"
        models.write_text(
            f'[models.ds]\nprovider = "openai-compatible"\nbase_url = "{server.url}/v1"\nmodel = "deepseek-reasoner"\n'
            'reasoning_effort = "low"\n'
        )
        db = tmp / "r.db"
        ran = cli(
            "run",
            "--model",
            "ds",
            "--models-file",
            models,
            "--turns",
            "3",
            "--first",
            "A",
            "--seed",
            "1",
            "--experiment",
            "rsn",
            "--db",
            db,
        )
        assert ran.exit_code == 0, ran.output
        bodies = [r.json() for r in server.requests]
    return ReasoningRun(db, ran.stdout, bodies, traces)


def test_run_prints_the_trace_as_private_and_stores_it(reasoning_run: ReasoningRun) -> None:
    run = reasoning_run
    assert len(run.bodies) == 3 and all(b["reasoning_effort"] == "low" for b in run.bodies)
    assert not any("quokka" in json.dumps(b, ensure_ascii=False) for b in run.bodies)
    out = run.stdout
    for i, (speaker, partner) in enumerate((("A", "B"), ("B", "A"), ("A", "B"))):
        heading = f"private reasoning of {speaker} (never shown to {partner} or any predictor) · {60 + i} tok"
        assert heading in out, out
        for line in run.traces[i].splitlines():
            assert line in out
    stored = rows(
        run.db, "SELECT reasoning, reasoning_tokens, content FROM node WHERE kind = 'turn' ORDER BY turn_index"
    )
    assert stored == [(t, 60 + i, f"Plain answer {i}.") for i, t in enumerate(run.traces)]


def test_show_export_and_search_mark_the_trace(reasoning_run: ReasoningRun, tmp_path: Path) -> None:
    run = reasoning_run
    [(dialogue,)] = rows(run.db, "SELECT id FROM dialogue")
    shown = cli("show", dialogue, "--db", run.db)
    assert shown.exit_code == 0, shown.output
    assert "private reasoning of B (never shown to A or any predictor)" in shown.stdout
    assert all(line in shown.stdout for line in run.traces[1].splitlines() if line)

    exported = cli("export", "rsn", "--format", "jsonl", "--out", tmp_path / "jsonl", "--db", run.db)
    assert exported.exit_code == 0, exported.output
    [record] = [json.loads(line) for line in next((tmp_path / "jsonl").glob("*.jsonl")).read_text().splitlines()]
    turns = sorted((n for n in record["nodes"] if n["kind"] == "turn"), key=lambda n: n["turn_index"])
    assert [n["reasoning"] for n in turns] == run.traces

    markdown = cli("export", "rsn", "--format", "markdown", "--out", tmp_path / "md", "--db", run.db)
    assert markdown.exit_code == 0, markdown.output
    text = next((tmp_path / "md").glob("*.md")).read_text()
    blocks = re.findall(r"<details>\n<summary>(.*?)</summary>\n\n(.*?)\n\n</details>", text, re.S)
    assert [summary for summary, _ in blocks] == [
        f"private reasoning of {s}, never shown to the partner" for s in "ABA"
    ]
    assert [body for _, body in blocks] == [
        "\n".join(f"> {x}" if x else ">" for x in t.splitlines()) for t in run.traces
    ]

    found = cli("search", "quokka", "--reasoning", "--format", "json", "--db", run.db)
    assert found.exit_code == 0, found.output
    assert sorted(hit["turn_index"] for hit in json.loads(found.stdout)) == [1, 2, 3]
    in_messages = cli("search", "quokka", "--format", "json", "--db", run.db)
    assert in_messages.exit_code == 0 and json.loads(in_messages.stdout) == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Textual runs on asyncio
async def test_the_transcript_shows_the_trace_collapsed_and_t_opens_it(reasoning_run: ReasoningRun) -> None:
    from clonechat.tui.screens.dialogue import DialogueScreen
    from clonechat.tui.widgets.transcript import TranscriptView
    from tests.tui_helpers import Host

    [(dialogue,)] = rows(reasoning_run.db, "SELECT id FROM dialogue")
    screen = DialogueScreen(reasoning_run.db, dialogue_id=dialogue)
    app = Host(screen)
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.pause()
        assert screen.loader is not None
        await screen.loader.wait()
        await pilot.pause()
        view = screen.query_one(TranscriptView)

        def shown() -> str:
            return "\n".join(view.render_line(y).text for y in range(view.scrollable_content_region.height))

        assert view.node_count == 4
        text = shown()
        # Collapsed by default: one heading line per turn, its key in view, no trace.
        assert text.count("▸ t to open · private reasoning of") == 3
        assert "quokka" not in text and "SECRET" not in text
        view.focus()
        # Nothing selected yet: t opens (and selects) the first message on screen with a trace.
        assert view.cursor is None
        await pilot.press("t")
        await pilot.pause()
        assert view.cursor == 1 and shown().count("▾ private reasoning of") == 1
        await pilot.press("t")
        await pilot.pause()
        assert shown().count("▸ t to open · private reasoning of") == 3
        view.select_node(2)
        await pilot.press("t")
        await pilot.pause()
        text = shown()
        assert "▾ private reasoning of B" in text and text.count("▸ t to open · private reasoning of") == 2
        assert all(line in text for line in reasoning_run.traces[1].splitlines() if line)
        assert reasoning_run.traces[0].splitlines()[0] not in text  # only the selected turn opened
        await pilot.press("t")
        await pilot.pause()
        text = shown()
        assert text.count("▸ t to open · private reasoning of") == 3 and "quokka" not in text
