"""HTTP providers against a fault-injecting server on 127.0.0.1 (both async backends), and
against a keep-alive server that counts connections (connection reuse across turns)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anyio
import pytest

from clonechat.errors import ProviderError, RetryableProviderError
from clonechat.providers.anthropic import AnthropicProvider
from clonechat.providers.base import ChatMessage, ChatRequest, Completion, GenerationParams
from clonechat.providers.http import Endpoint, HttpProvider
from clonechat.providers.limits import AdaptiveLimiter
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.providers.retry import RetryPolicy, retry_after_seconds
from tests.servers.fake_model import (
    FakeModelServer,
    Hang,
    Reply,
    Reset,
    Stream,
    anthropic_events,
    fake_model_server,
    openai_body,
    openai_events,
    sse,
)
from tests.servers.keepalive import PIECES, KeepAliveConfig, KeepAliveServer, keepalive_server

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(budget=5.0, initial_backoff=0.05, max_backoff=0.2)
REQUEST = ChatRequest(
    [ChatMessage("system", "be brief"), ChatMessage("user", "hi")], GenerationParams(temperature=0.0, max_tokens=16)
)


def openai(
    server: FakeModelServer, *, stream: bool = True, retry: RetryPolicy = FAST, **endpoint: float
) -> HttpProvider:
    return OpenAICompatibleProvider(
        model_name="fake",
        model_id="m",
        endpoint=Endpoint(server.url + "/v1", **endpoint),  # type: ignore[arg-type]
        api_key="k-123",
        stream=stream,
        retry=retry,
    )


def anthropic(server: FakeModelServer, *, stream: bool = True, retry: RetryPolicy = FAST) -> HttpProvider:
    return AnthropicProvider(
        model_name="claude-fake",
        model_id="c",
        endpoint=Endpoint(server.url),
        api_key="ak-1",
        stream=stream,
        retry=retry,
    )


class Collector:
    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.retries: list[tuple[int, str, float]] = []

    async def delta(self, text: str) -> None:
        self.deltas.append(text)

    async def retry(self, attempt: int, reason: str, wait: float) -> None:
        self.retries.append((attempt, reason, wait))


async def generate(provider: HttpProvider, request: ChatRequest = REQUEST) -> tuple[Completion, Collector]:
    seen = Collector()
    try:
        completion = await provider.generate(request, seen.delta, seen.retry)
    finally:
        await provider.aclose()
    return completion, seen


# -- OpenAI-compatible, the good path -------------------------------------------------------


async def test_streamed_completion_with_usage_and_cache() -> None:
    usage = {"prompt_tokens": 40, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 32}}
    with fake_model_server(Stream(openai_events(["Hel", "lo", "!"], usage=usage))) as server:
        completion, seen = await generate(openai(server))
    assert completion.text == "Hello!"
    assert seen.deltas == ["Hel", "lo", "!"]
    assert (completion.prompt_tokens, completion.prompt_tokens_cached, completion.prompt_tokens_evaluated) == (
        40,
        32,
        8,
    )
    assert completion.completion_tokens == 3
    assert completion.finish_reason == "stop"
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer k-123"
    body = sent.json()
    assert body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 16


async def test_non_streamed_completion_records_length_finish() -> None:
    with fake_model_server(Reply(body=openai_body("cut sho", finish="length"))) as server:
        completion, _seen = await generate(openai(server, stream=False))
    assert completion.text == "cut sho"
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 3
    assert server.requests[0].json()["stream"] is False


async def test_stop_phrase_is_detected_on_the_client_and_closes_the_stream() -> None:
    with fake_model_server(Stream(openai_events(["bye ^", "C^C", " tail", " more"]))) as server:
        request = ChatRequest(REQUEST.messages, REQUEST.params, stop=("^C^C",))
        completion, seen = await generate(openai(server), request)
    assert completion.text == "bye "
    assert completion.stop_sequence == "^C^C"
    assert completion.finish_reason == "stop_sequence"
    assert "".join(seen.deltas) == "bye "


# -- retries and their waits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After": "1"}, 0.95, 1.8),
        ({"retry-after-ms": "400"}, 0.38, 1.0),
        ({"Retry-After": "date"}, 0.9, 2.9),
    ],
)
async def test_429_waits_as_the_server_asks(headers: dict[str, str], low: float, high: float) -> None:
    until: datetime | None = None
    if headers.get("Retry-After") == "date":
        # An HTTP date has whole seconds, and how much of the wait is left when the 429 arrives
        # depends on how long the first request took: measure the wait against the date itself.
        until = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
        headers = {"Retry-After": format_datetime(until, usegmt=True)}
    with fake_model_server(Stream(openai_events(["ok"]))) as server:
        server.script = [Reply(429, {"error": {"message": "slow down"}}, headers)]
        started = time.monotonic()
        completion, seen = await generate(openai(server))
        elapsed = time.monotonic() - started
    assert completion.text == "ok"
    assert len(server.requests) == 2
    gap = server.requests[1].at - server.requests[0].at
    if until is not None:
        wall_offset = time.time() - time.monotonic()
        asked = until.timestamp() - (server.requests[0].at + wall_offset)
        low, high = asked - 0.1, asked + 1.0
    assert low <= gap <= high, gap
    assert elapsed < high + 1
    assert seen.retries[0][0] == 1
    assert "HTTP 429" in seen.retries[0][1]


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 529])
async def test_retryable_statuses_are_retried(status: int) -> None:
    with fake_model_server(Stream(openai_events(["fine"]))) as server:
        server.script = [Reply(status, b"oops"), Reply(status, b"oops")]
        completion, seen = await generate(openai(server))
    assert completion.text == "fine"
    assert len(server.requests) == 3
    assert len(seen.retries) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_fail_at_once_with_a_clear_message(status: int) -> None:
    with fake_model_server(Reply(status, {"error": {"message": "bad thing"}})) as server:
        with pytest.raises(ProviderError) as info:
            await generate(openai(server))
    assert not isinstance(info.value, RetryableProviderError)
    assert len(server.requests) == 1
    message = str(info.value)
    assert f"model 'fake' at {server.url}/v1: HTTP {status}: bad thing" == message


async def test_retry_budget_is_bounded() -> None:
    with fake_model_server(Reply(503, b"down")) as server:
        started = time.monotonic()
        with pytest.raises(RetryableProviderError, match="HTTP 503"):
            await generate(openai(server, retry=RetryPolicy(budget=0.6, initial_backoff=0.05, max_backoff=0.1)))
    assert time.monotonic() - started < 2.0
    assert 3 <= len(server.requests) <= 30


async def test_connection_reset_before_response_is_retried() -> None:
    with fake_model_server(Stream(openai_events(["after reset"]))) as server:
        server.script = [Reset()]
        completion, seen = await generate(openai(server))
    assert completion.text == "after reset"
    assert "connection failed" in seen.retries[0][1]


async def test_stream_cut_midway_is_retried_from_scratch() -> None:
    with fake_model_server(Stream(openai_events(["second ", "try"]))) as server:
        server.script = [Stream(openai_events(["first ", "half", " never"]), cut_after=2)]
        completion, seen = await generate(openai(server))
    assert completion.text == "second try"  # nothing of the broken attempt
    assert seen.deltas[:2] == ["first ", "half"]
    assert len(seen.retries) == 1


async def test_hung_server_hits_the_idle_timeout_and_is_retried() -> None:
    with fake_model_server(Stream(openai_events(["awake"]))) as server:
        server.script = [Hang(10)]
        started = time.monotonic()
        completion, seen = await generate(openai(server, idle_timeout=0.5))
    assert completion.text == "awake"
    assert "timed out" in seen.retries[0][1]
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (Stream(["data: {not json\n\n"]), "malformed JSON"),
        (Stream(openai_events(["no end"], done=False)), "ended before [DONE]"),
        (Stream([sse({"choices": []}), "data: [DONE]\n\n"]), "no choices"),
        (Stream([sse({"object": "x"}), "data: [DONE]\n\n"]), "without 'choices'"),
        (Reply(body={"choices": []}), "no choices"),
        (Reply(body=b"<html>"), "malformed JSON in response"),
        (Reply(body=b"[1]"), "response is not a JSON object"),
    ],
)
async def test_protocol_errors_are_classified_retried_then_reported(broken: Stream | Reply, reason: str) -> None:
    stream = isinstance(broken, Stream)
    with fake_model_server(broken) as server:
        with pytest.raises(RetryableProviderError, match=reason.replace("[", r"\[").replace("]", r"\]")):
            await generate(openai(server, stream=stream, retry=RetryPolicy(budget=0.3, initial_backoff=0.05)))
    assert len(server.requests) >= 2


async def test_protocol_error_then_recovery() -> None:
    with fake_model_server(Stream(openai_events(["good"]))) as server:
        server.script = [Stream(["data: {not json\n\n"])]
        completion, _ = await generate(openai(server))
    assert completion.text == "good"


# -- concurrency limits ----------------------------------------------------------------------


def test_adaptive_limiter_shrinks_and_recovers() -> None:
    async def scenario() -> None:
        limiter = AdaptiveLimiter(8, recover_after=3)
        assert limiter.limit == 8
        limiter.rate_limited()
        limiter.rate_limited()
        assert limiter.limit == 2
        for _ in range(3):
            limiter.succeeded()
        assert limiter.limit == 3
        for _ in range(100):
            limiter.rate_limited()
        assert limiter.limit == 1

    anyio.run(scenario)


async def test_endpoint_limit_caps_requests_in_flight() -> None:
    with fake_model_server(Stream(openai_events(["x", "y"]), delay=0.05)) as server:
        endpoint = Endpoint(server.url + "/v1", max_connections=3)
        provider = OpenAICompatibleProvider(model_name="f", model_id="m", endpoint=endpoint, retry=FAST)

        async def ignore(_: str) -> None:
            return None

        async with anyio.create_task_group() as tg:
            for _ in range(9):
                tg.start_soon(provider.generate, REQUEST, ignore)
        await provider.aclose()
    assert len(server.requests) == 9
    assert server.max_in_flight == 3


async def test_sustained_429_shrinks_the_endpoint_limit() -> None:
    with fake_model_server(Stream(openai_events(["ok"]))) as server:
        server.script = [Reply(429, b"", {"retry-after-ms": "10"}) for _ in range(3)]
        provider = openai(server)
        assert isinstance(provider, OpenAICompatibleProvider)
        await generate(provider)
    assert provider.endpoint.limiter.limit == 1


# -- Anthropic Messages ----------------------------------------------------------------------


async def test_anthropic_stream_event_sequence() -> None:
    with fake_model_server(Stream(anthropic_events(["Hi ", "there"], stop_reason="max_tokens"))) as server:
        completion, _seen = await generate(anthropic(server))
    assert completion.text == "Hi there"
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 5
    assert (completion.prompt_tokens, completion.prompt_tokens_cached) == (16, 4)
    sent = server.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "ak-1"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.json()
    # Prompt caching is on by default: the system prompt and the last message are breakpoints.
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "be brief", "cache_control": ephemeral}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": ephemeral}]}
    ]


async def test_anthropic_overloaded_event_is_retried() -> None:
    overloaded = [sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")]
    with fake_model_server(Stream(anthropic_events(["ok"]))) as server:
        server.script = [
            Stream(anthropic_events(["par"])[:4] + overloaded),
            Reply(529, {"error": {"type": "overloaded_error"}}),
        ]
        completion, seen = await generate(anthropic(server))
    assert completion.text == "ok"
    assert len(seen.retries) == 2
    assert "overloaded_error" in seen.retries[0][1]


async def test_anthropic_invalid_request_event_fails() -> None:
    bad = [sse({"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}, "error")]
    with fake_model_server(Stream(bad)) as server:
        with pytest.raises(ProviderError, match="invalid_request_error") as info:
            await generate(anthropic(server))
    assert not isinstance(info.value, RetryableProviderError)
    assert len(server.requests) == 1


async def test_anthropic_stream_without_message_stop_is_an_error() -> None:
    with fake_model_server(Stream(anthropic_events(["x"])[:-1])) as server:
        with pytest.raises(RetryableProviderError, match="before message_stop"):
            await generate(anthropic(server, retry=RetryPolicy(budget=0.2, initial_backoff=0.05)))


async def test_anthropic_non_streamed() -> None:
    body = {
        "type": "message",
        "content": [{"type": "text", "text": "whole"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 9, "output_tokens": 1},
    }
    with fake_model_server(Reply(body=body)) as server:
        completion, _ = await generate(anthropic(server, stream=False))
    assert (completion.text, completion.finish_reason, completion.prompt_tokens) == ("whole", "stop", 9)


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds({"Retry-After": "3"}, now) == 3
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "9"}, now) == 0.25
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 2026 00:00:05 GMT"}, now) == 5
    assert retry_after_seconds({"Retry-After": "Wed, 31 Dec 2025 00:00:00 GMT"}, now) == 0
    assert retry_after_seconds({"Retry-After": "soon"}, now) is None
    assert retry_after_seconds({}, now) is None


async def test_an_endpoint_spreads_connections_over_small_pools() -> None:
    """httpcore's pool bookkeeping is quadratic in its size; many small pools keep it cheap."""
    endpoint = Endpoint("http://127.0.0.1:9/v1", max_connections=100)
    try:
        with endpoint.client() as first, endpoint.client() as second:
            assert first is not second  # the least busy pool is chosen
            with endpoint.client() as third, endpoint.client() as fourth, endpoint.client() as fifth:
                assert len({id(c) for c in (first, second, third, fourth)}) == 4
                assert fifth in (first, second, third, fourth)
        assert len(endpoint._clients) == 4
        assert endpoint._in_flight == [0, 0, 0, 0]
        limits = endpoint._clients[0]._transport._pool._max_connections  # type: ignore[attr-defined]
        assert limits == 25
    finally:
        await endpoint.aclose()


