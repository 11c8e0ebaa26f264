"""Pacing from rate-limit headers (clonechat.providers.pacing): the header formats, the rule,
and, against loopback servers on both async backends, fewer requests per second to a server
that reports little left, with no 429 needed; the 429 count in ``clonechat batch``'s summary."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from clonechat.cli import app
from clonechat.providers.anthropic import AnthropicProvider
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams
from clonechat.providers.http import Endpoint, HttpProvider
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.providers.pacing import MAX_WAIT, Pacer, Window, parse_duration, parse_reset, read_windows
from clonechat.providers.retry import RetryPolicy
from tests.servers.fake_model import FakeModelServer, Reply, fake_model_server, openai_body
from tests.test_batch import server_spec

FAST = RetryPolicy(budget=5.0, initial_backoff=0.05, max_backoff=0.2)
REQUEST = ChatRequest(
    [ChatMessage("system", "be brief"), ChatMessage("user", "hi")], GenerationParams(temperature=0.0, max_tokens=16)
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# -- the header formats -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("4m12.172s", 252.172),
        ("23h18m29.144s", 83909.144),
        ("7.66s", 7.66),
        ("0s", 0.0),
        ("1.5", 1.5),  # Azure: plain seconds
        ("0", 0.0),
        ("150us", 150e-6),
        (" 2s ", 2.0),
    ],
)
def test_openai_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "s", "1x", "-1s", "-3", "1s2", "m1", "nan", "inf", "1 s", "1,5s"])
def test_unreadable_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_anthropic_rfc3339_resets() -> None:
    assert parse_reset("2026-01-01T00:00:05Z", NOW) == 5
    assert parse_reset("2026-01-01T00:00:01.500Z", NOW) == 1.5
    assert parse_reset("2026-01-01T01:00:30+01:00", NOW) == 30  # an offset, not UTC
    assert parse_reset("2025-12-31T23:59:00Z", NOW) == 0  # already past: replenished
    assert parse_reset("2026-01-01T00:00:07", NOW) == 7  # no zone: taken as UTC
    assert parse_reset("6m0s", NOW) == 360  # the OpenAI form is read too
    for garbage in ("tomorrow", "2026-13-01T00:00:00Z", "Thu, 01 Jan 2026 00:00:05 GMT", ""):
        assert parse_reset(garbage, NOW) is None


def test_read_windows_openai() -> None:
    headers = {
        "X-RateLimit-Limit-Requests": "60",  # any case
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-limit-tokens_usage_based": "150000",  # other limits are not read
        "x-request-id": "req_1",
        "content-type": "application/json",
    }
    assert sorted(read_windows(headers, NOW), key=lambda w: w.kind) == [
        Window("requests", 59, 60, 1.0),
        Window("tokens", 149984, 150000, 360.0),
    ]


def test_read_windows_anthropic() -> None:
    reset = "2026-01-01T00:00:12Z"
    headers = [
        ("anthropic-ratelimit-requests-limit", "1000"),
        ("anthropic-ratelimit-requests-remaining", "999"),
        ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:01Z"),
        ("anthropic-ratelimit-tokens-limit", "96000"),
        ("anthropic-ratelimit-tokens-remaining", "2000"),
        ("anthropic-ratelimit-tokens-reset", reset),
        ("anthropic-ratelimit-input-tokens-limit", "80000"),
        ("anthropic-ratelimit-input-tokens-remaining", "80000"),
        ("anthropic-ratelimit-input-tokens-reset", reset),
        ("anthropic-ratelimit-output-tokens-limit", "16000"),
        ("anthropic-ratelimit-output-tokens-remaining", "3000"),
        ("anthropic-ratelimit-output-tokens-reset", reset),
        ("retry-after", "5"),
    ]
    windows = {w.kind: w for w in read_windows(headers, NOW)}
    assert windows == {
        "requests": Window("requests", 999, 1000, 1.0),
        "tokens": Window("tokens", 2000, 96000, 12.0),
        "input-tokens": Window("input-tokens", 80000, 80000, 12.0),
        "output-tokens": Window("output-tokens", 3000, 16000, 12.0),
    }
    assert [k for k, w in windows.items() if w.low()] == ["tokens", "output-tokens"]


def test_garbage_headers_are_ignored() -> None:
    headers = {
        "x-ratelimit-limit-tokens": "-1",  # Azure's "unknown"
        "x-ratelimit-remaining-tokens": "-1",
        "x-ratelimit-reset-tokens": "0",
        "x-ratelimit-remaining-requests": "many",
        "x-ratelimit-reset-requests": "1s",
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": "soon",
        "anthropic-ratelimit-tokens-remaining": "10",  # no reset: no bound, so not paced
        "x-ratelimit-remaining-bananas": "1",
        "x-ratelimit-reset": "1700000000",
    }
    assert read_windows(headers, NOW) == []
    pacer = Pacer(clock=lambda: 0.0)
    pacer.update(headers)
    assert pacer.spacing(0.0) == 0 and pacer.next_at(0.0) == 0


# -- the rule, on a clock of our own ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def openai_limits(remaining: int, *, limit: int = 10000, reset: str = "2s", kind: str = "tokens") -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(remaining),
        f"x-ratelimit-reset-{kind}": reset,
    }


def test_tokens_left_are_spread_over_the_time_to_reset() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.update(openai_limits(300))
    assert pacer.spacing(clock.now) == 0  # how much a request takes is not known yet
    pacer.spent(60, 40)
    assert pacer.spacing(clock.now) == pytest.approx(2 * 100 / 300)
    pacer.spent(160, 40)  # a running average: moves towards the newer usage
    assert 100 < pacer.cost("tokens") < 200  # type: ignore[operator]
    pacer.update(openai_limits(6000))  # more than half left: nothing waits
    assert pacer.spacing(clock.now) == 0


def test_requests_left_are_spread_and_the_largest_spacing_applies() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.update(openai_limits(4, limit=60, reset="1s", kind="requests"))
    assert pacer.spacing(clock.now) == pytest.approx(0.25)
    pacer.update(openai_limits(1000, reset="3s"))
    pacer.spent(50, 50)
    assert pacer.spacing(clock.now) == pytest.approx(0.3)  # the tokens' 3 * 100 / 1000 beats 1 / 4
    clock.now += 1.5  # the requests limit has been replenished, the tokens' reset is nearer
    assert pacer.spacing(clock.now) == pytest.approx(1.5 * 100 / 1000)
    clock.now += 2
    assert pacer.spacing(clock.now) == 0  # every limit replenished and forgotten


def test_nothing_left_waits_for_the_reset_and_never_past_it() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.update(openai_limits(0, reset="2s"))  # whatever a request costs
    assert pacer.next_at(clock.now) == pytest.approx(clock.now + 2)
    pacer.update(openai_limits(1, limit=0, reset="20ms", kind="requests"))  # no limit given, 1 left: not low
    assert pacer.next_at(clock.now) == pytest.approx(clock.now + 2)
    pacer.update(openai_limits(0, reset="1h"))  # a sane cap on what a server says
    assert pacer.next_at(clock.now) == pytest.approx(clock.now + MAX_WAIT)
    pacer.update(openai_limits(9000))
    assert pacer.next_at(clock.now) == clock.now


def test_unpaced_endpoints_pay_nothing() -> None:
    async def scenario() -> None:
        pacer = Pacer()
        pacer.update({"content-type": "application/json"})  # vLLM, llama.cpp: no headers
        pacer.spent(10, 10)
        for _ in range(1000):
            await pacer.wait()
        pacer.update(openai_limits(9000))  # plenty left
        for _ in range(1000):
            await pacer.wait()
        assert pacer.paced_seconds == 0 and pacer.paced_requests == 0
        assert pacer._lock is None

    anyio.run(scenario)


@pytest.mark.anyio
async def test_a_wait_ends_at_the_reset_or_when_a_fresh_response_says_go() -> None:
    pacer = Pacer()
    pacer.update(openai_limits(0, reset="300ms"))
    started = anyio.current_time()
    with anyio.fail_after(5):
        await pacer.wait()
    assert 0.25 <= anyio.current_time() - started < 3
    pacer.update(openai_limits(0, reset="30s"))
    waited: list[float] = []

    async def waiter() -> None:
        t = anyio.current_time()
        await pacer.wait()
        waited.append(anyio.current_time() - t)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            await anyio.sleep(0.2)
            pacer.update(openai_limits(9000))  # replenished early: the waiters go at once
    assert len(waited) == 3 and max(waited) < 5
    assert pacer.paced_requests == 4 and pacer.paced_seconds > 0.25


# -- loopback servers: fewer requests per second, no 429 ----------------------------------------

RUN_SECONDS = 2.0
CALLERS = 4
USAGE = {"prompt_tokens": 60, "completion_tokens": 40}  # 100 tokens a request


async def ignore(_: str) -> None:
    return None


async def hammer(provider: HttpProvider, server: FakeModelServer) -> tuple[float, list[float]]:
    """Requests per second ``CALLERS`` callers get from ``server`` in ``RUN_SECONDS``, and the
    times the server saw them."""

    async def caller() -> None:
        while True:
            await provider.generate(REQUEST, ignore)

    try:
        with anyio.move_on_after(RUN_SECONDS):
            async with anyio.create_task_group() as tg:
                for _ in range(CALLERS):
                    tg.start_soon(caller)
    finally:
        await provider.aclose()
    times = [r.at for r in server.requests]
    return len(times) / RUN_SECONDS, times


def openai_provider(server: FakeModelServer) -> HttpProvider:
    endpoint = Endpoint(server.url + "/v1", max_connections=CALLERS)
    return OpenAICompatibleProvider(model_name="f", model_id="m", endpoint=endpoint, stream=False, retry=FAST)


def anthropic_provider(server: FakeModelServer) -> HttpProvider:
    endpoint = Endpoint(server.url, max_connections=CALLERS)
    return AnthropicProvider(model_name="c", model_id="c", endpoint=endpoint, api_key="ak", stream=False, retry=FAST)


def anthropic_body() -> dict[str, Any]:
    return {
        "type": "message",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 60, "output_tokens": 40},
    }


def anthropic_limits(tokens_remaining: int) -> dict[str, str]:
    reset = (datetime.now(UTC) + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "80000",
        "anthropic-ratelimit-tokens-remaining": str(tokens_remaining),
        "anthropic-ratelimit-tokens-reset": reset,
    }


async def run_against(api: str, remaining: int) -> tuple[float, list[float], Endpoint]:
    """Requests per second from the same server reporting ``remaining`` tokens left, the times
    the server saw them, and the endpoint (its counts)."""
    if api == "openai":
        reply = Reply(200, openai_body("ok", usage=USAGE), openai_limits(remaining))
    else:
        reply = Reply(200, anthropic_body(), anthropic_limits(remaining))
    with fake_model_server(reply) as server:
        provider = openai_provider(server) if api == "openai" else anthropic_provider(server)
        rate, times = await hammer(provider, server)
        assert not server.script and reply.status == 200  # every answer a 200: no 429, ever
        assert {r.path for r in server.requests} == {"/v1/chat/completions" if api == "openai" else "/v1/messages"}
    return rate, times, provider.endpoint


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_server_reporting_little_left_gets_fewer_requests_per_second(api: str) -> None:
    """OpenAI: 300 of 10,000 tokens left, reset in 2 s, 100 tokens a request: about 0.67 s
    apart. Anthropic: 2,000 of 80,000 left, reset in ~10 s: about 0.5 s apart. The same server
    reporting plenty left is not paced at all. No 429 is ever sent."""
    low, times, paced = await run_against(api, 300 if api == "openai" else 2000)
    plenty, _, unpaced = await run_against(api, 9000 if api == "openai" else 79000)
    ratio = low / plenty
    print(f"{api}: {low:.1f} req/s paced, {plenty:.1f} req/s unpaced, ratio {ratio:.3f}")
    assert ratio < 0.5, (low, plenty)
    # Paced requests leave about the spacing apart (the first CALLERS left before any response,
    # the next one has no earlier send to be spaced from); a busy machine only widens the gaps.
    gaps = [b - a for a, b in zip(times[CALLERS + 1 :], times[CALLERS + 2 :], strict=False)]
    assert gaps and statistics.median(gaps) >= 0.3, gaps
    assert paced.rate_limited_responses == unpaced.rate_limited_responses == 0
    assert paced.paced_seconds > 0.5 and unpaced.paced_seconds == 0


# -- the 429 count in the batch summary ---------------------------------------------------------


def spec_text(server: FakeModelServer) -> str:
    """One dialogue of two turns on the loopback server, with room to retry a 429."""
    return server_spec(server, replicates=1, turns=2).replace("retry_budget = 1\n", "retry_budget = 10\n")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_batch_summary_counts_429s_per_endpoint(tmp_path: Path, backend: str) -> None:
    slow_down = Reply(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "10"})
    with fake_model_server(Reply(body=openai_body("fine, thanks"))) as server:
        server.script = [slow_down]
        spec = tmp_path / "srv.toml"
        spec.write_text(spec_text(server))
        db = tmp_path / "runs.db"
        result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(db), "--json", "--backend", backend])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["dialogues"] == {"total": 1, "completed": 1}
        assert summary["this_run"]["rate_limited"] == {f"{server.url}/v1": {"429": 1, "paced_s": 0.0}}
        assert len(server.requests) == 3  # two turns, one of them retried

        server.script = [slow_down, slow_down]
        text = CliRunner().invoke(
            app, ["batch", str(spec), "--db", str(db), "--new", "--backend", backend], env={"COLUMNS": "200"}
        )
        assert text.exit_code == 0, text.output
        assert f"rate limits this run: {server.url}/v1: 2 × HTTP 429, paced 0.0 s" in text.stdout

        server.script = []
        quiet = CliRunner().invoke(app, ["batch", str(spec), "--db", str(db), "--new", "--backend", backend])
        assert quiet.exit_code == 0, quiet.output
        assert "rate limits" not in quiet.stdout  # nothing to say when nothing was limited
