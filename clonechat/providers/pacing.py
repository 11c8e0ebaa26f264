"""Pacing from rate-limit headers: slow down before the server says 429.

Hosted APIs report, on every response (successes and errors alike), how much of each rate
limit is left and when it is replenished:

* OpenAI and the servers that copy it (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``):
  the reset is a relative Go-style duration, the time until the limit is back to its initial
  state: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"4m12.172s"`` (Azure sends plain seconds).
* Anthropic (``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``):
  the reset is an RFC 3339 time, ``"2025-08-21T12:40:59Z"``; token counts are rounded to
  thousands; ``tokens`` is the most restrictive of the token limits in effect.

Servers that send none (vLLM, llama.cpp, most of OpenRouter) are never paced.

The rule, per endpoint: while a limit is low (at most half of it left, or none left when the
limit itself is not reported), spread what remains over the time until its reset. With ``R``
requests left and the reset ``T`` seconds away, requests leave at least ``T / R`` apart; with
``K`` tokens left and a typical request costing ``c`` tokens (a running average of the usage of
recent responses), at least ``T * c / K`` apart; the largest spacing of the low limits applies.
Under a fixed window that spends exactly what is left by the reset; under a token bucket
(OpenAI's reset is the time to a *full* bucket) it is the sustainable rate when half the bucket
is left and slower below, so the bucket refills to half and the endpoint settles there, with no
429. With more than half of every limit left nothing waits, so normal runs pay nothing.

It never deadlocks: no request waits past the reset the server gave (a limit whose reset has
passed is forgotten) nor longer than ``MAX_WAIT``; headers it cannot read are ignored; a fresh
response wakes the waiting request to look again. Time is the running event loop's monotonic
clock (``anyio.current_time``), on asyncio and trio alike. The concurrency limit
(:class:`~clonechat.providers.limits.AdaptiveLimiter`) still applies on top.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio

#: Longest a request waits for the pacer, whatever the headers say.
MAX_WAIT = 60.0

#: A limit is low once at most this share of it is left.
LOW_SHARE = 0.5

#: Weight of the newest response in the running average of tokens per request.
COST_WEIGHT = 0.3

_OPENAI = re.compile(r"x-ratelimit-(limit|remaining|reset)-(requests|tokens)")
_ANTHROPIC = re.compile(r"anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(limit|remaining|reset)")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:h|ms|us|µs|μs|ns|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|μs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Window:
    """One rate limit as a response reported it."""

    kind: str
    remaining: int
    limit: int | None
    #: Seconds from the response until the limit is replenished.
    reset: float

    def low(self) -> bool:
        """At most half of the limit left (or nothing left, when the limit is not reported)."""
        return self.remaining <= self.limit * LOW_SHARE if self.limit else self.remaining <= 0


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI-style (Go) duration, ``"1h2m3.5s"``, ``"20ms"``, or plain seconds."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        if not _DURATION.fullmatch(text):
            return None
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def parse_reset(text: str, now: datetime | None = None) -> float | None:
    """Seconds until a reset given as a duration (OpenAI) or an RFC 3339 time (Anthropic); a
    time already past is 0. None when unreadable."""
    seconds = parse_duration(text)
    if seconds is not None:
        return seconds
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def read_windows(headers: Iterable[tuple[str, str]] | Mapping[str, str], now: datetime | None = None) -> list[Window]:
    """The rate limits a response reports, OpenAI or Anthropic style. A limit without a readable
    remaining count and reset is left out (so is one reported with a negative count)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    fields: dict[tuple[str, str], dict[str, str]] = {}  # by (style, kind): the styles are never mixed
    for key, value in items:
        name = key.lower()
        if not name.startswith(("x-ratelimit-", "anthropic-ratelimit-")):
            continue
        if found := _OPENAI.fullmatch(name):
            field_name, kind = found.groups()
        elif found := _ANTHROPIC.fullmatch(name):
            kind, field_name = found.groups()
        else:
            continue
        fields.setdefault((name[0], kind), {})[field_name] = value
    windows = []
    for (_, kind), given in fields.items():
        remaining = _count(given.get("remaining"))
        reset = parse_reset(given["reset"], now) if "reset" in given else None
        if remaining is None or reset is None:
            continue
        limit = _count(given.get("limit"))
        windows.append(Window(kind, remaining, limit or None, reset))
    return windows


def estimate_prompt_tokens(payload: Mapping[str, Any]) -> int:
    """A rough prompt size, for servers that report no usage: about four characters a token."""
    return len(json.dumps(payload.get("messages", ""))) // 4 + len(json.dumps(payload.get("system", ""))) // 4