async def test_pool_sizes_add_up_to_max_connections() -> None:
    """Each pool keeps up to its size alive, so the sizes must add up to exactly the
    endpoint's limit; every request goes to the pool with the most free connections."""
    for total in (1, 4, 31, 32, 33, 100, 200):
        endpoint = Endpoint("http://127.0.0.1:9/v1", max_connections=total)
        try:
            with ExitStack() as held:
                chosen = [held.enter_context(endpoint.client()) for _ in range(total)]
                sizes = [c._transport._pool._max_connections for c in endpoint._clients]  # type: ignore[attr-defined]
                assert sum(sizes) == total
                assert max(sizes) <= 32 and max(sizes) - min(sizes) <= 1
                # With the endpoint's whole limit in flight, no pool holds more than its size.
                assert [chosen.count(c) for c in endpoint._clients] == sizes
        finally:
            await endpoint.aclose()


# -- connection reuse across turns (issue 14) --------------------------------------------------

TURNS = 50
TEXT = "".join(PIECES)


def keepalive_provider(
    server: KeepAliveServer, api: str, *, stream: bool = True, max_connections: int = 4, **endpoint: float
) -> HttpProvider:
    kind = OpenAICompatibleProvider if api == "openai" else AnthropicProvider
    return kind(
        model_name="fake",
        model_id="m",
        endpoint=Endpoint(
            server.url + ("/v1" if api == "openai" else ""),
            max_connections=max_connections,
            **endpoint,
        ),
        api_key="k-1",
        stream=stream,
        retry=FAST,
    )


