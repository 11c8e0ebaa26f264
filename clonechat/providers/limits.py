"""Per-endpoint concurrency that backs off under rate limiting and recovers afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class AdaptiveLimiter:
    """At most ``limit`` requests in flight. Each 429 halves the limit (never below one);
    every ``recover_after`` successes in a row give one slot back, up to the configured
    maximum. Requests that are already in flight are never cut."""

    def __init__(self, maximum: int, *, recover_after: int = 10) -> None:
        self.maximum = max(1, maximum)
        self.recover_after = recover_after
        self._limiter: anyio.CapacityLimiter | None = None
        self._streak = 0

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use, inside the running event loop of whichever backend runs it.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.maximum)
        return self._limiter

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now."""
        return 0 if self._limiter is None else int(self._limiter.borrowed_tokens)

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return 0 if self._limiter is None else self._limiter.statistics().tasks_waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.limiter:
            yield

    def rate_limited(self) -> None:
        self._streak = 0
        self.limiter.total_tokens = max(1, self.limit // 2)

    def succeeded(self) -> None:
        self._streak += 1
        if self._streak >= self.recover_after and self.limit < self.maximum:
            self.limiter.total_tokens = self.limit + 1
            self._streak = 0
