"""When and how long to retry a model call.

Rate limits, overloaded servers and broken streams are normal weather for a long run, so the
default budget rides them out for minutes. Errors that retrying cannot fix (400, 401, 403, 404,
422) fail at once with a message naming model, endpoint and status. The wait honours the
server's ``retry-after-ms`` / ``Retry-After`` (seconds or HTTP date) and otherwise backs off
exponentially with jitter, capped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay

from clonechat.errors import RetryableProviderError

T = TypeVar("T")
log = logging.getLogger("clonechat.providers")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or 500 <= status < 600


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The server's requested wait: ``retry-after-ms``, else ``Retry-After`` as seconds or as
    an HTTP date. ``None`` when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    #: Give up once this many seconds have passed since the first attempt.
    budget: float = 300.0
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    #: Never wait longer than this for one retry, whatever the server asks.
    max_wait: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, initial * 2^(attempt-1))]."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** max(0, attempt - 1))
        return random.uniform(self.initial_backoff / 2, max(self.initial_backoff / 2, ceiling))


RetryCallback = Callable[[int, str, float], Awaitable[None]]


async def call_with_retries(
    attempt_once: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: RetryCallback | None = None,
) -> T:
    """Run ``attempt_once`` until it succeeds, raises a non-retryable error, or the budget is
    spent (then the last retryable error is raised)."""

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = error.retry_after if isinstance(error, RetryableProviderError) else None
        return min(policy.max_wait, asked if asked is not None else policy.backoff(state.attempt_number))

    async def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        seconds = state.next_action.sleep if state.next_action else 0.0
        log.info("attempt %d failed (%s); retrying in %.1fs", state.attempt_number, error, seconds)
        if on_retry is not None:
            await on_retry(state.attempt_number, str(error), seconds)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RetryableProviderError),
        stop=stop_after_delay(policy.budget),
        wait=wait,
        sleep=anyio.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await attempt_once()
    raise AssertionError("unreachable")  # pragma: no cover
