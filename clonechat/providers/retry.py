"""When and how long to retry a model call.

Rate limits, overloaded servers and broken streams are normal weather for a long run, so the
default budget rides them out for minutes. Errors that retrying cannot fix (400, 401, 403, 404,
422) fail at once with a message naming model, endpoint and status. The wait honours the
server's ``retry-after-ms`` / ``Retry-After`` (seconds or HTTP date) and otherwise backs off
exponentially with jitter, capped.

The budget is a hard bound on when attempts start, measured on a monotonic clock from the start
of the first attempt: no wait ends after it, and no attempt starts once it has run out. Our own
backoff is drawn from what is left (less ``WAKE_MARGIN``), so it always fits; when too little is
left for even the shortest backoff the call fails at once. A wait the server asks for is not
shortened: when it is longer than what is left, the call fails at once, saying so. Should the
event loop wake from a wait only after the budget has run out, that attempt is not made either.
Giving up raises the last error, its message extended by one clause saying why (none when the
budget is 0, which just means "no retries"). The budget does not bound an attempt's own length
(a turn that streams for minutes is not cut off).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NoReturn, TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from clonechat.errors import RetryableProviderError

T = TypeVar("T")
log = logging.getLogger("clonechat.providers")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

#: A backoff drawn from what is left of the budget ends this much before the budget does, so
#: that an event loop waking a little late (a busy machine) still starts the attempt in time.
WAKE_MARGIN = 0.1


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
    #: No attempt starts later than this many seconds after the first one started (0: no retries).
    budget: float = 300.0
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    #: Never wait longer than this for one retry, whatever the server asks.
    max_wait: float = 120.0

    @property
    def shortest_backoff(self) -> float:
        """The backoff's lower bound: half the initial backoff (never above the cap), so even a
        retry drawn at the bottom of the jitter does not hammer a struggling server."""
        return min(self.initial_backoff / 2, self.max_backoff)

    def backoff(self, attempt: int, within: float = math.inf) -> float:
        """Exponential backoff with jitter: uniform in
        [``shortest_backoff``, max(``shortest_backoff``, min(cap, ``within``))] where
        cap = min(``max_backoff``, ``initial_backoff`` * 2^(attempt-1)). ``within`` is the room
        left in the budget; the caller gives up instead of asking with less than
        ``shortest_backoff`` of room."""
        low = self.shortest_backoff
        high = min(self.max_backoff, self.initial_backoff * 2 ** max(0, attempt - 1), within)
        high = max(low, high)
        wait = random.uniform(low, high)
        return wait if wait <= high else high  # uniform() may round one ulp past high


RetryCallback = Callable[[int, str, float], Awaitable[None]]


def _seconds(value: float) -> str:
    """A duration for a message: "30", "4.2", "0.35"."""
    return f"{value:.1f}".removesuffix(".0") if abs(value) >= 1 else f"{value:.2g}"


def _attempts(n: int) -> str:
    return f"{n} attempt{'s' if n != 1 else ''}"


class _Budget:
    """The deadline of one call and, once it is decided, why the call gives up."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.deadline = time.monotonic() + policy.budget
        self.last_error: BaseException | None = None
        self.verdict: str | None = None

    def wait(self, state: RetryCallState) -> float:
        """How long to wait before the next attempt; sets ``verdict`` instead when no wait fits."""
        policy = self.policy
        error = state.outcome.exception() if state.outcome else None
        self.last_error = error
        left = self.deadline - time.monotonic()
        tried = _attempts(state.attempt_number)
        if policy.budget <= 0:
            self.verdict = ""
            return 0.0
        if left <= 0:
            self.verdict = f"gave up after {tried}: retry_budget {_seconds(policy.budget)} s spent"
            return 0.0
        asked = error.retry_after if isinstance(error, RetryableProviderError) else None
        if asked is not None:
            seconds = min(policy.max_wait, asked)
            if seconds >= left:
                self.verdict = (
                    f"the server asked to wait {_seconds(asked)} s, more than the {_seconds(left)} s left "
                    f"of retry_budget {_seconds(policy.budget)} s"
                )
                return 0.0
            return seconds
        room = left - WAKE_MARGIN
        if room < policy.shortest_backoff:
            self.verdict = (
                f"gave up after {tried}: {_seconds(left)} s left of retry_budget {_seconds(policy.budget)} s, "
                f"too little for another backoff (at least {_seconds(policy.shortest_backoff)} s)"
            )
            return 0.0
        return policy.backoff(state.attempt_number, within=room)

    def stop(self, _state: RetryCallState) -> bool:
        return self.verdict is not None

    def give_up(self, _state: RetryCallState) -> NoReturn:
        assert self.last_error is not None and self.verdict is not None
        raise _explained(self.last_error, self.verdict)

    def before_attempt(self, state: RetryCallState) -> None:
        """No retry starts once the budget has run out (a wait ends before the deadline, but
        the event loop may wake late on a busy machine)."""
        if state.attempt_number > 1 and time.monotonic() >= self.deadline and self.last_error is not None:
            budget = _seconds(self.policy.budget)
            tried = _attempts(state.attempt_number - 1)
            raise _explained(self.last_error, f"gave up after {tried}: retry_budget {budget} s ran out during the wait")


def _explained(error: BaseException, clause: str) -> BaseException:
    """``error`` itself (same type, same traceback), its message extended by ``clause``."""
    if clause:
        error.args = (f"{error}: {clause}",)
    return error


async def call_with_retries(
    attempt_once: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: RetryCallback | None = None,
) -> T:
    """Run ``attempt_once`` until it succeeds, raises a non-retryable error, or no further
    attempt fits in the budget (then the last retryable error is raised, saying why)."""
    budget = _Budget(policy)

    async def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        seconds = state.next_action.sleep if state.next_action else 0.0
        log.info("attempt %d failed (%s); retrying in %.1fs", state.attempt_number, error, seconds)
        if on_retry is not None:
            await on_retry(state.attempt_number, str(error), seconds)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RetryableProviderError),
        wait=budget.wait,
        stop=budget.stop,
        retry_error_callback=budget.give_up,
        before=budget.before_attempt,
        sleep=anyio.sleep,
        before_sleep=before_sleep,
    )
    async for attempt in retrying:
        with attempt:
            return await attempt_once()
    raise AssertionError("unreachable")  # pragma: no cover