async def ignore(_: str) -> None:
    return None


async def run_turns(
    provider: HttpProvider, turns: int, callers: int, request: ChatRequest = REQUEST
) -> list[Completion]:
    """``turns`` calls, taken from one queue by ``callers`` concurrent tasks, then close."""
    completions: list[Completion] = []
    queue = iter(range(turns))

    async def caller() -> None:
        for _ in queue:
            completions.append(await provider.generate(request, ignore))

    try:
        with anyio.fail_after(120):  # a hang fails the test instead of stalling the suite
            async with anyio.create_task_group() as tg:
                for _ in range(callers):
                    tg.start_soon(caller)
    finally:
        await provider.aclose()
    return completions


async def wait_until(condition: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    """Poll a condition the server thread makes true, with a generous deadline."""
    for _ in range(int(deadline / 0.01)):
        if condition():
            return
        await anyio.sleep(0.01)
    assert condition(), f"timed out waiting until {what}"


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("callers", [1, 8], ids=["sequential", "8-callers"])
async def test_turns_reuse_at_most_max_connections(api: str, stream: bool, callers: int) -> None:
    """50 turns through an endpoint of 4 connections open at most 4 TCP connections: every
    body is read to its end (the zero-length chunk after the end marker), so httpcore keeps
    each connection for the next turn. Without the drain this opened 50."""
    with keepalive_server() as server:
        completions = await run_turns(keepalive_provider(server, api, stream=stream), TURNS, callers)
        # The client can read a body's last bytes before the server's thread counts it sent:
        # wait for the count (a body never sent to its end never arrives, and this fails).
        await wait_until(lambda: server.snapshot()["completed"] == TURNS, "the server sent every body to its end")
        stats = server.snapshot()
    assert [c.text for c in completions] == [TEXT] * TURNS
    assert {c.finish_reason for c in completions} == {"stop"}
    assert {c.completion_tokens for c in completions} == {len(PIECES)}
    assert stats["requests"] == TURNS
    assert stats["completed"] == TURNS  # every response's body was sent to its end
    assert 1 <= stats["connections"] <= 4, stats
    assert sum(server.counters.requests_per_connection) == TURNS


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_body_that_never_ends_after_its_end_marker_costs_the_drain_bound(api: str) -> None:
    """The server sends the end marker but never the final chunk: each turn still completes,
    after the drain bound (not the 30 s idle timeout), its latency ends at the end marker, and
    its connection is closed rather than reused."""
    drain = 1.0
    config = KeepAliveConfig(linger_after_end=True, max_hang=60)
    with keepalive_server(config) as server:
        provider = keepalive_provider(server, api, drain_timeout=drain, idle_timeout=30)
        calls: list[tuple[Completion, float]] = []
        try:
            with anyio.fail_after(120):
                for _ in range(2):
                    started = time.perf_counter()
                    completion = await provider.generate(REQUEST, ignore)
                    calls.append((completion, time.perf_counter() - started))
        finally:
            await provider.aclose()
        await wait_until(lambda: server.counters.client_disconnects == 2, "the server saw both connections closed")
        stats = server.snapshot()
    for completion, took in calls:
        assert (completion.text, completion.finish_reason) == (TEXT, "stop")
        assert took >= drain  # the call waited out the drain bound ...
        assert took < 25  # ... and no more: waiting for the body would hit the 30 s idle timeout
        # The recorded latency stops at the end marker: the drain is not the model's time.
        assert completion.latency <= took - drain, (completion.latency, took)
    assert stats["connections"] == 2  # not reused: closed with the body unfinished


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_stop_sequence_still_ends_the_call_and_discards_its_connection(api: str) -> None:
    """After the stop sequence the server keeps generating, with no end marker, until the client
    leaves: the call ends only because the response is closed, which is what stops generation,
    so that connection is deliberately not reused."""
    config = KeepAliveConfig(pieces=("bye ^", "C^C", " tail"), endless=True)
    request = ChatRequest(REQUEST.messages, REQUEST.params, stop=("^C^C",))
    with keepalive_server(config) as server:
        completions = await run_turns(keepalive_provider(server, api), 3, 1, request)
        await wait_until(lambda: server.counters.client_disconnects == 3, "the server saw all three clients leave")
        stats = server.snapshot()
    assert [(c.text, c.finish_reason, c.stop_sequence) for c in completions] == [("bye ", "stop_sequence", "^C^C")] * 3
    assert stats["connections"] == 3
    assert stats["completed"] == 0
