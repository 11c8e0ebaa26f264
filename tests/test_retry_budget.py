"""``retry_budget`` is a hard bound on when attempts start, against the loopback model server
(both async backends); the backoff's jitter stays in its documented interval; and a failed
dialogue's reason goes to stderr, not stdout (``clonechat run`` and ``clonechat batch``).

Timing: nothing here waits for a fixed time or asserts a tight one. Upper bounds are asserted
only where the guarantee is about the budget, with ``SLACK`` added for the one thing outside
the budget's control: how long a request takes from the start of its attempt to the moment the
server records it (a new TCP connection, the server's thread, a busy 2-core machine).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clonechat.errors import ProviderError, RetryableProviderError
from clonechat.providers import retry as retry_module
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams
from clonechat.providers.http import Endpoint, HttpProvider
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.providers.retry import RetryPolicy
from tests.servers.fake_model import FakeModelServer, Reply, fake_model_server, openai_body

#: Seconds allowed on top of the budget for the last request to travel from the start of its
#: attempt to the server's record of it (see the module docstring). The old code overshot by up
#: to a whole backoff (seconds here, a minute by default), far beyond this.
SLACK = 1.0

REQUEST = ChatRequest([ChatMessage("user", "hi")], GenerationParams(temperature=0.0, max_tokens=8))


def openai(server: FakeModelServer, retry: RetryPolicy) -> HttpProvider:
    return OpenAICompatibleProvider(
        model_name="fake",
        model_id="m",
        endpoint=Endpoint(server.url + "/v1"),
        api_key="sk-test-1",
        stream=False,
        retry=retry,
    )


class Notices:
    """What ``on_retry`` was told: (attempt, reason, wait)."""

    def __init__(self) -> None:
        self.retries: list[tuple[int, str, float]] = []

    async def delta(self, _text: str) -> None:
        return None

    async def retry(self, attempt: int, reason: str, wait: float) -> None:
        self.retries.append((attempt, reason, wait))


async def generate(provider: HttpProvider, notices: Notices) -> str:
    try:
        completion = await provider.generate(REQUEST, notices.delta, notices.retry)
    finally:
        await provider.aclose()
    return completion.text


# -- (a) the budget bounds the last attempt ---------------------------------------------------


class Ceiling:
    """Stands in for the ``random`` module: every draw is the top of its interval."""

    def uniform(self, _low: float, high: float) -> float:
        return high


@pytest.mark.anyio
@pytest.mark.parametrize("draw", ["ceiling", "random"])
async def test_no_attempt_starts_after_the_budget(
    draw: str, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 forever, no Retry-After. ``ceiling`` makes every backoff its interval's top, the
    worst case for the budget: unclipped, these waits (0.7, 1.4, 2.8 s) put the fourth attempt
    at 4.9 s; clipped, the third wait ends before 3 s. ``random`` is the real jitter."""
    if draw == "ceiling":
        monkeypatch.setattr(retry_module, "random", Ceiling())
    budget = 3.0
    policy = RetryPolicy(budget=budget, initial_backoff=0.7, max_backoff=30.0)
    notices = Notices()
    with fake_model_server(Reply(503, b"down")) as server:
        server.script = [Reply(503, f"down {i}".encode()) for i in range(200)]
        started = time.monotonic()
        with pytest.raises(RetryableProviderError) as info:
            await generate(openai(server, policy), notices)
        ended = time.monotonic()
        times = [r.at for r in server.requests]
    assert len(times) >= 2, "it retried"
    span = times[-1] - times[0]
    assert span <= budget + SLACK, (span, [round(t - times[0], 2) for t in times])
    assert ended - started <= budget + SLACK  # and gave up when the budget ended, not later
    message = str(info.value)
    # The last error, not the first: its body names the last request the server answered.
    assert message.startswith(f"model 'fake' at {server.url}/v1: HTTP 503: down {len(times) - 1}: "), message
    assert "retry_budget 3 s" in message and "\n" not in message
    waits = [wait for _, _, wait in notices.retries]
    assert all(policy.shortest_backoff <= wait <= budget for wait in waits), waits
    if draw == "ceiling":
        # The third wait was cut to what was left (about 0.8 s of room, not 2.8 s) and its
        # attempt was made: the budget is used, not given up early.
        assert waits[:2] == [0.7, 1.4] and waits[2] < 1.0 and len(times) == 4, (waits, times)