@dataclass
class _Limit:
    remaining: int
    limit: int | None
    #: When the limit is replenished, on the event loop's clock.
    deadline: float


class Pacer:
    """Spaces one endpoint's requests by the rate limits its responses report (see the module
    docstring). ``update`` after every response, ``spent`` after every completed one, and
    ``wait`` before every request."""

    def __init__(self, *, max_wait: float = MAX_WAIT, clock: Callable[[], float] = anyio.current_time) -> None:
        self.max_wait = max_wait
        self._clock = clock
        self._limits: dict[str, _Limit] = {}
        #: Running averages of a request's prompt and output tokens (None until a response).
        self._input: float | None = None
        self._output: float | None = None
        self._last_sent: float | None = None
        self._lock: anyio.Lock | None = None
        self._changed: anyio.Event | None = None
        #: Seconds requests waited for the pacer, summed over requests.
        self.paced_seconds = 0.0
        #: Requests that waited.
        self.paced_requests = 0

    def update(self, headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> None:
        """Take the rate limits a response reports; wake a waiting request to look again."""
        windows = read_windows(headers)
        if not windows:
            return
        now = self._clock()
        for window in windows:
            self._limits[window.kind] = _Limit(window.remaining, window.limit, now + min(window.reset, self.max_wait))
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def spent(
        self, prompt_tokens: int | None, output_tokens: int | None, payload: Mapping[str, Any] | None = None
    ) -> None:
        """Take a completed request's usage into the running averages. A prompt the server did
        not count is estimated from the request ``payload``, once the endpoint reports limits."""
        if prompt_tokens is None and payload is not None and self._limits:
            prompt_tokens = estimate_prompt_tokens(payload)
        if prompt_tokens is not None and prompt_tokens >= 0:
            self._input = _average(self._input, prompt_tokens)
        if output_tokens is not None and output_tokens >= 0:
            self._output = _average(self._output, output_tokens)

    def cost(self, kind: str) -> float | None:
        """What a typical request takes of a limit (None: not known yet)."""
        if kind == "requests":
            return 1.0
        if kind == "input-tokens":
            return self._input
        if kind == "output-tokens":
            return self._output
        if self._input is None and self._output is None:
            return None
        return (self._input or 0.0) + (self._output or 0.0)

    def spacing(self, now: float) -> float:
        """The least time between two requests now: the largest of the low limits' (0: none is
        low). A limit with nothing left counts its whole time to reset."""
        return max((need for need, _ in self._needs(now)), default=0.0)

    def next_at(self, now: float) -> float:
        """The earliest time the next request may leave (``now``: at once): the last request's
        time plus the spacing, or the reset of a limit with nothing left; never past the reset of
        the limit that holds it back (itself at most ``max_wait`` after the response that said so)."""
        due = now
        for need, limit in self._needs(now):
            if limit.remaining <= 0:
                due = max(due, limit.deadline)
            elif self._last_sent is not None:
                due = max(due, min(self._last_sent + need, limit.deadline))
        return due

    def _needs(self, now: float) -> list[tuple[float, _Limit]]:
        needs = []
        for kind, limit in list(self._limits.items()):
            left = limit.deadline - now
            if left <= 0:
                del self._limits[kind]  # replenished: forgotten until a response reports it again
                continue
            if not Window(kind, limit.remaining, limit.limit, left).low():
                continue
            if limit.remaining <= 0:
                need = left
            elif (cost := self.cost(kind)) is not None:
                need = left * cost / limit.remaining
            else:
                continue  # no usage seen yet: what a request costs of this limit is unknown
            needs.append((min(need, left, self.max_wait), limit))
        return needs

    async def wait(self) -> None:
        """Return when the next request may be sent."""
        if not self._limits:
            return
        started = now = self._clock()
        if self.next_at(now) <= now and (self._lock is None or not self._lock.locked()):
            self._last_sent = now
            return
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:  # first come, first served: one request at a time is held back
            now = self._clock()
            while (delay := self.next_at(now) - now) > 0:
                if self._changed is None:
                    self._changed = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._changed.wait()  # a fresh response may change the answer
                now = self._clock()
            self._last_sent = now
        if now > started:
            self.paced_seconds += now - started
            self.paced_requests += 1


def _average(current: float | None, sample: int) -> float:
    return float(sample) if current is None else current + COST_WEIGHT * (sample - current)