# -- (b) a Retry-After longer than what is left fails at once ---------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{"Retry-After": "30"}, {"retry-after-ms": "30000"}])
async def test_retry_after_beyond_the_budget_fails_at_once(headers: dict[str, str], anyio_backend: str) -> None:
    notices = Notices()
    with fake_model_server(Reply(429, {"error": {"message": "slow down"}}, headers)) as server:
        started = time.monotonic()
        with pytest.raises(RetryableProviderError) as info:
            await generate(openai(server, RetryPolicy(budget=2.0)), notices)
        elapsed = time.monotonic() - started
    # At once: one request and no wait (the bound is generous; waiting would take 30 s).
    assert elapsed < 10.0
    assert len(server.requests) == 1
    assert notices.retries == []
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"model 'fake' at {server.url}/v1: HTTP 429: slow down: "), message
    assert "the server asked to wait 30 s, more than the " in message
    assert message.endswith(" s left of retry_budget 2 s"), message


# -- (c) the jitter's interval ----------------------------------------------------------------


@given(
    attempt=st.integers(min_value=1, max_value=80),
    initial=st.floats(min_value=0.001, max_value=30.0),
    cap=st.floats(min_value=0.001, max_value=300.0),
    within=st.one_of(st.just(math.inf), st.floats(min_value=0.0, max_value=500.0)),
)
@settings(max_examples=400, deadline=None)
def test_backoff_draws_within_the_documented_interval(attempt: int, initial: float, cap: float, within: float) -> None:
    """The docstring: uniform in [shortest_backoff, max(shortest_backoff, min(cap_n, within))],
    cap_n = min(max_backoff, initial_backoff * 2^(attempt-1)), shortest_backoff =
    min(initial_backoff / 2, max_backoff)."""
    policy = RetryPolicy(initial_backoff=initial, max_backoff=cap)
    low = min(initial / 2, cap)
    high = max(low, min(cap, initial * 2 ** (attempt - 1), within))
    assert policy.shortest_backoff == low
    wait = policy.backoff(attempt, within=within)
    assert low <= wait <= high
    assert wait <= cap  # the cap is a hard cap
    if within >= low:
        assert wait <= within  # what the budget has left is never overrun


def test_backoff_jitter_spans_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many seeded draws fill [0.5, 4] for attempt 3 (initial 1 s): full jitter above the floor,
    neither stuck at an end nor reaching below the floor of half the initial backoff."""
    monkeypatch.setattr(retry_module, "random", random.Random(20240611))
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=60.0)
    draws = [policy.backoff(3) for _ in range(5000)]
    assert min(draws) >= 0.5 and max(draws) <= 4.0
    assert min(draws) < 0.55 and max(draws) > 3.95
    assert 2.1 < sum(draws) / len(draws) < 2.4  # the middle, 2.25
    clipped = [policy.backoff(3, within=1.2) for _ in range(2000)]
    assert min(clipped) >= 0.5 and max(clipped) <= 1.2 and max(clipped) > 1.15


# -- (d) a retry that fits still succeeds -----------------------------------------------------


@pytest.mark.anyio
async def test_a_retry_that_fits_succeeds(anyio_backend: str) -> None:
    notices = Notices()
    with fake_model_server(Reply(body=openai_body("recovered"))) as server:
        server.script = [Reply(503, b"blip")]
        text = await generate(openai(server, RetryPolicy(budget=5.0, initial_backoff=0.2, max_backoff=1.0)), notices)
    assert text == "recovered"
    assert len(server.requests) == 2
    [(attempt, reason, wait)] = notices.retries
    assert attempt == 1 and "HTTP 503: blip" in reason
    assert 0.1 <= wait <= 0.2  # attempt 1: uniform in [initial / 2, initial]


@pytest.mark.anyio
async def test_a_server_wait_that_fits_is_honoured(anyio_backend: str) -> None:
    notices = Notices()
    with fake_model_server(Reply(body=openai_body("after the wait"))) as server:
        server.script = [Reply(429, b"", {"retry-after-ms": "300"})]
        text = await generate(openai(server, RetryPolicy(budget=5.0)), notices)
    assert text == "after the wait"
    assert [wait for _, _, wait in notices.retries] == [0.3]
    assert server.requests[1].at - server.requests[0].at >= 0.29


@pytest.mark.anyio
async def test_a_zero_budget_means_one_attempt_and_the_plain_error(anyio_backend: str) -> None:
    """``clonechat models --check`` asks with budget 0: the error is reported as it came."""
    with fake_model_server(Reply(503, b"down")) as server:
        with pytest.raises(RetryableProviderError) as info:
            await generate(openai(server, RetryPolicy(budget=0)), Notices())
    assert len(server.requests) == 1
    assert str(info.value) == f"model 'fake' at {server.url}/v1: HTTP 503: down"


@pytest.mark.anyio
async def test_non_retryable_errors_are_not_explained(anyio_backend: str) -> None:
    with fake_model_server(Reply(401, {"error": {"message": "bad key"}})) as server:
        with pytest.raises(ProviderError) as info:
            await generate(openai(server, RetryPolicy(budget=5.0)), Notices())
    assert not isinstance(info.value, RetryableProviderError)
    assert str(info.value) == f"model 'fake' at {server.url}/v1: HTTP 401: bad key"


# -- a failed dialogue's reason goes to stderr ------------------------------------------------


def clonechat(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "clonechat", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


MODEL = """\
[models.srv]
provider = "openai-compatible"
base_url = "{url}/v1"
model = "m"
stream = false
retry_budget = 5
"""


def test_run_reports_a_failed_dialogue_on_stderr(tmp_path: Path) -> None:
    with fake_model_server(Reply(401, {"error": {"message": "key not accepted"}})) as server:
        models = tmp_path / "models.toml"
        models.write_text(MODEL.format(url=server.url))
        db = tmp_path / "runs" / "r.db"
        result = clonechat(
            "run", "--model", "srv", "--models-file", str(models), "--turns", "2", "--db", str(db), cwd=tmp_path
        )
        requests = len(server.requests)
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert requests == 1  # a 401 is not retried
    reason = f"model 'srv' at {server.url}/v1: HTTP 401: key not accepted"
    assert f"turn 1 (A) failed: {reason}" in result.stderr, result.stderr
    assert "HTTP 401" not in result.stdout and "key not accepted" not in result.stdout, result.stdout
    assert "failed (error) after 0 turns" in result.stdout  # the transcript still ends on stdout


SPEC = """\
name = "fails"
replicates = 1
max_turns = 2
model_a = "srv"

[[conditions]]
template = "clone-aware"

"""


def test_batch_reports_a_failed_dialogue_on_stderr(tmp_path: Path) -> None:
    with fake_model_server(Reply(401, {"error": {"message": "key not accepted"}})) as server:
        spec = tmp_path / "fails.toml"
        spec.write_text(SPEC + MODEL.format(url=server.url))
        result = clonechat("batch", str(spec), "--db", str(tmp_path / "runs" / "b.db"), cwd=tmp_path)
    assert result.returncode != 0, (result.stdout, result.stderr)
    reason = f"model 'srv' at {server.url}/v1: HTTP 401: key not accepted"
    [line] = [line for line in result.stderr.splitlines() if "failed:" in line]
    assert line.startswith("dialogue ") and line.endswith(f"(clone-aware) failed: {reason}"), result.stderr
    assert "HTTP 401" not in result.stdout and "key not accepted" not in result.stdout, result.stdout
    assert "1 dialogue(s) failed" in result.stdout  # the summary stays on stdout
